//! `kiln ls`: the entries of any image kiln writes (initramfs, tar, ext4, GPT disk), in
//! one shape, so printers need not know the formats.

use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};

use super::ext4::reader;
use crate::tree::mode::FileType;

/// One entry of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Absolute path in the image ("/" for the root).
    pub path: String,
    /// File type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (0 for anything but regular files and symlinks).
    pub size: u64,
    /// Device numbers of a character or block device.
    pub rdev: Option<(u32, u32)>,
    /// Where a symlink points, or which path a hard link shares its data with.
    pub link: Option<Link>,
}

/// The target of a link entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// A symlink's target, as stored.
    Symlink(String),
    /// The absolute image path a hard link names (tar records hard links this way).
    Hard(String),
}

/// What kind of image a file is, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// newc cpio, plain or zstd-compressed.
    Cpio,
    /// A tar archive (ustar or GNU).
    Tar,
    /// An ext4 file system, or a GPT disk with one as its root partition.
    Ext4,
}

/// Tells the image's kind by its magic numbers.
pub fn sniff(image: &Path) -> Result<ImageKind> {
    let f = std::fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let mut magic = [0u8; 6];
    let n = f
        .read_at(&mut magic, 0)
        .with_context(|| format!("reading {}", image.display()))?;
    if n >= 4 && (magic[..4] == [0x28, 0xb5, 0x2f, 0xfd] || &magic[..n.min(6)] == b"070701") {
        return Ok(ImageKind::Cpio);
    }
    let mut ustar = [0u8; 5];
    if f.read_exact_at(&mut ustar, 257).is_ok() && &ustar == b"ustar" {
        return Ok(ImageKind::Tar);
    }
    Ok(ImageKind::Ext4)
}

/// Every entry of `image`, in the order the image stores them.
pub fn list(image: &Path) -> Result<Vec<Listed>> {
    match sniff(image)? {
        ImageKind::Cpio => list_cpio(image),
        ImageKind::Tar => list_tar(image).with_context(|| format!("reading {}", image.display())),
        ImageKind::Ext4 => {
            let img = reader::open(image)?;
            let listing = reader::list(&img)?;
            for p in &listing.problems {
                crate::util::progress::warn(format!("{}: {p}", image.display()));
            }
            Ok(listing
                .entries
                .into_iter()
                .map(|e| Listed {
                    path: e.path,
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                    size: e.size,
                    rdev: None,
                    link: e.target.map(Link::Symlink),
                })
                .collect())
        }
    }
}

fn list_cpio(image: &Path) -> Result<Vec<Listed>> {
    Ok(super::cpio::list(image)
        .with_context(|| format!("listing {}", image.display()))?
        .into_iter()
        .map(|e| {
            let path = if e.name == "." {
                "/".to_string()
            } else {
                format!("/{}", e.name.trim_start_matches("./"))
            };
            let device = matches!(
                FileType::from_mode(e.mode),
                FileType::Char | FileType::Block
            );
            Listed {
                path,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                size: e.size,
                rdev: device.then_some(e.rdev),
                link: e.target.map(Link::Symlink),
            }
        })
        .collect())
}

fn list_tar(image: &Path) -> Result<Vec<Listed>> {
    let mut a = tar::Archive::new(std::fs::File::open(image)?);
    let mut out = Vec::new();
    for e in a.entries()? {
        let e = e?;
        let h = e.header();
        let t = match h.entry_type() {
            tar::EntryType::Directory => FileType::Dir,
            tar::EntryType::Symlink => FileType::Symlink,
            tar::EntryType::Char => FileType::Char,
            tar::EntryType::Block => FileType::Block,
            tar::EntryType::Fifo => FileType::Fifo,
            _ => FileType::Regular,
        };
        let rdev = match t {
            FileType::Char | FileType::Block => Some((
                h.device_major()?.unwrap_or(0),
                h.device_minor()?.unwrap_or(0),
            )),
            _ => None,
        };
        let name = |p: &[u8]| {
            format!(
                "/{}",
                String::from_utf8_lossy(p)
                    .trim_start_matches("./")
                    .trim_end_matches('/')
            )
        };
        let link_name = e.link_name_bytes().map(|l| l.into_owned());
        let link = match (h.entry_type(), link_name) {
            (tar::EntryType::Symlink, Some(l)) => {
                Some(Link::Symlink(String::from_utf8_lossy(&l).into_owned()))
            }
            (tar::EntryType::Link, Some(l)) => Some(Link::Hard(name(&l))),
            _ => None,
        };
        let listed = Listed {
            path: name(&e.path_bytes()),
            mode: t.bits() | (h.mode()? & 0o7777),
            uid: u32::try_from(h.uid()?).unwrap_or(u32::MAX),
            gid: u32::try_from(h.gid()?).unwrap_or(u32::MAX),
            size: e.size(),
            rdev,
            link,
        };
        out.push(listed);
    }
    Ok(out)
}
