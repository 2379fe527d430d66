//! Inodes and extent trees.

use anyhow::{bail, Result};

use super::csum::crc32c_raw;
use super::{put16, put32, BLOCK, EXTRA_ISIZE, INODE_SIZE};

/// i_flags: the inode uses extents.
pub const EXTENTS_FL: u32 = 0x0008_0000;
/// i_flags: the directory is hashed (htree).
pub const INDEX_FL: u32 = 0x0000_1000;
const EXTENT_MAGIC: u16 = 0xF30A;
/// Extents per tree block: (4096 - 12-byte header) / 12, leaving 4 bytes for the checksum.
const PER_BLOCK: usize = (BLOCK as usize - 12) / 12;
/// Most blocks one initialized extent can cover.
pub const MAX_EXTENT_LEN: u64 = 32768;

/// A run of blocks of a file: `len` blocks from logical block `logical` stored at `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First logical block of the file it covers (ee_block).
    pub logical: u32,
    /// Length in blocks, at most `MAX_EXTENT_LEN` (ee_len).
    pub len: u16,
    /// First physical block (ee_start_hi/ee_start_lo).
    pub start: u64,
}

/// What goes into one inode.
#[derive(Debug, Clone)]
pub struct InodeSpec {
    /// File type and permission bits.
    pub mode: u16,
    /// Owner uid (i_uid, high 16 bits in l_i_uid_high).
    pub uid: u32,
    /// Owner gid (i_gid, high 16 bits in l_i_gid_high).
    pub gid: u32,
    /// Size in bytes (i_size_lo/i_size_high).
    pub size: u64,
    /// Hard link count (i_links_count).
    pub links: u16,
    /// Seconds since the epoch, used for atime, ctime, mtime and crtime.
    pub time: i64,
    /// i_flags, e.g. `EXTENTS_FL`.
    pub flags: u32,
    /// i_block: the extent tree root, device numbers, or a fast symlink's target.
    pub i_block: [u8; 60],
    /// Blocks owned (data, extent tree, xattr block), in file system blocks.
    pub blocks: u64,
    /// Block of the extended attribute block, 0 for none (i_file_acl).
    pub file_acl: u64,
    /// The in-inode extended attribute area (after the extra fields), if any.
    pub inline_xattrs: Option<Vec<u8>>,
}

fn time_parts(t: i64) -> (u32, u32) {
    // Seconds' low 32 bits, and the epoch-extension bits in the "extra" word.
    let lo = t as u32;
    let hi = (((t - lo as i32 as i64) >> 32) & 3) as u32;
    (lo, hi)
}

impl Default for InodeSpec {
    fn default() -> Self {
        InodeSpec {
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            links: 0,
            time: 0,
            flags: 0,
            i_block: [0; 60],
            blocks: 0,
            file_acl: 0,
            inline_xattrs: None,
        }
    }
}

/// The on-disk inode, `INODE_SIZE` bytes, checksummed with `inode_seed`.
pub fn encode(spec: &InodeSpec, inode_seed: u32) -> [u8; INODE_SIZE] {
    let mut b = [0u8; INODE_SIZE];
    put16(&mut b, 0x00, spec.mode);
    put16(&mut b, 0x02, spec.uid as u16);
    put32(&mut b, 0x04, spec.size as u32);
    let (t, extra) = time_parts(spec.time);
    for off in [0x08, 0x0C, 0x10, 0x90] {
        put32(&mut b, off, t);
    }
    for off in [0x84, 0x88, 0x8C, 0x94] {
        put32(&mut b, off, extra);
    }
    put16(&mut b, 0x18, spec.gid as u16);
    put16(&mut b, 0x1A, spec.links);
    let sectors = spec.blocks * (BLOCK / 512);
    put32(&mut b, 0x1C, sectors as u32);
    put32(&mut b, 0x20, spec.flags);
    b[0x28..0x28 + 60].copy_from_slice(&spec.i_block);
    put32(&mut b, 0x68, spec.file_acl as u32);
    put32(&mut b, 0x6C, (spec.size >> 32) as u32);
    put16(&mut b, 0x74, (sectors >> 32) as u16);
    put16(&mut b, 0x76, (spec.file_acl >> 32) as u16);
    put16(&mut b, 0x78, (spec.uid >> 16) as u16);
    put16(&mut b, 0x7A, (spec.gid >> 16) as u16);
    put16(&mut b, 0x80, EXTRA_ISIZE);
    if let Some(x) = &spec.inline_xattrs {
        let start = 0x80 + EXTRA_ISIZE as usize;
        b[start..start + x.len()].copy_from_slice(x);
    }
    // Checksum over the whole inode with both checksum fields zero.
    let c = crc32c_raw(inode_seed, &b);
    put16(&mut b, 0x7C, c as u16);
    put16(&mut b, 0x82, (c >> 16) as u16);
    b
}

fn header(entries: usize, max: usize, depth: u16) -> [u8; 12] {
    let mut h = [0u8; 12];
    put16(&mut h, 0, EXTENT_MAGIC);
    put16(&mut h, 2, entries as u16);
    put16(&mut h, 4, max as u16);
    put16(&mut h, 6, depth);
    h
}

fn leaf_entry(e: &Extent) -> [u8; 12] {
    let mut x = [0u8; 12];
    put32(&mut x, 0, e.logical);
    put16(&mut x, 4, e.len);
    put16(&mut x, 6, (e.start >> 32) as u16);
    put32(&mut x, 8, e.start as u32);
    x
}

fn index_entry(logical: u32, block: u64) -> [u8; 12] {
    let mut x = [0u8; 12];
    put32(&mut x, 0, logical);
    put32(&mut x, 4, block as u32);
    put16(&mut x, 8, (block >> 32) as u16);
    x
}

/// A block of an extent tree and where it goes.
pub type TreeBlock = (u64, Vec<u8>);

/// An extent tree for `extents`: the 60 bytes for i_block and the tree blocks to write,
/// each at a block `alloc` hands out.
pub fn extent_tree(
    extents: &[Extent],
    inode_seed: u32,
    mut alloc: impl FnMut() -> Result<u64>,
) -> Result<([u8; 60], Vec<TreeBlock>)> {
    let mut i_block = [0u8; 60];
    let mut blocks = Vec::new();
    // Entries of the current level: (first logical block, 12 bytes).
    let mut level: Vec<(u32, [u8; 12])> =
        extents.iter().map(|e| (e.logical, leaf_entry(e))).collect();
    let mut depth: u16 = 0;
    while level.len() > 4 {
        if depth >= 4 {
            bail!("extent tree deeper than 5 levels");
        }
        let mut next = Vec::new();
        for chunk in level.chunks(PER_BLOCK) {
            let at = alloc()?;
            let mut blk = vec![0u8; BLOCK as usize];
            blk[..12].copy_from_slice(&header(chunk.len(), PER_BLOCK, depth));
            for (k, (_, e)) in chunk.iter().enumerate() {
                blk[12 + k * 12..24 + k * 12].copy_from_slice(e);
            }
            let tail = 12 + PER_BLOCK * 12;
            let c = crc32c_raw(inode_seed, &blk[..tail]);
            put32(&mut blk, tail, c);
            next.push((chunk[0].0, index_entry(chunk[0].0, at)));
            blocks.push((at, blk));
        }
        level = next;
        depth += 1;
    }
    i_block[..12].copy_from_slice(&header(level.len(), 4, depth));
    for (k, (_, e)) in level.iter().enumerate() {
        i_block[12 + k * 12..24 + k * 12].copy_from_slice(e);
    }
    Ok((i_block, blocks))
}

/// Tree blocks an extent list of this length needs (for sizing).
pub fn tree_blocks_for(n: usize) -> u64 {
    let mut total = 0u64;
    let mut level = n;
    while level > 4 {
        level = level.div_ceil(PER_BLOCK);
        total += level as u64;
    }
    total
}

/// i_block for a device: the old 16-bit encoding when it fits, else the new one.
pub fn device_block(major: u32, minor: u32) -> [u8; 60] {
    let mut b = [0u8; 60];
    if major < 256 && minor < 256 {
        put32(&mut b, 0, (major << 8) | minor);
    } else {
        put32(
            &mut b,
            4,
            (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12),
        );
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_lists_stay_in_the_inode() {
        let ex: Vec<Extent> = (0..4)
            .map(|i| Extent {
                logical: i * 10,
                len: 5,
                start: 1000 + i as u64 * 10,
            })
            .collect();
        let (ib, blocks) = extent_tree(&ex, 0, || unreachable!()).unwrap();
        assert!(blocks.is_empty());
        assert_eq!(u16::from_le_bytes([ib[2], ib[3]]), 4);
    }

    #[test]
    fn large_lists_get_index_blocks() {
        let ex: Vec<Extent> = (0..1000)
            .map(|i| Extent {
                logical: i * 2,
                len: 1,
                start: 5000 + i as u64 * 2,
            })
            .collect();
        let mut next = 100;
        let (ib, blocks) = extent_tree(&ex, 0, || {
            next += 1;
            Ok(next)
        })
        .unwrap();
        assert_eq!(blocks.len(), 3);
        assert_eq!(tree_blocks_for(1000), 3);
        assert_eq!(u16::from_le_bytes([ib[6], ib[7]]), 1, "depth");
        assert_eq!(u16::from_le_bytes([ib[2], ib[3]]), 3, "entries");
    }

    #[test]
    fn device_numbers() {
        assert_eq!(&device_block(5, 1)[..4], &0x0501u32.to_le_bytes());
        let b = device_block(259, 70000);
        assert_eq!(&b[..4], &[0; 4]);
    }
}
