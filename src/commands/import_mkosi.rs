//! `kiln import-mkosi`.

use std::path::Path;

use anyhow::Result;

use super::{BadInput, ExitStatus, Printer};
use crate::import::{mkosi, mkosi_ini};

/// Reads the mkosi configuration at `config` and prints the profile (or writes it to
/// `output`, only when the import succeeds); warnings and unmapped settings go to stderr.
pub fn import_mkosi(config: &Path, output: Option<&Path>, printer: &Printer) -> Result<ExitStatus> {
    let read = mkosi_ini::read(config).map_err(|e| e.context(BadInput))?;
    let profile_dir = match output {
        Some(o) => o
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
        None => std::env::current_dir()?,
    };
    let imported = mkosi::import(&read, &profile_dir).map_err(|e| e.context(BadInput))?;
    for w in &imported.warnings {
        printer.warn(w);
    }
    if !imported.unmapped.is_empty() {
        printer.err(format!(
            "kiln: {} setting{} not mapped:",
            imported.unmapped.len(),
            if imported.unmapped.len() == 1 {
                ""
            } else {
                "s"
            }
        ));
        for u in &imported.unmapped {
            printer.err(format!("  {u}"));
        }
    }
    // What was written must load: a mapping bug is kiln's, and is caught here.
    let mut temp = tempfile::Builder::new();
    temp.prefix("kiln-import-").suffix(".toml");
    let check = temp
        .tempfile_in(&profile_dir)
        .or_else(|_| temp.tempfile())?;
    std::fs::write(check.path(), &imported.profile)?;
    crate::profile::load(check.path()).map_err(|e| {
        anyhow::anyhow!("the imported profile does not load, which is kiln's fault: {e}")
    })?;
    match output {
        Some(o) => {
            crate::util::atomic::write(o, imported.profile.as_bytes())?;
            printer.step(format!(
                "wrote {}; next: kiln build {}",
                o.display(),
                o.display()
            ));
        }
        None => printer.out_raw(imported.profile.as_bytes()),
    }
    Ok(ExitStatus::SUCCESS)
}
