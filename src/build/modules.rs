//! Kernel modules in the image: the ones an initramfs's init loads (with their
//! dependencies), and a disk's whole module tree indexed at first boot.

use anyhow::{bail, Result};

use crate::plan::Plan;
use crate::profile::{Format, LoadedProfile, NetworkMode};
use crate::source::kernel::{self, KernelFiles, LoadableModule};
use crate::source::FetchedPackages;
use crate::template;
use crate::tree::{Data, Entry, Kind, Meta, Tree};
use crate::util::progress;

/// Modules a virtio disk with ext4 needs, when the kernel does not build them in: the
/// root disk of a disk image, the results disk of a test.
pub const DISK_MODULES: [&str; 4] = ["virtio_pci", "virtio_blk", "ext4", "crc32c_generic"];

/// Modules a virtio NIC needs, when the kernel does not build them in.
pub const NET_MODULES: [&str; 2] = ["virtio_pci", "virtio_net"];

/// The virtio-serial driver: the status port, and the journal's.
pub const SERIAL_MODULES: [&str; 1] = ["virtio_console"];

/// Modules the image's own init loads: the profile's, plus what a results disk needs.
pub fn image_modules(
    lp: &LoadedProfile,
    plan: &Plan,
    kernel: Option<&KernelFiles>,
) -> Result<Vec<LoadableModule>> {
    if plan.format != Format::Initramfs {
        return Ok(Vec::new());
    }
    let mut wanted = lp.profile.kernel.modules.clone();
    let mut add = |names: &[&str]| {
        if let Some(k) = kernel {
            for m in names {
                if kernel::has_module(k, m) && !wanted.iter().any(|w| w == m) {
                    wanted.push(m.to_string());
                }
            }
        }
    };
    if plan.has_results() {
        add(&DISK_MODULES);
    }
    if plan.run.network.mode == Some(NetworkMode::User) {
        add(&NET_MODULES);
    }
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    match kernel {
        Some(k) => kernel::closure(k, &wanted),
        None => bail!(
            "{}: [kernel] modules needs [kernel] package, which provides them",
            lp.path.display()
        ),
    }
}

/// Where an initramfs lists the modules its init loads, one path a line.
pub const MODULES_LIST: &str = "usr/lib/kiln/modules.list";

/// Puts loadable modules in the tree with the list an initramfs's init loads them from.
pub fn insert_module_list(tree: &mut Tree, modules: &[LoadableModule], epoch: i64) -> Result<()> {
    insert_modules(tree, modules, epoch)?;
    if !modules.is_empty() {
        let mut list = module_paths(modules).join("\n");
        list.push('\n');
        tree.insert(
            MODULES_LIST,
            Entry::new(Kind::File(Data::bytes(list)), Meta::new(0o644, epoch)),
        )?;
    }
    Ok(())
}

/// Puts loadable modules at their paths in the tree.
pub fn insert_modules(tree: &mut Tree, modules: &[LoadableModule], epoch: i64) -> Result<()> {
    for m in modules {
        tree.insert(
            &m.image_path,
            Entry::new(
                Kind::File(Data::Bytes(m.elf.clone())),
                Meta::new(0o644, epoch),
            ),
        )?;
    }
    Ok(())
}

/// The modules' image paths, for templates (`/usr/lib/modules/…`).
pub fn module_paths(modules: &[LoadableModule]) -> Vec<String> {
    modules
        .iter()
        .map(|m| format!("/{}", m.image_path))
        .collect()
}

/// Copies the packaged kernel's module tree into a disk image (see `[kernel]
/// install_modules`) with a unit that indexes it at first boot, since depmod is a
/// maintainer-script job kiln does not run. Returns whether the unit was added.
pub fn install_kernel_modules(
    tree: &mut Tree,
    lp: &LoadedProfile,
    plan: &Plan,
    pkgs: &dyn FetchedPackages,
) -> Result<bool> {
    let k = &lp.profile.kernel;
    let wanted = k.install_modules.unwrap_or(plan.format == Format::Disk);
    let Some(files) = pkgs.kernel() else {
        return Ok(false);
    };
    if !wanted {
        return Ok(false);
    }
    let n = pkgs.install_kernel_modules(tree, plan.epoch)?;
    if n == 0 {
        return Ok(false);
    }
    if !tree.contains("usr/sbin/depmod") && !tree.contains("usr/bin/kmod") {
        progress::warn(format!(
            "kernel {} modules copied into the image, but it has no kmod to index them; add \"kmod\" to [distribution] packages",
            files.release
        ));
        return Ok(false);
    }
    tree.insert(
        "usr/lib/systemd/system/kiln-depmod.service",
        Entry::new(
            Kind::File(Data::bytes(template::DEPMOD_UNIT.to_string())),
            Meta::new(0o644, plan.epoch),
        ),
    )?;
    progress::step(format!(
        "kernel modules: {n} entries of {} in the image, indexed at first boot",
        files.release
    ));
    Ok(true)
}
