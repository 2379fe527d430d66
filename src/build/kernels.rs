//! The kernels of a matrix, ready to boot the image already built: host images as they
//! are, directories and globs expanded, Debian packages fetched, and for each kernel
//! what it needs of its own: the boot initramfs of a disk, or an initramfs image's
//! modules. The image itself is built once and shared.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::Digest;

use super::modules;
use crate::output::cpio::{self, CpioOptions};
use crate::plan::{CellKernel, KernelRef, Plan, WriterPlan};
use crate::profile::{Format, LoadedProfile};
use crate::source::debian::cell_kernel::CellKernels;
use crate::source::kernel::KernelFiles;
use crate::source::kernel_tree::KernelTree;
use crate::source::{self, FetchedPackages, PackageOptions};
use crate::template::Renderer;
use crate::tree::{Data, Entry, Kind, Meta, Tree};
use crate::util::progress;

/// Where a disk's boot initramfs for a matrix kernel carries that kernel's module tree
/// (`kiln-modules/RELEASE/`), for its init to copy into the root file system.
pub const MODULE_TREE: &str = "kiln-modules";

/// The kernels `refs` name, in order, each ready to boot `plan`'s image. With `only`,
/// packages whose label is not in it are listed but not fetched (a shard's other
/// kernels), as [`without_fetching`] lists them. With `host_modules`, a host image
/// named `vmlinuz-RELEASE` brings the modules installed for it (see
/// [`crate::source::kernel::installed_modules`]).
pub fn cell_kernels(
    lp: &LoadedProfile,
    plan: &Plan,
    refs: &[KernelRef],
    opts: &PackageOptions,
    only: Option<&BTreeSet<String>>,
    host_modules: bool,
) -> Result<Vec<CellKernel>> {
    let mut out = Vec::new();
    let mut debian: Option<CellKernels> = None;
    let mut shell: Option<Box<dyn FetchedPackages>> = None;
    for r in refs {
        if let KernelRef::Tree(dir) = r {
            out.push(tree_kernel(lp, plan, dir)?);
            continue;
        }
        let KernelRef::Package { name, suite } = r else {
            for mut k in host_kernels(r)? {
                // An initramfs on a distribution kernel image with its modules beside
                // it (an unpacked package) or installed on this host: those modules.
                if host_modules && plan.format == Format::Initramfs {
                    if let Some(files) = crate::source::kernel::installed_modules(&k.image)? {
                        let dir = plan
                            .out_dir
                            .join(format!("{}.kernels", plan.name))
                            .join(format!("host-{}", files.release));
                        std::fs::create_dir_all(&dir)
                            .with_context(|| format!("creating {}", dir.display()))?;
                        k.initrd = Some(with_modules(lp, plan, &files, &dir)?);
                    }
                }
                out.push(k);
            }
            continue;
        };
        let label = r.to_string();
        if only.is_some_and(|o| !o.contains(&label)) {
            out.push(unfetched(r));
            continue;
        }
        let d = match &mut debian {
            Some(d) => d,
            None => debian.insert(CellKernels::new(lp, opts)?),
        };
        let fetched = d.fetch(name, suite.as_deref())?;
        let files = &fetched.files;
        let dir = plan
            .out_dir
            .join(format!("{}.kernels", plan.name))
            .join(&fetched.versioned);
        let image = write_kernel(files, &dir)?;
        let initrd = match plan.format {
            Format::Disk => {
                let dest = dir.join(format!("{}.initrd.cpio.zst", plan.name));
                // The disk holds its own kernel's modules; this kernel's travel in its
                // boot initramfs, which copies them into the root.
                let modules = |t: &mut Tree| {
                    fetched
                        .install_module_tree(t, MODULE_TREE, plan.epoch)
                        .map(|_| ())
                };
                // The boot shell comes from the profile's lock.
                let lock = std::fs::read(source::lock_path(&lp.path)).unwrap_or_default();
                let key = format!(
                    "{} {} {} {:?} {}",
                    env!("CARGO_PKG_VERSION"),
                    fetched.versioned,
                    plan.epoch,
                    lp.profile.kernel.modules,
                    hex::encode(sha2::Sha256::digest(&lock))
                );
                cached(&dest, &key, || {
                    let pkgs = match &mut shell {
                        Some(s) => s,
                        None => shell.insert(boot_shell(lp, plan, opts)?),
                    };
                    super::boot_initrd::build_for(
                        lp,
                        plan,
                        files,
                        pkgs.as_ref(),
                        &modules,
                        &dest,
                        &Renderer::new(),
                    )
                })?;
                Some(dest)
            }
            Format::Initramfs => Some(with_modules(lp, plan, files, &dir)?),
            Format::Tar => None,
        };
        out.push(CellKernel {
            label,
            image,
            initrd,
            spec: Some(r.to_string()),
        });
    }
    if let Some(d) = &debian {
        d.save()?;
    }
    crate::plan::unique_labels(&mut out);
    Ok(out)
}

/// The kernels `refs` name, without fetching packages (a package's image path is its
/// name): for listing a matrix's cells, and choosing a shard's before fetching.
pub fn without_fetching(refs: &[KernelRef]) -> Result<Vec<CellKernel>> {
    let mut out = Vec::new();
    for r in refs {
        match r {
            KernelRef::Package { .. } => out.push(unfetched(r)),
            KernelRef::Tree(dir) => {
                let t = KernelTree::open(dir)?;
                out.push(CellKernel {
                    label: r.to_string(),
                    image: t.image,
                    initrd: None,
                    spec: Some(r.to_string()),
                });
            }
            _ => out.extend(host_kernels(r)?),
        }
    }
    crate::plan::unique_labels(&mut out);
    Ok(out)
}

/// A package kernel, named but not fetched.
fn unfetched(r: &KernelRef) -> CellKernel {
    CellKernel {
        label: r.to_string(),
        image: PathBuf::from(r.to_string()),
        initrd: None,
        spec: Some(r.to_string()),
    }
}

/// The kernel images on the host a path, directory or glob names.
fn host_kernels(r: &KernelRef) -> Result<Vec<CellKernel>> {
    match r {
        KernelRef::Host(p) => Ok(vec![CellKernel::host(p)]),
        KernelRef::Glob(pattern) => expand(pattern),
        KernelRef::Package { .. } | KernelRef::Tree(_) => Ok(Vec::new()),
    }
}

/// A build tree's kernel for a cell. An initramfs gets the tree's modules appended; a
/// disk boots the tree's bzImage directly, as a host kernel does, so that kernel needs
/// virtio_blk and ext4 built in (the preflight reads its .config).
fn tree_kernel(lp: &LoadedProfile, plan: &Plan, dir: &Path) -> Result<CellKernel> {
    let t = KernelTree::open(dir)?;
    let initrd = match plan.format {
        Format::Initramfs => {
            let files = t.files()?;
            let out = plan
                .out_dir
                .join(format!("{}.kernels", plan.name))
                .join(format!("tree-{}", t.release));
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            Some(with_modules(lp, plan, &files, &out)?)
        }
        _ => None,
    };
    Ok(CellKernel {
        label: dir.display().to_string(),
        image: t.image,
        initrd,
        spec: Some(dir.display().to_string()),
    })
}

/// Kernel images in a directory (up to three levels down) or matching a glob:
/// `vmlinuz*`, `bzImage*` and `vmlinux*` files that are not configurations.
fn expand(pattern: &str) -> Result<Vec<CellKernel>> {
    let mut found: Vec<PathBuf> = if Path::new(pattern).is_dir() {
        walkdir::WalkDir::new(pattern)
            .max_depth(3)
            .sort_by_file_name()
            .into_iter()
            .filter_map(|e| e.ok())
            .map(|e| e.into_path())
            .filter(|p| is_kernel_image(p))
            .collect()
    } else {
        glob::glob(pattern)
            .with_context(|| format!("`{pattern}` is not a glob pattern"))?
            .filter_map(|p| p.ok())
            .filter(|p| is_kernel_image(p))
            .collect()
    };
    found.sort();
    if found.is_empty() {
        bail!("no kernel images (vmlinuz*, bzImage*) in `{pattern}`");
    }
    let base = pattern
        .split(['*', '?', '['])
        .next()
        .map(|b| Path::new(b).to_path_buf())
        .unwrap_or_default();
    Ok(found
        .iter()
        .map(|p| {
            let mut k = CellKernel::host(p);
            // Elastic's layout keeps one vmlinuz per directory: the path names the kernel.
            let root = if base.is_dir() {
                base.as_path()
            } else {
                base.parent().unwrap_or(Path::new("/"))
            };
            if let Ok(rel) = p.strip_prefix(root) {
                k.label = rel.display().to_string();
            }
            k
        })
        .collect())
}

/// Whether a file found by a directory or glob is a kernel image: named `vmlinuz*`,
/// `bzImage*` or `vmlinux*`, and not one of a build tree's other `vmlinux.*` files or a
/// configuration.
fn is_kernel_image(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    p.is_file()
        && ["vmlinuz", "bzImage", "vmlinux"]
            .iter()
            .any(|k| name.starts_with(k))
        && ![".config", ".o", ".a", ".symvers", ".lds", ".cmd", ".map"]
            .iter()
            .any(|x| name.ends_with(x))
}

/// Writes the kernel image and its configuration as Debian lays them out, once.
fn write_kernel(k: &KernelFiles, dir: &Path) -> Result<PathBuf> {
    let image = dir.join(format!("vmlinuz-{}", k.release));
    if !image.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // The configuration first: the image's presence says both are there.
        if let Some(c) = &k.config {
            super::write_data(c, &dir.join(format!("config-{}", k.release)))?;
        }
        super::write_data(&k.vmlinuz, &image)?;
        progress::step(format!("kernel {} → {}", k.release, image.display()));
    }
    Ok(image)
}

/// The packages that give a disk's boot initramfs its shell.
fn boot_shell(
    lp: &LoadedProfile,
    plan: &Plan,
    opts: &PackageOptions,
) -> Result<Box<dyn FetchedPackages>> {
    if plan.boot_initrd.is_none() {
        bail!(
            "{}: a disk boots a packaged kernel through kiln's boot initramfs, which needs the profile's own kernel to be a package too; set [kernel] package",
            lp.path.display()
        );
    }
    match source::for_profile(lp, opts)? {
        Some(s) => s.fetch(),
        None => bail!("{}: a disk needs a [distribution]", lp.path.display()),
    }
}

/// The image with an archive of this kernel's modules (and their lists) appended, which
/// the kernel unpacks over the image: the modules the image's init loads, for this
/// kernel, or an empty list where it needs none, and for a host run every on-demand
/// set's list, even an empty one, so no list of the image's own (for its own kernel) is
/// used.
fn with_modules(lp: &LoadedProfile, plan: &Plan, k: &KernelFiles, dir: &Path) -> Result<PathBuf> {
    let mods = modules::image_modules(lp, plan, Some(k))?;
    let options = match &plan.writer {
        WriterPlan::Initramfs(o) => o.clone(),
        _ => CpioOptions::default(),
    };
    let archive = dir.join(format!("{}.modules.cpio", plan.name));
    let names = mods.names();
    let key = format!(
        "{} {} {} {names:?} {:?}",
        env!("CARGO_PKG_VERSION"),
        k.release,
        plan.epoch,
        options.compression
    );
    cached(&archive, &key, || {
        let mut tree = Tree::new(plan.epoch);
        modules::insert_module_list(&mut tree, &mods, plan.epoch)?;
        if mods.boot.is_empty() {
            tree.insert(
                modules::MODULES_LIST,
                Entry::new(Kind::File(Data::bytes("")), Meta::new(0o644, plan.epoch)),
            )?;
        }
        // Compressed as the image is, so the preflight's check of the image's
        // compression covers both.
        cpio::write(&tree, &archive, &options).map(|_| ())
    })?;
    // The image changes with every build: the concatenation is made afresh each time.
    let initrd = dir.join(format!("{}.initrd", plan.name));
    let mut out = crate::util::atomic::AtomicFile::create(&initrd)?;
    for part in [&plan.image, &archive] {
        let mut f =
            std::fs::File::open(part).with_context(|| format!("reading {}", part.display()))?;
        std::io::copy(&mut f, out.file())
            .with_context(|| format!("writing {}", initrd.display()))?;
    }
    out.commit()?;
    Ok(initrd)
}

/// Makes `dest` with `make` unless it exists and was made from the same `key` (kept
/// beside it as `dest.key`, written after `dest`, so a stale key never vouches for it).
fn cached(dest: &Path, key: &str, make: impl FnOnce() -> Result<()>) -> Result<()> {
    let key_file = PathBuf::from(format!("{}.key", dest.display()));
    if dest.exists() && std::fs::read_to_string(&key_file).is_ok_and(|k| k == key) {
        return Ok(());
    }
    let _ = std::fs::remove_file(&key_file);
    make()?;
    crate::util::atomic::write(&key_file, key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_and_globs_find_kernel_images_named_by_their_path() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "k/ubuntu/5.15/vmlinuz",
            "k/ubuntu/5.15/config",
            "k/debian/6.1/bzImage",
            "k/debian/6.1/bzImage.config",
            "k/readme.txt",
            "k/tree/vmlinux.o",
            "k/tree/vmlinux.symvers",
        ] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"x").unwrap();
        }
        let dir = d.path().join("k");
        let found = expand(&dir.to_string_lossy()).unwrap();
        let labels: Vec<&str> = found.iter().map(|k| k.label.as_str()).collect();
        assert_eq!(labels, ["debian/6.1/bzImage", "ubuntu/5.15/vmlinuz"]);
        let found = expand(&format!("{}/k/*/*/*", d.path().display())).unwrap();
        assert_eq!(found.len(), 2, "configurations are not kernels");
        let found = expand(&format!("{}/k/*/*/vmlinuz", d.path().display())).unwrap();
        assert_eq!(found.len(), 1);
        assert!(found[0].image.ends_with("k/ubuntu/5.15/vmlinuz"));
        let e = expand(&format!("{}/none/*", d.path().display())).unwrap_err();
        assert!(e.to_string().contains("no kernel images"), "{e}");
    }

    #[test]
    fn kernel_refs_tell_files_from_packages() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("linux-image-local"), b"x").unwrap();
        let parse = |s: &str| KernelRef::parse(s, d.path());
        assert_eq!(
            parse("linux-image-6.1.0-47-cloud-amd64"),
            KernelRef::Package {
                name: "linux-image-6.1.0-47-cloud-amd64".into(),
                suite: None
            }
        );
        assert_eq!(
            parse("linux-image-cloud-amd64/bookworm"),
            KernelRef::Package {
                name: "linux-image-cloud-amd64".into(),
                suite: Some("bookworm".into())
            }
        );
        // An existing file wins over a package of the same name.
        assert_eq!(
            parse("linux-image-local"),
            KernelRef::Host(d.path().join("linux-image-local"))
        );
        assert!(matches!(parse("bzImage"), KernelRef::Host(_)));
        assert!(matches!(parse("k/*/vmlinuz"), KernelRef::Glob(_)));
        assert!(matches!(parse("."), KernelRef::Glob(_)));
        assert!(matches!(parse("linux-image-X/y"), KernelRef::Host(_)));
    }
}
