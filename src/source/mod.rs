//! Where tree entries come from: packages of a distribution (behind the
//! [`PackageSource`] seam), overlay directories, host binaries with their libraries,
//! profile-declared files, and kernels.

pub mod debian;
pub mod declared;
pub mod elf;
pub mod kernel;
pub mod kernel_tree;
pub mod overlay;
mod overlay_walk;
pub mod remove;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::profile::LoadedProfile;
use crate::tree::Tree;
use kernel::KernelFiles;

/// Command-line settings for package handling, whichever the distribution.
#[derive(Debug, Clone, Default)]
pub struct PackageOptions {
    /// Overrides the profile's and the host's mirror.
    pub mirror: Option<String>,
    /// Accept an archive index whose validity period has passed.
    pub ignore_valid_until: bool,
    /// Fail instead of re-resolving when the lock no longer matches the profile.
    pub locked: bool,
    /// Parallel downloads (0: the default).
    pub jobs: usize,
    /// Never touch the network: build from the cache and the lock alone.
    pub offline: bool,
    /// Reuse a suite's InRelease fetched within this long instead of fetching it again.
    pub index_max_age: Option<std::time::Duration>,
}

/// What `kiln lock` did.
#[derive(Debug, Clone)]
pub enum LockOutcome {
    /// The lock already matched the profile; nothing was written.
    UpToDate {
        /// The lock file.
        path: PathBuf,
        /// Packages in it.
        packages: usize,
    },
    /// A fresh resolution was written.
    Written {
        /// The lock file.
        path: PathBuf,
        /// Packages for the image.
        packages: usize,
        /// Packages for the kernel and the boot initramfs.
        kernel_packages: usize,
    },
}

/// A distribution's packages, from resolution to the tree. Debian implements it; another
/// distribution is another implementation, not edits across the build.
pub trait PackageSource {
    /// Resolves against the archive (ignoring a current lock only when `update` is set)
    /// and writes the profile's lock.
    fn lock(&self, update: bool) -> Result<LockOutcome>;

    /// A digest of the packages a build would install (from the lock, or resolved),
    /// so that a build can tell it is up to date without fetching them; `fetch` then
    /// uses the same selection.
    fn selection(&self) -> Result<String>;

    /// Resolves (or reads the lock), downloads into the cache and unpacks, once; the
    /// methods below work on what this fetched.
    fn fetch(&self) -> Result<Box<dyn FetchedPackages>>;
}

/// Packages fetched for one build.
pub trait FetchedPackages {
    /// The image's packages into `tree`, with what their maintainer scripts would have
    /// set up declaratively (accounts base, alternatives, package database). Returns the
    /// units the scripts would have enabled.
    fn install(&self, tree: &mut Tree, epoch: i64) -> Result<Vec<String>>;

    /// The kernel the profile asked for, when it comes from a package.
    fn kernel(&self) -> Option<&KernelFiles>;

    /// The image's packages as its manifest and SBOM list them (their licenses are read
    /// from the built tree, by the caller).
    fn records(&self) -> Vec<crate::output::manifest::PackageRecord>;

    /// Copies the packaged kernel's whole module tree into `tree` (for disks, so udev
    /// can load drivers). Returns the number of entries copied.
    fn install_kernel_modules(&self, tree: &mut Tree, epoch: i64) -> Result<usize>;

    /// A static shell and core utilities (busybox) for the initramfs that boots a disk.
    fn install_boot_shell(&self, tree: &mut Tree, epoch: i64) -> Result<()>;

    /// Everything of these packages that the methods above read, as one string (which
    /// packages, where their unpacked contents are, what is written about their
    /// archive): the layer cache keeps what they made under it.
    fn identity(&self) -> String;
}

/// The package source a profile's `[distribution]` names, if it has one.
pub fn for_profile<'a>(
    lp: &'a LoadedProfile,
    opts: &'a PackageOptions,
) -> Result<Option<Box<dyn PackageSource + 'a>>> {
    let Some(d) = &lp.profile.distribution else {
        return Ok(None);
    };
    match d.name.as_deref().unwrap_or("debian") {
        "debian" => Ok(Some(Box::new(debian::Debian::new(lp, d, opts)))),
        other => bail!(
            "{}: distribution `{other}` is not supported; use \"debian\"",
            lp.path.display()
        ),
    }
}

/// `profiles/x.toml` → `profiles/x.lock`.
pub fn lock_path(profile: &Path) -> PathBuf {
    profile.with_extension("lock")
}

/// Whether `s` names a Debian kernel package, `PACKAGE` or `PACKAGE/SUITE`, rather than
/// a file.
pub fn is_kernel_package_spec(s: &str) -> bool {
    let (name, suite) = match s.split_once('/') {
        Some((n, s)) => (n, Some(s)),
        None => (s, None),
    };
    debian::kernel::is_kernel_package(name)
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
        && suite.is_none_or(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}
