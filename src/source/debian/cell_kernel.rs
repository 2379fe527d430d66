//! Kernels for the cells of a matrix, from Debian packages: a versioned package or a
//! metapackage, from a named suite or the first suite that has it. Resolutions are
//! pinned in `PROFILE.kernels.lock`, so the same matrix boots the same kernels on
//! another day; the packages are fetched and verified through the cache like any other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::lock::LockedPackage;
use super::{kernel, Archive, DebianOptions};
use crate::profile::{Distribution, LoadedProfile};
use crate::source::kernel::KernelFiles;
use crate::util::cache::Cache;
use crate::util::http::Http;
use crate::util::progress;

/// Suites searched, after the profile's own, for a kernel package named without one.
pub const SUITES: [&str; 2] = ["trixie", "bookworm"];

/// One resolved kernel request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedKernel {
    /// What was asked for: `PACKAGE` or `PACKAGE/SUITE`.
    pub request: String,
    /// The suite it was found in.
    pub suite: String,
    /// The kernel package and the linux-image packages it depends on.
    #[serde(rename = "package")]
    pub packages: Vec<LockedPackage>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KernelsLock {
    #[serde(default, rename = "kernel")]
    kernels: Vec<LockedKernel>,
}

/// A kernel of a matrix, fetched and unpacked.
pub struct FetchedKernel {
    /// `PACKAGE_VERSION` of the versioned kernel package: a directory name.
    pub versioned: String,
    /// Its image, configuration and modules.
    pub files: KernelFiles,
    unpacked: Vec<super::deb::Unpacked>,
}

impl FetchedKernel {
    /// Puts the kernel's whole module tree (`lib/modules/RELEASE/…` of its packages,
    /// wherever the package keeps it) under `under/RELEASE/` in `tree`. Returns the
    /// number of entries.
    pub fn install_module_tree(
        &self,
        tree: &mut crate::tree::Tree,
        under: &str,
        epoch: i64,
    ) -> Result<usize> {
        let mut n = 0;
        for u in &self.unpacked {
            let tar = std::sync::Arc::new(u.data_tar.clone());
            for m in &u.members {
                let Some((_, rest)) = m.path.split_once("lib/modules/") else {
                    continue;
                };
                if rest.is_empty() {
                    continue;
                }
                if let Some(e) = super::install::member_entry(tree, m, &tar, epoch)? {
                    tree.insert(&format!("{under}/{}", rest.trim_end_matches('/')), e)?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

/// `profiles/x.toml` → `profiles/x.kernels.lock`.
pub fn kernels_lock_path(profile: &Path) -> PathBuf {
    profile.with_extension("kernels.lock")
}

/// Resolves kernel packages (through the kernels lock) and fetches them.
pub struct CellKernels<'a> {
    lp: &'a LoadedProfile,
    opts: &'a DebianOptions,
    base: Distribution,
    cache: Cache,
    http: Http,
    archives: BTreeMap<String, Archive>,
    lock: KernelsLock,
    changed: bool,
}

impl<'a> CellKernels<'a> {
    /// A resolver for `lp`'s matrix, using its `[distribution]`'s mirror and keyring (or
    /// Debian's defaults).
    pub fn new(lp: &'a LoadedProfile, opts: &'a DebianOptions) -> Result<Self> {
        let base = match &lp.profile.distribution {
            Some(d) => d.value.clone(),
            None => Distribution {
                name: None,
                suite: SUITES[0].to_string(),
                components: Vec::new(),
                architecture: None,
                mirror: None,
                keyring: None,
                packages: Vec::new(),
                exclude: Vec::new(),
                base: None,
                ignore_valid_until: None,
            },
        };
        let path = kernels_lock_path(&lp.path);
        let lock = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).with_context(|| {
                format!(
                    "{} is not a kernels lock; delete it to resolve the kernels afresh",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => KernelsLock::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(CellKernels {
            lp,
            opts,
            base,
            cache: Cache::open()?,
            http: Http::new()?.offline(opts.offline),
            archives: BTreeMap::new(),
            lock,
            changed: false,
        })
    }

    /// The kernel of package `name`, from `suite`, else the first suite that has it.
    pub fn fetch(&mut self, name: &str, suite: Option<&str>) -> Result<FetchedKernel> {
        let request = match suite {
            Some(s) => format!("{name}/{s}"),
            None => name.to_string(),
        };
        let locked = match self.lock.kernels.iter().find(|k| k.request == request) {
            Some(k) => k.clone(),
            None if self.opts.locked => bail!(
                "--locked: {} does not pin kernel {request}; run without --locked once to resolve it",
                kernels_lock_path(&self.lp.path).display()
            ),
            None => {
                let k = self.resolve(&request, name, suite)?;
                self.lock.kernels.push(k.clone());
                self.changed = true;
                k
            }
        };
        let mut d = self.base.clone();
        d.suite = locked.suite.clone();
        let mirror = super::mirror(&d, self.opts)?;
        let unpacked = super::fetch_and_unpack(
            &locked.packages,
            &mirror,
            self.opts,
            &self.cache,
            &self.http,
        )
        .with_context(|| {
            format!(
                "kernel {request}, pinned in {} (if the mirror no longer has that version, run `kiln lock --update {}`)",
                kernels_lock_path(&self.lp.path).display(),
                self.lp.path.display()
            )
        })?;
        let files = kernel::kernel_files(&unpacked).with_context(|| format!("kernel {request}"))?;
        let versioned = locked
            .packages
            .iter()
            .find(|p| p.name.ends_with(&files.release))
            .map(|p| format!("{}_{}", p.name, p.version))
            .unwrap_or_else(|| files.release.clone());
        Ok(FetchedKernel {
            versioned,
            files,
            unpacked,
        })
    }

    fn resolve(&mut self, request: &str, name: &str, suite: Option<&str>) -> Result<LockedKernel> {
        let suites: Vec<String> = match suite {
            Some(s) => vec![s.to_string()],
            None => std::iter::once(self.base.suite.clone())
                .chain(SUITES.iter().map(|s| s.to_string()))
                .fold(Vec::new(), |mut v, s| {
                    if !v.contains(&s) {
                        v.push(s);
                    }
                    v
                }),
        };
        for s in &suites {
            if !self.archives.contains_key(s) {
                let mut d = self.base.clone();
                d.suite = s.clone();
                let a = super::load_archive(&d, self.opts, &self.cache, &self.http)
                    .with_context(|| format!("looking for kernel {request} in suite {s}"))?;
                self.archives.insert(s.clone(), a);
            }
            let Some(a) = self.archives.get(s) else {
                continue;
            };
            // Not in this suite: try the next. Any other failure is the user's to see.
            if a.index
                .candidates(&super::resolve::parse_request(name))
                .is_empty()
            {
                continue;
            }
            let found = super::resolve_kernel(&a.index, name)
                .with_context(|| format!("kernel {request} in suite {s}"))?;
            progress::step(format!("kernel {request}: found in {s}"));
            return Ok(LockedKernel {
                request: request.to_string(),
                suite: s.clone(),
                packages: found
                    .into_iter()
                    .map(|i| super::locked(&a.index, i))
                    .collect(),
            });
        }
        bail!(
            "kernel package `{name}` is in none of the suites {}; check the name (e.g. `apt-cache policy {name}`), or name a suite: {name}/SUITE",
            suites.join(", ")
        )
    }

    /// Writes the kernels lock, if anything new was resolved.
    pub fn save(&self) -> Result<()> {
        if !self.changed {
            return Ok(());
        }
        let path = kernels_lock_path(&self.lp.path);
        let text = format!(
            "# The Debian kernels of {}'s matrix, pinned by kiln. Delete this file (or run\n# `kiln lock --update`) to resolve them afresh.\n{}",
            self.lp.path.display(),
            toml::to_string(&self.lock).context("writing the kernels lock")?
        );
        crate::util::atomic::write(&path, text.as_bytes())
    }
}
