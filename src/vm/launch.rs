//! From a plan and a run configuration to a machine description.

use std::path::Path;

use anyhow::{bail, Result};

use super::qemu::{Disk, Launch, BASE_CMDLINE};
use crate::output::options::Format;
use crate::plan::{KernelPlan, Plan, RunConfig};

/// The virtio serial the root disk carries.
pub const ROOT_SERIAL: &str = "kiln-root";

/// The word a run of the host's userspace adds to the kernel command line.
pub const HOST_SKIPS_CRYPTO_SELF_TESTS: &str = "cryptomgr.notests";

/// The machine that boots `plan`'s image under `run`. With `persist`, the guest's writes
/// reach a disk image; otherwise they go to a throwaway overlay.
pub fn launch(plan: &Plan, run: &RunConfig, persist: bool) -> Result<Launch> {
    let kernel = match &plan.kernel {
        KernelPlan::Host(k) => k.clone(),
        KernelPlan::Package { vmlinuz, .. } => vmlinuz.clone(),
        KernelPlan::Tree(t) => t.image.clone(),
        KernelPlan::None => bail!(
            "{}: no kernel to boot; set [kernel] path in the profile or pass --kernel PATH",
            plan.profile.display()
        ),
    };
    let mut disks = Vec::new();
    let initrd = match plan.format {
        Format::Initramfs => Some(plan.image.clone()),
        Format::Disk => {
            let mut root = Disk::raw(plan.image.clone(), ROOT_SERIAL);
            root.snapshot = !persist;
            disks.push(root);
            plan.boot_initrd.clone()
        }
        Format::Tar => bail!(
            "{}: a tar image cannot be booted; use output.format = \"initramfs\" or \"disk\"",
            plan.profile.display()
        ),
    };
    let mut cmdline: Vec<String> = BASE_CMDLINE.iter().map(|s| s.to_string()).collect();
    if let Some(uuid) = &plan.root_partuuid {
        cmdline.push(format!("root=PARTUUID={uuid}"));
        cmdline.push("rw".into());
        // A test VM must never stop at systemd-firstboot's questions on the console.
        cmdline.push("systemd.firstboot=off".into());
    }
    if let Some(t) = &run.test {
        // The image carries every test; this word picks the one this boot runs.
        cmdline.push(format!("kiln.test={t}"));
    }
    if plan.run.host.is_some() {
        // A run of the host's userspace is a command under a kernel, not a check of the
        // kernel's crypto: its self-tests take a tenth of the boot under TCG. Before the
        // profile's and the user's words, so `cryptomgr.notests=0` there runs them.
        cmdline.push(HOST_SKIPS_CRYPTO_SELF_TESTS.into());
    }
    cmdline.extend(run.cmdline.iter().cloned());
    Ok(Launch {
        binary: run.qemu.clone(),
        machine: run.machine.clone(),
        cpu: run.cpu.clone(),
        memory_mib: run.memory >> 20,
        cpus: run.cpus,
        kernel,
        pvh: None,
        initrd,
        disks,
        cmdline,
        devices: Vec::new(),
        extra_args: run.qemu_args.clone(),
    })
}

/// Before starting QEMU: every file the command names must exist.
pub fn check_files(profile: &Path, l: &Launch) -> Result<()> {
    if !l.kernel.exists() {
        bail!(
            "kernel {} does not exist; run `kiln build {}` (for a packaged kernel), build it, or pass another with --kernel",
            l.kernel.display(),
            profile.display()
        );
    }
    for f in l.initrd.iter().chain(l.disks.iter().map(|d| &d.path)) {
        if !f.exists() {
            bail!(
                "{} does not exist; run `kiln build {}` first",
                f.display(),
                profile.display()
            );
        }
    }
    Ok(())
}
