//! A build's outputs (image, manifest, kernel, boot initramfs) are committed together.
//! They are written into a staging directory beside them, which the build holds a lock
//! on. Once all are written, a commit record naming them is put in place with one
//! rename, then each file is renamed over its output, and the record removed.
//!
//! A build killed before the record leaves the previous outputs untouched, and its
//! staging directory is removed by the next build (nobody holds it). A build killed
//! after the record is finished by the next kiln command that reads the outputs
//! ([`recover`]): it renames what is left. No image ever stays beside another build's
//! manifest.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::util::atomic;

const STAGING_PREFIX: &str = ".kiln-staging-";

/// The outputs of one build, being written.
pub struct Staging {
    out_dir: PathBuf,
    name: String,
    dir: PathBuf,
    files: Vec<String>,
    _held: Option<File>,
}

fn record(out_dir: &Path, name: &str) -> PathBuf {
    out_dir.join(format!(".kiln-commit-{name}"))
}

impl Staging {
    /// Starts the outputs of the build of `name` in `out_dir`: finishes a commit a
    /// killed build left, and removes staging directories nobody holds.
    pub fn new(out_dir: &Path, name: &str) -> Result<Staging> {
        std::fs::create_dir_all(out_dir)
            .with_context(|| format!("creating output directory {}", out_dir.display()))?;
        recover(out_dir, name)?;
        atomic::remove_stale(out_dir, |n| n.starts_with(STAGING_PREFIX));
        let dir = tempfile::Builder::new()
            .prefix(&format!("{STAGING_PREFIX}{name}-"))
            .tempdir_in(out_dir)
            .with_context(|| format!("creating a staging directory in {}", out_dir.display()))?
            .keep();
        Ok(Staging {
            out_dir: out_dir.to_path_buf(),
            name: name.to_string(),
            _held: atomic::hold_dir(&dir),
            dir,
            files: Vec::new(),
        })
    }

    /// Where to write the output `dest` (a file of the output directory) until commit.
    pub fn path(&mut self, dest: &Path) -> Result<PathBuf> {
        let file = match (dest.parent(), dest.file_name()) {
            (Some(parent), Some(f)) if parent == self.out_dir => f.to_string_lossy().into_owned(),
            _ => bail!(
                "output {} is not in {}",
                dest.display(),
                self.out_dir.display()
            ),
        };
        if !self.files.contains(&file) {
            self.files.push(file.clone());
        }
        Ok(self.dir.join(file))
    }

    /// Puts every staged output in place, as one commit; returns their paths.
    pub fn commit(self) -> Result<Vec<PathBuf>> {
        let dir_name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Every finished file staged, including what a writer put beside its output
        // (a disk's qcow2 copy); not the hidden temporaries of a writer.
        let mut files: Vec<String> = std::fs::read_dir(&self.dir)
            .with_context(|| format!("reading {}", self.dir.display()))?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        files.sort();
        if let Some(missing) = self.files.iter().find(|f| !files.contains(f)) {
            bail!("the build did not write its output {missing}");
        }
        let mut text = format!("{dir_name}\n");
        for f in &files {
            text.push_str(f);
            text.push('\n');
        }
        atomic::write(&record(&self.out_dir, &self.name), text.as_bytes())?;
        roll_forward(&self.out_dir, &self.name)?;
        Ok(files.iter().map(|f| self.out_dir.join(f)).collect())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // A failed build's outputs go; a committed one's directory is already gone.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Finishes the commit a killed build of `name` left in `out_dir`, if any.
pub fn recover(out_dir: &Path, name: &str) -> Result<()> {
    if record(out_dir, name).exists() {
        roll_forward(out_dir, name)?;
    }
    Ok(())
}

fn roll_forward(out_dir: &Path, name: &str) -> Result<()> {
    let rec = record(out_dir, name);
    let text =
        std::fs::read_to_string(&rec).with_context(|| format!("reading {}", rec.display()))?;
    let mut lines = text.lines();
    let dir_name = lines.next().unwrap_or_default();
    if !dir_name.starts_with(STAGING_PREFIX) || dir_name.contains('/') {
        bail!(
            "{} is not a commit record kiln wrote; remove it",
            rec.display()
        );
    }
    let dir = out_dir.join(dir_name);
    for f in lines.filter(|f| !f.is_empty() && !f.contains('/')) {
        let from = dir.join(f);
        // Already moved by an earlier, interrupted roll-forward.
        if from.exists() {
            let to = out_dir.join(f);
            // The old file goes aside first, into the staging directory removed below:
            // renamed over, ext4 (auto_da_alloc) would allocate and start writing every
            // block of the new file before the rename returns, 0.13 s for a disk image.
            match std::fs::rename(&to, dir.join(format!(".replaced-{f}"))) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("moving the old {f} aside"));
                }
                _ => {}
            }
            std::fs::rename(&from, &to)
                .with_context(|| format!("putting {f} in place in {}", out_dir.display()))?;
        }
    }
    std::fs::remove_file(&rec).with_context(|| format!("removing {}", rec.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_appear_together_or_not_at_all() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path();
        std::fs::write(out.join("x.raw"), "old image").unwrap();
        std::fs::write(out.join("x.manifest.json"), "old manifest").unwrap();
        // A build that fails leaves the previous set and nothing else.
        {
            let mut s = Staging::new(out, "x").unwrap();
            std::fs::write(s.path(&out.join("x.raw")).unwrap(), "half").unwrap();
        }
        let names = |d: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(out), ["x.manifest.json", "x.raw"]);
        let mut s = Staging::new(out, "x").unwrap();
        std::fs::write(s.path(&out.join("x.raw")).unwrap(), "new image").unwrap();
        std::fs::write(
            s.path(&out.join("x.manifest.json")).unwrap(),
            "new manifest",
        )
        .unwrap();
        assert!(s.path(Path::new("/elsewhere/x.raw")).is_err());
        s.commit().unwrap();
        assert_eq!(names(out), ["x.manifest.json", "x.raw"]);
        assert_eq!(
            std::fs::read_to_string(out.join("x.raw")).unwrap(),
            "new image"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("x.manifest.json")).unwrap(),
            "new manifest"
        );
    }

    #[test]
    fn a_commit_cut_short_is_finished_by_the_next_command() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path();
        std::fs::write(out.join("x.raw"), "old image").unwrap();
        std::fs::write(out.join("x.manifest.json"), "old manifest").unwrap();
        // What a build killed between its two renames leaves: the record, the image
        // moved, the manifest still staged.
        let staged = out.join(".kiln-staging-x-abc");
        std::fs::create_dir(&staged).unwrap();
        std::fs::write(out.join("x.raw"), "new image").unwrap();
        std::fs::write(staged.join("x.manifest.json"), "new manifest").unwrap();
        std::fs::write(
            out.join(".kiln-commit-x"),
            ".kiln-staging-x-abc\nx.raw\nx.manifest.json\n",
        )
        .unwrap();
        recover(out, "x").unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("x.manifest.json")).unwrap(),
            "new manifest"
        );
        assert!(!staged.exists() && !out.join(".kiln-commit-x").exists());
    }

    #[test]
    fn a_commit_cut_short_with_an_old_output_moved_aside_is_finished_too() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path();
        // Killed between moving the old image aside and putting the new one in place.
        let staged = out.join(".kiln-staging-x-abc");
        std::fs::create_dir(&staged).unwrap();
        std::fs::write(staged.join(".replaced-x.raw"), "old image").unwrap();
        std::fs::write(staged.join("x.raw"), "new image").unwrap();
        std::fs::write(out.join(".kiln-commit-x"), ".kiln-staging-x-abc\nx.raw\n").unwrap();
        recover(out, "x").unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("x.raw")).unwrap(),
            "new image"
        );
        assert!(!staged.exists() && !out.join(".kiln-commit-x").exists());
    }
}
