//! PROFILE.lock: the exact packages a profile resolved to, so the same profile builds
//! the same image on another day, from any mirror that still has those files.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::profile::{Base, Distribution, Kernel};

/// The lock format this kiln reads and writes; a lock in another format must be regenerated.
pub const LOCK_VERSION: u32 = 1;

/// One package pinned by the lock: enough to download and verify it from any mirror.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    /// Package name.
    pub name: String,
    /// Exact version.
    pub version: String,
    /// The package's architecture (the lock's or `all`).
    pub architecture: String,
    /// Length of the .deb in bytes.
    pub size: u64,
    /// The .deb's path relative to the mirror's root (the index's Filename).
    pub filename: String,
    /// The .deb's sha256, as the signed index gave it.
    pub sha256: String,
    /// "same" for Multi-Arch: same packages, whose dpkg files carry the architecture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_arch: Option<String>,
}

/// The contents of PROFILE.lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// Lock format; must be [`LOCK_VERSION`].
    pub version: u32,
    /// Hash of everything in the profile that decides which packages are chosen.
    pub inputs: String,
    /// The suite the packages were resolved from.
    pub suite: String,
    /// The architecture they were resolved for.
    pub architecture: String,
    /// The Date of the suite's Release file the packages were resolved from.
    pub release_date: String,
    /// The packages installed into the image (`[[package]]` tables).
    #[serde(default, rename = "package")]
    pub packages: Vec<LockedPackage>,
    /// Packages kept out of the image (`[[kernel_package]]` tables): the kernel's, unless it is
    /// installed into the image, and busybox for a disk's boot initramfs.
    #[serde(default, rename = "kernel_package")]
    pub kernel_packages: Vec<LockedPackage>,
    /// The kernel's `-dbg` packages (`[[debug_package]]` tables), fetched only when a run
    /// needs the vmlinux: `[kernel] debug_symbols`.
    #[serde(
        default,
        rename = "debug_package",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub debug_packages: Vec<LockedPackage>,
}

/// The distribution's architecture, `amd64` by default.
pub fn architecture(d: &Distribution) -> String {
    d.architecture
        .clone()
        .unwrap_or_else(|| "amd64".to_string())
}

/// The distribution's archive components, `main` by default.
pub fn components(d: &Distribution) -> Vec<String> {
    if d.components.is_empty() {
        vec!["main".to_string()]
    } else {
        d.components.clone()
    }
}

/// The resolution inputs, hashed. Mirror and keyring are not inputs: they say where
/// files come from and who vouches for them, not which files.
pub fn inputs_hash(d: &Distribution, k: &Kernel, boot_initrd: bool) -> String {
    let mut v = serde_json::json!({
        "boot_initrd": boot_initrd,
        "suite": d.suite,
        "components": components(d),
        "architecture": architecture(d),
        "packages": d.packages,
        "exclude": d.exclude,
        "base": base_key(d.base.unwrap_or_default()),
        "kernel": k.package.as_ref().map(|p| p.value.clone()),
        "kernel_install": k.install.unwrap_or(false),
    });
    // Added only when set, so the locks of every other profile keep their hash.
    if k.debug_symbols.as_ref().is_some_and(|d| d.value) {
        v["debug_symbols"] = serde_json::Value::Bool(true);
    }
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}

/// The base set's name in the input hash. Spelled as lock format 1 has always hashed it
/// (capitalised), so existing locks stay current; written out so that renaming the enum
/// cannot silently invalidate every lock.
fn base_key(b: Base) -> &'static str {
    match b {
        Base::None => "None",
        Base::Essential => "Essential",
        Base::Minbase => "Minbase",
        Base::Important => "Important",
    }
}

/// Reads a lock file; `None` when it does not exist.
pub fn read(path: &Path) -> Result<Option<LockFile>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let lock: LockFile = toml::from_str(&text).with_context(|| {
        format!(
            "{} is not a valid kiln lock file; delete it or run `kiln lock --update`",
            path.display()
        )
    })?;
    if lock.version != LOCK_VERSION {
        anyhow::bail!(
            "{} has lock format {}, this kiln writes {LOCK_VERSION}; run `kiln lock --update`",
            path.display(),
            lock.version
        );
    }
    Ok(Some(lock))
}

/// Writes the lock atomically, under a comment saying what it is and how to refresh it.
pub fn write(path: &Path, lock: &LockFile) -> Result<()> {
    let mut text = String::from("# Generated by `kiln lock`: the packages this profile resolved to. Commit it;\n# refresh it with `kiln lock --update`.\n");
    text.push_str(&toml::to_string(lock).context("serialising the lock")?);
    crate::util::atomic::write(path, text.as_bytes())
}
