//! A tree in a compact binary form, so that the layer cache can keep what the package
//! layers made and a later build can take it back in a few milliseconds.
//!
//! Contents are not copied: a package member stays a range of its cached data.tar (the
//! form names each data.tar once), in-memory bytes are kept as they are. Reading checks
//! what a tree promises (the root is a directory, paths are normal and sorted, every
//! entry's parent is a directory) and fails on anything short or malformed, never panics:
//! the stored form is the cache's, and a cache can be damaged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use super::digest::FileDigest;
use super::{path, Data, Entry, Kind, Meta, Tree, TreeError};

/// Names the form; bumped when it changes.
const MAGIC: &[u8; 8] = b"kilntre2";

/// The stored form of `tree`.
pub fn encode(tree: &Tree) -> Vec<u8> {
    // By the Arc's address: the package's members share one, and hashing a path is slow.
    let mut files: HashMap<*const PathBuf, u32> = HashMap::new();
    let mut file_list: Vec<&Arc<PathBuf>> = Vec::new();
    for (_, e) in tree.iter() {
        if let Kind::File(Data::Slice { file, .. }) = &e.kind {
            files.entry(Arc::as_ptr(file)).or_insert_with(|| {
                file_list.push(file);
                (file_list.len() - 1) as u32
            });
        }
    }
    let mut w = Writer(Vec::with_capacity(tree.len() * 96));
    w.0.extend_from_slice(MAGIC);
    w.meta(&tree.implicit_dir);
    w.u32(file_list.len() as u32);
    for f in &file_list {
        w.bytes(f.as_os_str().as_encoded_bytes());
    }
    w.u32(tree.len() as u32);
    for (p, e) in tree.iter() {
        w.bytes(p.as_bytes());
        w.meta(&e.meta);
        match &e.kind {
            Kind::Dir => w.u8(0),
            Kind::File(Data::Bytes(b)) => {
                w.u8(1);
                w.bytes(b);
            }
            Kind::File(Data::Host { path, size, digest }) => {
                w.u8(2);
                w.bytes(path.as_os_str().as_encoded_bytes());
                w.u64(*size);
                w.digest(digest);
            }
            Kind::File(Data::Slice {
                file,
                offset,
                len,
                digest,
            }) => {
                w.u8(3);
                w.u32(files[&Arc::as_ptr(file)]);
                w.u64(*offset);
                w.u64(*len);
                w.digest(digest);
            }
            Kind::Symlink(t) => {
                w.u8(4);
                w.bytes(t.as_bytes());
            }
            Kind::HardLink(t) => {
                w.u8(5);
                w.bytes(t.as_bytes());
            }
            Kind::CharDev { major, minor } => {
                w.u8(6);
                w.u32(*major);
                w.u32(*minor);
            }
            Kind::BlockDev { major, minor } => {
                w.u8(7);
                w.u32(*major);
                w.u32(*minor);
            }
            Kind::Fifo => w.u8(8),
            Kind::Socket => w.u8(9),
        }
    }
    w.0
}

/// The tree stored in `bytes` by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Tree, TreeError> {
    let mut r = Reader { b: bytes, pos: 0 };
    if r.take(MAGIC.len())? != MAGIC {
        return Err(bad("not a stored tree of this kiln"));
    }
    let implicit_dir = r.meta()?;
    let n_files = r.count()?;
    let mut files = Vec::with_capacity(n_files);
    for _ in 0..n_files {
        files.push(Arc::new(PathBuf::from(r.os_string()?)));
    }
    let n = r.count()?;
    let mut entries: Vec<(String, Entry)> = Vec::with_capacity(n);
    let mut dirs: HashSet<String> = HashSet::new();
    for _ in 0..n {
        let p = r.string()?;
        let meta = r.meta()?;
        let kind = match r.u8()? {
            0 => Kind::Dir,
            1 => Kind::File(Data::Bytes(Arc::from(r.take_len()?))),
            2 => Kind::File(Data::Host {
                path: PathBuf::from(r.os_string()?),
                size: r.u64()?,
                digest: r.digest()?,
            }),
            3 => {
                let file = files
                    .get(r.u32()? as usize)
                    .cloned()
                    .ok_or_else(|| bad("a range of an unnamed file"))?;
                let offset = r.u64()?;
                let len = r.u64()?;
                let digest = r.digest()?;
                Kind::File(Data::Slice {
                    file,
                    offset,
                    len,
                    digest,
                })
            }
            4 => Kind::Symlink(r.string()?),
            5 => Kind::HardLink(r.string()?),
            6 => Kind::CharDev {
                major: r.u32()?,
                minor: r.u32()?,
            },
            7 => Kind::BlockDev {
                major: r.u32()?,
                minor: r.u32()?,
            },
            8 => Kind::Fifo,
            9 => Kind::Socket,
            _ => return Err(bad("an unknown kind of entry")),
        };
        match entries.last() {
            // The root comes first, and is a directory.
            None if p.is_empty() && matches!(kind, Kind::Dir) => {}
            None => return Err(bad("no root directory")),
            Some((last, _)) => {
                if last.as_str() >= p.as_str() {
                    return Err(bad("entries out of order"));
                }
                if !path::is_normal(&p) {
                    return Err(bad("a path not in normal form"));
                }
                // Byte order puts a directory before what it holds.
                if !dirs.contains(path::parent(&p).unwrap_or("")) {
                    return Err(bad("an entry whose parent is not a directory"));
                }
            }
        }
        if matches!(kind, Kind::Dir) {
            dirs.insert(p.clone());
        }
        entries.push((p, Entry::new(kind, meta)));
    }
    if r.pos != bytes.len() {
        return Err(bad("bytes after the last entry"));
    }
    if entries.is_empty() {
        return Err(bad("no root directory"));
    }
    // Already sorted, so the map is built in one pass.
    let entries: BTreeMap<String, Entry> = entries.into_iter().collect();
    Ok(Tree {
        entries,
        implicit_dir,
        dir_hint: None,
    })
}

fn bad(what: &str) -> TreeError {
    TreeError(format!("stored tree: {what}"))
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn digest(&mut self, d: &Option<FileDigest>) {
        match d {
            None => self.u8(0),
            Some(FileDigest::Sha256(h)) => {
                self.u8(1);
                self.bytes(h.as_bytes());
            }
            Some(FileDigest::Sparse(h)) => {
                self.u8(2);
                self.bytes(h.as_bytes());
            }
        }
    }
    fn meta(&mut self, m: &Meta) {
        self.u32(m.mode);
        self.u32(m.uid);
        self.u32(m.gid);
        self.u64(m.mtime as u64);
        self.u32(m.xattrs.len() as u32);
        for (k, v) in &m.xattrs {
            self.bytes(k.as_bytes());
            self.bytes(v);
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TreeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| bad("cut short"))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, TreeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, TreeError> {
        let mut a = [0; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, TreeError> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    /// A count of things that each take at least one byte: no more than are left, so a
    /// damaged count cannot ask for a huge allocation.
    fn count(&mut self) -> Result<usize, TreeError> {
        let n = self.u32()? as usize;
        if n > self.b.len() - self.pos {
            return Err(bad("a count larger than what follows"));
        }
        Ok(n)
    }
    fn take_len(&mut self) -> Result<&'a [u8], TreeError> {
        let n = usize::try_from(self.u64()?).map_err(|_| bad("a length too large"))?;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, TreeError> {
        String::from_utf8(self.take_len()?.to_vec()).map_err(|_| bad("a name not in UTF-8"))
    }
    fn os_string(&mut self) -> Result<std::ffi::OsString, TreeError> {
        use std::os::unix::ffi::OsStrExt;
        Ok(std::ffi::OsStr::from_bytes(self.take_len()?).to_os_string())
    }
    fn digest(&mut self) -> Result<Option<FileDigest>, TreeError> {
        Ok(match self.u8()? {
            0 => None,
            1 => Some(FileDigest::Sha256(self.string()?)),
            2 => Some(FileDigest::Sparse(self.string()?)),
            _ => return Err(bad("an unknown digest")),
        })
    }
    fn meta(&mut self) -> Result<Meta, TreeError> {
        let mut m = Meta::new(0, 0);
        m.mode = self.u32()? & 0o7777;
        m.uid = self.u32()?;
        m.gid = self.u32()?;
        m.mtime = self.u64()? as i64;
        for _ in 0..self.count()? {
            let k = self.string()?;
            let v = self.take_len()?.to_vec();
            m.xattrs.insert(k, v);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Tree {
        let mut t = Tree::new(7);
        let tar = Arc::new(PathBuf::from("/cache/deb/abc/data.tar"));
        let mut meta = Meta::new(0o4755, 5).owner(1, 2);
        meta.xattrs
            .insert("security.capability".into(), vec![1, 0, 0xff]);
        let entries = [
            (
                "usr/bin/a",
                Kind::File(Data::bytes(b"#!/bin/sh\n".to_vec())),
            ),
            (
                "usr/bin/b",
                Kind::File(Data::Slice {
                    file: tar.clone(),
                    offset: 512,
                    len: 10,
                    digest: Some(FileDigest::Sha256("ab".repeat(32))),
                }),
            ),
            (
                "usr/bin/c",
                Kind::File(Data::Slice {
                    file: tar,
                    offset: 1024,
                    len: 0,
                    digest: None,
                }),
            ),
            (
                "srv/host",
                Kind::File(Data::Host {
                    path: "/etc/hostname".into(),
                    size: 4,
                    digest: Some(FileDigest::Sparse("cd".repeat(32))),
                }),
            ),
            ("usr/bin/d", Kind::HardLink("usr/bin/a".into())),
            ("bin", Kind::Symlink("usr/bin".into())),
            ("dev/null", Kind::CharDev { major: 1, minor: 3 }),
            ("dev/sda", Kind::BlockDev { major: 8, minor: 0 }),
            ("run/fifo", Kind::Fifo),
            ("run/sock", Kind::Socket),
            ("var/empty", Kind::Dir),
        ];
        for (p, k) in entries {
            t.insert(p, Entry::new(k, meta.clone())).unwrap();
        }
        t
    }

    #[test]
    fn a_tree_comes_back_as_it_was_stored() {
        let t = sample();
        let back = decode(&encode(&t)).unwrap();
        assert_eq!(format!("{t:?}"), format!("{back:?}"));
        // One data.tar, named once and shared again.
        let files: Vec<_> = back
            .iter()
            .filter_map(|(_, e)| match &e.kind {
                Kind::File(Data::Slice { file, .. }) => Some(file.clone()),
                _ => None,
            })
            .collect();
        assert!(Arc::ptr_eq(&files[0], &files[1]));
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let b = encode(&sample());
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        for i in (0..b.len()).step_by(3) {
            let mut d = b.clone();
            d[i] ^= 0x5a;
            // Either refused or a tree that is still well formed.
            if let Ok(t) = decode(&d) {
                assert!(t.contains(""));
            }
        }
        let mut extra = b.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
    }

    #[test]
    fn an_entry_outside_a_directory_is_refused() {
        let mut t = Tree::new(0);
        for p in ["a", "b"] {
            t.insert(p, Entry::new(Kind::Fifo, Meta::new(0o644, 0)))
                .unwrap();
        }
        let mut b = encode(&t);
        // "b" renamed "a/b": an entry inside a fifo.
        let at = b
            .windows(9)
            .position(|w| w == b"\x01\0\0\0\0\0\0\0b")
            .unwrap();
        b.splice(at..at + 9, *b"\x03\0\0\0\0\0\0\0a/b");
        assert!(decode(&b).is_err());
        b.splice(at..at + 11, *b"\x01\0\0\0\0\0\0\0b");
        assert!(decode(&b).is_ok());
    }
}
