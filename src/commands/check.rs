//! `kiln check`: read profiles as a build would (includes, types, cross-key rules) and
//! build nothing, for editors' save hooks and CI linting.

use std::path::PathBuf;

use anyhow::Result;

use super::{ExitStatus, Printer};

/// Loads each profile; the first that is bad stops with its error (exit status 2).
pub fn check(profiles: &[PathBuf], printer: &Printer) -> Result<ExitStatus> {
    for path in profiles {
        let loaded = super::load(path)?;
        printer.out(format!(
            "{}: ok (format v{}, image {}, {} file{})",
            path.display(),
            crate::profile::load::FORMAT_VERSION,
            loaded.name,
            loaded.files.len(),
            if loaded.files.len() == 1 { "" } else { "s" }
        ));
    }
    Ok(ExitStatus::SUCCESS)
}
