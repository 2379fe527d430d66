//! The initramfs that boots a disk image with a Debian kernel. Debian's kernels build
//! virtio as modules, so something must load them before the root file system can be
//! found: busybox (from the same suite), the modules the root disk needs in dependency
//! order, and an /init that finds `root=PARTUUID=…` and switches to it.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use crate::build::{Packages, Plan};
use crate::output::cpio::{self, CpioOptions};
use crate::profile::LoadedProfile;
use crate::progress;
use crate::source::debian::{install, kernel};
use crate::template::{self, Renderer};
use crate::tree::{Data, Entry, Kind, Meta, Tree};

/// Modules a virtio root disk with ext4 needs, when they are not built in.
const ROOT_DISK_MODULES: [&str; 4] = ["virtio_pci", "virtio_blk", "ext4", "crc32c_generic"];

pub fn build(
    lp: &LoadedProfile,
    plan: &Plan,
    pkgs: &Packages,
    dest: &Path,
    renderer: &Renderer,
) -> Result<()> {
    let k = pkgs
        .kernel
        .as_ref()
        .context("the boot initramfs needs the kernel's files")?;
    let epoch = plan.epoch;
    let mut tree = Tree::new(epoch);
    let busybox: Vec<install::Package> = pkgs
        .boot
        .iter()
        .filter(|(p, _)| p.name == "busybox-static")
        .map(|(locked, unpacked)| install::Package { locked, unpacked })
        .collect();
    if busybox.is_empty() {
        anyhow::bail!(
            "the lock has no busybox-static for the boot initramfs; run `kiln lock --update`"
        );
    }
    install::install(&mut tree, &busybox, epoch)?;
    tree.remove_tree("usr/share");
    tree.insert(
        "usr/bin/sh",
        Entry::new(Kind::Symlink("busybox".into()), Meta::new(0o777, epoch)),
    )?;
    let mut wanted: Vec<String> = ROOT_DISK_MODULES
        .iter()
        .filter(|m| kernel::has_module(k, m))
        .map(|m| m.to_string())
        .collect();
    if !kernel::has_module(k, "virtio_blk") {
        anyhow::bail!(
            "kernel {} has no virtio_blk driver; it cannot boot a virtio disk",
            k.release
        );
    }
    wanted.extend(lp.profile.kernel.modules.iter().cloned());
    let modules = kernel::closure(k, &wanted)?;
    for m in &modules {
        tree.insert(
            &m.image_path,
            Entry::new(
                Kind::File(Data::Bytes(m.elf.clone())),
                Meta::new(0o644, epoch),
            ),
        )?;
    }
    let paths: Vec<String> = modules
        .iter()
        .map(|m| format!("/{}", m.image_path))
        .collect();
    let data = json!({ "kiln": { "name": plan.name, "modules": paths } });
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
