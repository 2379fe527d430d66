//! The initramfs that boots a disk image with a packaged kernel or one from a build tree. Distribution kernels
//! build virtio as modules, so something must load them before the root file system can
//! be found: a static busybox from the package source, the modules the root disk needs
//! in dependency order, and an /init that finds `root=PARTUUID=…` and switches to it.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::modules::{insert_modules, module_paths, DISK_MODULES, NET_MODULES, SERIAL_MODULES};
use crate::output::cpio::{self, CpioOptions};
use crate::plan::Plan;
use crate::profile::LoadedProfile;
use crate::source::kernel::{self, KernelFiles};
use crate::source::FetchedPackages;
use crate::template::{self, Renderer};
use crate::tree::{Data, Entry, Kind, Meta, Tree};
use crate::util::progress;

/// Writes the boot initramfs to `dest`.
pub fn build(
    lp: &LoadedProfile,
    plan: &Plan,
    k: &KernelFiles,
    pkgs: &dyn FetchedPackages,
    dest: &Path,
    renderer: &Renderer,
) -> Result<()> {
    build_for(lp, plan, k, pkgs, &|_| Ok(()), dest, renderer)
}

/// Writes to `dest` the boot initramfs for kernel `k`, with the boot shell from `pkgs`
/// and whatever `extra` adds.
pub fn build_for(
    lp: &LoadedProfile,
    plan: &Plan,
    k: &KernelFiles,
    pkgs: &dyn FetchedPackages,
    extra: &dyn Fn(&mut Tree) -> Result<()>,
    dest: &Path,
    renderer: &Renderer,
) -> Result<()> {
    let epoch = plan.epoch;
    let mut tree = Tree::new(epoch);
    pkgs.install_boot_shell(&mut tree, epoch)?;
    extra(&mut tree)?;
    tree.remove_tree("usr/share");
    tree.insert(
        "usr/bin/sh",
        Entry::new(Kind::Symlink("busybox".into()), Meta::new(0o777, epoch)),
    )?;
    if !kernel::has_module(k, "virtio_blk") {
        anyhow::bail!(
            "kernel {} has no virtio_blk driver; it cannot boot a virtio disk",
            k.release
        );
    }
    // The NIC's driver too: a disk without the kernel's module tree (install_modules =
    // false, which saves the first boot's depmod) still gets a network.
    let mut wanted: Vec<String> = DISK_MODULES
        .iter()
        .chain(NET_MODULES.iter())
        .chain(SERIAL_MODULES.iter())
        .filter(|m| kernel::has_module(k, m))
        .map(|m| m.to_string())
        .collect();
    wanted.extend(lp.profile.kernel.modules.iter().cloned());
    let modules = kernel::closure(k, &wanted)?;
    insert_modules(&mut tree, &modules, epoch)?;
    let data = json!({ "kiln": { "name": plan.name, "modules": module_paths(&modules) } });
    let init = renderer.render("disk-init (built in)", template::DISK_INIT, &data)?;
    tree.insert(
        "init",
        Entry::new(Kind::File(Data::bytes(init)), Meta::new(0o755, epoch)),
    )?;
    cpio::write(&tree, dest, &CpioOptions::default())?;
    progress::step(format!(
        "boot initramfs {} (busybox, {} modules: {})",
        dest.display(),
        modules.len(),
        modules
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    Ok(())
}
