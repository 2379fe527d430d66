//! `kiln lock`.

use anyhow::{bail, Context, Result};

use super::{load, ExitStatus, Printer, ProfileArgs};
use crate::source::{self, LockOutcome};

/// Resolves the profile's packages and writes its lock, unless it is current and
/// `update` is not set.
pub fn lock(a: &ProfileArgs, update: bool, json: bool, printer: &Printer) -> Result<ExitStatus> {
    let lp = load(&a.profile)?;
    let Some(src) = source::for_profile(&lp, &a.build.packages)? else {
        bail!(
            "{} has no [distribution]; there is nothing to lock",
            a.profile.display()
        );
    };
    let (path, written) = match src.lock(update)? {
        LockOutcome::UpToDate { path, packages } => {
            printer.step(format!(
                "{} is up to date ({packages} packages); use --update to refresh it",
                path.display()
            ));
            (path, false)
        }
        LockOutcome::Written {
            path,
            packages,
            kernel_packages,
        } => {
            printer.step(format!(
                "wrote {} ({packages} packages, {kernel_packages} kernel packages)",
                path.display()
            ));
            (path, true)
        }
    };
    // The matrix's kernels are pinned apart; --update lets the next matrix run
    // resolve them afresh too.
    let kernels = crate::source::debian::cell_kernel::kernels_lock_path(&a.profile);
    if update && kernels.exists() {
        std::fs::remove_file(&kernels)
            .map_err(|e| anyhow::anyhow!("removing {}: {e}", kernels.display()))?;
        printer.step(format!(
            "removed {}; the next `kiln test --matrix` resolves the matrix's kernels afresh",
            kernels.display()
        ));
    }
    if json {
        let lock = crate::source::debian::lock::read(&path)?
            .with_context(|| format!("{} vanished after it was written", path.display()))?;
        // The lock's own TOML names its tables in the singular (`[[package]]`); JSON
        // readers expect lists named in the plural.
        let v = serde_json::json!({
            "lock": path,
            "written": written,
            "suite": lock.suite,
            "architecture": lock.architecture,
            "release_date": lock.release_date,
            "inputs": lock.inputs,
            "packages": lock.packages,
            "kernel_packages": lock.kernel_packages,
            "debug_packages": lock.debug_packages,
        });
        printer.out(serde_json::to_string(&v)?);
    }
    Ok(ExitStatus::SUCCESS)
}
