//! Overlay directories: a host directory tree copied into the image at a destination.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::overlay_walk::{walk_looked, Looked};
use anyhow::{bail, Result};

use crate::tree::{path, Data, Entry, Kind, Meta, Tree};

/// A host path of an overlay (the source by its real path, and everything below it) as
/// the walk saw it, so that the build's record of its inputs needs no second look. Its
/// metadata was read before anything else of it (a directory's before its listing), so
/// any later change to it shows in its change or modification time.
#[derive(Debug)]
pub struct Seen {
    /// The host path.
    pub path: PathBuf,
    /// Its metadata (of the path itself, not a symlink's target).
    pub md: std::fs::Metadata,
    /// Its extended attributes, as the image got them.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// What else of it reached the image.
    pub what: SeenWhat,
}

/// What of a host path besides its metadata and extended attributes reached the image.
#[derive(Debug)]
pub enum SeenWhat {
    /// A regular file's bytes, hashed by the writer.
    Content,
    /// A directory's entry names, sorted.
    Names(Vec<OsString>),
    /// A symlink's target.
    Target(PathBuf),
    /// Nothing more: a device, a fifo or a socket.
    Nothing,
}

/// The content digest of a host file as its metadata is now, when an earlier build
/// computed it and the file cannot have changed since.
pub type Known<'a> =
    dyn Fn(&Path, &std::fs::Metadata) -> Option<crate::tree::digest::FileDigest> + 'a;

/// Adds every entry below `src` to the tree under `dest` (a stored path), and what it
/// read of every host path below `src` to `seen`. Owners are root unless `keep_owner`;
/// timestamps are `mtime`, because host timestamps would make the image differ from one
/// checkout to the next.
pub fn add_overlay(
    tree: &mut Tree,
    src: &Path,
    dest: &str,
    keep_owner: bool,
    mtime: i64,
    known: &Known<'_>,
    seen: &mut Vec<Seen>,
) -> Result<usize> {
    let mut count = 0;
    // Indexes in `seen` of the directories being walked, by depth, for their names.
    let mut open: Vec<(usize, usize)> = Vec::new();
    // Host inode → first image path, so host hard links stay hard links.
    let mut links: foldhash::HashMap<(u64, u64), String> = Default::default();
    walk_looked(src, |item, looked| {
        let Looked { md, xattrs, target } = looked?;
        if md.is_dir() != item.walked_into() {
            bail!(
                "{} changed while the overlay was read; build again",
                item.path.display()
            );
        }
        let rel = item.path.strip_prefix(src).unwrap_or(&item.path);
        let rel = match rel.to_str() {
            Some(r) => r,
            None => bail!(
                "overlay file name {:?} is not UTF-8; kiln stores image paths as UTF-8",
                item.path
            ),
        };
        let image_path = path::join(dest, &path::relative(rel).map_err(anyhow::Error::msg)?);
        let depth = item.depth;
        while open.last().is_some_and(|&(d, _)| d >= depth) {
            open.pop();
        }
        if let Some(&(_, parent)) = open.last() {
            if let SeenWhat::Names(names) = &mut seen[parent].what {
                names.push(item.name.clone());
            }
        }
        let mut meta = Meta::new(md.mode(), mtime);
        if keep_owner {
            meta = meta.owner(md.uid(), md.gid());
        }
        meta.xattrs = xattrs;
        let ft = md.file_type();
        let what = match &target {
            _ if ft.is_dir() => SeenWhat::Names(Vec::new()),
            _ if ft.is_file() => SeenWhat::Content,
            Some(t) => SeenWhat::Target(t.clone()),
            None => SeenWhat::Nothing,
        };
        if ft.is_dir() {
            open.push((depth, seen.len()));
        }
        seen.push(Seen {
            path: item.record_path().to_path_buf(),
            md: md.clone(),
            xattrs: meta.xattrs.clone(),
            what,
        });
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = links.get(&(md.dev(), md.ino())) {
                    tree.insert(&image_path, Entry::new(Kind::HardLink(first.clone()), meta))?;
                    count += 1;
                    return Ok(());
                }
            }
            Kind::File(Data::Host {
                path: item.path.clone(),
                size: md.len(),
                digest: known(item.record_path(), &md),
            })
        } else if let Some(target) = target {
            match target.to_str() {
                Some(t) => Kind::Symlink(t.to_string()),
                None => bail!("symlink target of {} is not UTF-8", item.path.display()),
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            let rdev = md.rdev();
            let (major, minor) = (libc::major(rdev), libc::minor(rdev));
            if ft.is_char_device() {
                Kind::CharDev { major, minor }
            } else {
                Kind::BlockDev { major, minor }
            }
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_socket() {
            Kind::Socket
        } else {
            bail!("{} has a file type kiln cannot store", item.path.display());
        };
        let (landed, _) = tree.insert(&image_path, Entry::new(kind, meta))?;
        if ft.is_file() && md.nlink() > 1 {
            links.insert((md.dev(), md.ino()), landed);
        }
        count += 1;
        Ok(())
    })?;
    Ok(count)
}

/// The extended attributes of `p` itself (not a symlink's target), by name. A file
/// system without xattr support has none.
pub fn host_xattrs(p: &Path) -> Result<std::collections::BTreeMap<String, Vec<u8>>> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = std::collections::BTreeMap::new();
    let c = std::ffi::CString::new(p.as_os_str().as_bytes())?;
    let unsupported = |e: &std::io::Error| e.raw_os_error() == Some(libc::ENOTSUP);
    // SAFETY: a null buffer of size 0 asks for the size of the name list.
    let size = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        let e = std::io::Error::last_os_error();
        return if unsupported(&e) {
            Ok(out)
        } else {
            Err(e.into())
        };
    }
    if size == 0 {
        // Most files have none: no second call.
        return Ok(out);
    }
    let mut names = vec![0u8; size as usize];
    // SAFETY: `names` has room for `size` bytes.
    let got = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if got < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    names.truncate(got as usize);
    // The host's SELinux label says where the file was, not what it is; copying it
    // would make images differ between hosts.
    for name in names
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty() && *n != b"security.selinux")
    {
        let cname = std::ffi::CString::new(name)?;
        // SAFETY: as above, for the value's size.
        let len = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            // trusted.* is readable by root only: what the reader cannot see, it cannot copy.
            continue;
        }
        let mut value = vec![0u8; len as usize];
        // SAFETY: `value` has room for `len` bytes.
        let n = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if n < 0 {
            continue;
        }
        value.truncate(n as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), value);
    }
    Ok(out)
}
