//! Overlay directories: a host directory tree copied into the image at a destination.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use walkdir::WalkDir;

use crate::tree::{path, Data, Entry, Kind, Meta, Tree};

/// A host path below an overlay's source as the walk saw it, so that the build's record
/// of its inputs needs no second look: the metadata was read before anything else of the
/// path, so any later change to it shows in its change or modification time.
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
    seen: &mut Vec<Seen>,
) -> Result<usize> {
    let mut count = 0;
    // Indexes in `seen` of the directories being walked, by depth, for their names. The
    // source itself is left to the build record's own look: it may be a symlink the
    // walk follows.
    let mut open: Vec<(usize, usize)> = Vec::new();
    // Host inode → first image path, so host hard links stay hard links.
    let mut links: std::collections::HashMap<(u64, u64), String> = std::collections::HashMap::new();
    walk_looked(src, |item, looked| {
        let Looked { md, xattrs, target } = looked?;
        let rel = item.path().strip_prefix(src).unwrap_or(item.path());
        let rel = match rel.to_str() {
            Some(r) => r,
            None => bail!(
                "overlay file name {:?} is not UTF-8; kiln stores image paths as UTF-8",
                item.path()
            ),
        };
        let image_path = path::join(dest, &path::relative(rel).map_err(anyhow::Error::msg)?);
        let depth = item.depth();
        while open.last().is_some_and(|&(d, _)| d >= depth) {
            open.pop();
        }
        if let Some(&(_, parent)) = open.last() {
            if let SeenWhat::Names(names) = &mut seen[parent].what {
                names.push(item.file_name().to_os_string());
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
        if depth > 0 {
            if ft.is_dir() {
                open.push((depth, seen.len()));
            }
            seen.push(Seen {
                path: item.path().to_path_buf(),
                md: md.clone(),
                xattrs: meta.xattrs.clone(),
                what,
            });
        }
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
                path: item.path().to_path_buf(),
                size: md.len(),
            })
        } else if let Some(target) = target {
            match target.to_str() {
                Some(t) => Kind::Symlink(t.to_string()),
                None => bail!("symlink target of {} is not UTF-8", item.path().display()),
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
            bail!(
                "{} has a file type kiln cannot store",
                item.path().display()
            );
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

/// What the walk reads of one host path.
struct Looked {
    md: std::fs::Metadata,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// A symlink's target.
    target: Option<PathBuf>,
}

fn look(item: &walkdir::DirEntry) -> Result<Looked> {
    let md = item
        .metadata()
        .with_context(|| format!("reading {}", item.path().display()))?;
    // As mke2fs -d and tar --xattrs do: user.*, security.* (file capabilities),
    // trusted.* when readable, and POSIX ACLs.
    let xattrs = host_xattrs(item.path()).with_context(|| {
        format!(
            "reading the extended attributes of {}",
            item.path().display()
        )
    })?;
    let target = match md.file_type().is_symlink() {
        true => Some(
            std::fs::read_link(item.path())
                .with_context(|| format!("reading {}", item.path().display()))?,
        ),
        false => None,
    };
    Ok(Looked { md, xattrs, target })
}

/// Walks `src` in name order and gives `each` every entry with what [`look`] read of
/// it, in that order. A walk is a few system calls per path, each resolving the whole
/// path again, and a root file system has tens of thousands: one thread lists the
/// directories, the others look at what it found, and this one takes the results in order.
fn walk_looked(
    src: &Path,
    mut each: impl FnMut(&walkdir::DirEntry, Result<Looked>) -> Result<()>,
) -> Result<()> {
    const CHUNK: usize = 256;
    type Chunk = (usize, Result<Vec<walkdir::DirEntry>, walkdir::Error>);
    let lookers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    std::thread::scope(|scope| -> Result<()> {
        // Bounded, so that memory stays a few chunks ahead of the slowest stage.
        let (chunk_tx, chunk_rx) = std::sync::mpsc::sync_channel::<Chunk>(4 * lookers);
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<(
            usize,
            Result<Vec<(walkdir::DirEntry, Result<Looked>)>, walkdir::Error>,
        )>(4 * lookers);
        scope.spawn(move || {
            let mut walker = WalkDir::new(src)
                .follow_links(false)
                .sort_by_file_name()
                .into_iter();
            let mut n = 0;
            loop {
                let mut chunk = Vec::with_capacity(CHUNK);
                let mut failed = None;
                for item in walker.by_ref() {
                    match item {
                        Ok(i) => chunk.push(i),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                    if chunk.len() == CHUNK {
                        break;
                    }
                }
                let last = chunk.len() < CHUNK;
                if !chunk.is_empty() && chunk_tx.send((n, Ok(chunk))).is_err() {
                    return;
                }
                n += 1;
                if let Some(e) = failed {
                    let _ = chunk_tx.send((n, Err(e)));
                    return;
                }
                if last {
                    return;
                }
            }
        });
        // Shared, and dropped with the last looker: a walker still sending then stops.
        let chunk_rx = std::sync::Arc::new(std::sync::Mutex::new(chunk_rx));
        for _ in 0..lookers {
            let (chunk_rx, done_tx) = (chunk_rx.clone(), done_tx.clone());
            scope.spawn(move || loop {
                let next = match chunk_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok((n, chunk)) = next else { return };
                let looked = chunk.map(|c| {
                    c.into_iter()
                        .map(|i| {
                            let l = look(&i);
                            (i, l)
                        })
                        .collect()
                });
                if done_tx.send((n, looked)).is_err() {
                    return;
                }
            });
        }
        drop((done_tx, chunk_rx));
        // Chunks come back in any order; they are taken in the walk's.
        let mut waiting = std::collections::BTreeMap::new();
        let mut next = 0;
        for (n, chunk) in done_rx.iter() {
            waiting.insert(n, chunk);
            while let Some(chunk) = waiting.remove(&next) {
                for (item, looked) in
                    chunk.with_context(|| format!("reading overlay {}", src.display()))?
                {
                    each(&item, looked)?;
                }
                next += 1;
            }
        }
        if !waiting.is_empty() {
            bail!(
                "reading overlay {}: a walking thread stopped",
                src.display()
            );
        }
        Ok(())
    })
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
