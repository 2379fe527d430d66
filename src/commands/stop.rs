//! `kiln stop` and `kiln ps`: the running VMs kiln started.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use super::{ExitStatus, Printer, ProfileArgs};
use crate::run::vm::{self, VmInfo};
use crate::vm::qmp::Qmp;

/// How a VM was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The guest powered off.
    PoweredOff,
    /// QEMU quit when told to.
    Quit,
    /// QEMU was killed.
    Killed,
}

fn wait_gone(v: &VmInfo, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if !v.alive() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    !v.alive()
}

/// Asks the guest to power off over SSH, where it has sshd: a minimal system has no
/// daemon that acts on the ACPI power button (systemd-logind needs D-Bus).
fn poweroff_over_ssh(v: &VmInfo) {
    let Ok((opts, dest)) = super::vm_access::ssh_options(v, false) else {
        return;
    };
    let child = std::process::Command::new("ssh")
        .args(&opts)
        .args([
            "-o",
            "ConnectTimeout=3",
            &dest,
            "systemctl poweroff || poweroff",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Ok(mut c) = child {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Stops one VM: a power-off (ACPI, and over SSH where the guest has sshd), then after
/// `grace` QEMU's `quit`, then SIGKILL.
pub fn stop_vm(v: &VmInfo, grace: Duration) -> Stopped {
    if !grace.is_zero() && v.ssh_port.is_some() {
        poweroff_over_ssh(v);
    }
    let monitor = Qmp::connect(&v.qmp, Duration::from_secs(5));
    let how = match monitor {
        Ok(mut q) => {
            if !grace.is_zero()
                && q.execute("system_powerdown", json!({})).is_ok()
                && wait_gone(v, grace)
            {
                Stopped::PoweredOff
            } else {
                // QEMU may close the connection before it answers.
                let _ = q.execute("quit", json!({}));
                if wait_gone(v, Duration::from_secs(5)) {
                    Stopped::Quit
                } else {
                    Stopped::Killed
                }
            }
        }
        Err(_) => Stopped::Killed,
    };
    if how == Stopped::Killed && v.alive() {
        // SAFETY: kill(2) on a pid whose record shows it is this VM's QEMU.
        unsafe { libc::kill(v.pid as i32, libc::SIGKILL) };
        wait_gone(v, Duration::from_secs(5));
    }
    v.remove();
    if let Some(note) = crate::run::journal::collect(&v.dir) {
        crate::util::progress::step(note);
    }
    how
}

/// `kiln stop`: stops the profile's newest running VM (or the one with `pid`, or all).
pub fn stop(
    a: &ProfileArgs,
    pid: Option<u32>,
    all: bool,
    grace: Duration,
    printer: &Printer,
) -> Result<ExitStatus> {
    let targets = if all {
        let lp = super::load(&a.profile)?;
        let plan = crate::plan::Plan::new(&lp, &a.build)?;
        vm::running_under(&plan.runs_dir())
    } else {
        vec![super::vm_access::find_vm(a, pid)?]
    };
    if targets.is_empty() {
        printer.step(format!("no running VM of {}", a.profile.display()));
    }
    for v in targets {
        let start = Instant::now();
        let how = stop_vm(&v, grace);
        printer.step(format!(
            "stopped {} (pid {}) in {:.1}s: {}",
            v.name,
            v.pid,
            start.elapsed().as_secs_f64(),
            match how {
                Stopped::PoweredOff => "the guest powered off",
                Stopped::Quit => "QEMU quit (the guest did not power off in time)",
                Stopped::Killed => "QEMU killed",
            }
        ));
    }
    Ok(ExitStatus::SUCCESS)
}

/// `kiln ps`: every running VM of this user, as a table or JSON lines.
pub fn ps(json_out: bool, printer: &Printer) -> Result<ExitStatus> {
    let vms = vm::running();
    if json_out {
        for v in &vms {
            printer.out(serde_json::to_string(v)?);
        }
        return Ok(ExitStatus::SUCCESS);
    }
    if vms.is_empty() {
        printer.step("no running VMs");
        return Ok(ExitStatus::SUCCESS);
    }
    printer.out(format!(
        "{:<20} {:>8} {:>8} {:>6} {:>6}  RUN DIRECTORY",
        "NAME", "PID", "UPTIME", "SSH", "GDB"
    ));
    let now = vm::now();
    for v in &vms {
        let port = |p: Option<u16>| p.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        printer.out(format!(
            "{:<20} {:>8} {:>7}s {:>6} {:>6}  {}",
            v.name,
            v.pid,
            now.saturating_sub(v.started),
            port(v.ssh_port),
            port(v.gdb_port),
            v.dir.display()
        ));
    }
    Ok(ExitStatus::SUCCESS)
}
