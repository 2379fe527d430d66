//! The image tree: every entry an image will hold, with its ownership and mode, and
//! where its bytes come from. Writers turn it into cpio or ext4 without touching the
//! host's file system, which is why kiln needs no root.

pub mod data;
pub mod digest;
pub mod mode;
mod moved;
pub mod path;
pub mod sparse;
pub mod stored;

use std::collections::BTreeMap;
use std::fmt;

pub use mode::FileType;

pub use data::Data;

/// Ownership, permissions and timestamps of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits including setuid, setgid and sticky (0o7777).
    pub mode: u32,
    /// Owner's user id.
    pub uid: u32,
    /// Owner's group id.
    pub gid: u32,
    /// Modification time, in seconds since the Unix epoch.
    pub mtime: i64,
    /// Extended attributes: full name (e.g. `security.capability`) to value.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Meta {
    /// Owned by root, no xattrs; bits of `mode` outside 0o7777 are dropped.
    pub fn new(mode: u32, mtime: i64) -> Meta {
        Meta {
            mode: mode & 0o7777,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: BTreeMap::new(),
        }
    }

    /// Sets the owner's user and group ids.
    pub fn owner(mut self, uid: u32, gid: u32) -> Meta {
        self.uid = uid;
        self.gid = gid;
        self
    }
}

/// What an entry is and, for a regular file, where its bytes come from.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A directory; its contents are the entries below its path.
    Dir,
    /// A regular file and the source of its contents.
    File(Data),
    /// A symbolic link; the target is kept as written, absolute or relative.
    Symlink(String),
    /// Another name for the regular file stored at this path.
    HardLink(String),
    /// A character device.
    CharDev {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A block device.
    BlockDev {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
    /// A Unix domain socket.
    Socket,
}

impl Kind {
    /// The file type of this kind (a hard link is a regular file).
    pub fn file_type(&self) -> FileType {
        match self {
            Kind::Dir => FileType::Dir,
            Kind::File(_) | Kind::HardLink(_) => FileType::Regular,
            Kind::Symlink(_) => FileType::Symlink,
            Kind::CharDev { .. } => FileType::Char,
            Kind::BlockDev { .. } => FileType::Block,
            Kind::Fifo => FileType::Fifo,
            Kind::Socket => FileType::Socket,
        }
    }

    /// The S_IFMT bits of this kind.
    pub fn file_type_bits(&self) -> u32 {
        self.file_type().bits()
    }

    /// Short name for messages: "directory", "file", "symlink", "hardlink", …
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Dir => "directory",
            Kind::File(_) => "file",
            Kind::Symlink(_) => "symlink",
            Kind::HardLink(_) => "hardlink",
            Kind::CharDev { .. } => "char",
            Kind::BlockDev { .. } => "block",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        }
    }
}

/// One entry of the tree: what it is, and its metadata.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Type, with the contents, target or device numbers.
    pub kind: Kind,
    /// Ownership, mode, mtime and xattrs.
    pub meta: Meta,
}

impl Entry {
    /// An entry of `kind` with `meta`.
    pub fn new(kind: Kind, meta: Meta) -> Entry {
        Entry { kind, meta }
    }

    /// Whether the entry is a directory (a symlink to one is not).
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir)
    }
}

/// Something a later layer did to an earlier one that a user may want to know about.
#[derive(Debug, Clone)]
pub struct Replaced {
    /// Stored path of the entry that was replaced.
    pub path: String,
    /// What was there, as [`Kind::name`] names it.
    pub old: &'static str,
    /// What replaced it, as [`Kind::name`] names it.
    pub new: &'static str,
}

/// A tree operation that failed (bad path, symlink loop, broken hard link), with the message saying why.
#[derive(Debug)]
pub struct TreeError(pub String);

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TreeError {}

const MAX_SYMLINK_HOPS: usize = 40;

/// The image's entries keyed by normalised path ("" is the root directory).
#[derive(Clone)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
    /// Metadata given to directories created because something was put inside them.
    pub implicit_dir: Meta,
    /// A path stored as a directory now, where the last insert landed or went into.
    /// Every stored entry's ancestors are stored directories, so a path inside it needs
    /// neither symlinks resolved nor parents made: a walk inserting a directory's entries
    /// one after another skips a lookup per ancestor for each of them.
    dir_hint: Option<String>,
}

// Without the insert hint: two trees with the same entries print the same.
impl fmt::Debug for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tree")
            .field("entries", &self.entries)
            .field("implicit_dir", &self.implicit_dir)
            .finish()
    }
}

impl Tree {
    /// A tree holding only the root directory: 0755, root-owned, mtime `mtime`; directories created implicitly get the same.
    pub fn new(mtime: i64) -> Tree {
        let implicit_dir = Meta::new(0o755, mtime);
        let mut entries = BTreeMap::new();
        entries.insert(String::new(), Entry::new(Kind::Dir, implicit_dir.clone()));
        Tree {
            entries,
            implicit_dir,
            dir_hint: None,
        }
    }

    /// Number of entries, the root included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the tree holds nothing but the root.
    pub fn is_empty(&self) -> bool {
        self.entries.len() <= 1
    }

    /// The entry stored at `path` (stored form; no symlinks followed).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// Whether an entry is stored at `path` (stored form; no symlinks followed).
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path)
    }

    /// All entries in path order: every directory before its contents.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries.iter()
    }

    /// Resolves symlinks in the directory part of `path` (never the last component), as the
    /// kernel would when creating `path`: with merged /usr, `bin/ls` lands in `usr/bin/ls`.
    pub fn resolve_parent(&self, path: &str) -> Result<String, TreeError> {
        let mut hops = 0;
        let mut current = path.to_string();
        'restart: loop {
            let mut prefix_end = 0;
            while let Some(rel) = current[prefix_end..].find('/') {
                let end = prefix_end + rel;
                let prefix = &current[..end];
                if let Some(Entry {
                    kind: Kind::Symlink(target),
                    ..
                }) = self.entries.get(prefix)
                {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(TreeError(format!(
                            "too many levels of symbolic links in /{path}"
                        )));
                    }
                    let resolved = path::resolve_target(prefix, target);
                    current = path::join(&resolved, &current[end + 1..]);
                    continue 'restart;
                }
                prefix_end = end + 1;
            }
            return Ok(current);
        }
    }

    /// Follows symlinks through the whole path, including the last component.
    pub fn resolve(&self, path: &str) -> Result<String, TreeError> {
        let mut current = self.resolve_parent(path)?;
        for _ in 0..MAX_SYMLINK_HOPS {
            match self.entries.get(&current) {
                Some(Entry {
                    kind: Kind::Symlink(target),
                    ..
                }) => {
                    let next = path::resolve_target(&current, target);
                    current = self.resolve_parent(&next)?;
                }
                _ => return Ok(current),
            }
        }
        Err(TreeError(format!(
            "too many levels of symbolic links in /{path}"
        )))
    }

    fn ensure_dirs(&mut self, dir: &str, replaced: &mut Vec<Replaced>) {
        if dir.is_empty() {
            return;
        }
        if let Some(parent) = path::parent(dir) {
            self.ensure_dirs(parent, replaced);
        }
        match self.entries.get(dir) {
            Some(e) if e.is_dir() => {}
            Some(e) => {
                replaced.push(Replaced {
                    path: dir.to_string(),
                    old: e.kind.name(),
                    new: "directory",
                });
                self.entries.insert(
                    dir.to_string(),
                    Entry::new(Kind::Dir, self.implicit_dir.clone()),
                );
            }
            None => {
                self.entries.insert(
                    dir.to_string(),
                    Entry::new(Kind::Dir, self.implicit_dir.clone()),
                );
            }
        }
    }

    /// Adds or replaces an entry. Later layers win: a file replaces a file, a directory's
    /// metadata replaces a directory's (its contents stay), a non-directory replaces a
    /// directory and everything in it. A directory placed where a symlink to a directory
    /// already is keeps the symlink, as dpkg does. Returns where the entry landed and what
    /// it replaced.
    pub fn insert(
        &mut self,
        path: &str,
        entry: Entry,
    ) -> Result<(String, Vec<Replaced>), TreeError> {
        let mut replaced = Vec::new();
        // Every entry goes through here, so no caller can make a `..` entry.
        let path = path::ImagePath::new(path).map_err(TreeError)?.into_string();
        let path = path.as_str();
        if path.is_empty() {
            if !entry.is_dir() {
                return Err(TreeError(
                    "the root of the image must be a directory".into(),
                ));
            }
            if let Some(root) = self.entries.get_mut("") {
                root.meta = entry.meta;
            }
            return Ok((String::new(), replaced));
        }
        let path = match (&self.dir_hint, path::parent(path)) {
            (Some(hint), Some(parent)) if hint == parent => path.to_string(),
            _ => {
                let path = self.resolve_parent(path)?;
                if let Some(parent) = path::parent(&path) {
                    self.ensure_dirs(parent, &mut replaced);
                }
                path
            }
        };
        let is_dir = entry.is_dir();
        let parent = path::parent(&path).map(str::to_string);
        let (landed, replaced) = self.place(path, entry, replaced)?;
        // Its parent is a directory now (made so above), and so is a directory that
        // landed where it was asked to (not through a symlink).
        self.dir_hint = match is_dir {
            true if parent.as_deref() == path::parent(&landed) => Some(landed.clone()),
            true => None,
            false => parent,
        };
        Ok((landed, replaced))
    }

    /// Stores `entry` at `path`, whose parent is a stored directory.
    fn place(
        &mut self,
        path: String,
        entry: Entry,
        mut replaced: Vec<Replaced>,
    ) -> Result<(String, Vec<Replaced>), TreeError> {
        match (self.entries.get(&path), &entry.kind) {
            (Some(old), Kind::Dir) if old.is_dir() => {
                if let Some(old) = self.entries.get_mut(&path) {
                    old.meta = entry.meta;
                }
                return Ok((path, replaced));
            }
            (
                Some(Entry {
                    kind: Kind::Symlink(_),
                    ..
                }),
                Kind::Dir,
            ) => {
                let target = self.resolve(&path)?;
                if self.entries.get(&target).is_some_and(|e| e.is_dir()) {
                    return Ok((target, replaced));
                }
                replaced.push(Replaced {
                    path: path.clone(),
                    old: "symlink",
                    new: "directory",
                });
            }
            (Some(old), _) if old.is_dir() => {
                replaced.push(Replaced {
                    path: path.clone(),
                    old: "directory",
                    new: entry.kind.name(),
                });
                self.remove_tree(&path);
            }
            (Some(old), _) => replaced.push(Replaced {
                path: path.clone(),
                old: old.kind.name(),
                new: entry.kind.name(),
            }),
            (None, _) => {}
        }
        self.entries.insert(path.clone(), entry);
        Ok((path, replaced))
    }

    /// Removes an entry and, for a directory, everything below it. Returns how many entries went.
    pub fn remove_tree(&mut self, path: &str) -> usize {
        self.dir_hint = None;
        if path.is_empty() {
            let n = self.entries.len() - 1;
            let root = self.entries.remove("");
            self.entries.clear();
            if let Some(root) = root {
                self.entries.insert(String::new(), root);
            }
            return n;
        }
        let prefix = format!("{path}/");
        let doomed: Vec<String> = self
            .entries
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        let mut n = doomed.len();
        for k in doomed {
            self.entries.remove(&k);
        }
        if self.entries.remove(path).is_some() {
            n += 1;
        }
        n
    }

    /// Paths in the tree that a hard link names but that are not regular files, which no
    /// writer could represent.
    pub fn check_links(&self) -> Result<(), TreeError> {
        for (path, e) in &self.entries {
            if let Kind::HardLink(target) = &e.kind {
                match self.entries.get(target) {
                    Some(Entry {
                        kind: Kind::File(_),
                        ..
                    }) => {}
                    Some(other) => {
                        return Err(TreeError(format!(
                        "hard link /{path} points to /{target}, which is a {}, not a regular file",
                        other.kind.name()
                    )))
                    }
                    None => {
                        return Err(TreeError(format!(
                            "hard link /{path} points to /{target}, which is not in the image"
                        )))
                    }
                }
            }
        }
        Ok(())
    }

    /// Sum of regular file sizes (hard links counted once).
    pub fn content_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match &e.kind {
                Kind::File(d) => d.len(),
                _ => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests;
