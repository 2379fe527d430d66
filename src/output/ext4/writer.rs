//! The ext4 writer: mkfs from a tree, in one pass.
//!
//! Inodes are numbered in path order (root 2, lost+found 11, then the tree). Blocks are
//! handed out in the same order, so every file's data is contiguous and placed after
//! its directory. File contents stream from their sources through a fixed-size buffer;
//! all-zero blocks stay holes. Only directories and the used part of the inode table
//! are held in memory. The target must read as zeros where nothing is written (a new
//! sparse file), which is why unused inode tables and journal blocks are never written.

use foldhash::{HashMap, HashMapExt};
use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{bail, Context, Result};

use super::content::{prefetch, write_bytes, write_file, Buffers, Prefetched, PREFETCH_MAX};
use super::csum::inode_seed;
use super::inode::{self, InodeSpec, EXTENTS_FL, INDEX_FL};
use super::io::{Io, QUEUE_LIMIT};
use super::layout::{Allocator, Geometry};
use super::meta;
use super::prepare::{DirBlocks, Node, What};
use super::{journal, xattr, BLOCK, INODE_SIZE, JOURNAL_INO};
use crate::output::manifest::ManifestEntry;
use crate::output::options::FreeSpace;
use crate::tree::digest::FileDigest;
use crate::tree::{Data, Entry, Kind, Tree};

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

/// A reader thread sends the small files it read once it holds this many bytes of them,
/// or this many files: few wake-ups, and some tens of MiB in flight at most.
const BATCH_BYTES: usize = 256 << 10;
const BATCH_FILES: usize = 64;

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
    p.write(&Target {
        file,
        offset,
        watch: None,
    })
}

/// Where the file system is written: a file and the byte offset of block 0 in it.
pub struct Target<'a> {
    /// The file to write into.
    pub file: &'a File,
    /// Byte offset of block 0 in `file`.
    pub offset: u64,
    /// Told of every write, for the image's digest hashed beside the writing.
    pub watch: Option<&'a crate::output::image_digest::WriteWatch>,
}

impl Target<'_> {
    pub(super) fn write_block(&self, block: u64, data: &[u8]) -> Result<()> {
        let at = self.offset + block * BLOCK;
        self.file
            .write_all_at(data, at)
            .with_context(|| format!("writing block {block}"))?;
        if let Some(w) = self.watch {
            w.wrote(at, data.len() as u64);
        }
        Ok(())
    }
}

/// A tree, ready to be written: inode numbers, directory blocks, and the size it needs.
pub struct Prepared<'t> {
    pub(super) tree: &'t Tree,
    pub(super) opts: Ext4Options,
    pub(super) nodes: Vec<Node<'t>>,
    /// Stored path → inode number, for every path (hard links included).
    pub(super) ino_of: HashMap<&'t str, u32>,
    pub(super) dir_blocks: DirBlocks,
    /// Size and placement of the metadata, chosen to fit the tree.
    pub geometry: Geometry,
    pub(super) journal_blocks: u64,
    pub(super) fs_seed: u32,
}

/// The used part of the inode table, filled in inode order and written by the group
/// metadata writer.
struct InodeTable(Vec<u8>);

impl InodeTable {
    fn put(&mut self, ino: u32, bytes: &[u8; INODE_SIZE]) {
        let off = (ino as usize - 1) * INODE_SIZE;
        self.0[off..off + INODE_SIZE].copy_from_slice(bytes);
    }
}

impl Prepared<'_> {
    /// Writes the file system; returns what it holds.
    pub fn write(&self, target: &Target) -> Result<Ext4Report> {
        let g = &self.geometry;
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
        let mut table = InodeTable(vec![0u8; max_ino as usize * INODE_SIZE]);
        // The journal first, right after group 0's metadata.
        let (journal_iblock, journal_size) = self.write_journal(&mut io, &mut table)?;
        let mut used_dirs = vec![0u32; g.groups as usize];
        let hashes = self.write_inodes(&mut io, &mut table, &mut used_dirs)?;
        let (total_free_blocks, _) = meta::write_groups(
            self,
            target,
            &meta::Summary {
                cursor: io.alloc.next,
                table: &table.0,
                max_ino,
                used_dirs: &used_dirs,
                journal_iblock: &journal_iblock,
                journal_size,
            },
        )?;
        Ok(Ext4Report {
            bytes: g.blocks * BLOCK,
            blocks: g.blocks,
            free_blocks: total_free_blocks,
            inodes: g.inodes(),
            inodes_used: max_ino as u64,
            manifest: self.manifest(&hashes),
        })
    }

    /// The journal's blocks and inode; returns its i_block and size in bytes.
    fn write_journal(&self, io: &mut Io, table: &mut InodeTable) -> Result<([u8; 60], u64)> {
        let jseed = inode_seed(self.fs_seed, JOURNAL_INO, 0);
        let mut jruns = Vec::new();
        let mut jdone = 0u64;
        while jdone < self.journal_blocks {
            let (s, n) = io.alloc(self.journal_blocks - jdone)?;
            jruns.push((jdone, s, n));
            jdone += n;
        }
        io.target.write_block(
            jruns[0].1,
            &journal::superblock(self.journal_blocks as u32, &self.opts.uuid),
        )?;
        let (j_iblock, j_tree) = io.finish_extents(&jruns, jseed)?;
        let jsize = self.journal_blocks * BLOCK;
        table.put(
            JOURNAL_INO,
            &inode::encode(
                &InodeSpec {
                    mode: 0o100600,
                    size: jsize,
                    links: 1,
                    time: self.opts.time,
                    flags: EXTENTS_FL,
                    i_block: j_iblock,
                    blocks: self.journal_blocks + j_tree,
                    ..Default::default()
                },
                jseed,
            ),
        );
        Ok((j_iblock, jsize))
    }

    /// Every node's data and inode, in inode order. Small files are read and hashed
    /// ahead by worker threads while this thread allocates and writes; large ones stream
    /// through here. Returns the sha256 of each regular file by inode.
    fn write_inodes(
        &self,
        io: &mut Io,
        table: &mut InodeTable,
        used_dirs: &mut [u32],
    ) -> Result<HashMap<u32, FileDigest>> {
        let mut hashes: HashMap<u32, FileDigest> = HashMap::new();
        let mut bufs = Buffers::new();
        let pb = crate::util::progress::bytes(self.tree.content_bytes(), "writing ext4");
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
            // Files go out in batches: one wake-up per batch instead of one per file.
            let mut rxs = Vec::with_capacity(workers);
            for w in 0..workers {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Result<Prefetched>>>(4);
                rxs.push((rx, std::collections::VecDeque::new()));
                let small = &small;
                scope.spawn(move || {
                    let mut batch = Vec::new();
                    let mut bytes = 0;
                    let mut i = w;
                    while i < small.len() {
                        let p = prefetch(small[i]);
                        bytes += p.as_ref().map_or(0, |p| p.bytes.len());
                        batch.push(p);
                        i += workers;
                        if bytes >= BATCH_BYTES || batch.len() >= BATCH_FILES || i >= small.len() {
                            if tx.send(std::mem::take(&mut batch)).is_err() {
                                return;
                            }
                            bytes = 0;
                        }
                    }
                });
            }
            let mut k = 0usize;
            for n in &self.nodes {
                let prefetched = match n.entry {
                    Some(Entry {
                        kind: Kind::File(d),
                        ..
                    }) if n.what == What::File && d.len() <= PREFETCH_MAX => {
                        let (rx, ready) = &mut rxs[k % workers];
                        if ready.is_empty() {
                            ready.extend(
                                rx.recv()
                                    .map_err(|_| anyhow::anyhow!("a reader thread stopped"))?,
                            );
                        }
                        let p = ready
                            .pop_front()
                            .ok_or_else(|| anyhow::anyhow!("a reader thread sent nothing"))??;
                        k += 1;
                        Some(p)
                    }
                    _ => None,
                };
                let Some((spec, sha)) = self.node_inode(n, io, &mut bufs, prefetched)? else {
                    continue;
                };
                if n.what == What::Dir {
                    used_dirs[((n.ino - 1) / self.geometry.inodes_per_group) as usize] += 1;
                }
                if let (
                    Some(sha),
                    Some(Entry {
                        kind: Kind::File(d),
                        ..
                    }),
                ) = (sha, n.entry)
                {
                    pb.inc(d.len());
                    hashes.insert(n.ino, sha);
                }
                table.put(
                    n.ino,
                    &inode::encode(&spec, inode_seed(self.fs_seed, n.ino, 0)),
                );
            }
            Ok(())
        })?;
        io.flush()?;
        pb.finish_and_clear();
        Ok(hashes)
    }

    /// One node's data blocks and inode; the file's sha256 for a regular file. None for
    /// a node with nothing to write.
    fn node_inode(
        &self,
        n: &Node,
        io: &mut Io,
        bufs: &mut Buffers,
        prefetched: Option<Prefetched>,
    ) -> Result<Option<(InodeSpec, Option<FileDigest>)>> {
        let time = self.opts.time;
        let mut sha_out = None;
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
            }
            What::File => {
                let Some(Entry {
                    kind: Kind::File(d),
                    ..
                }) = n.entry
                else {
                    unreachable!("a file node holds a file")
                };
                let (w, sha) = match prefetched {
                    Some(p) => (write_bytes(io, &p.bytes, seed, bufs)?, p.digest),
                    None => write_file(io, d, seed, bufs)?,
                };
                spec.i_block = w.i_block;
                spec.blocks = w.blocks;
                spec.flags = w.flags;
                spec.size = d.len();
                sha_out = Some(sha);
            }
            What::FastLink | What::SlowLink => {
                let Some(Entry {
                    kind: Kind::Symlink(t),
                    ..
                }) = n.entry
                else {
                    return Ok(None);
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
        Ok(Some((spec, sha_out)))
    }

    /// The manifest: every path of the tree, with the sha256 of what its inode holds.
    fn manifest(&self, hashes: &HashMap<u32, FileDigest>) -> Vec<ManifestEntry> {
        self.tree
            .iter()
            .map(|(p, e)| {
                let ino = self.ino_of.get(p.as_str()).copied().unwrap_or(0);
                let sha = match &e.kind {
                    Kind::File(_) | Kind::HardLink(_) => hashes.get(&ino).cloned(),
                    _ => None,
                };
                ManifestEntry::in_tree(self.tree, p, e, sha)
            })
            .collect()
    }
}

/// Writes `tree` as an ext4 file system at `target`.
pub fn write(tree: &Tree, target: &Target, opts: &Ext4Options) -> Result<Ext4Report> {
    Prepared::new(tree, opts)?.write(target)
}
