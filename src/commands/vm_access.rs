//! `kiln ssh`, `kiln cp` and `kiln ssh-config`: into a running VM with the host's own
//! ssh and scp (no SSH library), with the image's key and the forwarded port from the
//! VM's record.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{load, ExitStatus, Printer, ProfileArgs};
use crate::plan::Plan;
use crate::run::vm::{self, VmInfo};
use crate::vm::vsock;

/// The running VM of a profile: the newest, or the one whose pid is `pid`.
pub fn find_vm(a: &ProfileArgs, pid: Option<u32>) -> Result<VmInfo> {
    let lp = load(&a.profile)?;
    let plan = Plan::new(&lp, &a.build)?;
    let all = vm::running_under(&plan.runs_dir());
    let found = match pid {
        Some(p) => all.into_iter().find(|v| v.pid == p),
        None => all.into_iter().next(),
    };
    found.with_context(|| {
        format!(
            "no running VM of {}{}; start one with `kiln boot {} --detach` (`kiln ps` lists running VMs)",
            a.profile.display(),
            pid.map(|p| format!(" with pid {p}")).unwrap_or_default(),
            a.profile.display()
        )
    })
}

/// The ssh options that reach `v` as root with kiln's key: by vsock where the VM has
/// one and socat is installed, else through the forwarded port.
pub(crate) fn ssh_options(v: &VmInfo, scp: bool) -> Result<(Vec<String>, String)> {
    let key = v.ssh_key.as_ref().with_context(|| {
        format!(
            "{} has no sshd that kiln set up (install openssh-server in the image)",
            v.name
        )
    })?;
    let mut o: Vec<String> = [
        "-i".to_string(),
        key.display().to_string(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        // Host keys are made on the guest's first boot; each run directory has its own
        // known hosts, so a new VM is accepted and a changed key within one is not.
        "StrictHostKeyChecking=accept-new".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", v.dir.join("known_hosts").display()),
        "-o".into(),
        "LogLevel=ERROR".into(),
    ]
    .into();
    if let (Some(cid), true) = (v.vsock_cid, which("socat")) {
        o.extend([
            "-o".into(),
            format!("ProxyCommand={}", vsock::proxy_command(cid)),
        ]);
        return Ok((o, "root@kiln-vsock".into()));
    }
    let port = v.ssh_port.with_context(|| {
        format!(
            "{} has no forwarded SSH port ([network] mode is \"none\")",
            v.name
        )
    })?;
    o.extend([if scp { "-P" } else { "-p" }.into(), port.to_string()]);
    Ok((o, "root@127.0.0.1".into()))
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Waits until `v` accepts kiln's key (`ssh … true` succeeds), QEMU exits, or `wait`
/// passes. The probe is a whole login, not a peek at sshd's banner: OpenSSH 9.8 and
/// later refuse a source for a while after it disconnects without authenticating
/// (PerSourcePenalties), which a banner probe would trigger.
pub fn wait_for_sshd(v: &VmInfo, wait: Duration, printer: &Printer) -> Result<()> {
    let (mut opts, dest) = ssh_options(v, false)?;
    opts.extend(["-o".into(), "ConnectTimeout=5".into()]);
    let start = Instant::now();
    let mut told = false;
    loop {
        let ok = Command::new("ssh")
            .args(&opts)
            .arg(&dest)
            .arg("true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running ssh (install openssh-client)")?
            .success();
        if ok {
            return Ok(());
        }
        if !v.alive() {
            let console = v
                .console
                .as_ref()
                .map(|c| format!("; its console is in {}", c.display()))
                .unwrap_or_default();
            bail!(
                "the VM {} (pid {}) exited before sshd answered{console}",
                v.name,
                v.pid
            );
        }
        if start.elapsed() > wait {
            bail!(
                "sshd in {} did not let kiln in within {}s; is it enabled in the image? Look at {} or wait longer with --wait",
                v.name,
                wait.as_secs(),
                v.console
                    .as_ref()
                    .map(|c| c.display().to_string())
                    .unwrap_or_else(|| "its console".into())
            );
        }
        if !told {
            printer.step(format!(
                "waiting for sshd in {} (up to {}s)",
                v.name,
                wait.as_secs()
            ));
            told = true;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn status_of(program: &str, c: &mut Command) -> Result<ExitStatus> {
    let s = c
        .status()
        .with_context(|| format!("running {program} (install openssh-client)"))?;
    Ok(ExitStatus::from_code(s.code().unwrap_or(255)))
}

/// `kiln ssh`: a shell, or `command`, in the running VM as root; exits with the remote
/// status (255 when ssh itself failed).
pub fn ssh(
    a: &ProfileArgs,
    pid: Option<u32>,
    command: &[String],
    wait: Duration,
    printer: &Printer,
) -> Result<ExitStatus> {
    let v = find_vm(a, pid)?;
    wait_for_sshd(&v, wait, printer)?;
    let (opts, dest) = ssh_options(&v, false)?;
    let mut c = Command::new("ssh");
    c.args(&opts);
    if command.is_empty() {
        c.arg("-t");
    }
    c.arg(dest);
    if !command.is_empty() {
        c.arg("--").args(command);
    }
    status_of("ssh", &mut c)
}

/// `kiln cp`: copies files out of (`:PATH`) or into the running VM with scp; exactly
/// one side is in the guest.
pub fn cp(
    a: &ProfileArgs,
    pid: Option<u32>,
    sources: &[String],
    dest: &str,
    wait: Duration,
    printer: &Printer,
) -> Result<ExitStatus> {
    let guest = |s: &str| s.starts_with(':');
    let into = guest(dest);
    if sources.is_empty() {
        bail!("kiln cp: name a source and a destination, e.g. `kiln cp PROFILE :/tmp/kmap ./kmap`");
    }
    if sources.iter().any(|s| guest(s) == into) {
        bail!(
            "kiln cp: either every source is in the guest (`:PATH`) and the destination on the host, or the other way round"
        );
    }
    let v = find_vm(a, pid)?;
    wait_for_sshd(&v, wait, printer)?;
    let (opts, dest_host) = ssh_options(&v, true)?;
    let remote = |s: &str| format!("{dest_host}:{}", &s[1..]);
    let mut c = Command::new("scp");
    c.args(&opts).arg("-r").arg("-p");
    for s in sources {
        c.arg(if into { s.clone() } else { remote(s) });
    }
    c.arg(if into { remote(dest) } else { dest.to_string() });
    status_of("scp", &mut c)
}

/// `kiln ssh-config`: a `Host` block for ~/.ssh/config, so plain `ssh NAME`, scp, rsync
/// and editors' remote plugins reach the running VM.
pub fn ssh_config(a: &ProfileArgs, pid: Option<u32>, printer: &Printer) -> Result<ExitStatus> {
    let v = find_vm(a, pid)?;
    let port = v
        .ssh_port
        .with_context(|| format!("{} has no forwarded SSH port", v.name))?;
    let key = v
        .ssh_key
        .clone()
        .with_context(|| format!("{} has no sshd that kiln set up", v.name))?;
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    printer.out(format!(
        "Host {}\n    HostName 127.0.0.1\n    Port {port}\n    User root\n    IdentityFile {}\n    IdentitiesOnly yes\n    StrictHostKeyChecking accept-new\n    UserKnownHostsFile {}",
        v.name,
        abs(key).display(),
        abs(v.dir.join("known_hosts")).display()
    ));
    Ok(ExitStatus::SUCCESS)
}
