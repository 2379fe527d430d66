//! Group metadata, written once every inode and block is placed: block and inode
//! bitmaps, the used part of each inode table, group descriptors, and the superblock
//! with its backups.

use anyhow::Result;

use super::csum::crc32c_raw;
use super::layout::{self, Geometry, GroupMeta, BLOCKS_PER_GROUP};
use super::writer::{Prepared, Target};
use super::{put16, put32, BLOCK, FIRST_INO, INODE_SIZE, JOURNAL_INO};

/// What the inode pass leaves for the metadata pass.
pub(super) struct Summary<'a> {
    /// The allocator's cursor: every block below it is in use.
    pub cursor: u64,
    /// Inodes 1..=max_ino, 256 bytes each.
    pub table: &'a [u8],
    pub max_ino: u32,
    pub used_dirs: &'a [u32],
    pub journal_iblock: &'a [u8; 60],
    pub journal_size: u64,
}

fn superblock(
    p: &Prepared,
    free_blocks: u64,
    free_inodes: u64,
    journal_iblock: &[u8; 60],
    journal_size: u64,
    group: u64,
) -> Vec<u8> {
    let g = &p.geometry;
    let o = &p.opts;
    let mut s = vec![0u8; 1024];
    put32(&mut s, 0x00, g.inodes() as u32);
    put32(&mut s, 0x04, g.blocks as u32);
    put32(&mut s, 0x0C, free_blocks as u32);
    put32(&mut s, 0x10, free_inodes as u32);
    put32(&mut s, 0x14, 0);
    put32(&mut s, 0x18, 2);
    put32(&mut s, 0x1C, 2);
    put32(&mut s, 0x20, BLOCKS_PER_GROUP as u32);
    put32(&mut s, 0x24, BLOCKS_PER_GROUP as u32);
    put32(&mut s, 0x28, g.inodes_per_group);
    let t = o.time.clamp(0, u32::MAX as i64) as u32;
    put32(&mut s, 0x30, t);
    put16(&mut s, 0x36, 0xFFFF);
    put16(&mut s, 0x38, 0xEF53);
    put16(&mut s, 0x3A, 1);
    put16(&mut s, 0x3C, 1);
    put32(&mut s, 0x40, t);
    put32(&mut s, 0x4C, 1);
    put32(&mut s, 0x54, FIRST_INO);
    put16(&mut s, 0x58, INODE_SIZE as u16);
    put16(&mut s, 0x5A, group as u16);
    put32(&mut s, 0x5C, 0x4 | 0x8 | 0x20);
    let incompat = 0x2 | 0x40 | 0x200 | if g.is_64bit { 0x80 } else { 0 };
    put32(&mut s, 0x60, incompat);
    put32(&mut s, 0x64, 0x1 | 0x2 | 0x8 | 0x20 | 0x40 | 0x400);
    s[0x68..0x78].copy_from_slice(&o.uuid);
    let label = o.label.as_bytes();
    let n = label.len().min(16);
    s[0x78..0x78 + n].copy_from_slice(&label[..n]);
    put32(&mut s, 0xE0, JOURNAL_INO);
    s[0xEC..0xFC].copy_from_slice(&o.hash_seed);
    s[0xFC] = 1;
    s[0xFD] = 1;
    put16(
        &mut s,
        0xFE,
        if g.is_64bit { g.desc_size as u16 } else { 0 },
    );
    put32(&mut s, 0x100, 0x0004 | 0x0008);
    put32(&mut s, 0x108, t);
    s[0x10C..0x10C + 60].copy_from_slice(journal_iblock);
    put32(&mut s, 0x10C + 60, (journal_size >> 32) as u32);
    put32(&mut s, 0x10C + 64, journal_size as u32);
    put32(&mut s, 0x150, (g.blocks >> 32) as u32);
    put32(&mut s, 0x158, (free_blocks >> 32) as u32);
    put16(&mut s, 0x15C, super::EXTRA_ISIZE);
    put16(&mut s, 0x15E, super::EXTRA_ISIZE);
    put32(&mut s, 0x160, 0x2);
    s[0x174] = g.log_groups_per_flex;
    s[0x175] = 1;
    let c = crc32c_raw(!0, &s[..0x3FC]);
    put32(&mut s, 0x3FC, c);
    s
}

/// Writes bitmaps, inode tables, descriptors and superblocks; returns the free block and
/// inode counts.
pub(super) fn write_groups(p: &Prepared, target: &Target, s: &Summary) -> Result<(u64, u64)> {
    let g = &p.geometry;
    let (cursor, table, max_ino, used_dirs) = (s.cursor, s.table, s.max_ino, s.used_dirs);
    let (j_iblock, jsize) = (s.journal_iblock, s.journal_size);
    // Every block below the allocator's cursor is in use, and so is all metadata.
    let used_in = |gs: u64, ge: u64| -> u64 {
        let below = cursor.clamp(gs, ge) - gs;
        let reserved_above: u64 = g
            .reserved
            .iter()
            .map(|&(s, l)| {
                let (a, b) = (s.max(gs).max(cursor), (s + l).min(ge));
                b.saturating_sub(a)
            })
            .sum();
        below + reserved_above
    };
    let mut total_free_blocks = 0u64;
    let mut total_free_inodes = 0u64;
    let mut gdt = vec![0u8; (g.gdt_blocks * BLOCK) as usize];
    let ipg = g.inodes_per_group as u64;
    for grp in 0..g.groups {
        let gs = g.group_start(grp);
        let ge = gs + g.group_len(grp);
        // Block bitmap: in use below the cursor or reserved; padding past the end.
        let mut bb = vec![0u8; BLOCK as usize];
        let set = |bm: &mut [u8], i: u64| bm[(i / 8) as usize] |= 1 << (i % 8);
        for i in 0..(ge - gs) {
            let b = gs + i;
            if b < cursor || g.is_reserved(b) {
                set(&mut bb, i);
            }
        }
        for i in (ge - gs)..BLOCKS_PER_GROUP {
            set(&mut bb, i);
        }
        let used = used_in(gs, ge);
        let free_blocks = (ge - gs) - used;
        total_free_blocks += free_blocks;
        // Inode bitmap: inodes 1..=max_ino are all in use.
        let first = grp * ipg + 1;
        let used_inodes = (max_ino as u64 + 1).saturating_sub(first).min(ipg);
        let mut ib = vec![0u8; BLOCK as usize];
        for i in 0..used_inodes {
            set(&mut ib, i);
        }
        for i in ipg..BLOCK * 8 {
            set(&mut ib, i);
        }
        let free_inodes = ipg - used_inodes;
        total_free_inodes += free_inodes;
        let m = g.meta[grp as usize];
        target.write_block(m.block_bitmap, &bb)?;
        target.write_block(m.inode_bitmap, &ib)?;
        if used_inodes > 0 {
            let from = ((first - 1) as usize) * INODE_SIZE;
            let to = from + used_inodes as usize * INODE_SIZE;
            let mut bytes = table[from..to].to_vec();
            bytes.resize((to - from).div_ceil(BLOCK as usize) * BLOCK as usize, 0);
            target.write_block(m.inode_table, &bytes)?;
        }
        let counts = Counts {
            free_blocks,
            free_inodes,
            used_dirs: used_dirs[grp as usize],
            unused_inodes: ipg - used_inodes,
            block_bitmap_csum: crc32c_raw(p.fs_seed, &bb[..(BLOCKS_PER_GROUP / 8) as usize]),
            inode_bitmap_csum: crc32c_raw(p.fs_seed, &ib[..(ipg / 8) as usize]),
        };
        let d = &mut gdt[grp as usize * g.desc_size..(grp as usize + 1) * g.desc_size];
        descriptor(d, grp, &m, &counts, g.is_64bit, p.fs_seed);
    }
    let sb = |grp| {
        superblock(
            p,
            total_free_blocks,
            total_free_inodes,
            j_iblock,
            jsize,
            grp,
        )
    };
    write_superblocks(g, target, &gdt, sb)?;
    Ok((total_free_blocks, total_free_inodes))
}

/// A group's counts and bitmap checksums, for its descriptor.
struct Counts {
    free_blocks: u64,
    free_inodes: u64,
    used_dirs: u32,
    unused_inodes: u64,
    block_bitmap_csum: u32,
    inode_bitmap_csum: u32,
}

/// Encodes group `grp`'s descriptor into `d` (32 or 64 bytes), checksum last.
fn descriptor(d: &mut [u8], grp: u64, m: &GroupMeta, c: &Counts, is_64bit: bool, fs_seed: u32) {
    put32(d, 0x00, m.block_bitmap as u32);
    put32(d, 0x04, m.inode_bitmap as u32);
    put32(d, 0x08, m.inode_table as u32);
    put16(d, 0x0C, c.free_blocks as u16);
    put16(d, 0x0E, c.free_inodes as u16);
    put16(d, 0x10, c.used_dirs as u16);
    put16(d, 0x12, 0x4);
    put16(d, 0x18, c.block_bitmap_csum as u16);
    put16(d, 0x1A, c.inode_bitmap_csum as u16);
    put16(d, 0x1C, c.unused_inodes as u16);
    if is_64bit {
        put32(d, 0x20, (m.block_bitmap >> 32) as u32);
        put32(d, 0x24, (m.inode_bitmap >> 32) as u32);
        put32(d, 0x28, (m.inode_table >> 32) as u32);
        put16(d, 0x2C, (c.free_blocks >> 16) as u16);
        put16(d, 0x2E, (c.free_inodes >> 16) as u16);
        put16(d, 0x30, (c.used_dirs >> 16) as u16);
        put16(d, 0x32, (c.unused_inodes >> 16) as u16);
        put16(d, 0x38, (c.block_bitmap_csum >> 16) as u16);
        put16(d, 0x3A, (c.inode_bitmap_csum >> 16) as u16);
    }
    let c = crc32c_raw(fs_seed, &(grp as u32).to_le_bytes());
    let c = crc32c_raw(c, &d[..0x1E]);
    let c = crc32c_raw(c, &[0, 0]);
    let c = if d.len() > 0x20 {
        crc32c_raw(c, &d[0x20..])
    } else {
        c
    };
    put16(d, 0x1E, c as u16);
}

/// The superblock and descriptor table at the start of every group that has a copy
/// (sparse_super); group 0's superblock sits 1024 bytes into block 0.
fn write_superblocks(
    g: &Geometry,
    target: &Target,
    gdt: &[u8],
    superblock: impl Fn(u64) -> Vec<u8>,
) -> Result<()> {
    for grp in 0..g.groups {
        if !layout::has_super(grp) {
            continue;
        }
        let sb = superblock(grp);
        let at = g.group_start(grp);
        if grp == 0 {
            let mut b0 = vec![0u8; BLOCK as usize];
            b0[1024..2048].copy_from_slice(&sb);
            target.write_block(0, &b0)?;
        } else {
            let mut b = vec![0u8; BLOCK as usize];
            b[..1024].copy_from_slice(&sb);
            target.write_block(at, &b)?;
        }
        target.write_block(at + 1, gdt)?;
    }
    Ok(())
}
