//! `kiln fmt --upgrade`: rewrite profiles in the current format, keeping their comments
//! and layout, so a team can move its pinned profiles when it chooses (kiln reads every
//! older format meanwhile).

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{BadInput, ExitStatus, Printer};
use crate::profile::load::FORMAT_VERSION;
use crate::profile::migrate::{upgrade, MIGRATIONS};

/// Upgrades each profile in place (or, with `check`, only says which would change and
/// exits 1). A profile kiln cannot upgrade stops the run before anything is written.
pub fn fmt_upgrade(profiles: &[PathBuf], check: bool, printer: &Printer) -> Result<ExitStatus> {
    let mut upgrades = Vec::new();
    for path in profiles {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let up = upgrade(&text, MIGRATIONS, FORMAT_VERSION)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()).context(BadInput))?;
        upgrades.push((path, up));
    }
    let mut stale = false;
    for (path, up) in upgrades {
        let Some(up) = up else {
            printer.out(format!(
                "{}: format v{FORMAT_VERSION} already, unchanged",
                path.display()
            ));
            continue;
        };
        stale = true;
        if check {
            printer.out(format!(
                "{}: format v{}, would upgrade to v{FORMAT_VERSION}",
                path.display(),
                up.from
            ));
            continue;
        }
        crate::util::atomic::write(path, up.text.as_bytes())?;
        printer.out(format!(
            "{}: upgraded from format v{} to v{FORMAT_VERSION}",
            path.display(),
            up.from
        ));
        for change in &up.changes {
            printer.step(format!("  {change}"));
        }
    }
    Ok(if check && stale {
        ExitStatus::FAILURE
    } else {
        ExitStatus::SUCCESS
    })
}
