//! From a profile and its build plan to a machine description, with command-line overrides.

use std::time::Duration;

use anyhow::{bail, Result};

use super::qemu::{Disk, Launch, BASE_CMDLINE};
use crate::build::{KernelPlan, Plan};
use crate::profile::{Accel, Format, LoadedProfile, Size};

/// Settings given on the command line; each wins over the profile.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub qemu_binary: Option<String>,
    pub machine: Option<String>,
    pub cpu: Option<String>,
    pub memory: Option<Size>,
    pub cpus: Option<u32>,
    pub accel: Option<Accel>,
    /// Extra kernel command-line words.
    pub append: Vec<String>,
    /// Extra QEMU arguments.
    pub qemu_args: Vec<String>,
    pub timeout: Option<Duration>,
    /// Let the guest's writes reach the disk image (otherwise they go to a throwaway overlay).
    pub persist: bool,
}

pub const DEFAULT_MEMORY: u64 = 1 << 30;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

pub fn accel(lp: &LoadedProfile, o: &Overrides) -> Accel {
    o.accel.or(lp.profile.qemu.accel).unwrap_or_default()
}

pub fn qemu_binary(lp: &LoadedProfile, o: &Overrides) -> String {
    o.qemu_binary
        .clone()
        .or_else(|| lp.profile.qemu.binary.clone())
        .unwrap_or_else(|| "qemu-system-x86_64".to_string())
}

pub fn timeout(lp: &LoadedProfile, o: &Overrides) -> Duration {
    o.timeout
        .or_else(|| {
            lp.profile
                .test
                .as_ref()
                .and_then(|t| t.timeout.map(|s| s.0))
        })
        .unwrap_or(DEFAULT_TIMEOUT)
}

pub fn launch(lp: &LoadedProfile, plan: &Plan, o: &Overrides) -> Result<Launch> {
    let q = &lp.profile.qemu;
    let kernel = match &plan.kernel {
        KernelPlan::Host(k) => k.clone(),
        KernelPlan::Package { vmlinuz, .. } => vmlinuz.clone(),
        KernelPlan::None => bail!(
            "{}: no kernel to boot; set [kernel] path in the profile or pass --kernel PATH",
            lp.path.display()
        ),
    };
    let mut disks = Vec::new();
    let initrd = match plan.format {
        Format::Initramfs => Some(plan.image.clone()),
        Format::Disk => {
            disks.push(Disk {
                path: plan.image.clone(),
                format: "raw".into(),
                serial: "kiln-root".into(),
                read_only: false,
                snapshot: !o.persist,
            });
            plan.boot_initrd.clone()
        }
        Format::Tar => bail!(
            "{}: a tar image cannot be booted; use output.format = \"initramfs\" or \"disk\"",
            lp.path.display()
        ),
    };
    let mut cmdline: Vec<String> = BASE_CMDLINE.iter().map(|s| s.to_string()).collect();
    if let Some(uuid) = &plan.root_partuuid {
        cmdline.push(format!("root=PARTUUID={uuid}"));
        cmdline.push("rw".into());
        // A test VM must never stop at systemd-firstboot's questions on the console.
        cmdline.push("systemd.firstboot=off".into());
    }
    cmdline.extend(lp.profile.kernel.cmdline.iter().cloned());
    cmdline.extend(o.append.iter().cloned());
    let mut extra_args = q.args.clone();
    extra_args.extend(o.qemu_args.iter().cloned());
    Ok(Launch {
        binary: qemu_binary(lp, o),
        machine: o
            .machine
            .clone()
            .or_else(|| q.machine.clone())
            .unwrap_or_else(|| "q35".to_string()),
        cpu: o.cpu.clone().or_else(|| q.cpu.clone()),
        memory_mib: o.memory.or(q.memory).map(|s| s.0).unwrap_or(DEFAULT_MEMORY) >> 20,
        cpus: o.cpus.or(q.cpus).unwrap_or(2),
        kernel,
        initrd,
        disks,
        cmdline,
        extra_args,
    })
}

/// Before starting QEMU: every file the command names must exist.
pub fn check_files(lp: &LoadedProfile, l: &Launch) -> Result<()> {
    if !l.kernel.exists() {
        bail!(
            "kernel {} does not exist; run `kiln build {}` (for a packaged kernel), build it, or pass another with --kernel",
            l.kernel.display(),
            lp.path.display()
        );
    }
    for f in l.initrd.iter().chain(l.disks.iter().map(|d| &d.path)) {
        if !f.exists() {
            bail!(
                "{} does not exist; run `kiln build {}` first",
                f.display(),
                lp.path.display()
            );
        }
    }
    Ok(())
}
