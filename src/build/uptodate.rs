//! Whether a build's outputs are up to date, so that a build whose inputs did not change
//! costs nothing.
//!
//! A build's key is a digest of everything that decides its outputs' bytes and is known
//! before building: kiln itself (version and executable), the merged profile (its
//! meaning, not its comments; `[qemu]`, `[matrix]` and `description` only shape runs),
//! the command line's kernel and mirror, `SOURCE_DATE_EPOCH` and the packages selected
//! (the lock, or a fresh resolution). The host files the build read are stamped one by
//! one: size, modification and change times and inode as a fast path, confirmed by a
//! digest of the content, mode, owner and extended attributes when the stamp differs.
//! An overlay's paths are stamped from what its walk read (one look at the host, not
//! three: on a tree of 11 000 paths the second and third cost about 0.13 s), and their
//! files' content digests are those the image writer computed from the bytes it wrote.
//! The outputs are stamped the same way, without a digest: any write to them changes
//! their change time, which nobody can set back.
//!
//! The record (`OUT/.NAME.kiln-build`) is removed before new outputs are committed and
//! written after, so it always describes the outputs beside it. A build killed in
//! between leaves none, and the next build runs in full.
//!
//! The record also keeps the content digest the writer computed for each host file, so
//! that a build that is not a no-op need not hash again the overlay files that did not
//! change: see [`Key::known_contents`].

use foldhash::{HashMap, HashMapExt, HashSet};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::output::manifest::Manifest;
use crate::plan::{BuildOptions, Plan};
use crate::profile::{LoadedProfile, Profile};
use crate::source::overlay::Seen;
use crate::tree::digest::FileDigest;
use crate::tree::{Data, Kind, Tree};
use crate::util::atomic;

mod host_digest;
mod known;

use host_digest::{host_digest, seen_digest};
use known::parse_digest;
pub use known::KnownContents;

/// What the record says; a record of another format is a rebuild.
const FORMAT: u32 = 3;

/// How long before a build began a host file must have last changed for the content
/// digest that build computed to be reused (see [`Key::known_contents`]): well over the
/// granularity of file timestamps (the kernel's clock ticks every few milliseconds; FAT
/// keeps modification times to 2 s).
const SETTLED_NS: i64 = 3_000_000_000;

/// The key of one build and the host paths it names.
pub struct Key {
    digest: String,
    /// When this build began, in nanoseconds since the Unix epoch: before it read any
    /// host file.
    began_ns: i64,
    /// The last build's record, once read.
    previous: std::cell::OnceCell<Option<Record>>,
    /// Host files and directories the profile or the command line names.
    named: Vec<PathBuf>,
    /// Directories whose whole contents become image files: overlays.
    walked: Vec<PathBuf>,
}

/// One file's identity at a moment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Stamp {
    path: PathBuf,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    /// Content, mode, owner and xattrs (host inputs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    /// The content's digest as the image writer computed it (files it wrote only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    format: u32,
    key: String,
    /// The kiln that wrote it: another kiln's content digests are not reused.
    kiln: String,
    /// When the build began (see [`Key::began_ns`]).
    began_ns: i64,
    /// The image it wrote: a record of another format's build (the same name) gives
    /// no digests, whose kind (plain or sparse) could differ.
    image: PathBuf,
    hosts: Vec<Stamp>,
    outputs: Vec<Stamp>,
}

fn record_path(plan: &Plan) -> PathBuf {
    plan.out_dir.join(format!(".{}.kiln-build", plan.name))
}

/// What of a profile decides its image's bytes. Destructured field by field, so that a
/// new profile key cannot be forgotten here.
fn image_meaning(p: &Profile) -> String {
    let Profile {
        version,
        include,
        name,
        description: _,
        source_date_epoch,
        variables,
        output,
        distribution,
        kernel,
        overlay,
        file,
        directory,
        symlink,
        hardlink,
        device,
        binary,
        remove,
        system,
        test,
        qemu: _,
        matrix: _,
        network,
        host,
    } = p;
    format!(
        "{:?}",
        (
            (version, include, name, source_date_epoch, variables, output),
            (distribution, kernel, overlay, file, directory, symlink),
            (hardlink, device, binary, remove, system, test),
            (network, host),
        )
    )
}

/// Which host files the `[[binary]]` executables (and a `[host]` image's busybox) are,
/// with the libraries they load: a bare name follows $PATH, and a library follows the
/// host's library directories, so the same profile can name other files tomorrow. The
/// files' contents are stamped like every host input.
fn host_executables(lp: &LoadedProfile) -> String {
    use crate::source::elf;
    let mut named: Vec<(String, Option<PathBuf>)> = lp
        .profile
        .binary
        .iter()
        .map(|b| {
            let host = if b.source.contains('/') {
                match &b.loc {
                    Some(loc) if !b.source.starts_with('/') => Some(loc.dir().join(&b.source)),
                    _ => Some(PathBuf::from(&b.source)),
                }
            } else {
                elf::which(&b.source)
            };
            (b.source.clone(), host)
        })
        .collect();
    if lp.profile.host.is_some() {
        named.push(("busybox".to_string(), elf::which("busybox")));
    }
    let resolved: Vec<_> = named
        .into_iter()
        .map(|(name, host)| {
            let closure = host
                .as_deref()
                .map(|h| elf::closure(h).map_err(|e| e.to_string()));
            (name, host, closure)
        })
        .collect();
    format!("{resolved:?}")
}

/// A digest of labelled values, each told from the next by its label and length.
#[derive(Default)]
pub(super) struct KeyHasher(Sha256);

impl KeyHasher {
    /// Adds `value`, under `label`.
    pub(super) fn put(&mut self, label: &str, value: &str) {
        self.0.update(label.as_bytes());
        self.0.update((value.len() as u64).to_le_bytes());
        self.0.update(value.as_bytes());
    }

    /// The digest, hex.
    pub(super) fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// kiln's own identity: its version, and its executable's size and time, so that a
/// rebuilt kiln (whose writers may have changed) rebuilds images.
pub(super) fn kiln_identity() -> String {
    let exe = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| format!("{} {}.{}", m.len(), m.mtime(), m.mtime_nsec()))
        .unwrap_or_default();
    format!("{} {exe}", env!("CARGO_PKG_VERSION"))
}

impl Key {
    /// The key of building `lp` with `opts` by `plan`, whose packages are `selection`
    /// (a digest from the package source; None without packages).
    pub fn new(
        lp: &LoadedProfile,
        opts: &BuildOptions,
        plan: &Plan,
        selection: Option<&str>,
    ) -> Key {
        let mut h = KeyHasher::default();
        let mut put = |label: &str, value: &str| h.put(label, value);
        put("format", &FORMAT.to_string());
        put("kiln", &kiln_identity());
        put("profile", &image_meaning(&lp.profile));
        put("name", &lp.name);
        put("out", &plan.out_dir.to_string_lossy());
        put(
            "options",
            &format!(
                "{:?}",
                (
                    &opts.kernel,
                    &opts.kernel_tree,
                    &opts.packages.mirror,
                    opts.packages.ignore_valid_until
                )
            ),
        );
        put("epoch", &plan.epoch.to_string());
        put("host executables", &host_executables(lp));
        put("packages", selection.unwrap_or("none"));
        let mut named = lp.host_paths.clone();
        named.extend(opts.kernel.iter().chain(&opts.kernel_tree).cloned());
        let walked = lp
            .profile
            .overlay
            .iter()
            .map(|o| o.source.0.clone())
            .collect();
        Key {
            digest: h.finish(),
            began_ns: now_ns(),
            previous: std::cell::OnceCell::new(),
            named,
            walked,
        }
    }

    /// The content digests the last build of `plan` computed for host files it wrote
    /// into the image (none with `rebuild`, or from another kiln). [`KnownContents::get`]
    /// gives one only for a file whose stamp is still the recorded one and that had last
    /// changed over [`SETTLED_NS`] before that build began: any write since would have
    /// given it a later change time, which nobody can set back.
    pub fn known_contents(&self, plan: &Plan, rebuild: bool) -> KnownContents {
        let record = (!rebuild)
            .then(|| self.previous(plan))
            .flatten()
            .filter(|r| r.format == FORMAT && r.kiln == kiln_identity() && r.image == plan.image);
        let Some(r) = record else {
            return KnownContents::new(HashMap::new());
        };
        let known = r
            .hosts
            .iter()
            .filter(|s| s.ctime_ns < r.began_ns - SETTLED_NS)
            .filter_map(|s| {
                let content = parse_digest(s.content.as_deref()?)?;
                Some((s.path.clone(), (s.clone(), content)))
            })
            .collect();
        KnownContents::new(known)
    }

    /// The outputs of `plan`, when they are those a build with this key made and nothing
    /// they were made from changed since; None when a build is due.
    pub fn up_to_date(&self, plan: &Plan) -> Option<Vec<PathBuf>> {
        let r = self.previous(plan)?;
        let current = r.format == FORMAT
            && r.key == self.digest
            && !r.outputs.is_empty()
            && r.outputs
                .iter()
                .all(|o| stamp(&o.path).ok().as_ref() == Some(o))
            && r.hosts.iter().all(unchanged);
        current.then(|| r.outputs.iter().map(|o| o.path.clone()).collect())
    }

    /// The record of `plan`'s last build, read once: the up-to-date check and the known
    /// contents both need it, and it holds a stamp per overlay path.
    fn previous(&self, plan: &Plan) -> Option<&Record> {
        self.previous.get_or_init(|| read_record(plan)).as_ref()
    }

    /// Forgets the record of `plan`'s outputs, before they are replaced.
    pub fn forget(plan: &Plan) -> Result<()> {
        match std::fs::remove_file(record_path(plan)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", record_path(plan).display()))
            }
            _ => Ok(()),
        }
    }

    /// Stamps the host files `tree` and the profile were made of, before the writer
    /// reads them: a file that changes while the image is written then differs from its
    /// stamp, and its digest decides. What the overlays' walks `seen` is stamped as they
    /// read it, without a second look; the digests of the files the writer hashes come
    /// from its manifest, in [`Key::record`].
    pub fn stamp_inputs(&self, tree: &Tree, seen: Vec<Seen>) -> Result<Inputs> {
        // Keyed by the paths' bytes: hashing a Path walks its components, which is slow.
        let walked: HashSet<&OsStr> = seen.iter().map(|s| s.path.as_os_str()).collect();
        // The host files the writer reads that no walk looked at ([[file]] sources).
        let written: HashSet<&OsStr> = tree
            .iter()
            .filter_map(|(_, e)| match &e.kind {
                Kind::File(Data::Host { path, .. }) => Some(path.as_os_str()),
                _ => None,
            })
            .filter(|p| !walked.contains(p))
            .collect();
        let mut others: Vec<&OsStr> = self
            .named
            .iter()
            .chain(&self.walked)
            .map(|p| p.as_os_str())
            .filter(|p| !walked.contains(p))
            .chain(written.iter().copied())
            .collect();
        others.sort();
        others.dedup();
        let mut stamped = Vec::with_capacity(others.len());
        for p in others {
            let p = Path::new(p);
            // A path the profile names but the build did not need (a keyring of an
            // offline build) may be missing: its appearing is a change too.
            let mut s = stamp(p).unwrap_or_else(|_| missing(p));
            if !written.contains(p.as_os_str()) {
                s.digest = Some(host_digest(p, None).unwrap_or_default());
            }
            stamped.push(s);
        }
        // What the walks saw is stamped from what they read, off the build's serial path,
        // in digest_inputs.
        Ok(Inputs {
            seen,
            others: stamped,
        })
    }

    /// Finishes the stamps of the host inputs: the digests of their contents as the
    /// writer hashed them (its `manifest` of `tree`), or as read now for the rest.
    pub fn digest_inputs(inputs: Inputs, tree: &Tree, manifest: &Manifest) -> Digested {
        let by_image_path: HashMap<&str, FileDigest> = manifest
            .entries
            .iter()
            .filter_map(|e| {
                let d = match (&e.sha256, &e.sparse_sha256) {
                    (Some(h), _) => FileDigest::Sha256(h.clone()),
                    (None, Some(h)) => FileDigest::Sparse(h.clone()),
                    _ => return None,
                };
                Some((e.path.strip_prefix('/').unwrap_or(&e.path), d))
            })
            .collect();
        let by_host_path: HashMap<&OsStr, &FileDigest> = tree
            .iter()
            .filter_map(|(p, e)| match &e.kind {
                Kind::File(Data::Host { path, .. }) => {
                    Some((path.as_os_str(), by_image_path.get(p.as_str())?))
                }
                _ => None,
            })
            .collect();
        let mut hosts = Vec::with_capacity(inputs.seen.len() + inputs.others.len());
        for seen in inputs.seen {
            let mut stamp = stamp_of(&seen.path, &seen.md);
            let content = by_host_path.get(stamp.path.as_os_str()).copied();
            stamp.content = content.map(|c| c.to_string());
            stamp.digest = Some(seen_digest(seen, content));
            hosts.push(stamp);
        }
        for mut stamp in inputs.others {
            if stamp.digest.is_none() {
                let content = by_host_path.get(stamp.path.as_os_str()).copied();
                stamp.content = content.map(|c| c.to_string());
                stamp.digest = Some(host_digest(&stamp.path, content).unwrap_or_default());
            }
            hosts.push(stamp);
        }
        hosts.sort_unstable_by(|a, b| a.path.as_os_str().cmp(b.path.as_os_str()));
        Digested(hosts)
    }

    /// Records the key of the outputs just committed, and the host inputs they were
    /// made from.
    pub fn record(&self, plan: &Plan, inputs: Digested, outputs: &[PathBuf]) -> Result<()> {
        let outputs = outputs
            .iter()
            .map(|o| stamp(o))
            .collect::<Result<Vec<_>>>()?;
        let r = Record {
            format: FORMAT,
            key: self.digest.clone(),
            kiln: kiln_identity(),
            began_ns: self.began_ns,
            image: plan.image.clone(),
            hosts: inputs.0,
            outputs,
        };
        let json = serde_json::to_vec(&r).context("encoding the build record")?;
        atomic::write(&record_path(plan), &json)
    }
}

fn read_record(plan: &Plan) -> Option<Record> {
    let bytes = std::fs::read(record_path(plan)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The host inputs of a build, stamped before the image was written.
pub struct Inputs {
    /// What the overlays' walks read, stamped from that.
    seen: Vec<Seen>,
    /// The other host inputs, stamped before the image was written.
    others: Vec<Stamp>,
}

/// The host inputs of a build with their digests, ready to be recorded.
pub struct Digested(Vec<Stamp>);

fn missing(p: &Path) -> Stamp {
    Stamp {
        path: p.to_path_buf(),
        size: 0,
        mtime_ns: 0,
        ctime_ns: 0,
        ino: 0,
        digest: None,
        content: None,
    }
}

fn stamp(p: &Path) -> Result<Stamp> {
    let m = std::fs::symlink_metadata(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(stamp_of(p, &m))
}

fn stamp_of(p: &Path, m: &Metadata) -> Stamp {
    Stamp {
        path: p.to_path_buf(),
        size: m.len(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        ino: m.ino(),
        digest: None,
        content: None,
    }
}

/// Whether a host input is as recorded: the same stamp, or the same digest.
fn unchanged(recorded: &Stamp) -> bool {
    let now = stamp(&recorded.path).unwrap_or_else(|_| missing(&recorded.path));
    let same_stamp = Stamp {
        digest: recorded.digest.clone(),
        content: recorded.content.clone(),
        ..now
    } == *recorded;
    same_stamp
        || host_digest(&recorded.path, None).unwrap_or_default()
            == recorded.digest.clone().unwrap_or_default()
}
