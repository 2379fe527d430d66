//! Reading ext4 images (kiln's or mke2fs's, bare or inside a GPT disk) without mounting:
//! listing them and copying files out, for `kiln ls`, `kiln extract` and test results.

use std::fs::File;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ext4_view::{Ext4, Ext4Read};

use crate::output::disk;
use crate::tree::mode::FileType;

/// A byte range of a file, seen as a device.
struct Window {
    file: File,
    offset: u64,
}

impl Ext4Read for Window {
    fn read(
        &mut self,
        start: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.file
            .read_exact_at(dst, self.offset + start)
            .map_err(|e| Box::new(e) as _)
    }
}

fn has_ext4_magic(f: &File, offset: u64) -> bool {
    let mut m = [0u8; 2];
    f.read_exact_at(&mut m, offset + 1024 + 0x38).is_ok() && m == [0x53, 0xEF]
}

/// Opens the ext4 file system of an image: a bare file system, or the root partition
/// (else the first ext4 partition) of a GPT disk.
pub fn open(image: &Path) -> Result<Ext4> {
    let f = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let offset = if has_ext4_magic(&f, 0) {
        0
    } else {
        let parts = disk::read_partitions(&f).with_context(|| {
            format!(
                "{} is neither an ext4 file system nor a GPT disk",
                image.display()
            )
        })?;
        let root = parts
            .iter()
            .find(|p| p.type_guid == disk::ROOT_X86_64)
            .or_else(|| parts.iter().find(|p| has_ext4_magic(&f, p.first_lba * 512)));
        match root {
            Some(p) if has_ext4_magic(&f, p.first_lba * 512) => p.first_lba * 512,
            Some(p) => bail!(
                "partition {} ({}) of {} holds no ext4 file system",
                p.number,
                p.name,
                image.display()
            ),
            None => bail!("{} has no root or ext4 partition", image.display()),
        }
    };
    Ext4::load(Box::new(Window { file: f, offset }))
        .map_err(|e| anyhow!("reading ext4 in {}: {e}", image.display()))
}

/// One entry of an ext4 file system, as `list` reports it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Absolute path.
    pub path: String,
    /// File type and permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Size in bytes; 0 for directories.
    pub size: u64,
    /// Symlink target; `None` for other types.
    pub target: Option<String>,
}

fn mode_with_type(md: &ext4_view::Metadata) -> u32 {
    let ft = md.file_type();
    let t = if ft.is_dir() {
        FileType::Dir
    } else if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_char_dev() {
        FileType::Char
    } else if ft.is_block_dev() {
        FileType::Block
    } else if ft.is_fifo() {
        FileType::Fifo
    } else if ft.is_socket() {
        FileType::Socket
    } else {
        FileType::Regular
    };
    t.bits() | (md.mode() as u32 & 0o7777)
}

/// Every entry below `/`, in path order.
pub fn list(fs: &Ext4) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    let root = fs.metadata("/").map_err(|e| anyhow!("{e}"))?;
    out.push(Listed {
        path: "/".into(),
        mode: mode_with_type(&root),
        uid: root.uid(),
        gid: root.gid(),
        size: 0,
        target: None,
    });
    walk(fs, "/", &mut out)?;
    Ok(out)
}

fn walk(fs: &Ext4, dir: &str, out: &mut Vec<Listed>) -> Result<()> {
    let mut kids = Vec::new();
    for e in fs
        .read_dir(dir)
        .map_err(|e| anyhow!("reading {dir}: {e}"))?
    {
        let e = e.map_err(|e| anyhow!("reading {dir}: {e}"))?;
        let name = e.file_name();
        let name = name
            .as_str()
            .map_err(|_| anyhow!("a name in {dir} is not UTF-8"))?;
        if name == "." || name == ".." {
            continue;
        }
        kids.push(name.to_string());
    }
    kids.sort();
    for name in kids {
        let p = if dir == "/" {
            format!("/{name}")
        } else {
            format!("{dir}/{name}")
        };
        let md = fs
            .symlink_metadata(p.as_str())
            .map_err(|e| anyhow!("{p}: {e}"))?;
        let target = if md.is_symlink() {
            Some(
                fs.read_link(p.as_str())
                    .map_err(|e| anyhow!("{p}: {e}"))?
                    .to_str()
                    .map_err(|_| anyhow!("{p}: target is not UTF-8"))?
                    .to_string(),
            )
        } else {
            None
        };
        let is_dir = md.is_dir();
        out.push(Listed {
            path: p.clone(),
            mode: mode_with_type(&md),
            uid: md.uid(),
            gid: md.gid(),
            size: if is_dir { 0 } else { md.len() },
            target,
        });
        if is_dir {
            walk(fs, &p, out)?;
        }
    }
    Ok(())
}

/// What `extract` copied out.
#[derive(Debug, Default)]
pub struct Extracted {
    /// Regular files written.
    pub files: usize,
    /// Directories created.
    pub dirs: usize,
    /// Symlinks recreated.
    pub symlinks: usize,
    /// Device nodes, FIFOs and sockets, which an unprivileged copy cannot recreate.
    pub skipped: Vec<String>,
}

/// Refuses a destination path whose existing components include a symlink: that is how
/// a hostile image would make a copy land outside the destination.
fn check_inside(dest_root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut cur = dest_root.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(n) => {
                if let Ok(md) = std::fs::symlink_metadata(&cur) {
                    if md.file_type().is_symlink() {
                        bail!(
                            "{} is a symlink; refusing to write through it",
                            cur.display()
                        );
                    }
                }
                cur.push(n);
            }
            _ => bail!("refusing path component {:?} in {}", c, rel.display()),
        }
    }
    Ok(cur)
}

fn remove_existing(p: &Path) -> Result<()> {
    if let Ok(md) = std::fs::symlink_metadata(p) {
        if md.is_dir() && !md.file_type().is_symlink() {
            return Ok(());
        }
        std::fs::remove_file(p).with_context(|| format!("replacing {}", p.display()))?;
    }
    Ok(())
}

fn set_owner(p: &Path, uid: u32, gid: u32) {
    // Ownership is restored only when we may (as root); otherwise the copy is the user's.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let _ = std::os::unix::fs::lchown(p, Some(uid), Some(gid));
    }
}

/// Copies `src` (a file or directory in the image; a symlink given here is followed
/// inside the image) into the directory `dest`, keeping its name. Symlinks inside are
/// recreated as symlinks and never followed; nothing is written outside `dest`.
pub fn extract(fs: &Ext4, src: &str, dest: &Path) -> Result<Extracted> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let dest = std::fs::canonicalize(dest)?;
    let src = if src.starts_with('/') {
        src.to_string()
    } else {
        format!("/{src}")
    };
    let md = fs
        .metadata(src.as_str())
        .map_err(|e| anyhow!("{src} in the image: {e}"))?;
    let name = Path::new(&src)
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("root"));
    let mut report = Extracted::default();
    if md.is_dir() {
        let mut all = Vec::new();
        walk(fs, &src, &mut all)?;
        let top = check_inside(&dest, &name)?;
        std::fs::create_dir_all(&top)?;
        report.dirs += 1;
        let mut dirs = vec![(top.clone(), mode_with_type(&md), md.uid(), md.gid())];
        for e in all {
            let rel_in_src = e
                .path
                .strip_prefix(&src)
                .unwrap_or(&e.path)
                .trim_start_matches('/');
            let out = check_inside(&dest, &name.join(rel_in_src))?;
            copy_one(fs, &e, &out, &mut report)?;
            if FileType::from_mode(e.mode) == FileType::Dir {
                dirs.push((out, e.mode, e.uid, e.gid));
            }
        }
        // Directory modes last, so a read-only directory does not stop its own filling.
        for (p, mode, uid, gid) in dirs.into_iter().rev() {
            set_owner(&p, uid, gid);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode & 0o7777))?;
        }
    } else {
        let e = Listed {
            path: src.clone(),
            mode: mode_with_type(&md),
            uid: md.uid(),
            gid: md.gid(),
            size: md.len(),
            target: None,
        };
        let out = check_inside(&dest, &name)?;
        copy_one(fs, &e, &out, &mut report)?;
    }
    Ok(report)
}

fn copy_one(fs: &Ext4, e: &Listed, out: &Path, report: &mut Extracted) -> Result<()> {
    match FileType::from_mode(e.mode) {
        FileType::Dir => {
            if std::fs::symlink_metadata(out).is_ok_and(|m| !m.is_dir()) {
                std::fs::remove_file(out)?;
            }
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
            std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o700))?;
            report.dirs += 1;
        }
        FileType::Symlink => {
            remove_existing(out)?;
            let target = e.target.clone().unwrap_or_default();
            std::os::unix::fs::symlink(&target, out)
                .with_context(|| format!("creating symlink {}", out.display()))?;
            set_owner(out, e.uid, e.gid);
            report.symlinks += 1;
        }
        FileType::Regular => {
            remove_existing(out)?;
            let mut f = fs
                .open(e.path.as_str())
                .map_err(|err| anyhow!("{}: {err}", e.path))?;
            use std::os::unix::fs::OpenOptionsExt;
            let mut o = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o600)
                .open(out)
                .with_context(|| format!("creating {}", out.display()))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f
                    .read_bytes(&mut buf)
                    .map_err(|err| anyhow!("reading {}: {err}", e.path))?;
                if n == 0 {
                    break;
                }
                std::io::Write::write_all(&mut o, &buf[..n])?;
            }
            // chown clears set-id bits, so the owner comes first.
            set_owner(out, e.uid, e.gid);
            o.set_permissions(std::fs::Permissions::from_mode(e.mode & 0o7777))?;
            report.files += 1;
        }
        _ => report.skipped.push(e.path.clone()),
    }
    Ok(())
}
