//! Outputs appear complete or not at all: they are written to a temporary file in the
//! destination directory and renamed into place only after everything succeeded.

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
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
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

/// Writes a small file atomically.
pub fn write(dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(dest)?;
    f.file().write_all(bytes)?;
    f.commit()?;
    Ok(())
}
