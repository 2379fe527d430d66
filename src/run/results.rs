//! The results disk: an empty ext4 file system kiln creates before a test run, the
//! guest mounts at the profile's results directory and fills, and kiln reads back
//! afterwards with its own reader. Large outputs (a Memorizer kmap can be gigabytes)
//! cost only the space they use: the image is sparse.

use std::path::Path;

use anyhow::{Context, Result};

use crate::output::disk::derive_uuid;
use crate::output::ext4::writer::write_empty;
use crate::output::ext4::{reader, Ext4Options, SizeSpec};

/// The virtio serial of the results disk; the guest finds it by this.
pub const SERIAL: &str = "kiln-results";

/// Creates a fresh, empty, sparse results file system at `img`, its UUID derived from
/// the image `name`.
pub fn prepare(img: &Path, name: &str, size: u64, time: i64) -> Result<()> {
    let _ = std::fs::remove_file(img);
    let opts = Ext4Options {
        size: SizeSpec::Fixed(size),
        uuid: *derive_uuid(name, "fs-results").as_bytes(),
        hash_seed: *derive_uuid(name, "hash-seed-results").as_bytes(),
        label: SERIAL.into(),
        time,
        force_64bit: false,
    };
    let f = std::fs::File::create(img).with_context(|| format!("creating {}", img.display()))?;
    write_empty(&f, 0, &opts).with_context(|| format!("writing {}", img.display()))?;
    Ok(())
}

/// Copies everything the guest left on the results disk into `dest` (emptied first).
pub fn collect(img: &Path, dest: &Path) -> Result<reader::Extracted> {
    if dest.exists() {
        std::fs::remove_dir_all(dest).with_context(|| format!("clearing {}", dest.display()))?;
    }
    std::fs::create_dir_all(dest)?;
    let fs = reader::open(img)?;
    let mut total = reader::Extracted::default();
    for e in fs
        .read_dir("/")
        .map_err(|e| anyhow::anyhow!("reading the results disk: {e}"))?
    {
        let e = e.map_err(|e| anyhow::anyhow!("reading the results disk: {e}"))?;
        let name = e.file_name();
        let name = name.as_str().unwrap_or("");
        if name == "." || name == ".." || name == "lost+found" {
            continue;
        }
        let r = reader::extract(&fs, &format!("/{name}"), dest)?;
        total.files += r.files;
        total.dirs += r.dirs;
        total.symlinks += r.symlinks;
        total.skipped.extend(r.skipped);
    }
    Ok(total)
}
