//! Content digests of host files that the last build computed, given again for the
//! files that cannot have changed since, so that they are not hashed again; and the
//! check, before the outputs are committed, that none of those changed meanwhile.

use foldhash::HashMap;
use std::fs::Metadata;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{missing, stamp, stamp_of, Stamp};
use crate::tree::digest::FileDigest;

/// Content digests of host files from the last build's record; see
/// [`Key::known_contents`].
pub struct KnownContents {
    known: HashMap<PathBuf, (Stamp, FileDigest)>,
    /// The stamps of the files whose digests were given out, as they were then.
    given: std::sync::Mutex<Vec<Stamp>>,
}

fn same_file(a: &Stamp, b: &Stamp) -> bool {
    (a.size, a.mtime_ns, a.ctime_ns, a.ino) == (b.size, b.mtime_ns, b.ctime_ns, b.ino)
}

impl KnownContents {
    pub(super) fn new(known: HashMap<PathBuf, (Stamp, FileDigest)>) -> KnownContents {
        KnownContents {
            known,
            given: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The content digest of the file at `path`, whose metadata is now `md`, if the last
    /// build computed it and the file cannot have changed since.
    pub fn get(&self, path: &Path, md: &Metadata) -> Option<FileDigest> {
        let (recorded, content) = self.known.get(path)?;
        let now = stamp_of(path, md);
        if !(same_file(&now, recorded) && md.is_file()) {
            return None;
        }
        if let Ok(mut given) = self.given.lock() {
            given.push(now);
        }
        Some(content.clone())
    }

    /// How many digests were given out.
    pub fn given(&self) -> usize {
        self.given.lock().map_or(0, |g| g.len())
    }

    /// Fails when a file whose digest was given out changed since: the writer copied
    /// bytes it did not hash, so the manifest would not describe them. Before the
    /// outputs are committed.
    pub fn check_unchanged(&self) -> Result<()> {
        let given = self
            .given
            .lock()
            .map_err(|_| anyhow::anyhow!("a thread panicked while given known digests"))?;
        for then in given.iter() {
            let now = stamp(&then.path).unwrap_or_else(|_| missing(&then.path));
            if !same_file(&now, then) {
                anyhow::bail!(
                    "{} changed while the image was being written; build again",
                    then.path.display()
                );
            }
        }
        Ok(())
    }
}

/// A digest as [`FileDigest`]'s `Display` writes it.
pub(super) fn parse_digest(s: &str) -> Option<FileDigest> {
    let hex_ok = |h: &str| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
    match s.split_once(':')? {
        ("sha256", h) if hex_ok(h) => Some(FileDigest::Sha256(h.to_string())),
        ("sparse_sha256", h) if hex_ok(h) => Some(FileDigest::Sparse(h.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_changed_after_its_digest_was_given_out_fails_the_build() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("a");
        std::fs::write(&f, "one").unwrap();
        let md = std::fs::metadata(&f).unwrap();
        let digest = FileDigest::Sha256("00".repeat(32));
        let known = HashMap::from_iter([(f.clone(), (stamp_of(&f, &md), digest.clone()))]);
        let k = KnownContents::new(known);
        assert_eq!(k.get(&f, &md), Some(digest));
        k.check_unchanged().unwrap();
        // The same size, written a clock tick later.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&f, "two").unwrap();
        let e = k.check_unchanged().unwrap_err().to_string();
        assert!(
            e.contains("changed while the image was being written"),
            "{e}"
        );
        assert_eq!(k.get(&f, &std::fs::metadata(&f).unwrap()), None);
    }
}
