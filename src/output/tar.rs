//! Uncompressed tar writer (GNU format, numeric owners, PAX records for xattrs): for
//! importing an image elsewhere, or comparing with tools that emit tar.

use foldhash::{HashMap, HashMapExt};
use std::io::{BufWriter, Read};
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::tree::digest::FileDigest;

use super::manifest::{Manifest, ManifestEntry};
use super::HashWriter;
use crate::tree::{Kind, Tree};
use crate::util::atomic::AtomicFile;

/// Hashes what it reads, for the manifest.
struct HashReader<R> {
    inner: R,
    /// None when the digest is known already (a package member's).
    hasher: Option<Sha256>,
    n: u64,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.n += n as u64;
        Ok(n)
    }
}

/// Writes `tree` as a tar archive at `dest` and returns its manifest.
pub fn write(tree: &Tree, dest: &Path) -> Result<Manifest> {
    tree.check_links()?;
    let mut out = AtomicFile::create(dest)?;
    let file = out.file().try_clone()?;
    let pb = crate::util::progress::bytes(tree.content_bytes(), "writing tar");
    let mut b = tar::Builder::new(HashWriter::new(BufWriter::with_capacity(1 << 20, file)));
    let mut hashes: HashMap<&str, String> = HashMap::new();
    let mut manifest = Vec::with_capacity(tree.len());
    for (path, e) in tree.iter() {
        let name = if path.is_empty() {
            "./".to_string()
        } else {
            format!("./{path}")
        };
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.meta.mode);
        h.set_uid(e.meta.uid as u64);
        h.set_gid(e.meta.gid as u64);
        h.set_mtime(e.meta.mtime.max(0) as u64);
        h.set_size(0);
        if !e.meta.xattrs.is_empty() {
            let recs: Vec<(String, &[u8])> = e
                .meta
                .xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                .collect();
            b.append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), *v)))?;
        }
        let mut sha = None;
        match &e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, &name, std::io::empty())?;
            }
            Kind::File(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len());
                let src = d
                    .open()
                    .with_context(|| format!("reading {} for /{path}", d.describe()))?;
                let known = match d.known_digest() {
                    Some(FileDigest::Sha256(h)) => Some(h.clone()),
                    _ => None,
                };
                let mut r = HashReader {
                    inner: src,
                    hasher: known.is_none().then(Sha256::new),
                    n: 0,
                };
                b.append_data(&mut h, &name, &mut r)
                    .with_context(|| format!("writing /{path}"))?;
                pb.inc(r.n);
                let s = match (r.hasher, known) {
                    (Some(h), _) => hex::encode(h.finalize()),
                    (None, k) => k.unwrap_or_default(),
                };
                hashes.insert(path.as_str(), s.clone());
                sha = Some(s);
            }
            Kind::HardLink(t) => {
                h.set_entry_type(tar::EntryType::Link);
                b.append_link(&mut h, &name, t)?;
                sha = hashes.get(t.as_str()).cloned();
            }
            Kind::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, &name, t)?;
            }
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                h.set_entry_type(if matches!(e.kind, Kind::CharDev { .. }) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                });
                h.set_device_major(*major)?;
                h.set_device_minor(*minor)?;
                b.append_data(&mut h, &name, std::io::empty())?;
            }
            Kind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                b.append_data(&mut h, &name, std::io::empty())?;
            }
            Kind::Socket => {
                crate::util::progress::warn(format!(
                    "/{path} is a socket, which tar cannot hold; left out"
                ));
                continue;
            }
        }
        let m = ManifestEntry::in_tree(tree, path, e, sha.map(FileDigest::Sha256));
        manifest.push(m);
    }
    let hashed = b.into_inner()?;
    pb.finish_and_clear();
    super::seal(hashed, out, dest, "tar", manifest)
}

/// The tar writer, as an [`ImageWriter`](super::ImageWriter).
#[derive(Debug, Clone, Copy, Default)]
pub struct TarWriter;

impl super::ImageWriter for TarWriter {
    fn write(&self, tree: &Tree, dest: &Path) -> Result<Manifest> {
        write(tree, dest)
    }
}
