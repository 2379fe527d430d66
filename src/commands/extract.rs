//! `kiln extract`.

use std::path::Path;

use anyhow::Result;

use super::{ExitStatus, Printer};
use crate::output::ext4::reader;

/// Copies `path` out of an ext4 image or disk into `dest`.
pub fn extract(image: &Path, path: &str, dest: &Path, printer: &Printer) -> Result<ExitStatus> {
    let img = reader::open(image)?;
    let r = reader::extract(&img, path.as_bytes(), dest, reader::Trust::Own)?;
    printer.step(format!(
        "extracted {} files, {} directories, {} symlinks into {}",
        r.files,
        r.dirs,
        r.symlinks,
        dest.display()
    ));
    if !r.skipped.is_empty() {
        printer.warn(format!(
            "{} device nodes, FIFOs or sockets not copied (they need root to create): {}",
            r.skipped.len(),
            r.skipped.join(" ")
        ));
    }
    for p in &r.problems {
        printer.warn(format!("not copied: {p}"));
    }
    Ok(if r.problems.is_empty() {
        ExitStatus::SUCCESS
    } else {
        ExitStatus::FAILURE
    })
}
