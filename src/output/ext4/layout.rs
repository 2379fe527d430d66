//! Where everything goes: block groups, backup superblocks (sparse_super), and the
//! flex_bg-packed bitmaps and inode tables; plus the block allocator that hands out
//! everything else in order.

use anyhow::{bail, Result};

use super::{BLOCK, INODE_SIZE};

/// Blocks per block group: what one 4 KiB bitmap block can track.
pub const BLOCKS_PER_GROUP: u64 = 32768;

/// Where one block group's bitmaps and inode table are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupMeta {
    /// Block of the block bitmap.
    pub block_bitmap: u64,
    /// Block of the inode bitmap.
    pub inode_bitmap: u64,
    /// First block of the inode table.
    pub inode_table: u64,
}

/// The layout of a file system: its size, groups and where their metadata goes.
#[derive(Debug, Clone)]
pub struct Geometry {
    /// Blocks in the file system, including metadata.
    pub blocks: u64,
    /// Block groups; the last may be shorter than `BLOCKS_PER_GROUP`.
    pub groups: u64,
    /// Inodes per group, a multiple of the inodes in one block.
    pub inodes_per_group: u32,
    /// Blocks of each group's inode table.
    pub itable_blocks: u64,
    /// Bytes per group descriptor: 64 with the 64bit feature, else 32.
    pub desc_size: usize,
    /// Whether the 64bit feature is on.
    pub is_64bit: bool,
    /// Blocks of the group descriptor table (and of each backup copy).
    pub gdt_blocks: u64,
    /// Groups per flex group, as a power of two (s_log_groups_per_flex).
    pub log_groups_per_flex: u8,
    /// Bitmap and inode table locations, one entry per group.
    pub meta: Vec<GroupMeta>,
    /// Sorted, non-overlapping (start, len) ranges no data may use.
    pub reserved: Vec<(u64, u64)>,
}

/// sparse_super: groups 0 and 1 and powers of 3, 5 and 7 keep a superblock copy.
pub fn has_super(group: u64) -> bool {
    if group <= 1 {
        return true;
    }
    for base in [3u64, 5, 7] {
        let mut p = base;
        while p < group {
            p *= base;
        }
        if p == group {
            return true;
        }
    }
    false
}

impl Geometry {
    /// Lays out a file system of `blocks` blocks with at least `inodes` inodes.
    pub fn new(blocks: u64, inodes: u64, force_64bit: bool) -> Result<Geometry> {
        if blocks < 64 {
            bail!("an ext4 file system needs at least 64 blocks (256 KiB)");
        }
        let is_64bit = force_64bit || blocks > u32::MAX as u64;
        let desc_size = if is_64bit { 64 } else { 32 };
        let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
        let per_block = (BLOCK as usize / INODE_SIZE) as u64;
        // Inodes per group: a multiple of the inodes in one table block (and so of 8),
        // at most what one bitmap block can track.
        let mut ipg = inodes.div_ceil(groups).max(per_block);
        ipg = ipg.div_ceil(per_block) * per_block;
        if ipg > BLOCK * 8 {
            bail!("{inodes} inodes do not fit in {groups} block groups; the file system needs to be larger");
        }
        let itable_blocks = ipg * INODE_SIZE as u64 / BLOCK;
        let gdt_blocks = (groups * desc_size as u64).div_ceil(BLOCK);
        // Pack as many groups' metadata per flex group as fit in one group's blocks.
        let mut log_flex = 4u8;
        while log_flex > 0
            && (1u64 << log_flex) * (2 + itable_blocks) + 1 + gdt_blocks > BLOCKS_PER_GROUP
        {
            log_flex -= 1;
        }
        let flex = 1u64 << log_flex;
        let mut g = Geometry {
            blocks,
            groups,
            inodes_per_group: ipg as u32,
            itable_blocks,
            desc_size,
            is_64bit,
            gdt_blocks,
            log_groups_per_flex: log_flex,
            meta: Vec::with_capacity(groups as usize),
            reserved: Vec::new(),
        };
        let mut reserved = Vec::new();
        for grp in 0..groups {
            if has_super(grp) {
                reserved.push((g.group_start(grp), 1 + gdt_blocks));
            }
        }
        let mut leader = 0;
        while leader < groups {
            let members = flex.min(groups - leader);
            let mut at = g.group_start(leader) + if has_super(leader) { 1 + gdt_blocks } else { 0 };
            let start = at;
            let bb = at;
            at += members;
            let ib = at;
            at += members;
            let it = at;
            at += members * itable_blocks;
            if at > blocks {
                bail!("the file system is too small for its own metadata; make it larger");
            }
            for m in 0..members {
                g.meta.push(GroupMeta {
                    block_bitmap: bb + m,
                    inode_bitmap: ib + m,
                    inode_table: it + m * itable_blocks,
                });
            }
            reserved.push((start, at - start));
            leader += flex;
        }
        reserved.sort();
        // Merge touching ranges so the allocator walks fewer of them.
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (s, l) in reserved {
            match merged.last_mut() {
                Some((ps, pl)) if *ps + *pl >= s => *pl = (*pl).max(s + l - *ps),
                _ => merged.push((s, l)),
            }
        }
        g.reserved = merged;
        Ok(g)
    }

    /// First block of `group`.
    pub fn group_start(&self, group: u64) -> u64 {
        group * BLOCKS_PER_GROUP
    }

    /// Blocks in `group`; only the last group can have fewer than `BLOCKS_PER_GROUP`.
    pub fn group_len(&self, group: u64) -> u64 {
        (self.blocks - self.group_start(group)).min(BLOCKS_PER_GROUP)
    }

    /// Inodes in the file system.
    pub fn inodes(&self) -> u64 {
        self.groups * self.inodes_per_group as u64
    }

    /// Blocks of superblocks, group descriptor tables, bitmaps and inode tables.
    pub fn metadata_blocks(&self) -> u64 {
        self.reserved.iter().map(|(_, l)| l).sum()
    }

    /// Whether `block` is metadata that data may not use.
    pub fn is_reserved(&self, block: u64) -> bool {
        let i = self.reserved.partition_point(|(s, _)| *s <= block);
        i > 0 && {
            let (s, l) = self.reserved[i - 1];
            block < s + l
        }
    }
}

/// Hands out blocks in increasing order, stepping over metadata.
#[derive(Debug)]
pub struct Allocator<'g> {
    geo: &'g Geometry,
    /// Next block to consider; every block below it has been handed out or is reserved.
    pub next: u64,
    idx: usize,
}

impl<'g> Allocator<'g> {
    /// An allocator that starts at block 0.
    pub fn new(geo: &'g Geometry) -> Allocator<'g> {
        Allocator {
            geo,
            next: 0,
            idx: 0,
        }
    }

    /// The next contiguous run of at most `want` free blocks, or None when the file system is full.
    pub fn run(&mut self, want: u64) -> Option<(u64, u64)> {
        loop {
            while self.idx < self.geo.reserved.len()
                && self.geo.reserved[self.idx].0 + self.geo.reserved[self.idx].1 <= self.next
            {
                self.idx += 1;
            }
            if let Some(&(s, l)) = self.geo.reserved.get(self.idx) {
                if self.next >= s {
                    self.next = s + l;
                    continue;
                }
                let avail = s - self.next;
                let n = want.min(avail);
                let start = self.next;
                self.next += n;
                return (n > 0).then_some((start, n));
            }
            let avail = self.geo.blocks.saturating_sub(self.next);
            if avail == 0 {
                return None;
            }
            let n = want.min(avail);
            let start = self.next;
            self.next += n;
            return Some((start, n));
        }
    }
}

/// mke2fs's journal sizes by file system size.
pub fn journal_blocks(fs_blocks: u64) -> u64 {
    match fs_blocks {
        0..32768 => 1024,
        32768..262144 => 4096,
        262144..524288 => 8192,
        524288..4194304 => 16384,
        4194304..8388608 => 32768,
        _ => 65536,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_super_groups() {
        let with: Vec<u64> = (0..100).filter(|&g| has_super(g)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
    }

    #[test]
    fn allocator_skips_metadata() {
        let g = Geometry::new(3 * BLOCKS_PER_GROUP, 30000, false).unwrap();
        let mut a = Allocator::new(&g);
        let (s, _) = a.run(10).unwrap();
        assert!(!g.is_reserved(s));
        let mut total = 0;
        while let Some((s, n)) = a.run(1 << 20) {
            for b in [s, s + n - 1] {
                assert!(!g.is_reserved(b), "{b}");
            }
            total += n;
        }
        assert_eq!(total + 10, g.blocks - g.metadata_blocks());
    }
}
