//! Kernel modules in the image: the ones an initramfs's init loads (with their
//! dependencies), and a disk's whole module tree indexed at first boot.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};

use crate::plan::{KernelPlan, Plan};
use crate::profile::{Format, LoadedProfile, NetworkMode};
use crate::source::kernel::{self, KernelFiles, LoadableModule};
use crate::source::kernel_tree::KernelTree;
use crate::source::FetchedPackages;
use crate::template;
use crate::tree::{Data, Entry, Kind, Meta, Tree};
use crate::util::progress;
use crate::vm::share::{self, Transport};

/// Modules a virtio disk with ext4 needs, when the kernel does not build them in: the
/// root disk of a disk image, the results disk of a test.
pub const DISK_MODULES: [&str; 4] = ["virtio_pci", "virtio_blk", "ext4", "crc32c_generic"];

/// Modules a virtio NIC needs, when the kernel does not build them in.
pub const NET_MODULES: [&str; 2] = ["virtio_pci", "virtio_net"];

/// The virtio-serial driver: the status port, and the journal's.
pub const SERIAL_MODULES: [&str; 1] = ["virtio_console"];

/// The modules an initramfs carries: those its init loads at boot, and sets that a host
/// run's init loads only when it uses them (the one transport it mounts the shares with,
/// the overlay for the profile's own files). Under emulation each module costs tens of
/// milliseconds, and a run uses one transport of two.
#[derive(Debug, Default, Clone)]
pub struct ImageModules {
    /// What the init loads before anything else, in dependency order.
    pub boot: Vec<LoadableModule>,
    /// Named sets (`9p`, `virtiofs`, `overlay`), each in dependency order and without
    /// what `boot` loads already.
    pub on_demand: Vec<(&'static str, Vec<LoadableModule>)>,
}

impl ImageModules {
    /// Every module, once: the boot's first.
    pub fn all(&self) -> impl Iterator<Item = &LoadableModule> {
        let mut seen = BTreeSet::new();
        self.boot
            .iter()
            .chain(self.on_demand.iter().flat_map(|(_, set)| set))
            .filter(move |m| seen.insert(m.name.as_str()))
    }

    /// What decides the bytes of the lists: each set's name and its modules' names.
    pub fn names(&self) -> Vec<(&str, Vec<&str>)> {
        fn names(v: &[LoadableModule]) -> Vec<&str> {
            v.iter().map(|m| m.name.as_str()).collect()
        }
        std::iter::once(("boot", names(&self.boot)))
            .chain(self.on_demand.iter().map(|(n, set)| (*n, names(set))))
            .collect()
    }
}

/// The on-demand sets of a host run, with the modules each needs where the kernel has
/// them as modules.
fn host_sets() -> [(&'static str, &'static [&'static str]); 3] {
    [
        ("9p", share::needs(Transport::NineP).1),
        ("virtiofs", share::needs(Transport::VirtioFs).1),
        ("overlay", &["overlay"]),
    ]
}

/// Modules the image's own init loads: the profile's, plus what a results disk needs;
/// for a host run, its transports' and the overlay's as sets loaded on demand.
pub fn image_modules(
    lp: &LoadedProfile,
    plan: &Plan,
    kernel: Option<&KernelFiles>,
) -> Result<ImageModules> {
    if plan.format != Format::Initramfs {
        return Ok(ImageModules::default());
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
    if plan.run.host.is_some() {
        add(&["virtio_pci"]);
        add(&SERIAL_MODULES);
    }
    let Some(k) = kernel else {
        // No kernel of its own: each kernel it boots brings its modules (a matrix cell's
        // appended archive), and a kernel image without modules needs them built in.
        if wanted.is_empty() || lp.profile.kernel.path.is_none() {
            return Ok(ImageModules::default());
        }
        bail!(
            "{}: [kernel] modules needs a kernel with modules: [kernel] package or tree (or --kernel-tree)",
            lp.path.display()
        );
    };
    let closure_of = |names: &[String]| -> Result<Vec<LoadableModule>> {
        if names.is_empty() {
            Ok(Vec::new())
        } else {
            kernel::closure(k, names)
        }
    };
    let boot = closure_of(&wanted)?;
    let mut on_demand = Vec::new();
    if plan.run.host.is_some() {
        for (set, names) in host_sets() {
            let present: Vec<String> = names
                .iter()
                .filter(|m| kernel::has_module(k, m))
                .map(|m| m.to_string())
                .collect();
            let mods = closure_of(&present)?
                .into_iter()
                .filter(|m| !boot.iter().any(|b| b.name == m.name))
                .collect();
            on_demand.push((set, mods));
        }
    }
    Ok(ImageModules { boot, on_demand })
}

/// Where a host run's init finds the modules of the on-demand set `set`.
pub fn on_demand_list(set: &str) -> String {
    format!("usr/lib/kiln/modules.{set}")
}

/// Where an initramfs lists the modules its init loads, one path a line.
pub const MODULES_LIST: &str = "usr/lib/kiln/modules.list";

/// Puts loadable modules in the tree with the lists an initramfs's init loads them from
/// (every on-demand set's, even an empty one, so that a kernel's appended archive
/// replaces the image's own), and a `modules.dep` for modprobe beside them.
pub fn insert_module_list(tree: &mut Tree, modules: &ImageModules, epoch: i64) -> Result<()> {
    let all: Vec<LoadableModule> = modules.all().cloned().collect();
    insert_modules(tree, &all, epoch)?;
    let mut by_dir: BTreeMap<String, Vec<ModuleDeps>> = BTreeMap::new();
    for m in &all {
        if let Some(dir) = release_dir(&m.image_path) {
            by_dir.entry(dir).or_default().push(ModuleDeps {
                path: m.image_path.clone(),
                name: m.name.clone(),
                depends: kernel::module_depends(&m.elf)?,
            });
        }
    }
    for (dir, mods) in by_dir {
        tree.insert(
            &format!("{dir}/modules.dep"),
            Entry::new(
                Kind::File(Data::bytes(modules_dep(&dir, &mods))),
                Meta::new(0o644, epoch),
            ),
        )?;
    }
    let list = |mods: &[LoadableModule]| {
        let mut text = module_paths(mods).join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        Entry::new(Kind::File(Data::bytes(text)), Meta::new(0o644, epoch))
    };
    if !modules.boot.is_empty() {
        tree.insert(MODULES_LIST, list(&modules.boot))?;
    }
    for (set, mods) in &modules.on_demand {
        tree.insert(&on_demand_list(set), list(mods))?;
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

/// `…/lib/modules/RELEASE` of a module's path in the image.
fn release_dir(path: &str) -> Option<String> {
    let (before, rest) = path.split_once("lib/modules/")?;
    let release = rest.split('/').next().filter(|r| !r.is_empty())?;
    Some(format!("{before}lib/modules/{release}"))
}

/// A module, where it is in the image and what it depends on, for `modules.dep`.
#[derive(Debug, Clone)]
pub struct ModuleDeps {
    /// Its path in the image, under `DIR` of [`modules_dep`].
    pub path: String,
    /// Its name, with `_` for `-`.
    pub name: String,
    /// The names its `.modinfo` says it depends on.
    pub depends: Vec<String>,
}

/// `modules.dep` as depmod writes it for the modules under `dir` (`…/lib/modules/RELEASE`):
/// one line a module, sorted, its path and every module it needs, directly or not, each
/// before its own dependencies, so modprobe loads the list from its end. Dependencies
/// that are not among `mods` are built in.
pub fn modules_dep(dir: &str, mods: &[ModuleDeps]) -> String {
    let by_name: BTreeMap<&str, &ModuleDeps> = mods.iter().map(|m| (m.name.as_str(), m)).collect();
    let rel = |p: &str| {
        p.strip_prefix(dir)
            .map(|r| r.trim_start_matches('/').to_string())
            .unwrap_or_else(|| p.to_string())
    };
    fn post_order<'a>(
        m: &'a ModuleDeps,
        by_name: &BTreeMap<&str, &'a ModuleDeps>,
        seen: &mut BTreeSet<&'a str>,
        out: &mut Vec<&'a ModuleDeps>,
    ) {
        for d in &m.depends {
            if let Some(dep) = by_name.get(d.as_str()) {
                if seen.insert(dep.name.as_str()) {
                    post_order(dep, by_name, seen, out);
                    out.push(dep);
                }
            }
        }
    }
    let mut lines: Vec<String> = mods
        .iter()
        .map(|m| {
            let mut seen = BTreeSet::from([m.name.as_str()]);
            let mut order = Vec::new();
            post_order(m, &by_name, &mut seen, &mut order);
            let deps: Vec<String> = order.iter().rev().map(|d| rel(&d.path)).collect();
            format!(
                "{}:{}{}\n",
                rel(&m.path),
                if deps.is_empty() { "" } else { " " },
                deps.join(" ")
            )
        })
        .collect();
    lines.sort();
    lines.concat()
}

/// The modules' image paths, for templates (`/usr/lib/modules/…`).
pub fn module_paths(modules: &[LoadableModule]) -> Vec<String> {
    modules
        .iter()
        .map(|m| format!("/{}", m.image_path))
        .collect()
}

/// Copies the kernel's whole module tree into a disk image (see `[kernel]
/// install_modules`): a package's as it ships it, a build tree's as `make
/// modules_install` lays it out, with the unit that writes modprobe's indexes at first
/// boot. Returns whether the unit was added.
pub fn install_kernel_modules(
    tree: &mut Tree,
    lp: &LoadedProfile,
    plan: &Plan,
    pkgs: Option<&dyn FetchedPackages>,
    kernel: Option<&KernelFiles>,
) -> Result<bool> {
    let k = &lp.profile.kernel;
    let wanted = k.install_modules.unwrap_or(plan.format == Format::Disk);
    let Some(files) = kernel else {
        return Ok(false);
    };
    if !wanted {
        return Ok(false);
    }
    let n = match (&plan.kernel, pkgs) {
        (KernelPlan::Tree(t), _) => install_tree_modules(tree, t, files, plan.epoch)?,
        (KernelPlan::Package { .. }, Some(p)) => p.install_kernel_modules(tree, plan.epoch)?,
        _ => 0,
    };
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

/// A build tree's modules, as built (compressed or not), with `modules.order`,
/// `modules.builtin*` and a `modules.dep` read from the modules' own `.modinfo`.
fn install_tree_modules(
    tree: &mut Tree,
    t: &KernelTree,
    files: &KernelFiles,
    epoch: i64,
) -> Result<usize> {
    let dir = format!("lib/modules/{}", files.release);
    let file = |data: Data| Entry::new(Kind::File(data), Meta::new(0o644, epoch));
    let mut deps = Vec::new();
    for (name, (path, data)) in &files.modules {
        tree.insert(path, file(data.clone()))?;
        let elf = kernel::module_bytes(path, data)?;
        deps.push(ModuleDeps {
            path: path.clone(),
            name: name.clone(),
            depends: kernel::module_depends(&elf)?,
        });
    }
    let mut order: Vec<&str> = files
        .modules
        .values()
        .filter_map(|(p, _)| p.strip_prefix(&format!("{dir}/")))
        .collect();
    order.sort();
    let order: String = order.iter().map(|p| format!("{p}\n")).collect();
    let mut generated = vec![
        ("modules.dep", modules_dep(&dir, &deps).into_bytes()),
        ("modules.order", order.into_bytes()),
    ];
    for (name, path) in t.module_metadata() {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        generated.push((name, bytes));
    }
    let n = files.modules.len() + generated.len();
    for (name, text) in generated {
        tree.insert(&format!("{dir}/{name}"), file(Data::bytes(text)))?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, deps: &[&str]) -> ModuleDeps {
        ModuleDeps {
            path: format!("lib/modules/6.6/kernel/{name}.ko"),
            name: name.to_string(),
            depends: deps.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn modules_dep_lists_every_dependency_before_its_own() {
        // a needs b and c; b needs c; c needs d, which is built in.
        let mods = [m("a", &["b", "c"]), m("b", &["c"]), m("c", &["d"])];
        assert_eq!(
            modules_dep("lib/modules/6.6", &mods),
            "kernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko:\n"
        );
        assert_eq!(
            release_dir("usr/lib/modules/6.12-amd64/kernel/x.ko").as_deref(),
            Some("usr/lib/modules/6.12-amd64")
        );
    }
}
