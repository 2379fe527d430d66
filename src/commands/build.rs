//! `kiln build`, and its `--json` report.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{load, ExitStatus, Printer, ProfileArgs};
use crate::build::Built;
use crate::output::manifest::Manifest;
use crate::tree::digest::FileDigest;

/// Builds the image and its manifest; with `json`, prints [`BuildReport`] on stdout.
pub fn build(a: &ProfileArgs, json: bool, printer: &Printer) -> Result<ExitStatus> {
    let lp = load(&a.profile)?;
    let built = crate::build::build(&lp, &a.build)?;
    if json {
        let report = BuildReport::of(&a.profile, &built)?;
        printer.out(serde_json::to_string(&report)?);
    }
    crate::util::background::drop_in_background(built);
    Ok(ExitStatus::SUCCESS)
}

/// What `kiln build --json` prints: one object. Field names are stable (README,
/// "Machine-readable output").
#[derive(Debug, Serialize)]
pub struct BuildReport {
    /// kiln's version.
    pub kiln_version: &'static str,
    /// The profile file, as named.
    pub profile: PathBuf,
    /// The image's name.
    pub name: String,
    /// initramfs, tar or disk.
    pub format: String,
    /// The outputs were current and nothing was written.
    pub up_to_date: bool,
    /// Wall time of the command's build step, in seconds.
    pub seconds: f64,
    /// Entries in the image (files, directories, links...).
    pub entries: usize,
    /// Every output, the image first.
    pub outputs: Vec<OutputReport>,
}

/// One output file.
#[derive(Debug, Serialize)]
pub struct OutputReport {
    /// image, manifest, sbom, kernel, kernel_config, boot_initramfs or qcow2.
    pub role: &'static str,
    /// Its path.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// sha256 of its bytes, what `sha256sum` prints; a disk that is mostly holes has
    /// `sparse_sha256` instead unless the profile asks for both (`image_sha256`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The sparse digest of a mostly empty disk (see the README's "Sparse files").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparse_sha256: Option<String>,
}

impl BuildReport {
    fn of(profile: &Path, built: &Built) -> Result<BuildReport> {
        let plan = &built.plan;
        let manifest = match &built.manifest {
            Some(m) => m.clone(),
            None => {
                let text = std::fs::read(&plan.manifest)
                    .with_context(|| format!("reading {}", plan.manifest.display()))?;
                serde_json::from_slice::<Manifest>(&text)
                    .with_context(|| format!("reading {}", plan.manifest.display()))?
            }
        };
        let mut outputs = Vec::new();
        let mut paths = built.outputs.clone();
        // The image first, then in a fixed order.
        paths.sort_by_key(|p| (p != &plan.image, p.clone()));
        for path in paths {
            let size = std::fs::metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .len();
            let (sha256, sparse_sha256) = if path == plan.image {
                (
                    manifest.image_sha256.clone(),
                    manifest.image_sparse_sha256.clone(),
                )
            } else {
                let f = std::fs::File::open(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                match FileDigest::of_file(&f, size)
                    .with_context(|| format!("reading {}", path.display()))?
                {
                    FileDigest::Sha256(h) => (Some(h), None),
                    FileDigest::Sparse(h) => (None, Some(h)),
                }
            };
            outputs.push(OutputReport {
                role: role(plan, &path),
                path,
                size,
                sha256,
                sparse_sha256,
            });
        }
        Ok(BuildReport {
            kiln_version: env!("CARGO_PKG_VERSION"),
            profile: profile.to_path_buf(),
            name: plan.name.clone(),
            format: manifest.format.clone(),
            up_to_date: built.manifest.is_none(),
            seconds: built.elapsed.as_secs_f64(),
            entries: manifest.entries.len(),
            outputs,
        })
    }
}

fn role(plan: &crate::plan::Plan, path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if path == plan.image {
        "image"
    } else if path == plan.manifest {
        "manifest"
    } else if path == plan.sbom {
        "sbom"
    } else if Some(path) == plan.boot_initrd.as_deref() {
        "boot_initramfs"
    } else if ext == "qcow2" {
        "qcow2"
    } else if ext == "config" {
        "kernel_config"
    } else if ext == "vmlinuz" {
        "kernel"
    } else {
        "other"
    }
}
