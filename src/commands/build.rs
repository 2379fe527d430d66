//! `kiln build`.

use anyhow::Result;

use super::{load, ExitStatus, Printer, ProfileArgs};

/// Builds the image and its manifest.
pub fn build(a: &ProfileArgs, _printer: &Printer) -> Result<ExitStatus> {
    let lp = load(&a.profile)?;
    crate::build::build(&lp, &a.build)?;
    Ok(ExitStatus::SUCCESS)
}
