//! File contents: streamed from their sources (or read ahead whole by worker threads
//! for small files), hashed for the manifest, written with all-zero blocks left as holes.

use crate::tree::digest::{aligned_ranges, is_zero, FileDigest, FileHasher};
use anyhow::{Context, Result};

use super::inode::EXTENTS_FL;
use super::io::{Io, Written};
use super::BLOCK;
use crate::tree::Data;

pub(super) const CHUNK: usize = 1 << 20;

/// Writes the non-zero blocks of `data` (whole blocks, the first of them logical block
/// `logical` of the file) in runs straight from `data`, without a copy; all-zero blocks
/// stay holes. Pushes each block's zero flag to `zero`, if given; returns the blocks
/// written.
fn put_data(
    io: &mut Io,
    logical: u64,
    data: &[u8],
    runs: &mut Vec<(u64, u64, u64)>,
    mut zero: Option<&mut Vec<bool>>,
) -> Result<u64> {
    let bs = BLOCK as usize;
    let blocks = data.len() / bs;
    let mut written = 0u64;
    let mut run_start: Option<usize> = None;
    for k in 0..=blocks {
        let data_block = k < blocks && {
            let z = is_zero(&data[k * bs..(k + 1) * bs]);
            if let Some(zero) = zero.as_deref_mut() {
                zero.push(z);
            }
            !z
        };
        match (data_block, run_start) {
            (true, None) => run_start = Some(k),
            (false, Some(s)) => {
                io.put_blocks(logical + s as u64, &data[s * bs..k * bs], runs)?;
                written += (k - s) as u64;
                run_start = None;
            }
            _ => {}
        }
    }
    Ok(written)
}

/// Files at most this large are read whole, ahead of time, by worker threads.
pub(super) const PREFETCH_MAX: u64 = 1 << 20;

pub(super) struct Prefetched {
    pub(super) bytes: Vec<u8>,
    pub(super) digest: FileDigest,
}

pub(super) fn prefetch(d: &Data) -> Result<Prefetched> {
    let r = d
        .open()
        .with_context(|| format!("reading {}", d.describe()))?;
    let bytes = r
        .read_all()
        .with_context(|| format!("reading {}", d.describe()))?;
    let digest = match d.known_digest() {
        Some(k) => k.clone(),
        None => FileDigest::of_bytes(&bytes),
    };
    Ok(Prefetched { bytes, digest })
}

/// Writes a file held in memory; all-zero blocks stay holes. Runs of data blocks go
/// out straight from `data`, without an intermediate copy.
pub(super) fn write_bytes(
    io: &mut Io,
    data: &[u8],
    seed: u32,
    bufs: &mut Buffers,
) -> Result<Written> {
    let mut runs = Vec::new();
    let bs = BLOCK as usize;
    let full = data.len() / bs;
    let mut written = put_data(io, 0, &data[..full * bs], &mut runs, None)?;
    let tail = &data[full * bs..];
    if !tail.is_empty() && !is_zero(tail) {
        let last = &mut bufs.read[..bs];
        last.fill(0);
        last[..tail.len()].copy_from_slice(tail);
        io.put_blocks(full as u64, last, &mut runs)?;
        written += 1;
    }
    let (i_block, tree_blocks) = io.finish_extents(&runs, seed)?;
    Ok(Written {
        i_block,
        blocks: written + tree_blocks,
        flags: EXTENTS_FL,
    })
}

/// Buffers reused from file to file.
pub(super) struct Buffers {
    read: Vec<u8>,
    /// Buffers a file's hashing thread is done with, for the next large file's.
    pool: Vec<Vec<u8>>,
}

impl Buffers {
    pub(super) fn new() -> Buffers {
        Buffers {
            read: vec![0u8; CHUNK],
            pool: Vec::new(),
        }
    }
}

/// What the writer hands the thread that hashes a file beside it: data as read (with its
/// blocks' zero flags), or a hole's length.
enum ToHash {
    Hole(u64),
    Data {
        buf: Vec<u8>,
        len: usize,
        zero: Vec<bool>,
    },
}

/// A file's digest, computed on another thread from the very bytes the writer read, so
/// hashing a large file costs the writer a copy instead of its sha256 (about a third of a
/// disk build's time on one thread otherwise).
struct BesideHasher<'scope> {
    tx: std::sync::mpsc::SyncSender<ToHash>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: std::thread::ScopedJoinHandle<'scope, Result<FileDigest>>,
}

impl<'scope> BesideHasher<'scope> {
    fn start<'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        d: &'env Data,
        ranges: Vec<(u64, u64)>,
    ) -> Result<BesideHasher<'scope>> {
        // Its own reader: switching to the sparse digest reads earlier data again.
        let reader = d
            .open()
            .with_context(|| format!("reading {}", d.describe()))?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<ToHash>(4);
        let (spare_tx, spare) = std::sync::mpsc::channel::<Vec<u8>>();
        let thread = scope.spawn(move || -> Result<FileDigest> {
            let reread = |buf: &mut [u8], at: u64| reader.read_exact_at(buf, at);
            let reading = || format!("reading {}", d.describe());
            let mut h = FileHasher::new(d.len(), &ranges);
            // After a failure it drains what the writer still sends, so the writer's sends
            // never fail and the failure itself is what the writer reports.
            let mut failed = None;
            for m in rx {
                let r = match m {
                    _ if failed.is_some() => Ok(()),
                    ToHash::Hole(n) => h.hole(n, &reread),
                    ToHash::Data { buf, len, zero } => {
                        let r = h.data(&buf[..len], &zero, &reread);
                        let _ = spare_tx.send(buf);
                        r
                    }
                };
                if let Err(e) = r {
                    failed = Some(e);
                }
            }
            match failed {
                Some(e) => Err(anyhow::Error::new(e).context(reading())),
                None => Ok(h.finish()),
            }
        });
        Ok(BesideHasher { tx, spare, thread })
    }

    fn send(&self, m: ToHash) -> Result<()> {
        self.tx
            .send(m)
            .map_err(|_| anyhow::anyhow!("the hashing thread stopped"))
    }

    /// A buffer of `CHUNK` bytes: one the hasher is done with, else one kept from an
    /// earlier file, else a new one.
    fn buffer(&self, pool: &mut Vec<Vec<u8>>) -> Vec<u8> {
        self.spare
            .try_recv()
            .ok()
            .or_else(|| pool.pop())
            .unwrap_or_else(|| vec![0u8; CHUNK])
    }

    /// The file's digest; the buffers go back to `pool` for the next file, since a new
    /// one has to be cleared before its first use.
    fn finish(self, pool: &mut Vec<Vec<u8>>) -> Result<FileDigest> {
        drop(self.tx);
        let r = match self.thread.join() {
            Ok(r) => r,
            Err(_) => anyhow::bail!("the hashing thread panicked"),
        };
        pool.extend(self.spare.try_iter());
        r
    }
}

/// Streams a file's bytes into the file system; all-zero blocks become holes, and holes
/// in the source are never read. Returns the inode's block map and the content's digest
/// (hashed beside the writing, on another thread, unless known ahead).
pub(super) fn write_file(
    io: &mut Io,
    d: &Data,
    seed: u32,
    bufs: &mut Buffers,
) -> Result<(Written, FileDigest)> {
    let size = d.len();
    let reader = d
        .open()
        .with_context(|| format!("reading {}", d.describe()))?;
    let ranges = aligned_ranges(
        &reader
            .data_ranges()
            .with_context(|| format!("reading {}", d.describe()))?,
        size,
    );
    // A package member's digest is known from its unpacking: not hashed again.
    let known = d.known_digest().cloned();
    std::thread::scope(|scope| -> Result<(Written, FileDigest)> {
        let hasher = match known {
            None => Some(BesideHasher::start(scope, d, ranges.clone())?),
            Some(_) => None,
        };
        let mut runs = Vec::new();
        let mut written = 0u64;
        let reading = || format!("reading {}", d.describe());
        let mut pos = 0u64;
        for (a, b) in ranges.iter().copied() {
            if let Some(h) = &hasher {
                h.send(ToHash::Hole(a - pos))?;
            }
            let mut at = a;
            while at < b {
                let span = (b - at).min(CHUNK as u64) as usize;
                let real = (size.min(at + span as u64) - at) as usize;
                let mut fresh;
                let buf: &mut Vec<u8> = match &hasher {
                    Some(h) => {
                        fresh = h.buffer(&mut bufs.pool);
                        &mut fresh
                    }
                    None => &mut bufs.read,
                };
                let chunk = &mut buf[..span];
                chunk[real..].fill(0);
                reader
                    .read_exact_at(&mut chunk[..real], at)
                    .with_context(reading)?;
                let mut zero = Vec::with_capacity(CHUNK / BLOCK as usize);
                // Runs split at a chunk's end are allocated back to back and merged
                // into one extent.
                written += put_data(io, at / BLOCK, chunk, &mut runs, Some(&mut zero))?;
                if let Some(h) = &hasher {
                    h.send(ToHash::Data {
                        buf: std::mem::take(buf),
                        len: real,
                        zero,
                    })?;
                }
                at += span as u64;
            }
            pos = b.min(size);
        }
        if let Some(h) = &hasher {
            h.send(ToHash::Hole(size - pos))?;
        }
        let (i_block, tree_blocks) = io.finish_extents(&runs, seed)?;
        let digest = match (hasher, known) {
            (Some(h), _) => h.finish(&mut bufs.pool)?,
            (None, Some(k)) => k,
            (None, None) => unreachable!("a hasher unless the digest is known"),
        };
        Ok((
            Written {
                i_block,
                blocks: written + tree_blocks,
                flags: EXTENTS_FL,
            },
            digest,
        ))
    })
}
