//! A qcow2 copy of a raw disk, through `qemu-img` (the format has too many variants to be
//! worth writing by hand, and every QEMU installation ships the converter).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Writes `raw` with the extension `.qcow2` beside it, atomically; returns its path.
pub fn convert(raw: &Path) -> Result<PathBuf> {
    let dest = raw.with_extension("qcow2");
    let tmp = raw.with_extension("qcow2.tmp");
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(&tmp)
        .status()
        .context("running qemu-img (install qemu-utils for qcow2 output)")?;
    if !st.success() {
        let _ = std::fs::remove_file(&tmp);
        bail!("qemu-img convert failed ({st})");
    }
    std::fs::rename(&tmp, &dest)
        .with_context(|| format!("moving {} into place", dest.display()))?;
    Ok(dest)
}
