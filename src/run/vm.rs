//! A running VM as other commands find it: `vm.json` in its run directory (pid, monitor
//! socket, forwarded ports, SSH key, gdb port), and a link to that directory in the
//! user's runtime directory so `kiln ps` sees every VM without knowing where it was
//! started. A record whose QEMU is gone is stale and is removed by whoever finds it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::vm::network::Bound;

/// The record's file name in a run directory.
pub const FILE: &str = "vm.json";

/// What kiln knows about a running VM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VmInfo {
    /// The image's name.
    pub name: String,
    /// The profile it was booted from.
    pub profile: PathBuf,
    /// The run directory.
    pub dir: PathBuf,
    /// QEMU's process id.
    pub pid: u32,
    /// QEMU's monitor (QMP) socket.
    pub qmp: PathBuf,
    /// The serial console's log; None when the console is a terminal.
    pub console: Option<PathBuf>,
    /// Ports forwarded from 127.0.0.1.
    pub forwards: Vec<Bound>,
    /// The host port forwarded to the guest's sshd.
    pub ssh_port: Option<u16>,
    /// The private key `kiln ssh` uses.
    pub ssh_key: Option<PathBuf>,
    /// The guest's vsock CID, where the host has vhost-vsock.
    pub vsock_cid: Option<u32>,
    /// The gdb stub's port.
    pub gdb_port: Option<u16>,
    /// Unix time QEMU started.
    pub started: u64,
    /// Started with `kiln boot --detach` (no kiln process watches it).
    pub detached: bool,
}

impl VmInfo {
    /// Writes the record into its run directory and links it from the runtime directory.
    pub fn save(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        crate::util::atomic::write(&self.dir.join(FILE), text.as_bytes())?;
        let reg = registry();
        std::fs::create_dir_all(&reg).with_context(|| format!("creating {}", reg.display()))?;
        let link = reg.join(self.pid.to_string());
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&self.dir, &link)
            .with_context(|| format!("creating {}", link.display()))?;
        Ok(())
    }

    /// Reads the record in run directory `dir`.
    pub fn load(dir: &Path) -> Option<VmInfo> {
        let text = std::fs::read_to_string(dir.join(FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Whether its QEMU still runs: the process exists, is not a zombie, and is the QEMU
    /// that serves this record's monitor (not another process that reused the pid).
    pub fn alive(&self) -> bool {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let zombie = stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'));
        let qmp = self.qmp.to_string_lossy();
        !zombie
            && String::from_utf8_lossy(&cmdline)
                .split('\0')
                .any(|a| a.contains(qmp.as_ref()))
    }

    /// Removes the record, its link and its monitor socket (the VM is gone).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(self.dir.join(FILE));
        let _ = std::fs::remove_file(registry().join(self.pid.to_string()));
        let _ = std::fs::remove_file(&self.qmp);
    }
}

/// The user's runtime directory for kiln: $XDG_RUNTIME_DIR/kiln, else /tmp/kiln-UID.
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("kiln"),
        // SAFETY: getuid has no preconditions and cannot fail.
        _ => PathBuf::from(format!("/tmp/kiln-{}", unsafe { libc::getuid() })),
    }
}

fn registry() -> PathBuf {
    runtime_dir().join("vms")
}

/// Every record under `runs` (an image's run directories, matrix cells included), with
/// stale ones removed, newest first.
pub fn running_under(runs: &Path) -> Vec<VmInfo> {
    let mut found = Vec::new();
    for e in walkdir::WalkDir::new(runs)
        .max_depth(4)
        .into_iter()
        .flatten()
        .filter(|e| e.file_name() == FILE)
    {
        let Some(dir) = e.path().parent() else {
            continue;
        };
        if let Some(info) = VmInfo::load(dir) {
            if info.alive() {
                found.push(info);
            } else {
                info.remove();
            }
        }
    }
    found.sort_by(|a, b| b.started.cmp(&a.started).then(b.pid.cmp(&a.pid)));
    found
}

/// Every running VM of this user, stale records removed, oldest first.
pub fn running() -> Vec<VmInfo> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(registry()) else {
        return found;
    };
    for e in entries.flatten() {
        let link = e.path();
        match std::fs::read_link(&link)
            .ok()
            .and_then(|d| VmInfo::load(&d))
        {
            Some(info) if info.alive() => found.push(info),
            Some(info) => info.remove(),
            None => {
                let _ = std::fs::remove_file(&link);
            }
        }
    }
    found.sort_by(|a, b| a.started.cmp(&b.started).then(a.pid.cmp(&b.pid)));
    found
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_a_dead_process_is_stale_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("x.runs/1");
        std::fs::create_dir_all(&dir).unwrap();
        // A process that is not QEMU serving this monitor: our own test process.
        let info = VmInfo {
            name: "x".into(),
            profile: "x.toml".into(),
            dir: dir.clone(),
            pid: std::process::id(),
            qmp: dir.join("qmp.sock"),
            console: None,
            forwards: vec![],
            ssh_port: Some(2222),
            ssh_key: None,
            vsock_cid: None,
            gdb_port: None,
            started: now(),
            detached: true,
        };
        crate::util::atomic::write(
            &dir.join(FILE),
            serde_json::to_string(&info).unwrap().as_bytes(),
        )
        .unwrap();
        assert_eq!(VmInfo::load(&dir), Some(info.clone()));
        assert!(
            !info.alive(),
            "the pid is reused by a process that is not this VM"
        );
        assert!(running_under(&d.path().join("x.runs")).is_empty());
        assert!(!dir.join(FILE).exists(), "the stale record is cleaned");
    }
}
