//! Block allocation and writes: runs of blocks handed out in order, written through a
//! queue that turns consecutive small writes into one, and turned into extent trees.

use anyhow::{Context, Result};

use super::inode::{self, Extent, MAX_EXTENT_LEN};
use super::layout::Allocator;
use super::writer::Target;
use super::BLOCK;

pub(super) struct Written {
    pub(super) i_block: [u8; 60],
    pub(super) blocks: u64,
    pub(super) flags: u32,
}

pub(super) fn runs_to_extents(runs: &[(u64, u64, u64)]) -> Vec<Extent> {
    // (logical, physical, len) runs → extents of at most 32768 blocks, merged when adjacent.
    let mut out: Vec<Extent> = Vec::new();
    for &(mut logical, mut phys, mut len) in runs {
        while len > 0 {
            if let Some(last) = out.last_mut() {
                if last.logical as u64 + last.len as u64 == logical
                    && last.start + last.len as u64 == phys
                    && (last.len as u64) < MAX_EXTENT_LEN
                {
                    let add = len.min(MAX_EXTENT_LEN - last.len as u64);
                    last.len += add as u16;
                    logical += add;
                    phys += add;
                    len -= add;
                    continue;
                }
            }
            let n = len.min(MAX_EXTENT_LEN);
            out.push(Extent {
                logical: logical as u32,
                len: n as u16,
                start: phys,
            });
            logical += n;
            phys += n;
            len -= n;
        }
    }
    out
}

pub(super) struct Io<'a> {
    pub(super) target: &'a Target<'a>,
    pub(super) alloc: Allocator<'a>,
    /// Data waiting to be written at block `queued_at`: consecutive small files are
    /// allocated consecutively, so they go out in one write.
    pub(super) queued: Vec<u8>,
    pub(super) queued_at: u64,
}

pub(super) const QUEUE_LIMIT: usize = 8 << 20;

/// Runs of at least this many bytes are written straight from the caller's buffer.
const DIRECT_MIN: usize = 64 << 10;

impl Io<'_> {
    pub(super) fn write(&mut self, block: u64, data: &[u8]) -> Result<()> {
        if data.len() >= DIRECT_MIN {
            // Large enough to go out on its own: copying it into the queue costs more
            // than the write call it would share.
            self.flush()?;
            return self.target.write_block(block, data);
        }
        let end = self.queued_at + self.queued.len() as u64 / BLOCK;
        if !self.queued.is_empty() && (block != end || self.queued.len() + data.len() > QUEUE_LIMIT)
        {
            self.flush()?;
        }
        if self.queued.is_empty() {
            self.queued_at = block;
        }
        self.queued.extend_from_slice(data);
        Ok(())
    }

    pub(super) fn flush(&mut self) -> Result<()> {
        if !self.queued.is_empty() {
            self.target.write_block(self.queued_at, &self.queued)?;
            self.queued.clear();
        }
        Ok(())
    }

    pub(super) fn alloc(&mut self, want: u64) -> Result<(u64, u64)> {
        self.alloc
            .run(want)
            .context("the file system is full; raise its size (or the free space margin)")
    }

    /// Allocates and writes `blocks` consecutive logical blocks starting at `logical`.
    pub(super) fn put_blocks(
        &mut self,
        logical: u64,
        data: &[u8],
        runs: &mut Vec<(u64, u64, u64)>,
    ) -> Result<()> {
        let mut done = 0u64;
        let n = data.len() as u64 / BLOCK;
        while done < n {
            let (start, len) = self.alloc(n - done)?;
            let off = (done * BLOCK) as usize;
            self.write(start, &data[off..off + (len * BLOCK) as usize])?;
            runs.push((logical + done, start, len));
            done += len;
        }
        Ok(())
    }

    pub(super) fn finish_extents(
        &mut self,
        runs: &[(u64, u64, u64)],
        seed: u32,
    ) -> Result<([u8; 60], u64)> {
        let extents = runs_to_extents(runs);
        let mut tree_blocks = 0u64;
        let (ib, blocks) = {
            let alloc = &mut self.alloc;
            inode::extent_tree(&extents, seed, || {
                tree_blocks += 1;
                alloc
                    .run(1)
                    .map(|(s, _)| s)
                    .context("the file system is full")
            })?
        };
        for (at, b) in blocks {
            self.write(at, &b)?;
        }
        Ok((ib, tree_blocks))
    }
}
