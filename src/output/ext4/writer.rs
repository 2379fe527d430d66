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

use super::content::{prefetch, write_bytes, write_file, Buffers, Prefetched, PREFETCH_MAX};
use super::csum::{fs_seed, inode_seed};
use super::dir::{self, DirEntry};
use super::inode::{self, InodeSpec, EXTENTS_FL, INDEX_FL};
use super::io::{Io, QUEUE_LIMIT};
use super::layout::{self, Allocator, Geometry, BLOCKS_PER_GROUP};
use super::meta;
use super::{journal, xattr, BLOCK, FIRST_INO, INODE_SIZE, JOURNAL_INO, ROOT_INO};
use crate::output::manifest::ManifestEntry;
use crate::output::options::FreeSpace;
use crate::tree::{path, Data, Entry, Kind, Tree};

/// How large to make a file system.
#[derive(Debug, Clone, Copy)]
pub enum SizeSpec {
    /// Content + metadata + free space, at least `min_bytes`.
    Auto {
        /// Free space on top of content and metadata.
        free: FreeSpace,
        /// Lower bound on the size, in bytes.
        min_bytes: u64,
    },
    /// Exactly this many bytes, rounded down to whole blocks; at least 16 MiB.
    Fixed(u64),
}

/// Everything about a file system besides its contents.
#[derive(Debug, Clone)]
pub struct Ext4Options {
    /// How large to make it.
    pub size: SizeSpec,
    /// Volume UUID (s_uuid); it also seeds the metadata checksums.
    pub uuid: [u8; 16],
    /// Seed of the htree directory hash (s_hash_seed).
    pub hash_seed: [u8; 16],
    /// Volume label (s_volume_name); only the first 16 bytes are kept.
    pub label: String,
    /// Timestamp of the file system itself (mkfs time, journal, lost+found).
    pub time: i64,
    /// Use 64-byte group descriptors even when the size does not need them.
    pub force_64bit: bool,
}

/// What a written file system holds.
#[derive(Debug)]
pub struct Ext4Report {
    /// Size in bytes.
    pub bytes: u64,
    /// Blocks, including metadata.
    pub blocks: u64,
    /// Free blocks.
    pub free_blocks: u64,
    /// Inodes, used or not.
    pub inodes: u64,
    /// Inodes in use, including the reserved ones below `FIRST_INO`.
    pub inodes_used: u64,
    /// Every path of the tree, with the sha256 of each regular file.
    pub manifest: Vec<ManifestEntry>,
}

/// Writes an empty file system of fixed size at `offset` in `file` (a results disk, an
/// extra partition). The file must read as zeros there.
pub fn write_empty(file: &File, offset: u64, opts: &Ext4Options) -> Result<Ext4Report> {
    let empty = Tree::new(opts.time);
    let p = Prepared::new(&empty, opts)?;
    if file.metadata()?.len() < offset + p.bytes() {
        file.set_len(offset + p.bytes())?;
    }
    p.write(&Target { file, offset })
}

/// Where the file system is written: a file and the byte offset of block 0 in it.
pub struct Target<'a> {
    /// The file to write into.
    pub file: &'a File,
    /// Byte offset of block 0 in `file`.
    pub offset: u64,
}

impl Target<'_> {
    pub(super) fn write_block(&self, block: u64, data: &[u8]) -> Result<()> {
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
    pub(super) opts: Ext4Options,
    nodes: Vec<Node<'t>>,
    /// Stored path → inode number, for every path (hard links included).
    ino_of: HashMap<&'t str, u32>,
    dir_blocks: HashMap<u32, (Vec<Vec<u8>>, bool)>,
    /// Size and placement of the metadata, chosen to fit the tree.
    pub geometry: Geometry,
    journal_blocks: u64,
    pub(super) fs_seed: u32,
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
    /// Numbers the inodes, builds the directory blocks and sizes the file system; writes nothing.
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
            geometry,
            journal_blocks,
            fs_seed,
        })
    }

    /// Size of the file system in bytes.
    pub fn bytes(&self) -> u64 {
        self.geometry.blocks * BLOCK
    }

    /// Highest inode number in use (inode numbers are contiguous from 1).
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
        let pb = crate::util::progress::bytes(self.tree.content_bytes(), "writing ext4");
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

        let (total_free_blocks, _) = meta::write_groups(
            self,
            target,
            &meta::Summary {
                cursor: io.alloc.next,
                table: &table,
                max_ino,
                used_dirs: &used_dirs,
                journal_iblock: &j_iblock,
                journal_size: jsize,
            },
        )?;

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

/// Writes `tree` as an ext4 file system at `target`.
pub fn write(tree: &Tree, target: &Target, opts: &Ext4Options) -> Result<Ext4Report> {
    Prepared::new(tree, opts)?.write(target)
}
