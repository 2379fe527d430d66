//! The manifest: every path in an image with its type, ownership, mode, size and sha256,
//! written beside the image so tests (and people) can check what is inside.

use serde::{Deserialize, Serialize};

use crate::tree::digest::FileDigest;
use crate::tree::{Entry, Kind, Tree};

/// One path in an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Absolute path in the image.
    pub path: String,
    /// Entry type, written `type`: directory, file, symlink, hardlink, char, block, fifo or socket.
    #[serde(rename = "type")]
    pub kind: String,
    /// Permission bits in octal, e.g. "0755".
    pub mode: String,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Size in bytes, for regular files and hard links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// sha256 of the contents, hex, for regular files and hard links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// In a disk image, instead of `sha256`, for a file with more than 64 MiB in all-zero
    /// blocks: a digest of its non-zero blocks and where they are (see
    /// [`crate::tree::digest`]), so that holes are never read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse_sha256: Option<String>,
    /// Symlink target, or the path a hard link shares its inode with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Major device number, for char and block devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub major: Option<u32>,
    /// Minor device number, for char and block devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minor: Option<u32>,
}

/// An image's manifest: the image and every path in it, written as JSON.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Manifest {
    /// File name of the image, without its directory.
    pub image: String,
    /// Image format: "initramfs", "tar" or "disk".
    pub format: String,
    /// sha256 of the whole image, what `sha256sum` prints. A disk image that is mostly
    /// holes has it only when its profile asks (`image_sha256 = true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_sha256: Option<String>,
    /// A disk image's sparse digest (see [`crate::tree::digest`]) when it holds
    /// more than 64 MiB in all-zero blocks: its cost follows the data, not the disk size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_sparse_sha256: Option<String>,
    /// The build's SOURCE_DATE_EPOCH: the time of every entry, and the SBOM's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_date_epoch: Option<i64>,
    /// The Debian packages installed into the image, sorted by name: what its SBOM lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<PackageRecord>,
    /// The image paths of files copied from the host (overlays, `[[binary]]`, `source`
    /// files, a build tree's modules), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_files: Vec<String>,
    /// Every path in the image.
    pub entries: Vec<ManifestEntry>,
}

/// A Debian package as installed into an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PackageRecord {
    /// Package name.
    pub name: String,
    /// Exact version.
    pub version: String,
    /// Its architecture (`amd64`, `all`).
    pub architecture: String,
    /// sha256 of the .deb, as the signed index gave it.
    pub deb_sha256: String,
    /// The control file's Maintainer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintainer: Option<String>,
    /// The source package, when its name differs (the control file's Source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The control file's Homepage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    /// The licenses its machine-readable `/usr/share/doc/NAME/copyright` names (the
    /// short names of its `License:` fields, as written), when it has one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copyright_licenses: Vec<String>,
}

impl ManifestEntry {
    /// `digest` is the content's for regular files (and the file a hard link names).
    pub fn from_entry(path: &str, e: &Entry, digest: Option<FileDigest>) -> ManifestEntry {
        let (sha256, sparse_sha256) = match digest {
            Some(FileDigest::Sha256(h)) => (Some(h), None),
            Some(FileDigest::Sparse(h)) => (None, Some(h)),
            None => (None, None),
        };
        let mut m = ManifestEntry {
            path: format!("/{path}"),
            kind: e.kind.name().to_string(),
            mode: format!("{:04o}", e.meta.mode),
            uid: e.meta.uid,
            gid: e.meta.gid,
            size: None,
            sha256,
            sparse_sha256,
            target: None,
            major: None,
            minor: None,
        };
        match &e.kind {
            Kind::File(d) => m.size = Some(d.len()),
            Kind::Symlink(t) => m.target = Some(t.clone()),
            Kind::HardLink(t) => m.target = Some(format!("/{t}")),
            Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                m.major = Some(*major);
                m.minor = Some(*minor);
            }
            _ => {}
        }
        m
    }
}

impl ManifestEntry {
    /// The entry for `path` in `tree`; a hard link reports the size of the file it names.
    pub fn in_tree(
        tree: &Tree,
        path: &str,
        e: &Entry,
        digest: Option<FileDigest>,
    ) -> ManifestEntry {
        let mut m = ManifestEntry::from_entry(path, e, digest);
        if let Kind::HardLink(t) = &e.kind {
            if let Some(Kind::File(d)) = tree.get(t).map(|x| &x.kind) {
                m.size = Some(d.len());
            }
        }
        m
    }
}

impl Manifest {
    /// A short form of the image's digest for messages: the first 16 hex digits,
    /// marked `sparse` for the sparse digest.
    pub fn short_digest(&self) -> String {
        match (&self.image_sha256, &self.image_sparse_sha256) {
            (Some(h), _) => format!("sha256 {}", &h[..16.min(h.len())]),
            (None, Some(h)) => format!("sparse sha256 {}", &h[..16.min(h.len())]),
            (None, None) => "no digest".to_string(),
        }
    }

    /// Pretty-printed JSON, ending with a newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}
