//! Reading ext4 images (kiln's or mke2fs's, bare or inside a GPT disk) without mounting:
//! listing them and copying files out, for `kiln ls`, `kiln extract` and test results.

use std::fs::File;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ext4_view::{Ext4, Ext4Read, PathBuf as Ext4PathBuf};

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

/// An ext4 file system opened for reading, with what bounds a walk of it: a crafted
/// image (a guest's results disk) can hold directory cycles and sparse or shared extents.
pub struct Image {
    /// The file system.
    pub fs: Ext4,
    /// Inodes in use, from the superblock: a tree without cycles visits each directory
    /// once, so more visits than this mean a cycle.
    used_inodes: u64,
    /// The image's size: what a walk copies out of it can be no larger, holes aside.
    bytes: u64,
}

/// Opens the ext4 file system of an image: a bare file system, or the root partition
/// (else the first ext4 partition) of a GPT disk.
pub fn open(image: &Path) -> Result<Image> {
    let f = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let bytes = f.metadata()?.len();
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
    let mut counts = [0u8; 20];
    f.read_exact_at(&mut counts, offset + 1024)
        .with_context(|| format!("reading the superblock of {}", image.display()))?;
    let word = |at: usize| {
        u64::from(u32::from_le_bytes([
            counts[at],
            counts[at + 1],
            counts[at + 2],
            counts[at + 3],
        ]))
    };
    // s_inodes_count and s_free_inodes_count.
    let used_inodes = word(0).saturating_sub(word(16));
    let fs = Ext4::load(Box::new(Window { file: f, offset }))
        .map_err(|e| anyhow!("reading ext4 in {}: {e}", image.display()))?;
    Ok(Image {
        fs,
        used_inodes,
        bytes,
    })
}

/// One entry of an ext4 file system, as `list` reports it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Absolute path, for display (bytes that are not UTF-8 replaced).
    pub path: String,
    /// The path's bytes, as the file system has them.
    pub raw: Ext4PathBuf,
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

/// What a walk found: the entries it could read, in path order, and one line for each
/// it could not.
#[derive(Debug, Default)]
pub struct Listing {
    /// Readable entries.
    pub entries: Vec<Listed>,
    /// `path: why` for each entry that could not be read.
    pub problems: Vec<String>,
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

fn display(p: &Ext4PathBuf) -> String {
    String::from_utf8_lossy(p.as_ref()).into_owned()
}

/// Every entry from `/`, in path order.
pub fn list(img: &Image) -> Result<Listing> {
    walk(img, Ext4PathBuf::new("/"))
}

/// `top` and everything below it, in path order (depth first, names sorted as bytes),
/// without recursion: a crafted tree cannot exhaust the stack, and a directory cycle
/// stops the walk once it has visited more directories than the file system has inodes.
fn walk(img: &Image, top: Ext4PathBuf) -> Result<Listing> {
    let fs = &img.fs;
    let mut out = Listing::default();
    let mut pending = vec![top];
    let mut dirs = 0u64;
    while let Some(p) = pending.pop() {
        let md = match fs.symlink_metadata(p.as_path()) {
            Ok(md) => md,
            Err(e) => {
                out.problems.push(format!("{}: {e}", display(&p)));
                continue;
            }
        };
        let target = if md.is_symlink() {
            match fs.read_link(p.as_path()) {
                Ok(t) => Some(display(&t)),
                Err(e) => {
                    out.problems
                        .push(format!("{}: its target cannot be read: {e}", display(&p)));
                    continue;
                }
            }
        } else {
            None
        };
        let is_dir = md.is_dir();
        out.entries.push(Listed {
            path: display(&p),
            raw: p.clone(),
            mode: mode_with_type(&md),
            uid: md.uid(),
            gid: md.gid(),
            size: if is_dir { 0 } else { md.len() },
            target,
        });
        if !is_dir {
            continue;
        }
        dirs += 1;
        if dirs > img.used_inodes.max(1) {
            return Err(Stop(format!(
                "the directories of this file system form a cycle ({} visits, {} inodes in use); stopping",
                dirs, img.used_inodes
            ))
            .into());
        }
        let entries = match fs.read_dir(p.as_path()) {
            Ok(r) => r,
            Err(e) => {
                out.problems.push(format!("{}: {e}", display(&p)));
                continue;
            }
        };
        let mut kids = Vec::new();
        for e in entries {
            match e {
                Ok(e) => {
                    let name = e.file_name();
                    let name: &[u8] = name.as_ref();
                    if name != b"." && name != b".." {
                        kids.push(e.path());
                    }
                }
                Err(e) => out.problems.push(format!("{}: {e}", display(&p))),
            }
        }
        // Reversed onto the stack, so the smallest name comes off first.
        kids.sort_by(|a, b| b.as_ref().cmp(a.as_ref()));
        pending.extend(kids);
    }
    Ok(out)
}

/// The names in the directory `dir` (without `.` and `..`), sorted, and what could not
/// be read.
pub fn list_dir(img: &Image, dir: &[u8]) -> Result<(Vec<Vec<u8>>, Vec<String>)> {
    let dir = Ext4PathBuf::try_from(dir).map_err(|e| anyhow!("{e}"))?;
    let mut names = Vec::new();
    let mut problems = Vec::new();
    for e in img
        .fs
        .read_dir(dir.as_path())
        .map_err(|e| anyhow!("reading {}: {e}", display(&dir)))?
    {
        match e {
            Ok(e) => {
                let name = e.file_name();
                let name: &[u8] = name.as_ref();
                if name != b"." && name != b".." {
                    names.push(name.to_vec());
                }
            }
            Err(e) => problems.push(format!("{}: {e}", display(&dir))),
        }
    }
    names.sort();
    Ok((names, problems))
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
    /// Bytes of file content written.
    pub bytes: u64,
    /// Device nodes, FIFOs and sockets, which an unprivileged copy cannot recreate.
    pub skipped: Vec<String>,
    /// Entries that could not be read or written, each with why; the rest was copied.
    pub problems: Vec<String>,
}

/// How much of what an image says about its files the copy keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// An image the user built: as root, owners are restored, and set-id bits kept.
    Own,
    /// What a guest wrote: files belong to whoever runs kiln, and lose set-id bits.
    Guest,
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

fn set_owner(p: &Path, uid: u32, gid: u32, trust: Trust) {
    // Ownership is restored only when we may (as root); otherwise the copy is the user's.
    // SAFETY: geteuid has no preconditions.
    if trust == Trust::Own && unsafe { libc::geteuid() } == 0 {
        let _ = std::os::unix::fs::lchown(p, Some(uid), Some(gid));
    }
}

/// The permission bits a copy gets.
fn permissions(mode: u32, trust: Trust) -> std::fs::Permissions {
    let keep = match trust {
        Trust::Own => 0o7777,
        Trust::Guest => 0o1777,
    };
    std::fs::Permissions::from_mode(mode & keep)
}

/// The host path of an image path below `src`, under `name`.
fn host_rel(name: &Path, src: &Ext4PathBuf, p: &Ext4PathBuf) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let rel = p.as_ref().strip_prefix(src.as_ref()).unwrap_or(p.as_ref());
    let rel = rel.strip_prefix(b"/").unwrap_or(rel);
    if rel.is_empty() {
        name.to_path_buf()
    } else {
        name.join(std::ffi::OsStr::from_bytes(rel))
    }
}

/// Copies `src` (a file or directory in the image; a symlink given here is followed
/// inside the image) into the directory `dest`, keeping its name. Symlinks inside are
/// recreated as symlinks and never followed; nothing is written outside `dest`, and no
/// more file content than the image's own size. An entry that cannot be read or written
/// is reported in [`Extracted::problems`] and the rest copied.
pub fn extract(img: &Image, src: &[u8], dest: &Path, trust: Trust) -> Result<Extracted> {
    use std::os::unix::ffi::OsStrExt;
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let dest = std::fs::canonicalize(dest)?;
    let src = if src.starts_with(b"/") {
        Ext4PathBuf::try_from(src)
    } else {
        Ext4PathBuf::try_from([b"/", src].concat())
    }
    .map_err(|e| anyhow!("{}: {e}", String::from_utf8_lossy(src)))?;
    // A guest's symlink is copied as a symlink, even at the top.
    let md = match trust {
        Trust::Own => img.fs.metadata(src.as_path()),
        Trust::Guest => img.fs.symlink_metadata(src.as_path()),
    }
    .map_err(|e| anyhow!("{} in the image: {e}", display(&src)))?;
    let name = match src.as_ref().rsplit(|b| *b == b'/').next() {
        Some(n) if !n.is_empty() => PathBuf::from(std::ffi::OsStr::from_bytes(n)),
        _ => PathBuf::from("root"),
    };
    let mut report = Extracted::default();
    let listing = if md.is_dir() {
        walk(img, src.clone())?
    } else {
        Listing {
            entries: vec![Listed {
                path: display(&src),
                raw: src.clone(),
                mode: mode_with_type(&md),
                uid: md.uid(),
                gid: md.gid(),
                size: md.len(),
                target: if md.is_symlink() {
                    let t = img.fs.read_link(src.as_path()).map_err(|e| {
                        anyhow!("{}: its target cannot be read: {e}", display(&src))
                    })?;
                    Some(display(&t))
                } else {
                    None
                },
            }],
            problems: Vec::new(),
        }
    };
    report.problems = listing.problems;
    let mut dirs = Vec::new();
    for e in &listing.entries {
        let out = check_inside(&dest, &host_rel(&name, &src, &e.raw))?;
        match copy_one(img, e, &out, trust, &mut report) {
            Ok(()) => {}
            Err(err) if err.is::<Stop>() => return Err(err),
            Err(err) => report.problems.push(format!("{}: {err:#}", e.path)),
        }
        if FileType::from_mode(e.mode) == FileType::Dir {
            dirs.push((out, e.mode, e.uid, e.gid));
        }
    }
    // Directory modes last, so a read-only directory does not stop its own filling.
    for (p, mode, uid, gid) in dirs.into_iter().rev() {
        set_owner(&p, uid, gid, trust);
        let _ = std::fs::set_permissions(&p, permissions(mode, trust));
    }
    Ok(report)
}

/// Why a walk or a copy stopped as a whole rather than skipping one entry: a directory
/// cycle, or files that claim more content than the image holds (holes or shared
/// blocks).
#[derive(Debug)]
pub struct Stop(String);

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stop {}

fn overflow(bytes: u64) -> anyhow::Error {
    Stop(format!(
        "the image's files add up to more than the image's own {bytes} bytes (holes or shared blocks); stopping the copy"
    ))
    .into()
}

fn copy_one(
    img: &Image,
    e: &Listed,
    out: &Path,
    trust: Trust,
    report: &mut Extracted,
) -> Result<()> {
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
            set_owner(out, e.uid, e.gid, trust);
            report.symlinks += 1;
        }
        FileType::Regular => {
            if report.bytes.saturating_add(e.size) > img.bytes {
                return Err(overflow(img.bytes));
            }
            remove_existing(out)?;
            let mut f = img
                .fs
                .open(e.raw.as_path())
                .map_err(|err| anyhow!("{err}"))?;
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
                let n = f.read_bytes(&mut buf).map_err(|err| anyhow!("{err}"))?;
                if n == 0 {
                    break;
                }
                report.bytes += n as u64;
                if report.bytes > img.bytes {
                    return Err(overflow(img.bytes));
                }
                std::io::Write::write_all(&mut o, &buf[..n])?;
            }
            // chown clears set-id bits, so the owner comes first.
            set_owner(out, e.uid, e.gid, trust);
            o.set_permissions(permissions(e.mode, trust))?;
            report.files += 1;
        }
        _ => report.skipped.push(e.path.clone()),
    }
    Ok(())
}
