//! kiln's content-addressed cache.
//!
//! Location: `$KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`.
//! Blobs (downloaded files) are stored under their sha256, written to a temporary file
//! and renamed into place only once the hash matched, checked whenever reused (hashed
//! again unless untouched since the last hash: [`hashes_to`]), and guarded by a lock file, so two builds running at once neither clash nor download twice.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// The cache's root: `$KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`,
/// else `kiln-cache` in the system's temporary directory.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KILN_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("kiln");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => PathBuf::from(h).join(".cache").join("kiln"),
        None => std::env::temp_dir().join("kiln-cache"),
    }
}

/// A cache directory, with its `blobs`, `locks`, `unpacked` and `tmp` subdirectories.
#[derive(Debug, Clone)]
pub struct Cache {
    /// The cache's top directory.
    pub root: PathBuf,
}

/// An exclusive lock held until dropped.
pub struct Lock {
    _file: File,
}

/// The file's sha256 (lowercase hex) and its length in bytes.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let n_total = sha256_update(&mut h, &mut f)?;
    Ok((hex::encode(h.finalize()), n_total))
}

/// Feeds everything `r` reads into `h`; returns the number of bytes.
pub fn sha256_update(h: &mut Sha256, r: &mut impl Read) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut n_total = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(n_total);
        }
        h.update(&buf[..n]);
        n_total += n as u64;
    }
}

/// Whether the file at `p` has the sha256 `want`. A file hashed once is not hashed again
/// while it keeps its identity: `P.verified` beside it records the hash with the file's
/// size, modification and change times and inode, and any write to the file changes its
/// change time, which nobody can set back. So a build reuses hundreds of megabytes of
/// packages without reading them, and a damaged entry is still caught.
pub fn hashes_to(p: &Path, want: &str) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let stamp = |m: &std::fs::Metadata| {
        format!(
            "{want} {} {}.{} {}.{} {}",
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.ino()
        )
    };
    let mut name = p.as_os_str().to_owned();
    name.push(".verified");
    let record = PathBuf::from(name);
    let m = std::fs::metadata(p).with_context(|| format!("reading {}", p.display()))?;
    if std::fs::read_to_string(&record).is_ok_and(|r| r == stamp(&m)) {
        return Ok(true);
    }
    let (actual, _) = sha256_file(p)?;
    if actual != want {
        let _ = std::fs::remove_file(&record);
        return Ok(false);
    }
    // Losing the record only costs the next build a hash.
    let _ = crate::util::atomic::write(&record, stamp(&m).as_bytes());
    Ok(true)
}

fn valid_hash(sha256: &str) -> bool {
    sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Cache {
    /// Opens the cache at [`cache_dir`], creating its directories as needed.
    pub fn open() -> Result<Cache> {
        Cache::at(cache_dir())
    }

    /// Opens the cache at `root`, creating its directories as needed.
    pub fn at(root: PathBuf) -> Result<Cache> {
        for d in ["blobs", "locks", "unpacked", "tmp"] {
            std::fs::create_dir_all(root.join(d))
                .with_context(|| format!("creating cache directory {}", root.join(d).display()))?;
        }
        // Downloads and unpackings a killed build left half done.
        crate::util::atomic::remove_stale(&root.join("tmp"), |_| true);
        Ok(Cache { root })
    }

    /// The cache's root directory, for stores of their own (parsed indexes).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this sha256 lives, present or not: `blobs/<first two digits>/<sha256>`.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs").join(&sha256[..2]).join(sha256)
    }

    /// Scratch space on the cache's file system, so finished files can be renamed into place.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Waits for and takes the named lock.
    pub fn lock(&self, key: &str) -> Result<Lock> {
        let path = self.root.join("locks").join(format!("{key}.lock"));
        let f = File::create(&path).with_context(|| format!("creating lock {}", path.display()))?;
        f.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(Lock { _file: f })
    }

    /// The blob if it is present and its content still has this hash; a corrupt blob is removed.
    pub fn verified_blob(&self, sha256: &str) -> Result<Option<PathBuf>> {
        if !valid_hash(sha256) {
            bail!("`{sha256}` is not a sha256");
        }
        let p = self.blob_path(sha256);
        if !p.exists() {
            return Ok(None);
        }
        if !hashes_to(&p, sha256)? {
            crate::util::progress::warn(format!(
                "cache entry {} was corrupt (its sha256 is not {sha256}); fetching it again",
                p.display()
            ));
            std::fs::remove_file(&p)?;
            return Ok(None);
        }
        Ok(Some(p))
    }

    /// Stores a blob produced by `fill`, which writes the content into the file it is
    /// given. The result must hash to `sha256` (and be `size` bytes when given), or
    /// nothing is stored and the error says what was expected.
    pub fn store(
        &self,
        sha256: &str,
        size: Option<u64>,
        what: &str,
        fill: impl FnOnce(&mut File) -> Result<()>,
    ) -> Result<PathBuf> {
        let _lock = self.lock(&format!("blob-{sha256}"))?;
        if let Some(p) = self.verified_blob(sha256)? {
            return Ok(p);
        }
        let dest = self.blob_path(sha256);
        std::fs::create_dir_all(dest.parent().unwrap_or(&self.root))?;
        let mut tmp = tempfile::NamedTempFile::new_in(self.tmp_dir())?;
        crate::util::atomic::hold(tmp.as_file());
        fill(tmp.as_file_mut())?;
        tmp.as_file().sync_all()?;
        let (actual, len) = sha256_file(tmp.path())?;
        if let Some(size) = size {
            if len != size {
                bail!("{what}: got {len} bytes, the signed index says {size}; refusing it");
            }
        }
        if actual != sha256 {
            bail!("{what}: sha256 is {actual}, the signed index says {sha256}; refusing it (a broken mirror or tampering)");
        }
        tmp.persist(&dest).map_err(|e| e.error)?;
        Ok(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_file_is_trusted_until_written_and_a_write_is_caught() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("blob");
        std::fs::write(&p, b"package").unwrap();
        let want = hex::encode(Sha256::digest(b"package"));
        assert!(hashes_to(&p, &want).unwrap());
        let record = d.path().join("blob.verified");
        assert!(std::fs::read_to_string(&record).unwrap().starts_with(&want));
        // Untouched: the record answers (a record for another hash would not).
        assert!(hashes_to(&p, &want).unwrap());
        assert!(!hashes_to(&p, &"0".repeat(64)).unwrap());
        // The same length, other bytes: the change time moved, so it is hashed again.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&p, b"pockage").unwrap();
        assert!(!hashes_to(&p, &want).unwrap());
        assert!(!record.exists());
    }
}
