//! What of a host path can reach an image, as one digest: the build record keeps it for
//! each host input, and a stamp that differs is confirmed or refuted by it.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::source::overlay::{host_xattrs, Seen, SeenWhat};
use crate::tree::digest::FileDigest;

/// What of a host path can reach an image: its kind, mode, owner and extended
/// attributes, and its content (a file), target (a symlink) or names (a directory).
/// Empty for a path that does not exist. A file's content digest is computed here
/// (without reading holes) unless the writer's is given.
pub(super) fn host_digest(p: &Path, content: Option<&FileDigest>) -> Result<String> {
    let m = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    };
    let xattrs = host_xattrs(p).unwrap_or_default();
    let ft = m.file_type();
    let what = if ft.is_file() {
        SeenWhat::Content
    } else if ft.is_symlink() {
        SeenWhat::Target(std::fs::read_link(p)?)
    } else if ft.is_dir() {
        SeenWhat::Names(
            std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .flatten()
                .map(|e| e.file_name())
                .collect(),
        )
    } else {
        SeenWhat::Nothing
    };
    digest_of(p, &m, &xattrs, what, content)
}

/// [`host_digest`] of a path from what an overlay's walk read of it; an error (a file
/// gone since) gives an empty digest, which no later look matches.
pub(super) fn seen_digest(s: Seen, content: Option<&FileDigest>) -> String {
    digest_of(&s.path, &s.md, &s.xattrs, s.what, content).unwrap_or_default()
}

fn digest_of(
    p: &Path,
    m: &Metadata,
    xattrs: &BTreeMap<String, Vec<u8>>,
    what: SeenWhat,
    content: Option<&FileDigest>,
) -> Result<String> {
    use std::os::unix::ffi::OsStrExt;
    let mut h = Sha256::new();
    h.update(format!("{} {} {}\n", m.mode(), m.uid(), m.gid()));
    for (name, value) in xattrs {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((value.len() as u64).to_le_bytes());
        h.update(value);
    }
    match what {
        SeenWhat::Content => {
            let content = match content {
                Some(c) => c.clone(),
                None => {
                    let f = std::fs::File::open(p)
                        .with_context(|| format!("opening {}", p.display()))?;
                    FileDigest::of_file(&f, m.len())
                        .with_context(|| format!("reading {}", p.display()))?
                }
            };
            h.update(content.to_string());
        }
        SeenWhat::Target(t) => h.update(t.as_os_str().as_bytes()),
        SeenWhat::Names(mut names) => {
            names.sort();
            for n in names {
                h.update(n.as_bytes());
                h.update([0]);
            }
        }
        SeenWhat::Nothing => {}
    }
    Ok(hex::encode(h.finalize()))
}
