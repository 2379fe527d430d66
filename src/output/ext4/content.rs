//! File contents: streamed from their sources (or read ahead whole by worker threads
//! for small files), hashed for the manifest, written with all-zero blocks left as holes.

use crate::tree::digest::{aligned_ranges, is_zero, FileDigest, FileHasher};
use anyhow::{Context, Result};

use super::inode::EXTENTS_FL;
use super::io::{Io, Written};
use super::BLOCK;
use crate::tree::Data;

pub(super) const CHUNK: usize = 1 << 20;

/// Collects consecutive non-zero blocks and writes them as runs.
struct Pending {
    data: Vec<u8>,
    logical: u64,
    written: u64,
}

impl Pending {
    fn flush(&mut self, io: &mut Io, runs: &mut Vec<(u64, u64, u64)>) -> Result<()> {
        if !self.data.is_empty() {
            io.put_blocks(self.logical, &self.data, runs)?;
            self.written += self.data.len() as u64 / BLOCK;
            self.data.clear();
        }
        Ok(())
    }

    fn push(
        &mut self,
        io: &mut Io,
        runs: &mut Vec<(u64, u64, u64)>,
        logical: u64,
        block: &[u8],
    ) -> Result<()> {
        if !self.data.is_empty() && self.logical + self.data.len() as u64 / BLOCK != logical {
            self.flush(io, runs)?;
        }
        if self.data.is_empty() {
            self.logical = logical;
        }
        self.data.extend_from_slice(block);
        if self.data.len() >= CHUNK {
            self.flush(io, runs)?;
        }
        Ok(())
    }
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
    let mut bytes = vec![0u8; d.len() as usize];
    r.read_exact_at(&mut bytes, 0)
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
    let mut written = 0u64;
    let mut run_start: Option<usize> = None;
    for k in 0..=full {
        let data_block = k < full && !is_zero(&data[k * bs..(k + 1) * bs]);
        match (data_block, run_start) {
            (true, None) => run_start = Some(k),
            (false, Some(s)) => {
                io.put_blocks(s as u64, &data[s * bs..k * bs], &mut runs)?;
                written += (k - s) as u64;
                run_start = None;
            }
            _ => {}
        }
    }
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
    pending: Vec<u8>,
}

impl Buffers {
    pub(super) fn new() -> Buffers {
        Buffers {
            read: vec![0u8; CHUNK],
            pending: Vec::with_capacity(CHUNK + BLOCK as usize),
        }
    }
}

/// Streams a file's bytes into the file system; all-zero blocks become holes, and holes
/// in the source are never read. Returns the inode's block map and the content's digest.
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
    let reread = |buf: &mut [u8], at: u64| reader.read_exact_at(buf, at);
    // A package member's digest is known from its unpacking: not hashed again.
    let known = d.known_digest().cloned();
    let mut hasher = known.is_none().then(|| FileHasher::new(size, &ranges));
    let buf = &mut bufs.read;
    let mut zero = Vec::with_capacity(CHUNK / BLOCK as usize);
    let mut runs = Vec::new();
    bufs.pending.clear();
    let mut pending = Pending {
        data: std::mem::take(&mut bufs.pending),
        logical: 0,
        written: 0,
    };
    let reading = || format!("reading {}", d.describe());
    let mut pos = 0u64;
    for (a, b) in ranges.iter().copied() {
        if let Some(h) = &mut hasher {
            h.hole(a - pos, &reread).with_context(reading)?;
        }
        let mut at = a;
        while at < b {
            let span = (b - at).min(CHUNK as u64) as usize;
            let real = (size.min(at + span as u64) - at) as usize;
            let chunk = &mut buf[..span];
            chunk[real..].fill(0);
            reader
                .read_exact_at(&mut chunk[..real], at)
                .with_context(reading)?;
            zero.clear();
            for (k, block) in chunk.chunks(BLOCK as usize).enumerate() {
                let z = is_zero(block);
                zero.push(z);
                if !z {
                    pending.push(io, &mut runs, at / BLOCK + k as u64, block)?;
                } else {
                    pending.flush(io, &mut runs)?;
                }
            }
            if let Some(h) = &mut hasher {
                h.data(&chunk[..real], &zero, &reread)
                    .with_context(reading)?;
            }
            at += span as u64;
        }
        pos = b.min(size);
    }
    pending.flush(io, &mut runs)?;
    if let Some(h) = &mut hasher {
        h.hole(size - pos, &reread).with_context(reading)?;
    }
    bufs.pending = std::mem::take(&mut pending.data);
    let (i_block, tree_blocks) = io.finish_extents(&runs, seed)?;
    Ok((
        Written {
            i_block,
            blocks: pending.written + tree_blocks,
            flags: EXTENTS_FL,
        },
        match (hasher, known) {
            (Some(h), _) => h.finish(),
            (None, Some(k)) => k,
            (None, None) => unreachable!("a hasher unless the digest is known"),
        },
    ))
}
