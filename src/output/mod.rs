//! Writers: the tree becomes image bytes. Each format implements [`ImageWriter`]; the
//! build picks one from the plan and never matches on the format again.

pub mod cpio;
pub mod disk;
pub mod ext4;
pub mod image_digest;
pub mod list;
pub mod manifest;
/// The writer options, as values (they live in `util` so the profile can name them).
pub use crate::util::options;
pub mod qcow2;
pub mod sbom;
mod spdx_document;
pub mod staging;
pub mod tar;

use std::io::{self, Write};
use std::path::Path;

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::tree::Tree;
use crate::util::atomic::AtomicFile;
use manifest::Manifest;

/// Turns a tree into an image file. `dest` appears complete or not at all.
pub trait ImageWriter {
    /// Writes `tree` to `dest` and returns the manifest of what it wrote.
    fn write(&self, tree: &Tree, dest: &Path) -> Result<Manifest>;
}

/// A writer that hashes what passes through it and counts the bytes.
pub struct HashWriter<W> {
    /// Where the bytes go.
    pub inner: W,
    /// The running hash.
    pub hasher: Sha256,
    /// Bytes written so far.
    pub written: u64,
}

impl<W: Write> HashWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// The inner writer and the hex sha256 of everything written.
    pub fn finish(self) -> (W, String) {
        (self.inner, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Finishes a streamed image: flushes it, renames it into place, and returns its manifest.
pub fn seal(
    hashed: HashWriter<std::io::BufWriter<std::fs::File>>,
    out: AtomicFile,
    dest: &Path,
    format: &str,
    entries: Vec<manifest::ManifestEntry>,
) -> Result<Manifest> {
    let (mut w, image_sha256) = hashed.finish();
    w.flush()?;
    drop(w);
    out.commit()?;
    Ok(Manifest {
        image: file_name(dest),
        format: format.into(),
        image_sha256: Some(image_sha256),
        image_sparse_sha256: None,
        entries,
        ..Default::default()
    })
}

/// The last component of `p`, for manifests.
pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
