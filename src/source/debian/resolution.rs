//! Resolutions kept between unlocked builds. Resolving reads the whole index; its answer
//! depends only on the request (the lock's inputs hash), the archive (the signed Release,
//! which names every index by sha256) and the resolver (kiln's version). An unlocked
//! build whose three are unchanged takes the answer from here, without reading an index.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::lock::LockFile;
use crate::util::cache::Cache;

/// Bumped when what is kept, or how the resolver chooses, changes within one version.
const FORMAT: u32 = 1;

/// A resolution as kept: the lock it made and the conflicts it warned about.
#[derive(Serialize, Deserialize)]
pub struct Resolution {
    /// What a lock written from this resolution would hold.
    pub lock: LockFile,
    /// The unavoidable conflicts, warned about again on reuse.
    pub conflicts: Vec<String>,
}

/// Where the resolution of request `inputs` against the Release `signed_sha256` is kept.
pub fn path(cache: &Cache, inputs: &str, signed_sha256: &str) -> PathBuf {
    let key = format!(
        "{FORMAT} {} {inputs} {signed_sha256}",
        env!("CARGO_PKG_VERSION")
    );
    cache.root().join("resolved").join(format!(
        "{}.json",
        hex::encode(Sha256::digest(key.as_bytes()))
    ))
}

/// The resolution kept at `p`; None when there is none, or it cannot be read (then the
/// build resolves again and keeps a new one).
pub fn read(p: &Path) -> Option<Resolution> {
    let bytes = std::fs::read(p).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Keeps `r` at `p`. A failure only costs the next build a resolution.
pub fn write(p: &Path, r: &Resolution) {
    if let (Some(dir), Ok(json)) = (p.parent(), serde_json::to_vec(r)) {
        let _ = std::fs::create_dir_all(dir);
        let _ = crate::util::atomic::write(p, &json);
    }
}
