//! From a loaded profile and its plan to image files: fetch packages, assemble the tree
//! layer by layer, hand it to the plan's writer, write the manifest.
//!
//! Layer order (later layers win): packages → removals → system configuration →
//! [[binary]] → [[overlay]] → [[directory]] → [[file]] → [[symlink]] → [[hardlink]] →
//! [[device]] → the test and kiln's generated files.

pub mod boot_initrd;
pub mod kernels;
pub mod layer_cache;
pub mod layers;
pub mod modules;
pub mod uptodate;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::output::manifest::{Manifest, PackageRecord};
use crate::output::staging::Staging;
use crate::plan::{BuildOptions, KernelPlan, Plan};
use crate::profile::{Format, LoadedProfile};
use crate::source::kernel::KernelFiles;
use crate::source::{self, FetchedPackages};
use crate::template::Renderer;
use crate::tree::{Data, Kind, Tree};
use crate::util::atomic::{self, AtomicFile};
use crate::util::progress;
use crate::util::size::human_bytes;
use layer_cache::{LayerKey, PackageLayers};
use uptodate::Key;

/// What a build produced.
pub struct Built {
    /// The plan it followed.
    pub plan: Plan,
    /// The manifest it wrote; None when the outputs were up to date.
    pub manifest: Option<Manifest>,
    /// Every file it wrote (or, up to date, that an earlier build wrote), committed together.
    pub outputs: Vec<PathBuf>,
    /// How long it took, deciding included.
    pub elapsed: std::time::Duration,
}

/// Builds the image `lp` describes, unless the outputs are up to date with everything
/// they are made of (and `opts.rebuild` is not set).
pub fn build(lp: &LoadedProfile, opts: &BuildOptions) -> Result<Built> {
    let start = Instant::now();
    let plan = Plan::new(lp, opts)?;
    let source = source::for_profile(lp, &opts.packages)?;
    let selection = source.as_ref().map(|s| s.selection()).transpose()?;
    let key = Key::new(lp, opts, &plan, selection.as_deref());
    // A build killed while committing is finished first, so that its outputs are judged.
    crate::output::staging::recover(&plan.out_dir, &plan.name)?;
    if let Some(outputs) = (!opts.rebuild).then(|| key.up_to_date(&plan)).flatten() {
        progress::step(format!(
            "{} is up to date ({:.0} ms; --rebuild builds it anyway)",
            plan.image.display(),
            start.elapsed().as_secs_f64() * 1000.0
        ));
        return Ok(Built {
            plan,
            manifest: None,
            outputs,
            elapsed: start.elapsed(),
        });
    }
    let renderer = Renderer::new();
    let pkgs = match &source {
        Some(s) => Some(s.fetch()?),
        None => None,
    };
    let pkgs = pkgs.as_deref();
    // A build tree's kernel, else the package's.
    let tree_files = match &plan.kernel {
        KernelPlan::Tree(t) => Some(t.files()?),
        _ => None,
    };
    let kernel = tree_files
        .as_ref()
        .or_else(|| pkgs.and_then(|p| p.kernel()));
    let modules = modules::image_modules(lp, &plan, kernel)?;
    let data = layers::template_data(
        lp,
        &plan,
        &modules::module_paths(&modules.all().cloned().collect::<Vec<_>>()),
    )?;
    let make = || package_layers(lp, &plan, pkgs, kernel, &modules);
    let PackageLayers {
        mut tree,
        mut units,
        depmod,
        ..
    } = match pkgs {
        Some(p) => {
            let key = LayerKey::new(lp, &plan, p);
            layer_cache::layers(key.as_ref(), opts.rebuild, make)?
        }
        None => make()?,
    };
    if plan.format == Format::Disk && !plan.tests.is_empty() {
        units.push("kiln-test.service".to_string());
    }
    if depmod {
        units.push("kiln-depmod.service".to_string());
    }
    // Without --rebuild, overlay files unchanged since the last build keep the digests it
    // computed, and are not hashed again.
    let known_contents = key.known_contents(&plan, opts.rebuild);
    let known = |p: &Path, md: &std::fs::Metadata| known_contents.get(p, md);
    let seen = layers::assemble(&mut tree, lp, &plan, &renderer, &data, units, &known)?;
    let reused = known_contents.given();
    progress::step(format!(
        "writing {} ({} entries, {}{})",
        plan.image.display(),
        tree.len(),
        human_bytes(tree.content_bytes()),
        match reused {
            0 => String::new(),
            n => format!("; {n} host files unchanged since the last build, not hashed again"),
        }
    ));
    // Everything is written aside and committed as one set: a build that fails or is
    // killed leaves the previous image, manifest, kernel and boot initramfs together.
    let mut staging = Staging::new(&plan.out_dir, &plan.name)?;
    Key::forget(&plan)?;
    let inputs = key.stamp_inputs(&tree, seen)?;
    let mut manifest = plan
        .writer
        .writer()
        .write(&tree, &staging.path(&plan.image)?)?;
    manifest.source_date_epoch = Some(plan.epoch);
    manifest.packages = pkgs.map(|p| sbom_packages(p, &tree)).unwrap_or_default();
    manifest.host_files = host_files(&tree);
    let (outputs, inputs) = std::thread::scope(|scope| -> Result<_> {
        // The inputs' digests (one per overlay path) beside the writing of the rest.
        let inputs = scope.spawn(|| Key::digest_inputs(inputs, &tree, &manifest));
        let unchanged = scope.spawn(|| known_contents.check_unchanged());
        // The SBOM (an entry per file) beside the manifest.
        let sbom = scope.spawn(|| crate::output::sbom::spdx(&manifest));
        atomic::write(
            &staging.path(&plan.manifest)?,
            manifest.to_json().as_bytes(),
        )?;
        let sbom = sbom
            .join()
            .map_err(|_| anyhow::anyhow!("the thread writing the SBOM panicked"))??;
        atomic::write(&staging.path(&plan.sbom)?, sbom.as_bytes())?;
        if let (KernelPlan::Package { vmlinuz, .. }, Some(k)) = (&plan.kernel, kernel) {
            write_data(&k.vmlinuz, &staging.path(vmlinuz)?)?;
            // Beside the kernel, where the preflight looks for a kernel's configuration.
            if let Some(config) = &k.config {
                write_data(config, &staging.path(&vmlinuz.with_extension("config"))?)?;
            }
            progress::step(format!("kernel {} → {}", k.release, vmlinuz.display()));
        }
        if let (Some(initrd), Some(p), Some(k)) = (&plan.boot_initrd, pkgs, kernel) {
            let staged = staging.path(initrd)?;
            let make = || boot_initrd::build(lp, &plan, k, p, &staged, &renderer);
            let cached = match LayerKey::boot_initrd(lp, &plan, p) {
                Some(key) => layer_cache::file(&key, opts.rebuild, &staged, make)?,
                None => {
                    make()?;
                    false
                }
            };
            if cached {
                progress::step(format!(
                    "boot initramfs {} from the layer cache",
                    initrd.display()
                ));
            }
        }
        unchanged
            .join()
            .map_err(|_| anyhow::anyhow!("the thread checking the overlay files panicked"))??;
        let outputs = staging.commit()?;
        let inputs = inputs
            .join()
            .map_err(|_| anyhow::anyhow!("the thread digesting the build's inputs panicked"))?;
        Ok((outputs, inputs))
    })?;
    key.record(&plan, inputs, &outputs)?;
    crate::util::background::drop_in_background((tree, key, known_contents));
    let size = std::fs::metadata(&plan.image).map(|m| m.len()).unwrap_or(0);
    progress::step(format!(
        "built {} ({}, {}) in {:.1}s",
        plan.image.display(),
        human_bytes(size),
        manifest.short_digest(),
        start.elapsed().as_secs_f64()
    ));
    Ok(Built {
        plan,
        manifest: Some(manifest),
        outputs,
        elapsed: start.elapsed(),
    })
}

/// The package layers: the packages, the `remove` patterns, the image's module list and
/// the kernel's module tree.
fn package_layers(
    lp: &LoadedProfile,
    plan: &Plan,
    pkgs: Option<&dyn FetchedPackages>,
    kernel: Option<&KernelFiles>,
    modules: &modules::ImageModules,
) -> Result<PackageLayers> {
    let mut tree = Tree::new(plan.epoch);
    let mut units = Vec::new();
    if let Some(p) = pkgs {
        units = p.install(&mut tree, plan.epoch)?;
        let removed = source::remove::remove(&mut tree, &lp.profile.remove)?;
        if removed > 0 {
            progress::step(format!("removed {removed} entries matching `remove`"));
        }
    }
    modules::insert_module_list(&mut tree, modules, plan.epoch)?;
    let depmod = modules::install_kernel_modules(&mut tree, lp, plan, pkgs, kernel)?;
    Ok(PackageLayers {
        tree,
        units,
        depmod,
        told: Vec::new(),
    })
}

/// The image's packages, with the licenses their machine-readable copyright files in
/// `tree` name.
fn sbom_packages(pkgs: &dyn FetchedPackages, tree: &Tree) -> Vec<PackageRecord> {
    let mut records = pkgs.records();
    for r in &mut records {
        let path = format!("usr/share/doc/{}/copyright", r.name);
        // Capped: a copyright file is text, and a package is not trusted to keep it small.
        let text = tree.get(&path).and_then(|e| match &e.kind {
            Kind::File(d) if d.len() <= 4 << 20 => {
                let mut buf = Vec::new();
                d.open().ok()?.read_to_end(&mut buf).ok()?;
                String::from_utf8(buf).ok()
            }
            _ => None,
        });
        if let Some(t) = text {
            r.copyright_licenses = crate::output::sbom::copyright_licenses(&t);
        }
    }
    records
}

/// Image paths of the files whose contents come from the host, sorted.
fn host_files(tree: &Tree) -> Vec<String> {
    let mut paths: Vec<String> = tree
        .iter()
        .filter(|(_, e)| matches!(&e.kind, Kind::File(Data::Host { .. })))
        .map(|(p, _)| format!("/{p}"))
        .collect();
    paths.sort();
    paths
}

/// Copies a tree data source to a file, atomically.
pub fn write_data(data: &Data, dest: &Path) -> Result<()> {
    let mut out = AtomicFile::create(dest)?;
    let mut src = data
        .open()
        .with_context(|| format!("reading {}", data.describe()))?;
    src.copy_to(out.file())
        .with_context(|| format!("copying {} to {}", data.describe(), dest.display()))?;
    out.commit()?;
    Ok(())
}
