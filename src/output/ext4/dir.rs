//! Directory blocks: linear for directories that fit in one block, hashed (htree) for
//! larger ones, every block with its metadata_csum checksum.

use anyhow::{bail, Result};

use super::csum::{crc32c_raw, dx_hash};
use super::{put16, put32, BLOCK};

const BS: usize = BLOCK as usize;
/// Bytes of a leaf block usable by entries: the last 12 hold the checksum tail.
const LEAF_SPACE: usize = BS - 12;
const ROOT_LIMIT: usize = (BS - 32) / 8 - 1;
const NODE_LIMIT: usize = (BS - 8) / 8 - 1;

/// Directory entry file type: regular file.
pub const FT_REG: u8 = 1;
/// Directory entry file type: directory.
pub const FT_DIR: u8 = 2;
/// Directory entry file type: character device.
pub const FT_CHR: u8 = 3;
/// Directory entry file type: block device.
pub const FT_BLK: u8 = 4;
/// Directory entry file type: FIFO.
pub const FT_FIFO: u8 = 5;
/// Directory entry file type: socket.
pub const FT_SOCK: u8 = 6;
/// Directory entry file type: symbolic link.
pub const FT_SYMLINK: u8 = 7;

/// One name in a directory, other than `.` and `..`.
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// The name, at most 255 bytes.
    pub name: Vec<u8>,
    /// Inode number it refers to.
    pub ino: u32,
    /// File type (`FT_*`).
    pub file_type: u8,
}

fn rec_len(name_len: usize) -> usize {
    (8 + name_len + 3) & !3
}

fn put_entry(block: &mut [u8], off: usize, ino: u32, rec: usize, name: &[u8], ft: u8) {
    put32(block, off, ino);
    put16(block, off + 4, rec as u16);
    block[off + 6] = name.len() as u8;
    block[off + 7] = ft;
    block[off + 8..off + 8 + name.len()].copy_from_slice(name);
}

fn seal_leaf(block: &mut [u8], inode_seed: u32) {
    // The fake entry that holds the checksum: inode 0, rec_len 12, file type 0xDE.
    put32(block, LEAF_SPACE, 0);
    put16(block, LEAF_SPACE + 4, 12);
    block[LEAF_SPACE + 6] = 0;
    block[LEAF_SPACE + 7] = 0xDE;
    let c = crc32c_raw(inode_seed, &block[..LEAF_SPACE]);
    put32(block, LEAF_SPACE + 8, c);
}

/// Packs entries into leaf blocks in order. Each block's last entry stretches to the tail.
fn pack_leaves(entries: &[(&[u8], u32, u8)], inode_seed: u32) -> (Vec<Vec<u8>>, Vec<usize>) {
    let mut blocks = Vec::new();
    let mut firsts = Vec::new();
    let mut block = vec![0u8; BS];
    let mut used = 0usize;
    let mut last_off = None::<usize>;
    for (i, (name, ino, ft)) in entries.iter().enumerate() {
        let need = rec_len(name.len());
        if used + need > LEAF_SPACE {
            if let Some(lo) = last_off {
                put16(&mut block, lo + 4, (LEAF_SPACE - lo) as u16);
            }
            seal_leaf(&mut block, inode_seed);
            blocks.push(std::mem::replace(&mut block, vec![0u8; BS]));
            used = 0;
        }
        if used == 0 {
            firsts.push(i);
        }
        put_entry(&mut block, used, *ino, need, name, *ft);
        last_off = Some(used);
        used += need;
    }
    match last_off {
        Some(lo) if used > 0 => put16(&mut block, lo + 4, (LEAF_SPACE - lo) as u16),
        _ => {
            // An empty block: one unused entry spanning it.
            put16(&mut block, 4, LEAF_SPACE as u16);
            firsts.push(entries.len());
        }
    }
    seal_leaf(&mut block, inode_seed);
    blocks.push(block);
    (blocks, firsts)
}

/// An empty directory block (for lost+found's spare blocks).
pub fn empty_block(inode_seed: u32) -> Vec<u8> {
    pack_leaves(&[], inode_seed).0.remove(0)
}

fn seal_dx(block: &mut [u8], count_offset: usize, limit: usize, count: usize, inode_seed: u32) {
    let tail = count_offset + limit * 8;
    put32(block, tail, 0);
    let c = crc32c_raw(inode_seed, &block[..count_offset + count * 8]);
    let c = crc32c_raw(c, &block[tail..tail + 4]);
    let c = crc32c_raw(c, &[0, 0, 0, 0]);
    put32(block, tail + 4, c);
}

/// The blocks of a directory, and whether it is hashed (the inode then gets INDEX_FL).
pub fn build(
    self_ino: u32,
    parent_ino: u32,
    children: &[DirEntry],
    hash_seed: &[u32; 4],
    inode_seed: u32,
) -> Result<(Vec<Vec<u8>>, bool)> {
    let dots: [(&[u8], u32, u8); 2] = [(b".", self_ino, FT_DIR), (b"..", parent_ino, FT_DIR)];
    let linear_size: usize = 24
        + children
            .iter()
            .map(|c| rec_len(c.name.len()))
            .sum::<usize>();
    if linear_size <= LEAF_SPACE {
        let mut all: Vec<(&[u8], u32, u8)> = dots.to_vec();
        all.extend(
            children
                .iter()
                .map(|c| (c.name.as_slice(), c.ino, c.file_type)),
        );
        return Ok((pack_leaves(&all, inode_seed).0, false));
    }

    let mut hashed: Vec<(u32, u32, &DirEntry)> = children
        .iter()
        .map(|c| {
            let (h, m) = dx_hash(&c.name, hash_seed);
            (h, m, c)
        })
        .collect();
    hashed.sort_by(|a, b| (a.0, a.1, &a.2.name).cmp(&(b.0, b.1, &b.2.name)));
    let list: Vec<(&[u8], u32, u8)> = hashed
        .iter()
        .map(|(_, _, c)| (c.name.as_slice(), c.ino, c.file_type))
        .collect();
    let (mut leaves, firsts) = pack_leaves(&list, inode_seed);
    // Each leaf is entered under the hash of its first name; when that hash continues
    // from the previous leaf, the low bit says so.
    let leaf_hash = |i: usize| -> u32 {
        let h = hashed[firsts[i]].0;
        if i > 0 && hashed[firsts[i] - 1].0 == h {
            h | 1
        } else {
            h
        }
    };
    let n_leaves = leaves.len();
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(n_leaves + 2);
    let mut root = vec![0u8; BS];
    put_entry(&mut root, 0, self_ino, 12, b".", FT_DIR);
    put_entry(&mut root, 12, parent_ino, BS - 12, b"..", FT_DIR);
    // dx_root_info: hash version 1 (half-MD4; "unsigned" comes from the superblock flags).
    root[24 + 4] = 1;
    root[24 + 5] = 8;
    let (levels, top): (u8, Vec<(u32, u32)>) = if n_leaves <= ROOT_LIMIT {
        (
            0,
            (0..n_leaves)
                .map(|i| (leaf_hash(i), 1 + i as u32))
                .collect(),
        )
    } else {
        let n_nodes = n_leaves.div_ceil(NODE_LIMIT);
        if n_nodes > ROOT_LIMIT {
            bail!(
                "a directory with {} entries is too large for a two-level htree",
                children.len()
            );
        }
        let mut top = Vec::new();
        let mut nodes = Vec::new();
        for n in 0..n_nodes {
            let first = n * NODE_LIMIT;
            let last = (first + NODE_LIMIT).min(n_leaves);
            let mut node = vec![0u8; BS];
            put32(&mut node, 0, 0);
            put16(&mut node, 4, BS as u16);
            put16(&mut node, 8, NODE_LIMIT as u16);
            put16(&mut node, 10, (last - first) as u16);
            put32(&mut node, 12, 1 + first as u32);
            for (k, i) in (first + 1..last).enumerate() {
                put32(&mut node, 16 + k * 8, leaf_hash(i));
                put32(&mut node, 20 + k * 8, 1 + i as u32);
            }
            seal_dx(&mut node, 8, NODE_LIMIT, last - first, inode_seed);
            nodes.push(node);
            top.push((leaf_hash(first), (1 + n_leaves + n) as u32));
        }
        out.push(Vec::new());
        out.append(&mut leaves);
        out.extend(nodes);
        (1, top)
    };
    root[24 + 6] = levels;
    put16(&mut root, 32, ROOT_LIMIT as u16);
    put16(&mut root, 34, top.len() as u16);
    put32(&mut root, 36, top[0].1);
    for (k, (h, b)) in top.iter().enumerate().skip(1) {
        put32(&mut root, 32 + k * 8, *h);
        put32(&mut root, 36 + k * 8, *b);
    }
    seal_dx(&mut root, 32, ROOT_LIMIT, top.len(), inode_seed);
    if levels == 0 {
        out.push(root);
        out.append(&mut leaves);
    } else {
        out[0] = root;
    }
    Ok((out, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_directories_are_one_linear_block() {
        let kids = vec![DirEntry {
            name: b"a".to_vec(),
            ino: 12,
            file_type: FT_REG,
        }];
        let (b, idx) = build(2, 2, &kids, &[1, 2, 3, 4], 7).unwrap();
        assert_eq!((b.len(), idx), (1, false));
        assert_eq!(&b[0][8..9], b".");
        assert_eq!(b[0][LEAF_SPACE + 7], 0xDE);
    }

    #[test]
    fn large_directories_are_hashed() {
        let kids: Vec<DirEntry> = (0..2000)
            .map(|i| DirEntry {
                name: format!("file-{i:05}").into_bytes(),
                ino: 12 + i,
                file_type: FT_REG,
            })
            .collect();
        let (b, idx) = build(2, 2, &kids, &[1, 2, 3, 4], 7).unwrap();
        assert!(idx);
        assert!(b.len() > 5);
        assert_eq!(b[0][24 + 5], 8);
        assert_eq!(
            u16::from_le_bytes([b[0][34], b[0][35]]) as usize,
            b.len() - 1
        );
    }
}
