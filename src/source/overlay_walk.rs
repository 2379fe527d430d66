//! The walk of an overlay's source: every path below it, depth first with names sorted,
//! with its metadata, extended attributes and symlink target.
//!
//! A walk is a few system calls per path, each resolving the whole path again, and a
//! root file system has tens of thousands of paths: one thread lists the directories,
//! others look at what it found, and the caller takes the results in walk order.
//!
//! A directory's metadata is read before its entries are listed. The build record stamps
//! a directory with that metadata: an entry added after the listing then changes the
//! directory's times after the stamp, and the next build sees it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};

use anyhow::{bail, Context, Result};

use super::overlay::host_xattrs;

/// One path the walk found.
pub struct Found {
    /// The host path.
    pub path: PathBuf,
    /// 0 for the source itself, 1 for what it holds, and so on.
    pub depth: usize,
    /// The last component of the path.
    pub name: OsString,
    /// For a directory the walk went into, its metadata, read before its listing.
    dir_md: Option<Metadata>,
    /// Where to look at the source itself: its real path (it may be a symlink the walk
    /// follows). None below it.
    real: Option<PathBuf>,
}

impl Found {
    /// The path the build record knows it by: the source's real path, else its own.
    pub fn record_path(&self) -> &Path {
        self.real.as_deref().unwrap_or(&self.path)
    }

    /// Whether the walk went into it (and so whether its entries follow).
    pub fn walked_into(&self) -> bool {
        self.dir_md.is_some()
    }
}

/// What the walk read of one path.
pub struct Looked {
    /// Its metadata (of the path itself, not a symlink's target).
    pub md: Metadata,
    /// Its extended attributes.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// A symlink's target.
    pub target: Option<PathBuf>,
}

fn look(found: &Found) -> Result<Looked> {
    let at = found.record_path();
    let md = match &found.dir_md {
        Some(md) => md.clone(),
        None => {
            std::fs::symlink_metadata(at).with_context(|| format!("reading {}", at.display()))?
        }
    };
    // As mke2fs -d and tar --xattrs do: user.*, security.* (file capabilities),
    // trusted.* when readable, and POSIX ACLs.
    let xattrs = host_xattrs(at)
        .with_context(|| format!("reading the extended attributes of {}", at.display()))?;
    let target = match md.file_type().is_symlink() {
        true => Some(std::fs::read_link(at).with_context(|| format!("reading {}", at.display()))?),
        false => None,
    };
    Ok(Looked { md, xattrs, target })
}

/// A directory's entries, sorted by name, each with whether it is a directory (as the
/// listing says: the walk does not follow symlinks).
fn list(dir: &Path) -> Result<std::vec::IntoIter<(OsString, bool)>> {
    let reading = || format!("reading {}", dir.display());
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).with_context(reading)? {
        let e = e.with_context(reading)?;
        let is_dir = e.file_type().with_context(reading)?.is_dir();
        names.push((e.file_name(), is_dir));
    }
    names.sort_unstable();
    Ok(names.into_iter())
}

/// Walks `src`, giving `each` every path in walk order; stops at the first error (given
/// to `each` too) or when `each` returns false.
fn walk(src: &Path, each: &mut dyn FnMut(Result<Found>) -> bool) {
    if let Err(e) = walk_or_fail(src, each) {
        each(Err(e));
    }
}

fn walk_or_fail(src: &Path, each: &mut dyn FnMut(Result<Found>) -> bool) -> Result<()> {
    let reading = || format!("reading {}", src.display());
    // The source itself is followed if it is a symlink.
    let md = std::fs::metadata(src).with_context(reading)?;
    let is_dir = md.is_dir();
    let root = Found {
        path: src.to_path_buf(),
        depth: 0,
        name: src.file_name().unwrap_or_default().to_os_string(),
        real: Some(std::fs::canonicalize(src).with_context(reading)?),
        dir_md: is_dir.then_some(md),
    };
    if !each(Ok(root)) || !is_dir {
        return Ok(());
    }
    // The directories being walked, innermost last, each with what is left of its listing.
    let mut open = vec![(src.to_path_buf(), 1, list(src)?)];
    while let Some((dir, depth, entries)) = open.last_mut() {
        let Some((name, is_dir)) = entries.next() else {
            open.pop();
            continue;
        };
        let path = dir.join(&name);
        let depth = *depth;
        let dir_md = match is_dir {
            true => {
                let md = std::fs::symlink_metadata(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                // Replaced by something else since it was listed: the lookers see what.
                md.is_dir().then_some(md)
            }
            false => None,
        };
        let into = dir_md.is_some();
        let found = Found {
            path: path.clone(),
            depth,
            name,
            dir_md,
            real: None,
        };
        if !each(Ok(found)) {
            return Ok(());
        }
        if into {
            let entries = list(&path)?;
            open.push((path, depth + 1, entries));
        }
    }
    Ok(())
}

/// Walks `src` and gives `each` every path found with what was read of it, in walk
/// order.
pub fn walk_looked(
    src: &Path,
    mut each: impl FnMut(&Found, Result<Looked>) -> Result<()>,
) -> Result<()> {
    const CHUNK: usize = 256;
    type Chunk = (usize, Result<Vec<Found>>);
    type Done = (usize, Result<Vec<(Found, Result<Looked>)>>);
    let lookers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    std::thread::scope(|scope| -> Result<()> {
        // Bounded, so that memory stays a few chunks ahead of the slowest stage.
        let (chunk_tx, chunk_rx) = sync_channel::<Chunk>(4 * lookers);
        let (done_tx, done_rx) = sync_channel::<Done>(4 * lookers);
        scope.spawn(move || walker(src, CHUNK, chunk_tx));
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
                        .map(|f| {
                            let l = look(&f);
                            (f, l)
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
        let mut waiting = BTreeMap::new();
        let mut next = 0;
        for (n, chunk) in done_rx.iter() {
            waiting.insert(n, chunk);
            while let Some(chunk) = waiting.remove(&next) {
                for (found, looked) in chunk? {
                    each(&found, looked)?;
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

/// The walking thread: sends what it finds in chunks numbered from 0, an error as a
/// chunk of its own, numbered after the last chunk sent.
fn walker(src: &Path, size: usize, tx: SyncSender<(usize, Result<Vec<Found>>)>) {
    let mut n = 0;
    let mut chunk = Vec::with_capacity(size);
    let flush = |chunk: &mut Vec<Found>, n: &mut usize| -> bool {
        if chunk.is_empty() {
            return true;
        }
        let sent = tx.send((*n, Ok(std::mem::take(chunk)))).is_ok();
        *n += 1;
        sent
    };
    walk(src, &mut |item| match item {
        Ok(f) => {
            chunk.push(f);
            chunk.len() < size || flush(&mut chunk, &mut n)
        }
        Err(e) => {
            if flush(&mut chunk, &mut n) {
                let _ = tx.send((n, Err(e)));
            }
            false
        }
    });
    flush(&mut chunk, &mut n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_depth_first_in_name_order_through_a_symlinked_source_and_not_below() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        for dir in ["real/a-b", "real/a/c", "elsewhere"] {
            std::fs::create_dir_all(d.path().join(dir)).unwrap();
        }
        for file in ["real/a/c/f", "real/a-b/g", "real/z", "elsewhere/hidden"] {
            std::fs::write(d.path().join(file), file).unwrap();
        }
        std::os::unix::fs::symlink(d.path().join("elsewhere"), real.join("link")).unwrap();
        let src = d.path().join("src");
        std::os::unix::fs::symlink(&real, &src).unwrap();
        let mut got = Vec::new();
        walk_looked(&src, |f, looked| {
            let l = looked?;
            let rel = f
                .path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            got.push((rel, f.depth, f.walked_into(), l.target.is_some()));
            if f.depth == 0 {
                assert_eq!(f.record_path(), std::fs::canonicalize(&real).unwrap());
                assert!(l.md.is_dir(), "the source is followed");
            }
            Ok(())
        })
        .unwrap();
        let want = [
            ("", 0, true, false),
            ("a", 1, true, false),
            ("a/c", 2, true, false),
            ("a/c/f", 3, false, false),
            ("a-b", 1, true, false),
            ("a-b/g", 2, false, false),
            ("link", 1, false, true),
            ("z", 1, false, false),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(p, d, i, l)| (p.to_string(), *d, *i, *l))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_missing_source_is_the_error_given() {
        let d = tempfile::tempdir().unwrap();
        let gone = d.path().join("gone");
        let e = walk_looked(&gone, |_, l| l.map(|_| ())).unwrap_err();
        assert!(
            format!("{e:#}").contains(&format!("reading {}", gone.display())),
            "{e:#}"
        );
        assert!(!format!("{e:#}").contains("walking thread"), "{e:#}");
    }
}
