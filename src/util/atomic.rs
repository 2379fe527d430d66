//! Outputs appear complete or not at all: they are written to a temporary file in the
//! destination directory and renamed into place only after everything succeeded. The
//! writer holds a lock on its temporary file, so what a killed process left behind (no
//! lock) is told apart from what a running one is writing, and removed.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::NamedTempFile;

/// An output being written: a temporary file beside the destination, renamed onto it by [`AtomicFile::commit`].
pub struct AtomicFile {
    tmp: NamedTempFile,
    dest: PathBuf,
}

impl AtomicFile {
    /// Starts an output for `dest`, creating its directory; the temporary file is a hidden `.name.*.tmp`.
    pub fn create(dest: &Path) -> Result<AtomicFile> {
        let dir = dest
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating output directory {}", dir.display()))?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let prefix = format!(".{name}.");
        remove_stale(dir, |n| n.starts_with(&prefix) && n.ends_with(".tmp"));
        let tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".tmp")
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        hold(tmp.as_file());
        Ok(AtomicFile {
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    /// The temporary file, to write the output into.
    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Path of the temporary file, where the output is until committed.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Renames into place. Dropping without committing deletes the temporary file.
    /// No fsync: a build output is not a database, and flushing a multi-gigabyte image
    /// would dominate the build; rename alone already hides partial files.
    pub fn commit(self) -> Result<PathBuf> {
        let AtomicFile { tmp, dest } = self;
        // Temporary files are created 0600; an image should be as readable as any other output.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))?;
        tmp.persist(&dest)
            .map_err(|e| e.error)
            .with_context(|| format!("moving output into place at {}", dest.display()))?;
        Ok(dest)
    }
}

/// Marks `f` as being written by a live process, until it is closed.
pub fn hold(f: &File) {
    // Without flock support the file is merely never found stale.
    let _ = f.try_lock();
}

/// Marks the directory `dir` as being filled by a live process, for as long as the
/// returned handle is kept.
pub fn hold_dir(dir: &Path) -> Option<File> {
    let f = File::open(dir).ok()?;
    hold(&f);
    Some(f)
}

/// Removes the files and directories of `dir` that `is_temporary` names and that no live
/// process holds (see [`hold`], [`hold_dir`]): what killed builds left behind.
pub fn remove_stale(dir: &Path, is_temporary: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Ok(kind) = e.file_type() else { continue };
        if !is_temporary(&name.to_string_lossy()) || !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        let Ok(f) = File::open(e.path()) else {
            continue;
        };
        if f.try_lock().is_ok() {
            let _ = if kind.is_dir() {
                std::fs::remove_dir_all(e.path())
            } else {
                std::fs::remove_file(e.path())
            };
        }
    }
}

/// Writes a small file atomically.
pub fn write(dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(dest)?;
    f.file().write_all(bytes)?;
    f.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_killed_writer_left_is_removed_and_a_live_one_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("image.raw");
        // A killed build's temporary: nobody holds it.
        let left = d.path().join(".image.raw.abc123.tmp");
        std::fs::write(&left, b"half an image").unwrap();
        let other = d.path().join(".other.raw.abc123.tmp");
        std::fs::write(&other, b"another output's").unwrap();
        let mut live = AtomicFile::create(&dest).unwrap();
        assert!(!left.exists(), "the stale temporary is gone");
        assert!(
            other.exists(),
            "another output's temporaries are its own business"
        );
        // A second writer of the same output leaves the first one's file alone.
        let second = AtomicFile::create(&dest).unwrap();
        assert!(live.path().exists());
        live.file().write_all(b"done").unwrap();
        drop(second);
        live.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"done");
    }
}
