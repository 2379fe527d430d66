//! The values mkosi settings take, read as mkosi reads them, and the tables the import
//! maps through.

use std::path::Path;

use anyhow::{bail, Result};

use super::mkosi_ini::Setting;

/// Ubuntu releases and the Debian release each is closest to (by base and age).
pub const UBUNTU: &[(&str, &str)] = &[
    ("bionic", "buster"),
    ("focal", "bullseye"),
    ("jammy", "bookworm"),
    ("noble", "trixie"),
];

/// Scripts mkosi runs, found by name beside mkosi.conf: kiln runs none.
pub const SCRIPTS: &[&str] = &[
    "mkosi.build",
    "mkosi.prepare",
    "mkosi.postinst",
    "mkosi.finalize",
    "mkosi.postoutput",
    "mkosi.sync",
    "mkosi.configure",
    "mkosi.clean",
];

/// Settings kiln has nothing for, and why; anything neither here nor mapped is
/// reported as having no kiln equivalent.
pub const WHY: &[(&str, &str)] = &[
    (
        "BuildPackages",
        "kiln runs no build script; add any the image needs to Packages",
    ),
    ("BuildScript", "kiln runs no build script"),
    ("BuildScripts", "kiln runs no build script"),
    ("PrepareScript", "kiln runs no scripts while building"),
    ("PrepareScripts", "kiln runs no scripts while building"),
    (
        "PostInstallationScript",
        "kiln runs no scripts while building; put what it does in [[file]], [system] or an overlay",
    ),
    (
        "PostInstallationScripts",
        "kiln runs no scripts while building; put what they do in [[file]], [system] or an overlay",
    ),
    ("FinalizeScript", "kiln runs no scripts while building"),
    ("FinalizeScripts", "kiln runs no scripts while building"),
    (
        "PasswordIsHashed",
        "kiln takes the root password in clear and hashes it itself",
    ),
    ("WithDocs", "kiln installs packages whole"),
    (
        "Locale",
        "no [system] key; write /etc/default/locale with a [[file]]",
    ),
    (
        "Timezone",
        "no [system] key; write /etc/localtime with a [[symlink]]",
    ),
    ("Keymap", "no [system] key"),
    (
        "Checksum",
        "kiln writes a manifest and SBOM with sha256 digests instead",
    ),
    ("OutputDirectory", "use kiln's --out-dir"),
    ("CacheDirectory", "kiln keeps its own cache"),
    ("Incremental", "kiln's builds are incremental already"),
    ("SecureBoot", "kiln boots the kernel directly"),
    ("Bootloader", "kiln boots the kernel directly"),
];

pub fn boolean(s: &Setting) -> Result<bool> {
    match s.value.to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" | "on" | "always" => Ok(true),
        "no" | "false" | "0" | "off" | "never" => Ok(false),
        other => bail!("{}: {}={other} is not a boolean (yes or no)", s.at(), s.key),
    }
}

/// The words of a list setting: split at commas and white space.
pub fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
}

/// A list setting over all its assignments, `!NAME` removing an earlier `NAME`.
pub fn list(settings: &[&Setting]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in settings {
        for w in words(&s.value) {
            match w.strip_prefix('!') {
                Some(gone) => out.retain(|x| x != gone),
                None if !out.iter().any(|x| x == w) => out.push(w.to_string()),
                None => {}
            }
        }
    }
    out
}

pub fn quote(s: &str) -> String {
    toml_edit::Value::from(s).to_string().trim().to_string()
}

pub fn quoted_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|i| quote(i)).collect();
    format!("[{}]", inner.join(", "))
}

/// `path` as the profile should name it: relative to `base` (where the profile will be)
/// when it lies below it, else absolute.
pub fn relative_to(path: &Path, base: &Path) -> String {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (path, base) = (abs(path), abs(base));
    match path.strip_prefix(&base) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".to_string(),
        Ok(rel) => rel.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

pub fn first_line(s: &str) -> String {
    match s.split_once('\n') {
        Some((first, _)) => format!("{first} …"),
        None => s.to_string(),
    }
}
