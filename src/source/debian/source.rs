//! Debian behind the [`PackageSource`] seam: the lock, the packages of the image, the
//! kernel's, and busybox for the initramfs that boots a disk.

use std::cell::OnceCell;
use std::sync::Arc;

use anyhow::{bail, Result};
use sha2::Digest;

use super::deb::Unpacked;
use super::lock::{LockFile, LockedPackage};
use super::{dpkg, install, kernel, LockState};
use crate::profile::{Distribution, LoadedProfile};
use crate::source::kernel::KernelFiles;
use crate::source::{FetchedPackages, LockOutcome, PackageOptions, PackageSource};
use crate::tree::Tree;
use crate::util::cache::Cache;
use crate::util::http::Http;

/// A profile's `[distribution]` of Debian.
pub struct Debian<'a> {
    lp: &'a LoadedProfile,
    d: &'a Distribution,
    opts: &'a PackageOptions,
    /// The lock or a fresh resolution, made once per build.
    chosen: OnceCell<LockFile>,
}

impl<'a> Debian<'a> {
    /// The Debian source of `lp`, whose `[distribution]` is `d`.
    pub fn new(lp: &'a LoadedProfile, d: &'a Distribution, opts: &'a PackageOptions) -> Self {
        Debian {
            lp,
            d,
            opts,
            chosen: OnceCell::new(),
        }
    }

    fn chosen(&self, cache: &Cache, http: &Http) -> Result<&LockFile> {
        if let Some(l) = self.chosen.get() {
            return Ok(l);
        }
        let l = super::selection(self.lp, self.d, self.opts, cache, http)?;
        Ok(self.chosen.get_or_init(|| l))
    }
}

impl PackageSource for Debian<'_> {
    fn lock(&self, update: bool) -> Result<LockOutcome> {
        let path = crate::source::lock_path(&self.lp.path);
        if let (false, LockState::Current(l)) = (update, super::lock_state(self.lp, self.d)?) {
            return Ok(LockOutcome::UpToDate {
                path,
                packages: l.packages.len(),
            });
        }
        let cache = Cache::open()?;
        let http = Http::new()?.offline(self.opts.offline);
        let lock = super::resolve_fresh(self.lp, self.d, self.opts, &cache, &http)?;
        super::lock::write(&path, &lock)?;
        Ok(LockOutcome::Written {
            path,
            packages: lock.packages.len(),
            kernel_packages: lock.kernel_packages.len(),
        })
    }

    fn selection(&self) -> Result<String> {
        let cache = Cache::open()?;
        let http = Http::new()?.offline(self.opts.offline);
        let l = self.chosen(&cache, &http)?;
        let what = format!(
            "{:?}",
            (
                &l.architecture,
                &l.suite,
                &l.release_date,
                &l.packages,
                &l.kernel_packages
            )
        );
        Ok(hex::encode(sha2::Sha256::digest(what.as_bytes())))
    }

    fn fetch(&self) -> Result<Box<dyn FetchedPackages>> {
        let cache = Cache::open()?;
        let http = Http::new()?.offline(self.opts.offline);
        let lock = self.chosen(&cache, &http)?.clone();
        let mirror = super::mirror(self.d, self.opts)?;
        let image = super::fetch_and_unpack(&lock.packages, &mirror, self.opts, &cache, &http)?;
        let boot_unpacked =
            super::fetch_and_unpack(&lock.kernel_packages, &mirror, self.opts, &cache, &http)?;
        let boot: Vec<_> = lock
            .kernel_packages
            .iter()
            .cloned()
            .zip(boot_unpacked)
            .collect();
        let k = &self.lp.profile.kernel;
        let kernel_in_image = k.install.unwrap_or(false);
        // The kernel comes from the image's packages when it is installed there, else
        // from the separately locked kernel set.
        let kernel_pkgs: Vec<Unpacked> = if kernel_in_image {
            image
                .iter()
                .zip(&lock.packages)
                .filter(|(_, p)| kernel::is_kernel_package(&p.name))
                .map(|(u, _)| u.clone())
                .collect()
        } else {
            boot.iter()
                .filter(|(p, _)| kernel::is_kernel_package(&p.name))
                .map(|(_, u)| u.clone())
                .collect()
        };
        let kernel_files = match &k.package {
            Some(_) => Some(kernel::kernel_files(&kernel_pkgs)?),
            None => None,
        };
        Ok(Box::new(DebianFetched {
            lock,
            mirror,
            image,
            boot,
            kernel: kernel_files,
            kernel_in_image,
            suite: self.d.suite.clone(),
            components: super::lock::components(self.d),
        }))
    }
}

/// Debian packages fetched and unpacked for one build.
pub struct DebianFetched {
    lock: LockFile,
    mirror: String,
    image: Vec<Unpacked>,
    /// The kernel set's packages (kernel and, for disks, busybox).
    boot: Vec<(LockedPackage, Unpacked)>,
    kernel: Option<KernelFiles>,
    kernel_in_image: bool,
    suite: String,
    components: Vec<String>,
}

impl FetchedPackages for DebianFetched {
    fn records(&self) -> Vec<crate::output::manifest::PackageRecord> {
        let mut all: Vec<_> = self
            .lock
            .packages
            .iter()
            .zip(&self.image)
            .map(|(locked, unpacked)| {
                let control = super::control::parse(&unpacked.control)
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                let field = |name: &str| control.get(name).map(|v| v.trim().to_string());
                crate::output::manifest::PackageRecord {
                    name: locked.name.clone(),
                    version: locked.version.clone(),
                    architecture: locked.architecture.clone(),
                    deb_sha256: locked.sha256.clone(),
                    maintainer: field("Maintainer"),
                    // "Source: name (version)" when the source version differs.
                    source: field("Source")
                        .and_then(|s| s.split_whitespace().next().map(str::to_string)),
                    homepage: field("Homepage"),
                    copyright_licenses: Vec::new(),
                }
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    fn install(&self, tree: &mut Tree, epoch: i64) -> Result<Vec<String>> {
        let list: Vec<install::Package> = self
            .lock
            .packages
            .iter()
            .zip(&self.image)
            .map(|(locked, unpacked)| install::Package { locked, unpacked })
            .collect();
        let report = install::install(tree, &list, epoch)?;
        install::log_report(&report);
        if tree.contains("usr/bin/dpkg") {
            dpkg::write_database(tree, &list, &self.lock.architecture, epoch)?;
        }
        if tree.contains("usr/bin/apt") {
            let keyring = tree
                .contains("usr/share/keyrings/debian-archive-keyring.gpg")
                .then_some(super::DEFAULT_KEYRING);
            dpkg::write_apt_sources(
                tree,
                &self.mirror,
                &self.suite,
                &self.components,
                keyring,
                epoch,
            )?;
        }
        Ok(report.units)
    }

    fn kernel(&self) -> Option<&KernelFiles> {
        self.kernel.as_ref()
    }

    fn install_kernel_modules(&self, tree: &mut Tree, epoch: i64) -> Result<usize> {
        // An installed kernel package already brought its modules.
        if self.kernel_in_image {
            return Ok(0);
        }
        let mut n = 0;
        for (p, u) in &self.boot {
            if !kernel::is_kernel_package(&p.name) {
                continue;
            }
            let tar = Arc::new(u.data_tar.clone());
            for m in &u.members {
                if !m.path.contains("lib/modules/") {
                    continue;
                }
                if let Some(e) = install::member_entry(tree, m, &tar, epoch)? {
                    tree.insert(&m.path, e)?;
                }
                n += 1;
            }
        }
        Ok(n)
    }

    fn install_boot_shell(&self, tree: &mut Tree, epoch: i64) -> Result<()> {
        let busybox: Vec<install::Package> = self
            .boot
            .iter()
            .filter(|(p, _)| p.name == super::BOOT_SHELL)
            .map(|(locked, unpacked)| install::Package { locked, unpacked })
            .collect();
        if busybox.is_empty() {
            bail!(
                "the lock has no {} for the boot initramfs; run `kiln lock --update`",
                super::BOOT_SHELL
            );
        }
        install::install(tree, &busybox, epoch)?;
        Ok(())
    }

    fn identity(&self) -> String {
        let unpacked = |u: &Unpacked| {
            (
                u.deb_sha256.clone(),
                u.data_sha256.clone(),
                u.data_tar.clone(),
            )
        };
        format!(
            "{:?}",
            (
                &self.lock,
                &self.mirror,
                &self.suite,
                &self.components,
                self.kernel_in_image,
                self.image.iter().map(unpacked).collect::<Vec<_>>(),
                self.boot
                    .iter()
                    .map(|(_, u)| unpacked(u))
                    .collect::<Vec<_>>(),
            )
        )
    }
}
