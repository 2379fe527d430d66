//! The layer cache: what the package layers made, kept under a key of everything they
//! read, so that a build whose later layers changed (an overlay file, a template, a test
//! script, the system configuration) takes the packages' tree back instead of installing
//! them again.
//!
//! The package layers are the packages with what their maintainer scripts would have set
//! up, the `remove` patterns, the image's module list and the kernel's module tree. Their
//! key is kiln itself, the packages (which ones, where their unpacked contents are, the
//! archive written into apt's sources), `SOURCE_DATE_EPOCH`, the profile's
//! `[distribution]` and `remove`, what of `[kernel]` chooses the kernel and its modules,
//! and what of the plan chooses modules (the format, a results disk, a network, a host
//! run). A kernel build tree's modules come from the host, which no key of this kind can
//! vouch for: those layers are always made.
//!
//! An entry is the tree in its stored form ([`crate::tree::stored`]) with the packages'
//! units, what making them told the user (told again when taken back) and a checksum;
//! contents stay in the cached packages. The initramfs that boots a disk is made of the
//! packages alone too (the kernel's modules, busybox) and is kept the same way. Every
//! entry carries a CRC-32C of its bytes; a damaged entry is said so and made again. `--rebuild` makes
//! the layers afresh (and keeps the new entry). The [`KEEP`] most recently used entries
//! are kept.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, Result};

use super::uptodate::KeyHasher;
use crate::plan::{KernelPlan, Plan};
use crate::profile::{Kernel, LoadedProfile};
use crate::source::FetchedPackages;
use crate::tree::{stored, Tree};
use crate::util::atomic;
use crate::util::cache::Cache;
use crate::util::progress::{self, Line};

/// Names the entries' form; bumped when it (or what a key covers) changes.
const FORMAT: u32 = 4;

/// Entries kept: a few profiles' worth, each up to a few MiB.
pub const KEEP: usize = 16;

/// What the package layers made.
pub struct PackageLayers {
    /// The image tree after them.
    pub tree: Tree,
    /// Units the packages' scripts would have enabled.
    pub units: Vec<String>,
    /// Whether the kernel's modules went in with the unit that indexes them at first boot.
    pub depmod: bool,
    /// What making them told the user, told again when they are taken back.
    pub told: Vec<Line>,
}

/// The key of one build's package layers.
pub struct LayerKey(String);

impl LayerKey {
    /// The key of `plan`'s package layers from `pkgs`; None when they read the host.
    pub fn new(lp: &LoadedProfile, plan: &Plan, pkgs: &dyn FetchedPackages) -> Option<LayerKey> {
        let kernel = kernel_plan(plan)?;
        let p = &lp.profile;
        let mut h = KeyHasher::default();
        let mut put = |label: &str, value: &str| h.put(label, value);
        put("format", &FORMAT.to_string());
        put("kiln", &super::uptodate::kiln_identity());
        put("packages", &pkgs.identity());
        put("epoch", &plan.epoch.to_string());
        put(
            "profile",
            &format!(
                "{:?}",
                (&p.distribution, kernel_meaning(&p.kernel), &p.remove)
            ),
        );
        put(
            "plan",
            &format!(
                "{:?}",
                (
                    plan.format,
                    kernel,
                    plan.has_results(),
                    plan.run.network.mode,
                    plan.run.host.is_some()
                )
            ),
        );
        Some(LayerKey(h.finish()))
    }

    /// The key of the initramfs that boots `plan`'s disk: the packages (its kernel and
    /// busybox), the profile's `[kernel]` (its modules) and the image's name, which its
    /// init prints. None when its modules come from a kernel build tree.
    pub fn boot_initrd(
        lp: &LoadedProfile,
        plan: &Plan,
        pkgs: &dyn FetchedPackages,
    ) -> Option<LayerKey> {
        let mut h = KeyHasher::default();
        h.put("boot initramfs", &FORMAT.to_string());
        h.put("kiln", &super::uptodate::kiln_identity());
        h.put("packages", &pkgs.identity());
        h.put("epoch", &plan.epoch.to_string());
        h.put("kernel", &kernel_plan(plan)?);
        h.put("[kernel]", &kernel_meaning(&lp.profile.kernel));
        h.put("name", &plan.name);
        Some(LayerKey(h.finish()))
    }

    /// Where the cache keeps what the key names: `what` is `tree` or `file`.
    fn path(&self, cache: &Cache, what: &str) -> PathBuf {
        cache
            .root()
            .join("layers")
            .join(format!("{}.{what}.v{FORMAT}", self.0))
    }
}

/// Where the plan's kernel comes from; None for a build tree, whose modules are the
/// host's and which no key of this kind can vouch for.
fn kernel_plan(plan: &Plan) -> Option<String> {
    Some(match &plan.kernel {
        KernelPlan::Tree(_) => return None,
        KernelPlan::Host(p) => format!("host {}", p.display()),
        KernelPlan::Package { package, .. } => format!("package {package}"),
        KernelPlan::None => "none".to_string(),
    })
}

/// What of `[kernel]` the package layers and the boot initramfs read. Destructured field
/// by field, so that a new key cannot be forgotten here; the command line, vmlinux and
/// debug symbols only shape runs.
fn kernel_meaning(k: &Kernel) -> String {
    let Kernel {
        path,
        package,
        tree,
        cmdline: _,
        modules,
        install,
        install_modules,
        vmlinux: _,
        debug_symbols: _,
    } = k;
    format!(
        "{:?}",
        (path, package, tree, modules, install, install_modules)
    )
}

/// The package layers `key` names: from the cache unless `fresh`, else made by `make`
/// and kept. Without a key they are always made.
pub fn layers(
    key: Option<&LayerKey>,
    fresh: bool,
    make: impl FnOnce() -> Result<PackageLayers>,
) -> Result<PackageLayers> {
    let Some(key) = key else {
        return make();
    };
    let cache = Cache::open()?;
    let path = key.path(&cache, "tree");
    if !fresh {
        if let Some(l) = load(&path) {
            progress::step(format!(
                "package layers from the layer cache ({} entries, {} units; --rebuild makes them again)",
                l.tree.len(),
                l.units.len()
            ));
            progress::replay(&l.told);
            return Ok(l);
        }
    }
    let (made, told) = progress::capture(make);
    let made = PackageLayers { told, ..made? };
    // A cache that cannot be written costs the next build time, not this one its image.
    if let Err(e) = store(&path, &made) {
        progress::warn(format!(
            "the layer cache could not keep the package layers: {e:#}"
        ));
    }
    Ok(made)
}

/// Writes to `dest` the file `key` names: from the cache unless `fresh`, else made there
/// by `make` and kept. Returns whether it came from the cache.
pub fn file(
    key: &LayerKey,
    fresh: bool,
    dest: &std::path::Path,
    make: impl FnOnce() -> Result<()>,
) -> Result<bool> {
    let cache = Cache::open()?;
    file_at(&key.path(&cache, "file"), fresh, dest, make)
}

fn file_at(
    path: &std::path::Path,
    fresh: bool,
    dest: &std::path::Path,
    make: impl FnOnce() -> Result<()>,
) -> Result<bool> {
    if !fresh {
        if let Some(bytes) = read_kept(path) {
            atomic::write(dest, &bytes)?;
            return Ok(true);
        }
    }
    make()?;
    let kept = std::fs::read(dest)
        .with_context(|| format!("reading {}", dest.display()))
        .and_then(|bytes| keep(path, &bytes));
    if let Err(e) = kept {
        progress::warn(format!(
            "the layer cache could not keep {}: {e:#}",
            dest.display()
        ));
    }
    Ok(false)
}

/// The bytes of the entry at `path`, marked used; None when there is none, or (said so)
/// when it is damaged. An entry is its bytes' CRC-32C, then its bytes: not compressed
/// (a boot initramfs already is; a tree of a few MiB is read from the page cache in
/// about a millisecond, where zstd took six).
fn read_kept(path: &std::path::Path) -> Option<Vec<u8>> {
    let mut bytes = std::fs::read(path).ok()?;
    let sound = bytes.len() >= 4 && crc32c::crc32c(&bytes[4..]).to_le_bytes() == bytes[..4];
    if !sound {
        progress::warn(format!("{} is damaged; making it again", path.display()));
        return None;
    }
    // Used: the pruning keeps the most recently modified.
    if let Ok(f) = std::fs::File::options().write(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
    bytes.drain(..4);
    Some(bytes)
}

/// Writes an entry of `bytes` (see [`read_kept`]) and prunes the others.
fn keep(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("the layer cache has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut entry = Vec::with_capacity(bytes.len() + 4);
    entry.extend_from_slice(&crc32c::crc32c(bytes).to_le_bytes());
    entry.extend_from_slice(bytes);
    atomic::write(path, &entry)?;
    prune(dir, KEEP);
    Ok(())
}

/// The package layers kept at `path`; None when there are none, or (said so) when the
/// entry is damaged.
fn load(path: &std::path::Path) -> Option<PackageLayers> {
    let bytes = read_kept(path)?;
    match decode(&bytes) {
        Ok(l) => Some(l),
        Err(e) => {
            progress::warn(format!(
                "{} is damaged ({e:#}); installing the packages again",
                path.display()
            ));
            None
        }
    }
}

/// A tree entry's bytes: the units, what making them told, then the tree.
fn decode(plain: &[u8]) -> Result<PackageLayers> {
    let mut r = plain;
    let mut take = |n: usize| -> Result<&[u8]> {
        anyhow::ensure!(n <= r.len(), "cut short");
        let (a, b) = r.split_at(n);
        r = b;
        Ok(a)
    };
    let count = u32::from_le_bytes(take(4)?.try_into()?) as usize;
    let mut units = Vec::new();
    for _ in 0..count {
        let len = u32::from_le_bytes(take(4)?.try_into()?) as usize;
        units.push(String::from_utf8(take(len)?.to_vec())?);
    }
    let depmod = take(1)?[0] != 0;
    let count = u32::from_le_bytes(take(4)?.try_into()?) as usize;
    let mut told = Vec::new();
    for _ in 0..count {
        let kind = take(1)?[0];
        let len = u32::from_le_bytes(take(4)?.try_into()?) as usize;
        let text = String::from_utf8(take(len)?.to_vec())?;
        told.push(if kind == 0 {
            Line::Step(text)
        } else {
            Line::Warn(text)
        });
    }
    let tree = stored::decode(r)?;
    Ok(PackageLayers {
        tree,
        units,
        depmod,
        told,
    })
}

fn store(path: &std::path::Path, l: &PackageLayers) -> Result<()> {
    let mut plain = Vec::new();
    plain.extend_from_slice(&(l.units.len() as u32).to_le_bytes());
    for u in &l.units {
        plain.extend_from_slice(&(u.len() as u32).to_le_bytes());
        plain.extend_from_slice(u.as_bytes());
    }
    plain.push(u8::from(l.depmod));
    plain.extend_from_slice(&(l.told.len() as u32).to_le_bytes());
    for line in &l.told {
        let (kind, text) = match line {
            Line::Step(t) => (0u8, t),
            Line::Warn(t) => (1u8, t),
        };
        plain.push(kind);
        plain.extend_from_slice(&(text.len() as u32).to_le_bytes());
        plain.extend_from_slice(text.as_bytes());
    }
    plain.extend_from_slice(&stored::encode(&l.tree));
    keep(path, &plain)
}

/// Removes all but the `keep` most recently used entries of `dir`.
fn prune(dir: &std::path::Path, keep: usize) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(SystemTime, PathBuf)> = read
        .flatten()
        // Not the temporaries of writes under way.
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (_, p) in entries.into_iter().skip(keep) {
        let _ = std::fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Data, Entry, Kind, Meta};

    fn layers_of(n: usize) -> PackageLayers {
        let mut tree = Tree::new(1);
        for i in 0..n {
            let e = Entry::new(Kind::File(Data::bytes(vec![i as u8])), Meta::new(0o644, 1));
            tree.insert(&format!("etc/f{i}"), e).unwrap();
        }
        PackageLayers {
            tree,
            units: vec!["a.service".into(), "b.timer".into()],
            depmod: true,
            told: vec![Line::Step("made".into()), Line::Warn("mind".into())],
        }
    }

    #[test]
    fn an_entry_comes_back_and_a_damaged_one_is_a_miss() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k.tree.v2");
        store(&p, &layers_of(3)).unwrap();
        let back = load(&p).unwrap();
        assert_eq!(back.units, ["a.service", "b.timer"]);
        assert!(back.depmod);
        assert_eq!(back.told, layers_of(3).told);
        assert_eq!(
            format!("{:?}", back.tree),
            format!("{:?}", layers_of(3).tree)
        );
        let mut bytes = std::fs::read(&p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(&p, bytes).unwrap();
        assert!(load(&p).is_none());
    }

    #[test]
    fn a_kept_file_is_copied_and_a_damaged_one_made_again() {
        let d = tempfile::tempdir().unwrap();
        let entry = d.path().join("layers/k.file.v1");
        let dest = d.path().join("initrd");
        let made = std::cell::Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            std::fs::write(&dest, b"cpio bytes").map_err(anyhow::Error::from)
        };
        assert!(!file_at(&entry, false, &dest, make).unwrap());
        std::fs::remove_file(&dest).unwrap();
        assert!(file_at(&entry, false, &dest, make).unwrap());
        assert_eq!(std::fs::read(&dest).unwrap(), b"cpio bytes");
        assert!(!file_at(&entry, true, &dest, make).unwrap(), "fresh");
        let mut bytes = std::fs::read(&entry).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&entry, bytes).unwrap();
        assert!(!file_at(&entry, false, &dest, make).unwrap(), "damaged");
        assert_eq!(made.get(), 3);
        assert_eq!(std::fs::read(&dest).unwrap(), b"cpio bytes");
    }

    #[test]
    fn pruning_keeps_the_most_recently_used() {
        let d = tempfile::tempdir().unwrap();
        let old = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        for i in 0..5u64 {
            let p = d.path().join(format!("{i}.v1.zst"));
            std::fs::write(&p, b"x").unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(old + std::time::Duration::from_secs(i))
                .unwrap();
        }
        prune(d.path(), 2);
        let mut left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["3.v1.zst", "4.v1.zst"]);
    }
}
