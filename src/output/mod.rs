//! Writers: the tree becomes image bytes.

pub mod atomic;
pub mod cpio;
pub mod disk;
pub mod ext4;
pub mod manifest;
pub mod tar;

use std::io::{self, Write};

use sha2::{Digest, Sha256};

/// A writer that hashes what passes through it and counts the bytes.
pub struct HashWriter<W> {
    pub inner: W,
    pub hasher: Sha256,
    pub written: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

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
    out: atomic::AtomicFile,
    dest: &std::path::Path,
    format: &str,
    entries: Vec<manifest::ManifestEntry>,
) -> anyhow::Result<manifest::Manifest> {
    let (mut w, image_sha256) = hashed.finish();
    w.flush()?;
    drop(w);
    let image = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.commit()?;
    Ok(manifest::Manifest {
        image,
        format: format.into(),
        image_sha256: Some(image_sha256),
        entries,
    })
}
