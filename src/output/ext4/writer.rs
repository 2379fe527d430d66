//! The ext4 writer: mkfs from a tree, in one pass.
//!
//! Inodes are numbered in path order (root 2, lost+found 11, then the tree). Blocks are
//! handed out in the same order, so every file's data is contiguous and placed after
//! its directory. File contents stream from their sources through a fixed-size buffer;
//! all-zero blocks stay holes. Only directories and the used part of the inode table
//! are held in memory. The target must read as zeros where nothing is written (a new
//! sparse file), which is why unused inode tables and journal blocks are never written.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::csum::{crc32c_raw, fs_seed, inode_seed};
use super::dir::{self, DirEntry};
use super::inode::{self, Extent, InodeSpec, EXTENTS_FL, INDEX_FL, MAX_EXTENT_LEN};
use super::layout::{self, Allocator, Geometry, BLOCKS_PER_GROUP};
use super::{journal, put16, put32, xattr, BLOCK, FIRST_INO, INODE_SIZE, JOURNAL_INO, ROOT_INO};
use crate::output::manifest::ManifestEntry;
use crate::profile::validate::FreeSpace;
use crate::tree::{path, Data, Entry, Kind, Tree};

#[derive(Debug, Clone, Copy)]
pub enum SizeSpec {
    /// Content + metadata + free space, at least `min_bytes`.
    Auto {
        free: FreeSpace,
        min_bytes: u64,
    },
    Fixed(u64),
}

#[derive(Debug, Clone)]
pub struct Ext4Options {
    pub size: SizeSpec,
    pub uuid: [u8; 16],
    pub hash_seed: [u8; 16],
    pub label: String,
    /// Timestamp of the file system itself (mkfs time, journal, lost+found).
    pub time: i64,
    /// Use 64-byte group descriptors even when the size does not need them.
    pub force_64bit: bool,
}

#[derive(Debug)]
pub struct Ext4Report {
    pub bytes: u64,
    pub blocks: u64,
    pub free_blocks: u64,
    pub inodes: u64,
    pub inodes_used: u64,
    pub manifest: Vec<ManifestEntry>,
}

/// Where the file system is written: a file and the byte offset of block 0 in it.
pub struct Target<'a> {
    pub file: &'a File,
    pub offset: u64,
}

impl Target<'_> {
    fn write_block(&self, block: u64, data: &[u8]) -> Result<()> {
        self.file
            .write_all_at(data, self.offset + block * BLOCK)
            .with_context(|| format!("writing block {block}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    Dir,
    File,
    FastLink,
    SlowLink,
    Dev,
    Special,
}

/// One inode to write.
struct Node<'t> {
    ino: u32,
    /// Stored path ("" for the root).
    path: &'t str,
    /// The tree entry, or None for a lost+found kiln adds.
    entry: Option<&'t Entry>,
    what: What,
    links: u32,
}

/// A tree, ready to be written: inode numbers, directory blocks, and the size it needs.
pub struct Prepared<'t> {
    tree: &'t Tree,
    opts: Ext4Options,
    nodes: Vec<Node<'t>>,
    /// Stored path → inode number, for every path (hard links included).
    ino_of: HashMap<&'t str, u32>,
    dir_blocks: HashMap<u32, (Vec<Vec<u8>>, bool)>,
    /// Upper bound of blocks the contents need (data, directories, trees, xattr blocks).
    content_blocks: u64,
    pub geometry: Geometry,
    journal_blocks: u64,
    fs_seed: u32,
    hash_seed: [u32; 4],
}

fn file_type(k: &Kind) -> u8 {
    match k {
        Kind::Dir => dir::FT_DIR,
        Kind::File(_) | Kind::HardLink(_) => dir::FT_REG,
        Kind::Symlink(_) => dir::FT_SYMLINK,
        Kind::CharDev { .. } => dir::FT_CHR,
        Kind::BlockDev { .. } => dir::FT_BLK,
        Kind::Fifo => dir::FT_FIFO,
        Kind::Socket => dir::FT_SOCK,
    }
}

fn data_blocks_upper_bound(d: &Data) -> Result<u64> {
    let ranges = d
        .data_ranges()
        .with_context(|| format!("reading {}", d.describe()))?;
    Ok(ranges
        .iter()
        .map(|&(off, len)| (off + len).div_ceil(BLOCK) - off / BLOCK)
        .sum())
}

impl<'t> Prepared<'t> {
    pub fn new(tree: &'t Tree, opts: &Ext4Options) -> Result<Prepared<'t>> {
        tree.check_links()?;
        let fs_seed = fs_seed(&opts.uuid);
        let hs = &opts.hash_seed;
        let hash_seed =
            [0, 4, 8, 12].map(|i| u32::from_le_bytes([hs[i], hs[i + 1], hs[i + 2], hs[i + 3]]));
        let mut nodes: Vec<Node> = Vec::with_capacity(tree.len() + 1);
        let mut ino_of: HashMap<&str, u32> = HashMap::with_capacity(tree.len());
        let root = tree.get("").context("the tree has no root")?;
        nodes.push(Node {
            ino: ROOT_INO,
            path: "",
            entry: Some(root),
            what: What::Dir,
            links: 2,
        });
        ino_of.insert("", ROOT_INO);
        let lpf = match tree.get("lost+found") {
            Some(e) if e.is_dir() => Some(e),
            Some(_) => bail!("/lost+found must be a directory"),
            None => None,
        };
        nodes.push(Node {
            ino: FIRST_INO,
            path: "lost+found",
            entry: lpf,
            what: What::Dir,
            links: 2,
        });
        ino_of.insert("lost+found", FIRST_INO);
        let mut next = FIRST_INO + 1;
        for (p, e) in tree.iter() {
            if p.is_empty() || p == "lost+found" {
                continue;
            }
            let what = match &e.kind {
                Kind::HardLink(_) => continue,
                Kind::Dir => What::Dir,
                Kind::File(_) => What::File,
                Kind::Symlink(t) if t.len() < 60 => What::FastLink,
                Kind::Symlink(t) if t.len() < BLOCK as usize => What::SlowLink,
                Kind::Symlink(_) => bail!("/{p}: a symlink target must be shorter than 4096 bytes"),
                Kind::CharDev { .. } | Kind::BlockDev { .. } => What::Dev,
                Kind::Fifo | Kind::Socket => What::Special,
            };
            ino_of.insert(p.as_str(), next);
            nodes.push(Node {
                ino: next,
                path: p.as_str(),
                entry: Some(e),
                what,
                links: if what == What::Dir { 2 } else { 1 },
            });
            next = next.checked_add(1).context("more than 4 billion inodes")?;
        }
        // Hard links share their target's inode.
        for (p, e) in tree.iter() {
            if let Kind::HardLink(t) = &e.kind {
                let ino = *ino_of
                    .get(t.as_str())
                    .context("hard link to a missing file")?;
                ino_of.insert(p.as_str(), ino);
            }
        }
        // Directory contents, and link counts.
        let index_of = |ino: u32| -> usize {
            match ino {
                ROOT_INO => 0,
                FIRST_INO => 1,
                n => (n - FIRST_INO + 1) as usize,
            }
        };
        let mut children: HashMap<u32, Vec<DirEntry>> = HashMap::new();
        children.insert(
            ROOT_INO,
            vec![DirEntry {
                name: b"lost+found".to_vec(),
                ino: FIRST_INO,
                file_type: dir::FT_DIR,
            }],
        );
        nodes[0].links += 1;
        for (p, e) in tree.iter() {
            if p.is_empty() || p == "lost+found" {
                continue;
            }
            let parent = path::parent(p).unwrap_or("");
            let pino = *ino_of
                .get(parent)
                .with_context(|| format!("/{p} has no parent directory in the tree"))?;
            let ino = ino_of[p.as_str()];
            children.entry(pino).or_default().push(DirEntry {
                name: path::file_name(p).as_bytes().to_vec(),
                ino,
                file_type: file_type(&e.kind),
            });
            match &e.kind {
                Kind::Dir => nodes[index_of(pino)].links += 1,
                Kind::HardLink(_) => nodes[index_of(ino)].links += 1,
                _ => {}
            }
        }
        // The root's lost+found entry must sort with the rest.
        if let Some(kids) = children.get_mut(&ROOT_INO) {
            kids.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let mut dir_blocks = HashMap::new();
        let mut content: u64 = 0;
        for n in &nodes {
            let seed = inode_seed(fs_seed, n.ino, 0);
            match n.what {
                What::Dir => {
                    let kids = children.remove(&n.ino).unwrap_or_default();
                    let parent_ino = match path::parent(n.path) {
                        None => ROOT_INO,
                        Some(pp) => ino_of.get(pp).copied().unwrap_or(ROOT_INO),
                    };
                    let (mut blocks, indexed) =
                        dir::build(n.ino, parent_ino, &kids, &hash_seed, seed)?;
                    if n.ino == FIRST_INO && !indexed {
                        // mke2fs gives lost+found 16 KiB so e2fsck can reconnect files without allocating.
                        while blocks.len() < 4 {
                            blocks.push(dir::empty_block(seed));
                        }
                    }
                    content += blocks.len() as u64 + inode::tree_blocks_for(blocks.len());
                    dir_blocks.insert(n.ino, (blocks, indexed));
                }
                What::File => {
                    if let Some(Entry {
                        kind: Kind::File(d),
                        ..
                    }) = n.entry
                    {
                        let b = data_blocks_upper_bound(d)?;
                        content += b + inode::tree_blocks_for(b as usize);
                    }
                }
                What::SlowLink => content += 1,
                _ => {}
            }
            if let Some(e) = n.entry {
                if !e.meta.xattrs.is_empty() && xattr::inline_area(&e.meta.xattrs)?.is_none() {
                    content += 1;
                }
            }
        }
        let inodes_used = (FIRST_INO as u64) + (nodes.len() as u64 - 2);
        let (geometry, journal_blocks) = size(&opts.size, content, inodes_used, opts.force_64bit)?;
        Ok(Prepared {
            tree,
            opts: opts.clone(),
            nodes,
            ino_of,
            dir_blocks,
            content_blocks: content,
            geometry,
            journal_blocks,
            fs_seed,
            hash_seed,
        })
    }

    pub fn bytes(&self) -> u64 {
        self.geometry.blocks * BLOCK
    }

    pub fn inodes_used(&self) -> u64 {
        self.nodes
            .last()
            .map(|n| n.ino as u64)
            .unwrap_or(FIRST_INO as u64)
    }
}

/// Chooses the geometry: fixed, or large enough for the content plus free space.
fn size(
    spec: &SizeSpec,
    content: u64,
    inodes_used: u64,
    force_64bit: bool,
) -> Result<(Geometry, u64)> {
    let inode_margin =
        |blocks: u64| (inodes_used + inodes_used / 5 + 256).max(blocks * BLOCK / 16384);
    match *spec {
        SizeSpec::Fixed(bytes) => {
            let blocks = bytes / BLOCK;
            if blocks < 4096 {
                bail!("a {bytes}-byte file system is too small; ext4 images need at least 16 MiB");
            }
            let journal = layout::journal_blocks(blocks);
            let inodes = (blocks * BLOCK / 16384).max(inodes_used + 64);
            let geo = Geometry::new(blocks, inodes, force_64bit)?;
            let need = content + journal + geo.metadata_blocks();
            if need > blocks || (geo.inodes() < inodes_used) {
                bail!(
                    "the tree needs about {} MiB ({} inodes) but the file system is {} MiB; raise the size or use \"auto\"",
                    (need * BLOCK) >> 20,
                    inodes_used,
                    bytes >> 20
                );
            }
            Ok((geo, journal))
        }
        SizeSpec::Auto { free, min_bytes } => {
            let free_blocks = match free {
                FreeSpace::Percent(p) => content * p as u64 / 100,
                FreeSpace::Bytes(b) => b.div_ceil(BLOCK),
            };
            let mut blocks = (content + free_blocks)
                .max(min_bytes.div_ceil(BLOCK))
                .max(4096);
            for _ in 0..8 {
                let journal = layout::journal_blocks(blocks);
                let geo = Geometry::new(blocks, inode_margin(blocks), force_64bit)?;
                let need = (content + free_blocks + journal + geo.metadata_blocks())
                    .max(min_bytes.div_ceil(BLOCK));
                // Whole MiB, and a last group big enough to be worth having.
                let mut want = need.div_ceil(256) * 256;
                let tail = want % BLOCKS_PER_GROUP;
                if tail != 0 && tail < 1024 {
                    want += 1024 - tail;
                }
                if want <= blocks {
                    return Ok((geo, journal));
                }
                blocks = want;
            }
            bail!("could not find a size for the file system")
        }
    }
}

struct Written {
    i_block: [u8; 60],
    blocks: u64,
    flags: u32,
}

fn runs_to_extents(runs: &[(u64, u64, u64)]) -> Vec<Extent> {
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

struct Io<'a> {
    target: &'a Target<'a>,
    alloc: Allocator<'a>,
    /// Data waiting to be written at block `queued_at`: consecutive small files are
    /// allocated consecutively, so they go out in one write.
    queued: Vec<u8>,
    queued_at: u64,
}

const QUEUE_LIMIT: usize = 8 << 20;

impl Io<'_> {
    fn write(&mut self, block: u64, data: &[u8]) -> Result<()> {
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

    fn flush(&mut self) -> Result<()> {
        if !self.queued.is_empty() {
            self.target.write_block(self.queued_at, &self.queued)?;
            self.queued.clear();
        }
        Ok(())
    }

    fn alloc(&mut self, want: u64) -> Result<(u64, u64)> {
        self.alloc
            .run(want)
            .context("the file system is full; raise its size (or the free space margin)")
    }

    /// Allocates and writes `blocks` consecutive logical blocks starting at `logical`.
    fn put_blocks(
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

    fn finish_extents(&mut self, runs: &[(u64, u64, u64)], seed: u32) -> Result<([u8; 60], u64)> {
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

const CHUNK: usize = 1 << 20;

/// Block-aligned, merged data ranges of a file of `size` bytes.
fn aligned_ranges(ranges: &[(u64, u64)], size: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(off, len) in ranges {
        let a = off / BLOCK * BLOCK;
        let b = ((off + len).div_ceil(BLOCK) * BLOCK).min(size.div_ceil(BLOCK) * BLOCK);
        if b <= a {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.1 >= a => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

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

/// Streams a file's bytes into the file system; all-zero blocks become holes. Returns
/// the inode's block map and the content's sha256.
/// Whether a block is all zeros, sixteen bytes at a time.
fn is_zero(block: &[u8]) -> bool {
    let mut chunks = block.chunks_exact(16);
    chunks
        .by_ref()
        .all(|c| u128::from_ne_bytes(c.try_into().unwrap_or([1; 16])) == 0)
        && chunks.remainder().iter().all(|&b| b == 0)
}

/// Files at most this large are read whole, ahead of time, by worker threads.
const PREFETCH_MAX: u64 = 1 << 20;

struct Prefetched {
    bytes: Vec<u8>,
    sha256: String,
}

fn prefetch(d: &Data) -> Result<Prefetched> {
    let r = d
        .open()
        .with_context(|| format!("reading {}", d.describe()))?;
    let mut bytes = vec![0u8; d.len() as usize];
    r.read_exact_at(&mut bytes, 0)
        .with_context(|| format!("reading {}", d.describe()))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(Prefetched { bytes, sha256 })
}

/// Writes a file held in memory; all-zero blocks stay holes. Runs of data blocks go
/// out straight from `data`, without an intermediate copy.
fn write_bytes(io: &mut Io, data: &[u8], seed: u32, bufs: &mut Buffers) -> Result<Written> {
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
struct Buffers {
    read: Vec<u8>,
    zeros: Vec<u8>,
    pending: Vec<u8>,
}

impl Buffers {
    fn new() -> Buffers {
        Buffers {
            read: vec![0u8; CHUNK],
            zeros: vec![0u8; CHUNK],
            pending: Vec::with_capacity(CHUNK + BLOCK as usize),
        }
    }
}

fn write_file(io: &mut Io, d: &Data, seed: u32, bufs: &mut Buffers) -> Result<(Written, String)> {
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
    let mut hasher = Sha256::new();
    let zeros = &bufs.zeros;
    let hash_zeros = |hasher: &mut Sha256, mut n: u64| {
        while n > 0 {
            let k = n.min(CHUNK as u64) as usize;
            hasher.update(&zeros[..k]);
            n -= k as u64;
        }
    };
    let buf = &mut bufs.read;
    let mut runs = Vec::new();
    bufs.pending.clear();
    let mut pending = Pending {
        data: std::mem::take(&mut bufs.pending),
        logical: 0,
        written: 0,
    };
    let mut pos = 0u64;
    for (a, b) in ranges {
        hash_zeros(&mut hasher, a - pos);
        let mut at = a;
        while at < b {
            let span = (b - at).min(CHUNK as u64) as usize;
            let real = (size.min(at + span as u64) - at) as usize;
            let chunk = &mut buf[..span];
            chunk[real..].fill(0);
            reader
                .read_exact_at(&mut chunk[..real], at)
                .with_context(|| format!("reading {}", d.describe()))?;
            hasher.update(&chunk[..real]);
            for (k, block) in chunk.chunks(BLOCK as usize).enumerate() {
                if !is_zero(block) {
                    pending.push(io, &mut runs, at / BLOCK + k as u64, block)?;
                } else {
                    pending.flush(io, &mut runs)?;
                }
            }
            at += span as u64;
        }
        pos = b.min(size);
    }
    pending.flush(io, &mut runs)?;
    hash_zeros(&mut hasher, size - pos);
    bufs.pending = std::mem::take(&mut pending.data);
    let (i_block, tree_blocks) = io.finish_extents(&runs, seed)?;
    Ok((
        Written {
            i_block,
            blocks: pending.written + tree_blocks,
            flags: EXTENTS_FL,
        },
        hex::encode(hasher.finalize()),
    ))
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

impl Prepared<'_> {
    /// Writes the file system; returns what it holds.
    pub fn write(&self, target: &Target) -> Result<Ext4Report> {
        let g = &self.geometry;
        let o = &self.opts;
        let time = o.time;
        let mut io = Io {
            target,
            alloc: Allocator::new(g),
            queued: Vec::with_capacity(QUEUE_LIMIT),
            queued_at: 0,
        };
        let max_ino = self.inodes_used() as u32;
        if max_ino as u64 > g.inodes() {
            bail!(
                "{} inodes needed, the file system has {}",
                max_ino,
                g.inodes()
            );
        }
        let mut table = vec![0u8; max_ino as usize * INODE_SIZE];
        let mut put_inode = |ino: u32, bytes: &[u8; INODE_SIZE]| {
            let off = (ino as usize - 1) * INODE_SIZE;
            table[off..off + INODE_SIZE].copy_from_slice(bytes);
        };

        // The journal first, right after group 0's metadata.
        let jseed = inode_seed(self.fs_seed, JOURNAL_INO, 0);
        let mut jruns = Vec::new();
        let mut jdone = 0u64;
        while jdone < self.journal_blocks {
            let (s, n) = io.alloc(self.journal_blocks - jdone)?;
            jruns.push((jdone, s, n));
            jdone += n;
        }
        target.write_block(
            jruns[0].1,
            &journal::superblock(self.journal_blocks as u32, &o.uuid),
        )?;
        let (j_iblock, j_tree) = io.finish_extents(&jruns, jseed)?;
        let jsize = self.journal_blocks * BLOCK;
        put_inode(
            JOURNAL_INO,
            &inode::encode(
                &InodeSpec {
                    mode: 0o100600,
                    size: jsize,
                    links: 1,
                    time,
                    flags: EXTENTS_FL,
                    i_block: j_iblock,
                    blocks: self.journal_blocks + j_tree,
                    ..Default::default()
                },
                jseed,
            ),
        );

        let mut used_dirs = vec![0u32; g.groups as usize];
        let mut hashes: HashMap<u32, String> = HashMap::new();
        let mut bufs = Buffers::new();
        let pb = crate::progress::bytes(self.tree.content_bytes(), "writing ext4");
        // Small files are read and hashed ahead by worker threads, in inode order, while
        // this thread allocates and writes; large ones stream through here.
        let small: Vec<&Data> = self
            .nodes
            .iter()
            .filter_map(|n| match (n.what, n.entry) {
                (
                    What::File,
                    Some(Entry {
                        kind: Kind::File(d),
                        ..
                    }),
                ) if d.len() <= PREFETCH_MAX => Some(d),
                _ => None,
            })
            .collect();
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        std::thread::scope(|scope| -> Result<()> {
            let mut rxs = Vec::with_capacity(workers);
            for w in 0..workers {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Prefetched>>(8);
                rxs.push(rx);
                let small = &small;
                scope.spawn(move || {
                    let mut i = w;
                    while i < small.len() {
                        if tx.send(prefetch(small[i])).is_err() {
                            return;
                        }
                        i += workers;
                    }
                });
            }
            let mut k = 0usize;
            for n in &self.nodes {
                let seed = inode_seed(self.fs_seed, n.ino, 0);
                let (mode_bits, uid, gid, mtime) = match n.entry {
                    Some(e) => (e.meta.mode, e.meta.uid, e.meta.gid, e.meta.mtime),
                    None => (0o700, 0, 0, time),
                };
                let kind_bits = match n.entry {
                    Some(e) => e.kind.file_type_bits(),
                    None => 0o040000,
                };
                let mut spec = InodeSpec {
                    mode: (kind_bits | (mode_bits & 0o7777)) as u16,
                    uid,
                    gid,
                    links: if n.what == What::Dir && n.links >= 65000 {
                        1
                    } else {
                        n.links.min(65000) as u16
                    },
                    time: mtime,
                    ..Default::default()
                };
                match n.what {
                    What::Dir => {
                        let (blocks, indexed) = &self.dir_blocks[&n.ino];
                        let mut runs = Vec::new();
                        let joined: Vec<u8> = blocks.concat();
                        io.put_blocks(0, &joined, &mut runs)?;
                        let (ib, tb) = io.finish_extents(&runs, seed)?;
                        spec.i_block = ib;
                        spec.blocks = blocks.len() as u64 + tb;
                        spec.size = blocks.len() as u64 * BLOCK;
                        spec.flags = EXTENTS_FL | if *indexed { INDEX_FL } else { 0 };
                        used_dirs[((n.ino - 1) / g.inodes_per_group) as usize] += 1;
                    }
                    What::File => {
                        let Some(Entry {
                            kind: Kind::File(d),
                            ..
                        }) = n.entry
                        else {
                            unreachable!("a file node holds a file")
                        };
                        let (w, sha) = if d.len() <= PREFETCH_MAX {
                            let p = rxs[k % workers]
                                .recv()
                                .map_err(|_| anyhow::anyhow!("a reader thread stopped"))??;
                            k += 1;
                            (write_bytes(&mut io, &p.bytes, seed, &mut bufs)?, p.sha256)
                        } else {
                            write_file(&mut io, d, seed, &mut bufs)?
                        };
                        pb.inc(d.len());
                        spec.i_block = w.i_block;
                        spec.blocks = w.blocks;
                        spec.flags = w.flags;
                        spec.size = d.len();
                        hashes.insert(n.ino, sha);
                    }
                    What::FastLink | What::SlowLink => {
                        let Some(Entry {
                            kind: Kind::Symlink(t),
                            ..
                        }) = n.entry
                        else {
                            continue;
                        };
                        spec.size = t.len() as u64;
                        if n.what == What::FastLink {
                            spec.i_block[..t.len()].copy_from_slice(t.as_bytes());
                        } else {
                            let mut b = vec![0u8; BLOCK as usize];
                            b[..t.len()].copy_from_slice(t.as_bytes());
                            let mut runs = Vec::new();
                            io.put_blocks(0, &b, &mut runs)?;
                            let (ib, tb) = io.finish_extents(&runs, seed)?;
                            spec.i_block = ib;
                            spec.blocks = 1 + tb;
                            spec.flags = EXTENTS_FL;
                        }
                    }
                    What::Dev => {
                        if let Some(Entry {
                            kind: Kind::CharDev { major, minor } | Kind::BlockDev { major, minor },
                            ..
                        }) = n.entry
                        {
                            spec.i_block = inode::device_block(*major, *minor);
                        }
                    }
                    What::Special => {}
                }
                if let Some(e) = n.entry {
                    if !e.meta.xattrs.is_empty() {
                        match xattr::inline_area(&e.meta.xattrs)? {
                            Some(area) => spec.inline_xattrs = Some(area),
                            None => {
                                let (at, _) = io.alloc(1)?;
                                io.write(at, &xattr::block(&e.meta.xattrs, at, self.fs_seed)?)?;
                                spec.file_acl = at;
                                spec.blocks += 1;
                            }
                        }
                    }
                }
                put_inode(n.ino, &inode::encode(&spec, seed));
            }
            Ok(())
        })?;
        io.flush()?;
        pb.finish_and_clear();

        // Every block below the allocator's cursor is in use, and so is all metadata.
        let cursor = io.alloc.next;
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
            let bb_csum = crc32c_raw(self.fs_seed, &bb[..(BLOCKS_PER_GROUP / 8) as usize]);
            let ib_csum = crc32c_raw(self.fs_seed, &ib[..(ipg / 8) as usize]);
            let d = &mut gdt[grp as usize * g.desc_size..(grp as usize + 1) * g.desc_size];
            put32(d, 0x00, m.block_bitmap as u32);
            put32(d, 0x04, m.inode_bitmap as u32);
            put32(d, 0x08, m.inode_table as u32);
            put16(d, 0x0C, free_blocks as u16);
            put16(d, 0x0E, free_inodes as u16);
            put16(d, 0x10, used_dirs[grp as usize] as u16);
            put16(d, 0x12, 0x4);
            put16(d, 0x18, bb_csum as u16);
            put16(d, 0x1A, ib_csum as u16);
            put16(d, 0x1C, (ipg - used_inodes) as u16);
            if g.is_64bit {
                put32(d, 0x20, (m.block_bitmap >> 32) as u32);
                put32(d, 0x24, (m.inode_bitmap >> 32) as u32);
                put32(d, 0x28, (m.inode_table >> 32) as u32);
                put16(d, 0x2C, (free_blocks >> 16) as u16);
                put16(d, 0x2E, (free_inodes >> 16) as u16);
                put16(d, 0x30, (used_dirs[grp as usize] >> 16) as u16);
                put16(d, 0x32, ((ipg - used_inodes) >> 16) as u16);
                put16(d, 0x38, (bb_csum >> 16) as u16);
                put16(d, 0x3A, (ib_csum >> 16) as u16);
            }
            let c = crc32c_raw(self.fs_seed, &(grp as u32).to_le_bytes());
            let c = crc32c_raw(c, &d[..0x1E]);
            let c = crc32c_raw(c, &[0, 0]);
            let c = if g.desc_size > 0x20 {
                crc32c_raw(c, &d[0x20..])
            } else {
                c
            };
            put16(d, 0x1E, c as u16);
        }
        for grp in 0..g.groups {
            if !layout::has_super(grp) {
                continue;
            }
            let sb = superblock(
                self,
                total_free_blocks,
                total_free_inodes,
                &j_iblock,
                jsize,
                grp,
            );
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
            target.write_block(at + 1, &gdt)?;
        }

        let mut manifest = Vec::with_capacity(self.tree.len());
        for (p, e) in self.tree.iter() {
            let ino = self.ino_of.get(p.as_str()).copied().unwrap_or(0);
            let sha = match &e.kind {
                Kind::File(_) | Kind::HardLink(_) => hashes.get(&ino).cloned(),
                _ => None,
            };
            let m = ManifestEntry::in_tree(self.tree, p, e, sha);
            manifest.push(m);
        }
        let _ = self.content_blocks;
        let _ = self.hash_seed;
        Ok(Ext4Report {
            bytes: g.blocks * BLOCK,
            blocks: g.blocks,
            free_blocks: total_free_blocks,
            inodes: g.inodes(),
            inodes_used: max_ino as u64,
            manifest,
        })
    }
}

/// The size an image of `tree` would have.
pub fn plan_size(tree: &Tree, opts: &Ext4Options) -> Result<u64> {
    Ok(Prepared::new(tree, opts)?.bytes())
}

/// Writes `tree` as an ext4 file system at `target`.
pub fn write(tree: &Tree, target: &Target, opts: &Ext4Options) -> Result<Ext4Report> {
    Prepared::new(tree, opts)?.write(target)
}
