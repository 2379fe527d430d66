//! `kiln init`: a commented profile that builds and passes as it is, to start from.
//!
//! The templates are the shipped profiles themselves (with the files they name), built
//! into kiln, so a template is exactly what the test suite builds and boots.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{ExitStatus, Printer};

/// What `kiln init` can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// A busybox initramfs from Debian trixie on Debian's cloud kernel; its test prints
    /// `uname -r` (the built-in default profile).
    Busybox,
    /// A GPT disk with an ext4 root that boots systemd, and a test script.
    DebianDisk,
    /// The Memorizer kernel-tracing test, for a Memorizer kernel.
    Memorizer,
    /// One test over several Debian kernels.
    KernelMatrix,
}

impl Template {
    /// The profile's text, and the files it names: (path relative to the profile, text).
    fn files(self) -> (&'static str, Vec<(&'static str, &'static str)>) {
        match self {
            Template::Busybox => (crate::profile::default::BUILT_IN, vec![]),
            Template::DebianDisk => (
                include_str!("../../profiles/debian-minimal-disk.toml"),
                vec![(
                    "tests/debian-disk.sh",
                    include_str!("../../profiles/tests/debian-disk.sh"),
                )],
            ),
            Template::Memorizer => (
                include_str!("../../profiles/memorizer.toml"),
                vec![(
                    "memorizer/memorizer-test.sh",
                    include_str!("../../profiles/memorizer/memorizer-test.sh"),
                )],
            ),
            Template::KernelMatrix => (include_str!("../../profiles/kernel-matrix.toml"), vec![]),
        }
    }
}

/// The schema file a written profile's `#:schema` line names, beside it.
const SCHEMA_FILE: &str = "kiln.schema.json";

/// Writes the profile `name` (`.toml` added unless given) from `template`, with the files
/// it names beside it, and `kiln.schema.json` for editors unless one is there already.
/// Refuses, writing nothing, when the profile or any file it names exists.
pub fn init(name: &Path, template: Template, printer: &Printer) -> Result<ExitStatus> {
    let profile = if name.extension().is_some_and(|e| e == "toml") {
        name.to_path_buf()
    } else {
        let mut p = name.as_os_str().to_owned();
        p.push(".toml");
        PathBuf::from(p)
    };
    let dir = profile.parent().unwrap_or(Path::new("")).to_path_buf();
    let (text, companions) = template.files();
    let text = crate::profile::default::with_schema_line(text, Some(SCHEMA_FILE));
    let mut writes: Vec<(PathBuf, String)> = vec![(profile.clone(), text)];
    writes.extend(
        companions
            .iter()
            .map(|(rel, t)| (dir.join(rel), t.to_string())),
    );
    let existing: Vec<String> = writes
        .iter()
        .filter(|(p, _)| p.symlink_metadata().is_ok())
        .map(|(p, _)| p.display().to_string())
        .collect();
    if !existing.is_empty() {
        bail!(
            "{} already exist{}; kiln init does not overwrite (choose another name, or remove {})",
            existing.join(", "),
            if existing.len() == 1 { "s" } else { "" },
            if existing.len() == 1 { "it" } else { "them" }
        );
    }
    for (p, t) in &writes {
        if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        crate::util::atomic::write(p, t.as_bytes())?;
        if p.extension().is_some_and(|e| e == "sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("making {} executable", p.display()))?;
        }
        printer.step(format!("wrote {}", p.display()));
    }
    let schema = dir.join(SCHEMA_FILE);
    if schema.symlink_metadata().is_err() {
        let text =
            serde_json::to_string_pretty(&crate::profile::json_schema::profile_schema())? + "\n";
        crate::util::atomic::write(&schema, text.as_bytes())?;
        printer.step(format!(
            "wrote {} (the profile's first line points editors at it)",
            schema.display()
        ));
    }
    printer.step(format!(
        "next: kiln test {} (or kiln build, kiln boot)",
        profile.display()
    ));
    Ok(ExitStatus::SUCCESS)
}
