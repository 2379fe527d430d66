//! `kiln sbom`: the SPDX document of a built image, from its manifest.

use std::path::Path;

use anyhow::{anyhow, Context, Result};

use super::{BadInput, ExitStatus, Printer};
use crate::output::manifest::Manifest;

/// Prints the SPDX 2.3 JSON of the image `manifest` describes: the same bytes as the
/// `NAME.spdx.json` its build wrote.
pub fn sbom(manifest: &Path, printer: &Printer) -> Result<ExitStatus> {
    let text =
        std::fs::read(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let not_manifest = |why: String| {
        anyhow!(
            "{} is not a kiln manifest ({why}); give the NAME.manifest.json that `kiln build` \
             writes beside the image",
            manifest.display()
        )
        .context(BadInput)
    };
    let m: Manifest = serde_json::from_slice(&text).map_err(|e| not_manifest(e.to_string()))?;
    if !["initramfs", "tar", "disk"].contains(&m.format.as_str()) || m.image.is_empty() {
        return Err(not_manifest(format!("unknown image format `{}`", m.format)));
    }
    printer.out_raw(crate::output::sbom::spdx(&m)?.as_bytes());
    Ok(ExitStatus::SUCCESS)
}
