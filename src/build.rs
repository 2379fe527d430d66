//! From a loaded profile to image files: plan the outputs, assemble the tree layer by
//! layer, hand it to a writer, write the manifest.
//!
//! Layer order (later layers win): Debian packages → removals → system configuration →
//! [[binary]] → [[overlay]] → [[directory]] → [[file]] → [[symlink]] → [[hardlink]] →
//! [[device]] → the test and kiln's generated files.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::cache::Cache;
use crate::output::{self, cpio::CpioOptions, manifest::Manifest};
use crate::profile::{Compression, Format, LoadedProfile};
use crate::progress;
use crate::source::debian::{
    self, deb::Unpacked, install, kernel::KernelFiles, lock::LockFile, DebianOptions,
};
use crate::source::declared::{add_declared, DeclaredContext};
use crate::template::{self, Renderer};
use crate::tree::{Data, Entry, Kind, Meta, Tree};

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub out_dir: PathBuf,
    /// Overrides `[kernel] path`.
    pub kernel: Option<PathBuf>,
    pub debian: DebianOptions,
}

/// Where a run's kernel comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelPlan {
    Host(PathBuf),
    /// Taken from a Debian package at build time and written here.
    Package {
        package: String,
        vmlinuz: PathBuf,
    },
    None,
}

/// Everything decided before any byte is written.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub format: Format,
    pub epoch: i64,
    pub out_dir: PathBuf,
    pub image: PathBuf,
    pub manifest: PathBuf,
    pub kernel: KernelPlan,
    pub run_dir: PathBuf,
    /// Guest directory whose contents come back after a test.
    pub results: Option<String>,
    /// The initramfs that boots a disk image with a packaged kernel.
    pub boot_initrd: Option<PathBuf>,
    /// PARTUUID of a disk image's root partition.
    pub root_partuuid: Option<String>,
}

/// SOURCE_DATE_EPOCH from the environment wins over the profile; the default is 0.
pub fn source_date_epoch(lp: &LoadedProfile) -> Result<i64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        let v = v.trim();
        return match v.parse::<i64>() {
            Ok(n) if (0..=u32::MAX as i64).contains(&n) => Ok(n),
            _ => {
                bail!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds between 0 and 4294967295")
            }
        };
    }
    Ok(lp
        .profile
        .source_date_epoch
        .as_ref()
        .map(|v| v.value)
        .unwrap_or(0))
}

impl Plan {
    pub fn new(lp: &LoadedProfile, opts: &BuildOptions) -> Result<Plan> {
        let p = &lp.profile;
        let format = p.output.format.unwrap_or_default();
        // Absolute, so a printed QEMU command works from any directory.
        let out_dir = std::path::absolute(&opts.out_dir).unwrap_or_else(|_| opts.out_dir.clone());
        let image = match format {
            Format::Initramfs => match p.output.compression.unwrap_or_default() {
                Compression::Zstd => out_dir.join(format!("{}.cpio.zst", lp.name)),
                Compression::None => out_dir.join(format!("{}.cpio", lp.name)),
            },
            Format::Disk => out_dir.join(format!("{}.raw", lp.name)),
            Format::Tar => out_dir.join(format!("{}.tar", lp.name)),
        };
        let kernel = match (&opts.kernel, &p.kernel.path, &p.kernel.package) {
            (Some(k), _, _) => {
                KernelPlan::Host(std::path::absolute(k).unwrap_or_else(|_| k.clone()))
            }
            (None, Some(k), _) => KernelPlan::Host(k.value.0.clone()),
            (None, None, Some(pkg)) => KernelPlan::Package {
                package: pkg.value.clone(),
                vmlinuz: out_dir.join(format!("{}.vmlinuz", lp.name)),
            },
            (None, None, None) => KernelPlan::None,
        };
        let boot_initrd = (format == Format::Disk && matches!(kernel, KernelPlan::Package { .. }))
            .then(|| out_dir.join(format!("{}.initrd.cpio.zst", lp.name)));
        Ok(Plan {
            name: lp.name.clone(),
            format,
            epoch: source_date_epoch(lp)?,
            manifest: out_dir.join(format!("{}.manifest.json", lp.name)),
            run_dir: out_dir.join(format!("{}.run", lp.name)),
            image,
            out_dir,
            kernel,
            results: p.test.as_ref().and_then(|t| t.results.clone()),
            boot_initrd,
            root_partuuid: (format == Format::Disk)
                .then(|| crate::output::disk::root_partuuid(&lp.name).to_string()),
        })
    }
}

/// Values templates see: the profile's [variables] at the top level, kiln's own under `kiln`.
pub fn template_data(lp: &LoadedProfile, plan: &Plan, modules: &[String]) -> Result<Value> {
    let mut data = serde_json::Map::new();
    for (k, v) in &lp.profile.variables {
        if k == "kiln" {
            bail!(
                "{}: [variables] cannot define `kiln`; that name holds kiln's own values",
                lp.path.display()
            );
        }
        data.insert(k.clone(), v.clone());
    }
    data.insert(
        "kiln".into(),
        json!({
            "name": plan.name,
            "format": match plan.format { Format::Initramfs => "initramfs", Format::Disk => "disk", Format::Tar => "tar" },
            "results": plan.results,
            "modules": modules,
            "source_date_epoch": plan.epoch,
        }),
    );
    Ok(Value::Object(data))
}

pub struct Built {
    pub plan: Plan,
    pub manifest: Manifest,
}

/// Packages fetched and unpacked for a build: the image's, and those that boot it.
pub struct Packages {
    pub lock: LockFile,
    pub mirror: String,
    pub image: Vec<Unpacked>,
    /// The kernel's files, from its packages (or from the image's when it is installed).
    pub kernel: Option<KernelFiles>,
    /// The kernel set's packages (kernel and, for disks, busybox for the boot initramfs).
    pub boot: Vec<(debian::lock::LockedPackage, Unpacked)>,
}

/// Resolves (or reads the lock), fetches and unpacks a profile's packages.
pub fn packages(lp: &LoadedProfile, opts: &DebianOptions) -> Result<Option<Packages>> {
    let Some(d) = &lp.profile.distribution else {
        return Ok(None);
    };
    let cache = Cache::open()?;
    let http = debian::http::Http::new()?;
    let lock = debian::selection(lp, d, opts, &cache, &http)?;
    let mirror = debian::mirror(d, opts)?;
    let image = debian::fetch_and_unpack(&lock.packages, &mirror, opts, &cache, &http)?;
    let boot_unpacked =
        debian::fetch_and_unpack(&lock.kernel_packages, &mirror, opts, &cache, &http)?;
    let boot: Vec<_> = lock
        .kernel_packages
        .iter()
        .cloned()
        .zip(boot_unpacked)
        .collect();
    let kernel_pkgs: Vec<Unpacked> = if lp.profile.kernel.install.unwrap_or(false) {
        image
            .iter()
            .zip(&lock.packages)
            .filter(|(_, p)| p.name.starts_with("linux-image-"))
            .map(|(u, _)| u.clone())
            .collect()
    } else {
        boot.iter()
            .filter(|(p, _)| p.name.starts_with("linux-image-"))
            .map(|(_, u)| u.clone())
            .collect()
    };
    let kernel = if lp.profile.kernel.package.is_some() {
        Some(debian::kernel::kernel_files(&kernel_pkgs)?)
    } else {
        None
    };
    Ok(Some(Packages {
        lock,
        mirror,
        image,
        kernel,
        boot,
    }))
}

/// Modules the image's own init loads: the profile's, plus what a results disk needs.
fn image_modules(
    lp: &LoadedProfile,
    plan: &Plan,
    pkgs: &Option<Packages>,
) -> Result<Vec<debian::kernel::LoadableModule>> {
    let mut wanted = lp.profile.kernel.modules.clone();
    let kernel = pkgs.as_ref().and_then(|p| p.kernel.as_ref());
    if plan.format == Format::Initramfs && plan.results.is_some() {
        if let Some(k) = kernel {
            for m in ["virtio_pci", "virtio_blk", "ext4", "crc32c_generic"] {
                if debian::kernel::has_module(k, m) && !wanted.iter().any(|w| w == m) {
                    wanted.push(m.to_string());
                }
            }
        }
    }
    if wanted.is_empty() || plan.format != Format::Initramfs {
        return Ok(Vec::new());
    }
    match kernel {
        Some(k) => debian::kernel::closure(k, &wanted),
        None => bail!(
            "{}: [kernel] modules needs [kernel] package, which provides them",
            lp.path.display()
        ),
    }
}

pub fn build(lp: &LoadedProfile, opts: &BuildOptions) -> Result<Built> {
    let start = Instant::now();
    let plan = Plan::new(lp, opts)?;
    let renderer = Renderer::new();
    let pkgs = packages(lp, &opts.debian)?;
    let modules = image_modules(lp, &plan, &pkgs)?;
    let module_paths: Vec<String> = modules
        .iter()
        .map(|m| format!("/{}", m.image_path))
        .collect();
    let data = template_data(lp, &plan, &module_paths)?;
    let mut tree = Tree::new(plan.epoch);
    let mut units = Vec::new();
    if let Some(p) = &pkgs {
        units = install_packages(&mut tree, lp, &plan, p)?;
    }
    for m in &modules {
        tree.insert(
            &m.image_path,
            Entry::new(
                Kind::File(Data::Bytes(m.elf.clone())),
                Meta::new(0o644, plan.epoch),
            ),
        )?;
    }
    if plan.format == Format::Disk && lp.profile.test.is_some() {
        units.push("kiln-test.service".to_string());
    }
    if let Some(p) = &pkgs {
        if install_kernel_modules(&mut tree, lp, &plan, p)? {
            units.push("kiln-depmod.service".to_string());
        }
    }
    assemble(&mut tree, lp, &plan, &renderer, &data, units)?;
    if let (
        KernelPlan::Package { vmlinuz, .. },
        Some(Packages {
            kernel: Some(k), ..
        }),
    ) = (&plan.kernel, &pkgs)
    {
        write_data(&k.vmlinuz, vmlinuz)?;
        progress::step(format!("kernel {} → {}", k.release, vmlinuz.display()));
    }
    if let (Some(initrd), Some(p)) = (&plan.boot_initrd, &pkgs) {
        crate::boot_initrd::build(lp, &plan, p, initrd, &renderer)?;
    }
    progress::step(format!(
        "writing {} ({} entries, {})",
        plan.image.display(),
        tree.len(),
        human_bytes(tree.content_bytes())
    ));
    let manifest = write_image(lp, &plan, &tree)?;
    output::atomic::write(&plan.manifest, manifest.to_json().as_bytes())?;
    let size = std::fs::metadata(&plan.image).map(|m| m.len()).unwrap_or(0);
    progress::step(format!(
        "built {} ({}, sha256 {}) in {:.1}s",
        plan.image.display(),
        human_bytes(size),
        manifest
            .image_sha256
            .as_deref()
            .map(|h| &h[..16])
            .unwrap_or("not computed"),
        start.elapsed().as_secs_f64()
    ));
    Ok(Built { plan, manifest })
}

/// Copies the packaged kernel's module tree into a disk image (see `[kernel] install_modules`).
/// Returns whether the first-boot depmod unit was added.
fn install_kernel_modules(
    tree: &mut Tree,
    lp: &LoadedProfile,
    plan: &Plan,
    p: &Packages,
) -> Result<bool> {
    let k = &lp.profile.kernel;
    // An installed kernel package brings its own modules.
    let wanted = k.install_modules.unwrap_or(plan.format == Format::Disk);
    if !wanted || k.install.unwrap_or(false) {
        return Ok(false);
    }
    let Some(files) = &p.kernel else {
        return Ok(false);
    };
    let mut n = 0;
    for (lp_, u) in &p.boot {
        if !lp_.name.starts_with("linux-image-") {
            continue;
        }
        let tar = std::sync::Arc::new(u.data_tar.clone());
        for m in &u.members {
            if !m.path.contains("lib/modules/") {
                continue;
            }
            if let Some(e) = install::member_entry(tree, m, &tar, plan.epoch)? {
                tree.insert(&m.path, e)?;
            }
            n += 1;
        }
    }
    if !tree.contains("usr/sbin/depmod") && !tree.contains("usr/bin/kmod") {
        progress::warn(format!(
            "kernel {} modules copied into the image, but it has no kmod to index them; add \"kmod\" to [distribution] packages",
            files.release
        ));
        return Ok(false);
    }
    let unit = template::DEPMOD_UNIT.to_string();
    tree.insert(
        "usr/lib/systemd/system/kiln-depmod.service",
        Entry::new(Kind::File(Data::bytes(unit)), Meta::new(0o644, plan.epoch)),
    )?;
    progress::step(format!(
        "kernel modules: {n} entries of {} in the image, indexed at first boot",
        files.release
    ));
    Ok(true)
}

/// Default free space in an automatically sized root file system.
pub const DEFAULT_FREE_SPACE: u64 = 256 << 20;

fn write_image(lp: &LoadedProfile, plan: &Plan, tree: &Tree) -> Result<Manifest> {
    let o = &lp.profile.output;
    Ok(match plan.format {
        Format::Initramfs => {
            let opts = CpioOptions {
                compression: o.compression.unwrap_or_default(),
                level: o.compression_level.as_ref().map(|l| l.value).unwrap_or(3),
                threads: o.compression_threads.unwrap_or(0),
            };
            output::cpio::write(tree, &plan.image, &opts)?
        }
        Format::Tar => output::tar::write(tree, &plan.image)?,
        Format::Disk => {
            use crate::output::disk;
            use crate::output::ext4::SizeSpec;
            use crate::profile::validate::{parse_free_space, parse_root_size, FreeSpace};
            let free = match &o.free_space {
                Some(f) => parse_free_space(f).map_err(|m| f.error(m))?,
                None => FreeSpace::Bytes(DEFAULT_FREE_SPACE),
            };
            let size = match &o.root_size {
                Some(s) => match parse_root_size(s).map_err(|m| s.error(m))? {
                    Some(bytes) => SizeSpec::Fixed(bytes),
                    None => SizeSpec::Auto { free, min_bytes: 0 },
                },
                None => SizeSpec::Auto { free, min_bytes: 0 },
            };
            let root = disk::root_fs_options(&plan.name, size, plan.epoch);
            let mut extra = Vec::new();
            for part in &o.partition {
                let type_guid =
                    disk::partition_type(part.kind.as_deref().unwrap_or("linux-generic"))
                        .map_err(|m| part.error(m))?;
                let content = match part.filesystem.as_deref() {
                    Some("none") => disk::Content::Blank,
                    _ => disk::Content::EmptyExt4,
                };
                extra.push(disk::PartitionSpec {
                    label: part.label.clone(),
                    type_guid,
                    size: part.size.0,
                    content,
                });
            }
            let mut out = output::atomic::AtomicFile::create(&plan.image)?;
            let report = disk::write(tree, out.file(), &plan.name, &root, &extra)
                .with_context(|| format!("writing {}", plan.image.display()))?;
            out.commit()?;
            progress::step(format!(
                "root file system: {} ({} used, {} inodes); PARTUUID {}",
                human_bytes(report.root.bytes),
                human_bytes((report.root.blocks - report.root.free_blocks) * 4096),
                report.root.inodes_used,
                disk::root_partuuid(&plan.name)
            ));
            if o.qcow2.unwrap_or(false) {
                qcow2(&plan.image)?;
            }
            let name = plan
                .image
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Manifest {
                image: name,
                format: "disk".into(),
                image_sha256: None,
                entries: report.root.manifest,
            }
        }
    })
}

/// A qcow2 copy beside the raw image, through qemu-img.
fn qcow2(raw: &Path) -> Result<()> {
    let dest = raw.with_extension("qcow2");
    let tmp = raw.with_extension("qcow2.tmp");
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(&tmp)
        .status()
        .context("running qemu-img (install qemu-utils for qcow2 output)")?;
    if !st.success() {
        let _ = std::fs::remove_file(&tmp);
        bail!("qemu-img convert failed ({st})");
    }
    std::fs::rename(&tmp, &dest)?;
    progress::step(format!("qcow2 copy: {}", dest.display()));
    Ok(())
}

/// Copies a tree data source to a file, atomically.
pub fn write_data(data: &Data, dest: &Path) -> Result<()> {
    let mut out = output::atomic::AtomicFile::create(dest)?;
    let mut src = data
        .open()
        .with_context(|| format!("reading {}", data.describe()))?;
    std::io::copy(&mut src, out.file())?;
    out.commit()?;
    Ok(())
}

/// The package layer: unpacked packages, removals, the dpkg database and apt's sources.
/// Returns the units the packages' scripts would have enabled.
fn install_packages(
    tree: &mut Tree,
    lp: &LoadedProfile,
    plan: &Plan,
    p: &Packages,
) -> Result<Vec<String>> {
    let d = lp.profile.distribution.as_ref().map(|d| &d.value);
    let list: Vec<install::Package> = p
        .lock
        .packages
        .iter()
        .zip(&p.image)
        .map(|(locked, unpacked)| install::Package { locked, unpacked })
        .collect();
    let report = install::install(tree, &list, plan.epoch)?;
    install::log_report(&report);
    if tree.contains("usr/bin/dpkg") {
        debian::dpkg::write_database(tree, &list, &p.lock.architecture, plan.epoch)?;
    }
    if tree.contains("usr/bin/apt") {
        if let Some(d) = d {
            let keyring = if tree.contains("usr/share/keyrings/debian-archive-keyring.gpg") {
                Some(debian::DEFAULT_KEYRING)
            } else {
                None
            };
            debian::dpkg::write_apt_sources(
                tree,
                &p.mirror,
                &d.suite,
                &debian::lock::components(d),
                keyring,
                plan.epoch,
            )?;
        }
    }
    let removed = crate::source::remove::remove(tree, &lp.profile.remove)?;
    if removed > 0 {
        progress::step(format!("removed {removed} entries matching `remove`"));
    }
    Ok(report.units)
}

/// Adds the layers after packages: system configuration, declared entries, the test;
/// then enables units, once every unit file is in place.
pub fn assemble(
    tree: &mut Tree,
    lp: &LoadedProfile,
    plan: &Plan,
    renderer: &Renderer,
    data: &Value,
    units: Vec<String>,
) -> Result<()> {
    let p = &lp.profile;
    let input = crate::configure::ConfigureInput {
        system: &p.system,
        name: &plan.name,
        units,
        epoch: plan.epoch,
    };
    crate::configure::configure(tree, &input)?;
    let cx = DeclaredContext {
        mtime: plan.epoch,
        renderer,
        data,
    };
    add_declared(tree, p, &cx)?;
    if let Some(test) = &p.test {
        add_test(tree, lp, plan, renderer, data, test)?;
    }
    crate::configure::enable_units(tree, &input)?;
    if plan.format == Format::Initramfs && !tree.contains("init") {
        bail!(
            "{}: the initramfs has no /init; add a [test] (kiln then generates /init) or a [[file]] with path = \"/init\"",
            lp.path.display()
        );
    }
    Ok(())
}

fn exe(data: Data, mtime: i64) -> Entry {
    Entry::new(Kind::File(data), Meta::new(0o755, mtime))
}

fn add_test(
    tree: &mut Tree,
    lp: &LoadedProfile,
    plan: &Plan,
    renderer: &Renderer,
    data: &Value,
    test: &crate::profile::Located<crate::profile::Test>,
) -> Result<()> {
    let body = match (&test.command, &test.script) {
        (Some(cmd), _) => Data::bytes(format!(
            "#!/bin/sh\n# The [test] command of profile \"{}\".\n{cmd}\n",
            plan.name
        )),
        (None, Some(script)) => {
            let md = std::fs::metadata(script as &Path)
                .with_context(|| format!("reading test script {}", script.display()))?;
            Data::Host {
                path: script.0.clone(),
                size: md.len(),
            }
        }
        (None, None) => bail!("{}: [test] needs `command` or `script`", lp.path.display()),
    };
    tree.insert("usr/lib/kiln/test", exe(body, plan.epoch))?;
    let wrapper = renderer.render("run-test (built in)", template::TEST_WRAPPER, data)?;
    tree.insert(
        "usr/lib/kiln/run-test",
        exe(Data::bytes(wrapper), plan.epoch),
    )?;
    match plan.format {
        Format::Initramfs => {
            if tree.contains("init") {
                progress::step("the profile provides /init; kiln's generated /init is not used");
            } else {
                let init = renderer.render("init (built in)", template::INITRAMFS_INIT, data)?;
                tree.insert("init", exe(Data::bytes(init), plan.epoch))?;
            }
        }
        // A tar is a root file system for someone else to boot: it gets the unit too.
        Format::Disk | Format::Tar => {
            let unit =
                renderer.render("kiln-test.service (built in)", template::TEST_UNIT, data)?;
            tree.insert(
                "usr/lib/systemd/system/kiln-test.service",
                Entry::new(Kind::File(Data::bytes(unit)), Meta::new(0o644, plan.epoch)),
            )?;
        }
    }
    Ok(())
}

pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}
