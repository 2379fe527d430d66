//! Before a byte is written: inode numbers in path order, directory contents and their
//! blocks, link counts, and a geometry large enough for it all.

use foldhash::{HashMap, HashMapExt};

use anyhow::{bail, Context, Result};

use super::csum::{fs_seed, inode_seed};
use super::dir::{self, DirEntry};
use super::inode;
use super::layout::{self, Geometry, BLOCKS_PER_GROUP};
use super::writer::{Ext4Options, Prepared, SizeSpec};
use super::{xattr, BLOCK, FIRST_INO, ROOT_INO};
use crate::output::options::FreeSpace;
use crate::tree::{path, Data, Entry, Kind, Tree};

/// Built directory blocks by inode, and whether each is hashed (htree).
pub(super) type DirBlocks = HashMap<u32, DirContent>;

/// A directory's blocks, and whether they are hash-indexed.
pub(super) type DirContent = (Vec<Vec<u8>>, bool);

/// What an inode holds, as far as writing it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum What {
    Dir,
    File,
    FastLink,
    SlowLink,
    Dev,
    Special,
}

/// One inode to write.
pub(super) struct Node<'t> {
    pub(super) ino: u32,
    /// Stored path ("" for the root).
    pub(super) path: &'t str,
    /// The tree entry, or None for a lost+found kiln adds.
    pub(super) entry: Option<&'t Entry>,
    pub(super) what: What,
    pub(super) links: u32,
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
    /// Numbers the inodes, builds the directories and chooses the geometry.
    pub fn new(tree: &'t Tree, opts: &Ext4Options) -> Result<Prepared<'t>> {
        tree.check_links()?;
        let fs_seed = fs_seed(&opts.uuid);
        let hs = &opts.hash_seed;
        let hash_seed =
            [0, 4, 8, 12].map(|i| u32::from_le_bytes([hs[i], hs[i + 1], hs[i + 2], hs[i + 3]]));
        let (mut nodes, ino_of) = number(tree)?;
        let children = directory_entries(tree, &mut nodes, &ino_of)?;
        let (dir_blocks, content) = content_blocks(&nodes, children, &ino_of, &hash_seed, fs_seed)?;
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

/// Inode numbers in path order: the root 2, lost+found 11, then every entry; hard links
/// share their target's number.
/// The most names a non-directory may have in ext4 (EXT4_LINK_MAX).
const MAX_FILE_LINKS: u32 = 65_000;

fn number(tree: &Tree) -> Result<(Vec<Node<'_>>, HashMap<&str, u32>)> {
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
    Ok((nodes, ino_of))
}

/// Every directory's entries, and the link counts they imply.
fn directory_entries(
    tree: &Tree,
    nodes: &mut [Node],
    ino_of: &HashMap<&str, u32>,
) -> Result<HashMap<u32, Vec<DirEntry>>> {
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
    // ext4 counts a file's names in 16 bits and e2fsck accepts at most 65 000; a
    // directory past that is counted as 1 (dir_nlink), but a file cannot be.
    if let Some(n) = nodes
        .iter()
        .find(|n| n.what != What::Dir && n.links > MAX_FILE_LINKS)
    {
        let name = tree
            .iter()
            .find(|(p, _)| ino_of.get(p.as_str()) == Some(&n.ino))
            .map(|(p, _)| format!("/{p}"))
            .unwrap_or_default();
        anyhow::bail!(
            "{name} has {} names (hard links), and an ext4 file may have at most {MAX_FILE_LINKS}; remove some, or make them symlinks",
            n.links
        );
    }
    // The root's lost+found entry must sort with the rest.
    if let Some(kids) = children.get_mut(&ROOT_INO) {
        kids.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(children)
}

/// Directory blocks (built now, since their size decides the layout) and an upper bound
/// of the blocks all content needs.
fn content_blocks(
    nodes: &[Node],
    children: HashMap<u32, Vec<DirEntry>>,
    ino_of: &HashMap<&str, u32>,
    hash_seed: &[u32; 4],
    fs_seed: u32,
) -> Result<(DirBlocks, u64)> {
    // Two halves on two threads: directories are built block by block and large files'
    // holes are looked up with a system call each, thousands of them before any writing.
    let part = |part: &[Node]| -> Result<(Vec<(u32, DirContent)>, u64)> {
        let mut dirs = Vec::new();
        let mut content: u64 = 0;
        for n in part {
            let seed = inode_seed(fs_seed, n.ino, 0);
            match n.what {
                What::Dir => {
                    let kids = children.get(&n.ino).map(Vec::as_slice).unwrap_or_default();
                    let parent_ino = match path::parent(n.path) {
                        None => ROOT_INO,
                        Some(pp) => ino_of.get(pp).copied().unwrap_or(ROOT_INO),
                    };
                    let (mut blocks, indexed) =
                        dir::build(n.ino, parent_ino, kids, hash_seed, seed)?;
                    if n.ino == FIRST_INO && !indexed {
                        // mke2fs gives lost+found 16 KiB so e2fsck can reconnect files without allocating.
                        while blocks.len() < 4 {
                            blocks.push(dir::empty_block(seed));
                        }
                    }
                    content += blocks.len() as u64 + inode::tree_blocks_for(blocks.len());
                    dirs.push((n.ino, (blocks, indexed)));
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
        Ok((dirs, content))
    };
    let (front, back) = nodes.split_at(nodes.len() / 2);
    let (front, back) = std::thread::scope(|scope| {
        let back = scope.spawn(|| part(back));
        let front = part(front);
        (front, back.join())
    });
    // The front's error first, as one thread would have met it.
    let (front, back) = (
        front?,
        back.map_err(|_| anyhow::anyhow!("a thread building directories panicked"))??,
    );
    let mut dir_blocks = HashMap::with_capacity(front.0.len() + back.0.len());
    dir_blocks.extend(front.0.into_iter().chain(back.0));
    Ok((dir_blocks, front.1 + back.1))
}
