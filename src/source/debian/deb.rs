//! Reading .deb files: the control members dpkg keeps, and data.tar decompressed once
//! into the cache with an index of its members, so every later build reads file bytes
//! straight out of it at known offsets, with no decompression and no unpacking.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::tree::digest::{self, FileDigest};
use crate::util::cache::Cache;

/// One member of a package's data.tar.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    /// Path as in the package, normalised ("usr/bin/ls"); "" for the root.
    pub path: String,
    /// d directory, f file, l symlink, h hard link, c char, b block, p fifo.
    pub kind: char,
    /// Permission bits (mode & 0o7777), without the file type.
    pub mode: u32,
    /// Owner's numeric user id.
    pub uid: u32,
    /// Owner's numeric group id.
    pub gid: u32,
    /// Modification time, in seconds since the Unix epoch.
    pub mtime: i64,
    /// Length in bytes of a regular file; 0 for every other kind.
    #[serde(default)]
    pub size: u64,
    /// Offset of the file's bytes in the uncompressed data.tar.
    #[serde(default)]
    pub offset: u64,
    /// The target of a symlink or hard link (`l`, `h`), as the tar gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Device major number (`c`, `b`); 0 otherwise.
    #[serde(default)]
    pub major: u32,
    /// Device minor number (`c`, `b`); 0 otherwise.
    #[serde(default)]
    pub minor: u32,
    /// A regular file's digest, as a manifest gives it: computed once here, so that
    /// no build hashes the package's files again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<FileDigest>,
}

/// What kiln keeps of a .deb, cached under the .deb's sha256.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unpacked {
    /// The .deb's sha256, which names this cache entry.
    pub deb_sha256: String,
    /// sha256 of the decompressed data.tar, checked whenever the cache entry is reused.
    pub data_sha256: String,
    /// Length in bytes of the decompressed data.tar.
    pub data_size: u64,
    /// The control file.
    pub control: String,
    /// Other control members dpkg keeps in /var/lib/dpkg/info (md5sums, conffiles,
    /// maintainer scripts, triggers, shlibs, …), by name. Cached as files of their own
    /// beside the index (`info/NAME`), not inside it.
    #[serde(skip)]
    pub info: BTreeMap<String, Vec<u8>>,
    /// The names of `info`'s members, in the cached index.
    #[serde(default)]
    info_names: Vec<String>,
    /// Every member of data.tar, in archive order.
    pub members: Vec<Member>,
    /// Where the decompressed data.tar is in the cache; not stored in the entry's index.json.
    #[serde(skip)]
    pub data_tar: PathBuf,
}

/// The cached index's format; 4 since the sparse digest of members became its v2.
const FORMAT: u32 = 4;

impl Unpacked {
    /// A field of the control file, by case-insensitive name.
    pub fn control_field(&self, name: &str) -> Option<String> {
        super::control::parse(&self.control)
            .into_iter()
            .next()
            .and_then(|p| p.get(name).map(String::from))
    }
}

fn decompressor<'a>(name: &str, r: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    crate::util::decompress::by_suffix(name, ".tar", r)
}

/// The most a control.tar may decompress to: its members are the control file, md5sums
/// and maintainer scripts, a few MiB for the largest packages.
const MAX_CONTROL: u64 = 64 << 20;

/// What data.tar may decompress to: twice the package's Installed-Size (KiB) plus room
/// for tar's headers, or a fixed ceiling when the package does not say.
fn data_limit(control: Option<&str>) -> u64 {
    let installed_kib = control
        .and_then(|c| super::control::parse(c).into_iter().next())
        .and_then(|p| {
            p.get("Installed-Size")
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
    match installed_kib {
        Some(kib) => kib.saturating_mul(2048).saturating_add(256 << 20),
        None => 16 << 30,
    }
}

fn read_control(name: &str, r: impl Read) -> Result<(String, BTreeMap<String, Vec<u8>>)> {
    let bounded = crate::util::decompress::Bounded::new(decompressor(name, r)?, MAX_CONTROL, name);
    let mut tar = tar::Archive::new(bounded);
    let mut control = None;
    let mut info = BTreeMap::new();
    for e in tar.entries()? {
        let mut e = e?;
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = String::from_utf8_lossy(&e.path_bytes())
            .trim_start_matches("./")
            .to_string();
        let mut buf = Vec::new();
        e.read_to_end(&mut buf)?;
        if path == "control" {
            control = Some(String::from_utf8_lossy(&buf).into_owned());
        } else if !path.is_empty() && !path.contains('/') {
            info.insert(path, buf);
        }
    }
    Ok((control.context("the package has no control file")?, info))
}

fn index_tar(path: &Path) -> Result<Vec<Member>> {
    use std::os::unix::fs::FileExt;
    let f = File::open(path)?;
    let again = File::open(path)?;
    let mut tar = tar::Archive::new(BufReader::with_capacity(1 << 16, f));
    let mut out = Vec::new();
    for e in tar.entries_with_seek()? {
        let mut e = e?;
        let h = e.header();
        let raw = e.path_bytes();
        let raw = std::str::from_utf8(&raw)
            .with_context(|| format!("non-UTF-8 path {:?}", String::from_utf8_lossy(&raw)))?
            .to_string();
        let p = crate::tree::path::relative(&raw).map_err(anyhow::Error::msg)?;
        let kind = match h.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Regular | tar::EntryType::Continuous => 'f',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Char => 'c',
            tar::EntryType::Block => 'b',
            tar::EntryType::Fifo => 'p',
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => continue,
            other => bail!("member {raw} has tar type {other:?}, which kiln cannot store"),
        };
        let link = match kind {
            'l' | 'h' => Some(
                String::from_utf8_lossy(&e.link_name_bytes().context("link without a target")?)
                    .into_owned(),
            ),
            _ => None,
        };
        let offset = e.raw_file_position();
        let digest = match kind {
            'f' => {
                let reread = |buf: &mut [u8], at: u64| again.read_exact_at(buf, offset + at);
                let size = e.size();
                Some(
                    digest::of_reader(&mut e, size, &reread)
                        .with_context(|| format!("reading member {raw}"))?,
                )
            }
            _ => None,
        };
        let h = e.header();
        out.push(Member {
            path: p,
            kind,
            mode: h.mode()? & 0o7777,
            uid: h.uid()? as u32,
            gid: h.gid()? as u32,
            mtime: h.mtime()? as i64,
            size: if kind == 'f' { e.size() } else { 0 },
            offset: if kind == 'f' { offset } else { 0 },
            link,
            major: h.device_major().ok().flatten().unwrap_or(0),
            minor: h.device_minor().ok().flatten().unwrap_or(0),
            digest,
        });
    }
    Ok(out)
}

/// Unpacks (once) and returns the cached form of the .deb at `deb` with hash `sha256`.
pub fn unpack(cache: &Cache, deb: &Path, sha256: &str) -> Result<Unpacked> {
    let dir = cache
        .root
        .join("unpacked")
        .join(format!("{sha256}.v{FORMAT}"));
    let index_path = dir.join("index.json");
    let data_path = dir.join("data.tar");
    let _lock = cache.lock(&format!("unpack-{sha256}"))?;
    if let Ok(text) = std::fs::read(&index_path) {
        if let Ok(mut u) = serde_json::from_slice::<Unpacked>(&text) {
            let info: Option<BTreeMap<String, Vec<u8>>> = u
                .info_names
                .iter()
                .map(|n| Some((n.clone(), std::fs::read(dir.join("info").join(n)).ok()?)))
                .collect();
            let ok = info.is_some()
                && std::fs::metadata(&data_path)
                    .map(|m| m.len() == u.data_size)
                    .unwrap_or(false)
                && crate::util::cache::hashes_to(&data_path, &u.data_sha256).unwrap_or(false);
            if ok && u.deb_sha256 == sha256 {
                u.data_tar = data_path;
                u.info = info.unwrap_or_default();
                return Ok(u);
            }
            crate::util::progress::warn(format!(
                "cached unpack of {} was damaged; unpacking again",
                deb.display()
            ));
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix("unpack-")
        .tempdir_in(cache.tmp_dir())?;
    // A build killed half way leaves it for the next one to remove.
    let _held = crate::util::atomic::hold_dir(tmp.path());
    let mut control = None;
    let mut data = None;
    let mut ar =
        ar::Archive::new(File::open(deb).with_context(|| format!("opening {}", deb.display()))?);
    while let Some(entry) = ar.next_entry() {
        let mut entry =
            entry.with_context(|| format!("reading {} as an ar archive", deb.display()))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if name.starts_with("control.tar") {
            control = Some(
                read_control(&name, &mut entry)
                    .with_context(|| format!("{}: {name}", deb.display()))?,
            );
        } else if name.starts_with("data.tar") {
            let out_path = tmp.path().join("data.tar");
            let mut out = std::io::BufWriter::with_capacity(1 << 20, File::create(&out_path)?);
            let limit = data_limit(control.as_ref().map(|(c, _)| c.as_str()));
            let mut dec = crate::util::decompress::Bounded::new(
                decompressor(&name, &mut entry)?,
                limit,
                format!(
                    "{name} (Installed-Size allows {})",
                    crate::util::size::human_bytes(limit)
                ),
            );
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut size = 0u64;
            loop {
                let n = dec
                    .read(&mut buf)
                    .with_context(|| format!("{}: decompressing {name}", deb.display()))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                out.write_all(&buf[..n])?;
                size += n as u64;
            }
            out.flush()?;
            data = Some((hex::encode(h.finalize()), size));
        }
    }
    let (control, info) =
        control.with_context(|| format!("{} has no control.tar member", deb.display()))?;
    let (data_sha256, data_size) =
        data.with_context(|| format!("{} has no data.tar member", deb.display()))?;
    let members = index_tar(&tmp.path().join("data.tar"))
        .with_context(|| format!("indexing data.tar of {}", deb.display()))?;
    let u = Unpacked {
        deb_sha256: sha256.to_string(),
        data_sha256,
        data_size,
        control,
        info_names: info.keys().cloned().collect(),
        info,
        members,
        data_tar: PathBuf::new(),
    };
    let info_dir = tmp.path().join("info");
    std::fs::create_dir(&info_dir)?;
    for (name, bytes) in &u.info {
        // read_control keeps only plain names; "." and ".." are not files.
        if name == "." || name == ".." {
            bail!(
                "{}: control member {name:?} is not a file name",
                deb.display()
            );
        }
        std::fs::write(info_dir.join(name), bytes)?;
    }
    std::fs::write(tmp.path().join("index.json"), serde_json::to_vec(&u)?)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let tmp_path = tmp.keep();
    std::fs::rename(&tmp_path, &dir)
        .with_context(|| format!("moving unpacked {} into the cache", deb.display()))?;
    Ok(Unpacked {
        data_tar: data_path,
        ..u
    })
}
