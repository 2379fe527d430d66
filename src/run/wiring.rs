//! What a run attaches besides its disks and serial ports: the network with its
//! forwarded ports, the SSH key of this boot, QEMU's monitor, the gdb stub and a vsock
//! device; and the record other commands find the running VM by.

use anyhow::Result;

use super::dir::RunDir;
use super::ssh_key::SshKey;
use super::vm::{self, VmInfo};
use crate::configure::access;
use crate::output::manifest::Manifest;
use crate::plan::{Plan, RunConfig};
use crate::profile::forward::{Forward, Proto};
use crate::vm::gdb::{self, Gdb};
use crate::vm::network::{self, Bound};
use crate::vm::qemu::Launch;
use crate::vm::{qmp, vsock};

/// Facts about the built image a run needs, from its manifest.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageFacts {
    /// The image has an OpenSSH server.
    pub has_sshd: bool,
    /// The image streams its journal (kiln's unit is in it).
    pub streams_journal: bool,
}

impl ImageFacts {
    /// Reads the manifest beside the image; an image without one has no known facts.
    pub fn read(plan: &Plan) -> ImageFacts {
        let Ok(text) = std::fs::read_to_string(&plan.manifest) else {
            return ImageFacts::default();
        };
        let Ok(m) = serde_json::from_str::<Manifest>(&text) else {
            return ImageFacts::default();
        };
        let has = |p: &str| m.entries.iter().any(|e| e.path == p);
        ImageFacts {
            has_sshd: has("/usr/sbin/sshd"),
            streams_journal: has("/usr/lib/systemd/system/kiln-journal.service"),
        }
    }
}

/// The devices of one run, chosen before QEMU starts.
#[derive(Debug, Clone)]
pub struct Wiring {
    /// Forwarded ports with their host ports fixed.
    pub forwards: Vec<Bound>,
    /// The network is on.
    pub network: bool,
    /// The key this boot is given.
    pub key: Option<SshKey>,
    /// The gdb stub.
    pub gdb: Option<Gdb>,
    /// The vsock CID.
    pub vsock_cid: Option<u32>,
    /// QEMU's monitor socket.
    pub qmp: std::path::PathBuf,
}

/// Chooses the devices of a run in `files` and adds them to `l`. `attempt` counts the
/// starts of this run (a port or CID another VM took a moment earlier means a retry).
pub fn wire(
    plan: &Plan,
    config: &RunConfig,
    facts: ImageFacts,
    files: &RunDir,
    attempt: u32,
    l: &mut Launch,
) -> Result<Wiring> {
    let net = &config.network;
    let network = access::network_on(net.mode, facts.has_sshd);
    let mut forwards: Vec<Forward> = if network {
        net.forwards.clone()
    } else {
        Vec::new()
    };
    let ssh = network && facts.has_sshd;
    if ssh
        && !forwards
            .iter()
            .any(|f| f.proto == Proto::Tcp && f.guest == network::SSH_PORT)
    {
        forwards.push(Forward {
            proto: Proto::Tcp,
            host: None,
            guest: network::SSH_PORT,
        });
    }
    let bound = network::bind(&forwards)?;
    if network {
        let model = net.model.as_deref().unwrap_or(network::DEFAULT_MODEL);
        l.devices.extend(network::args(model, &bound));
    }
    let key = if facts.has_sshd {
        let k = SshKey::ensure(&plan.out_dir, &plan.name)?;
        l.cmdline.push(k.cmdline_word());
        Some(k)
    } else {
        None
    };
    let runtime = vm::runtime_dir();
    let qmp = qmp::socket_path(
        &files.dir,
        &runtime,
        &format!("{}-{}", std::process::id(), files.number),
    );
    let _ = std::fs::remove_file(&qmp);
    l.devices.extend(qmp::args(&qmp));
    let gdb = match config.gdb {
        Some(g) => {
            let port = match g.port {
                Some(p) => p,
                None => network::free_port(Proto::Tcp)?,
            };
            // Symbols match addresses only where the kernel did not move itself.
            l.cmdline.push("nokaslr".into());
            let g = Gdb { port, wait: g.wait };
            l.devices.extend(g.args());
            Some(g)
        }
        None => None,
    };
    let vsock_cid = (facts.has_sshd && vsock::available()).then(|| {
        let cid = vsock::cid(u64::from(std::process::id()) << 20 | files.number, attempt);
        l.devices.extend(vsock::args(cid));
        cid
    });
    if facts.streams_journal {
        l.devices.extend(super::journal::args(
            &files.dir.join(super::journal::EXPORT),
        ));
        l.cmdline.push(access::JOURNAL_WORD.into());
    }
    if config.dump_on_failure {
        // A panicking kernel then waits for kiln to dump its memory instead of ending
        // the VM; the later word wins over kiln's panic=-1.
        l.cmdline.push("panic=0".into());
    }
    Ok(Wiring {
        forwards: bound,
        network,
        key,
        gdb,
        vsock_cid,
        qmp,
    })
}

impl Wiring {
    /// The record of the running VM.
    pub fn info(
        &self,
        plan: &Plan,
        files: &RunDir,
        pid: u32,
        console: bool,
        detached: bool,
    ) -> VmInfo {
        VmInfo {
            name: plan.name.clone(),
            profile: plan.profile.clone(),
            dir: files.dir.clone(),
            pid,
            qmp: self.qmp.clone(),
            console: console.then(|| files.console.clone()),
            forwards: self.forwards.clone(),
            ssh_port: network::ssh_port(&self.forwards),
            ssh_key: self.key.as_ref().map(|k| k.private.clone()),
            vsock_cid: self.vsock_cid,
            gdb_port: self.gdb.map(|g| g.port),
            started: vm::now(),
            detached,
        }
    }

    /// What the user is told about reaching this VM, one line each.
    pub fn notes(&self, plan: &Plan, config: &RunConfig, kernel: &std::path::Path) -> Vec<String> {
        let mut v = Vec::new();
        let profile = plan.profile.display();
        if let Some(port) = network::ssh_port(&self.forwards) {
            v.push(format!(
                "sshd is forwarded to 127.0.0.1:{port}: `kiln ssh {profile}` logs in as root"
            ));
        }
        for f in &self.forwards {
            if f.guest != network::SSH_PORT {
                v.push(format!(
                    "guest port {} is forwarded to 127.0.0.1:{}",
                    f.guest, f.host
                ));
            }
        }
        if let Some(g) = self.gdb {
            let vmlinux = config.vmlinux.clone().or_else(|| gdb::find_vmlinux(kernel));
            v.push(format!(
                "gdb stub on 127.0.0.1:{}{} (nokaslr added): {}",
                g.port,
                if g.wait { ", the CPU waits for it" } else { "" },
                g.command(vmlinux.as_deref())
            ));
        }
        v
    }
}

/// Whether QEMU's standard error says a port or CID chosen for this run was taken by
/// another process in the moment between choosing and binding it.
pub fn clashed(stderr: &str) -> bool {
    network::port_clash(stderr) || vsock::cid_clash(stderr)
}
