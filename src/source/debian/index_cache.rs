//! The parsed-index cache: what kiln needs of a suite's Packages index, kept in the cache
//! under the sha256 the signed Release gives the index, so that an unlocked build
//! resolves without decompressing and reading the whole index again.
//!
//! The stored form is the index itself, cut down to the packages of one architecture
//! (and `all`) and to the fields [`super::index::Index::parse`] reads, compressed with
//! zstd with its content checksum: about a fifth of the text, read back in a few
//! milliseconds, and parsed by the same code as the original (so the two cannot
//! disagree). A damaged entry fails its checksum and is made again from the index.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::util::atomic;
use crate::util::cache::Cache;

/// Bumped when the kept fields change.
const FORMAT: u32 = 2;

/// The fields `Index::parse` reads; everything else (descriptions, maintainers, tags...)
/// is most of an index and is dropped.
const KEPT: [&str; 14] = [
    "Package",
    "Version",
    "Architecture",
    "Multi-Arch",
    "Essential",
    "Priority",
    "Depends",
    "Pre-Depends",
    "Provides",
    "Conflicts",
    "Breaks",
    "Filename",
    "Size",
    "SHA256",
];

fn entry(cache: &Cache, sha256: &str, arch: &str) -> PathBuf {
    cache
        .root()
        .join("index")
        .join(format!("{sha256}-{arch}.v{FORMAT}.zst"))
}

/// The cut-down text of the index whose signed sha256 is `sha256`, for `arch`: from
/// the cache, or made by `full` (a reader of the whole decompressed index) and kept.
pub fn packages_text(
    cache: &Cache,
    sha256: &str,
    arch: &str,
    full: impl FnOnce() -> Result<Box<dyn Read>>,
) -> Result<String> {
    let path = entry(cache, sha256, arch);
    if let Ok(bytes) = std::fs::read(&path) {
        match decode(&bytes) {
            Some(text) => return Ok(text),
            None => crate::util::progress::warn(format!(
                "{} is damaged; reading the index again",
                path.display()
            )),
        }
    }
    let text = cut(std::io::BufReader::new(full()?), arch)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3)?;
    enc.include_checksum(true)?;
    // The size in the frame lets the reader allocate the text once, exactly.
    enc.set_pledged_src_size(Some(text.len() as u64))?;
    enc.write_all(text.as_bytes())?;
    atomic::write(&path, &enc.finish()?)?;
    Ok(text)
}

/// The text of a stored entry; None when it is damaged.
fn decode(bytes: &[u8]) -> Option<String> {
    let size = zstd::zstd_safe::get_frame_content_size(bytes).ok()??;
    let mut out = Vec::with_capacity(usize::try_from(size).ok()?);
    let mut d = zstd::stream::read::Decoder::new(bytes).ok()?;
    d.read_to_end(&mut out).ok()?;
    (out.len() as u64 == size).then_some(())?;
    String::from_utf8(out).ok()
}

/// The paragraphs of `arch` and `all`, with only the kept fields, streamed: the whole
/// index is never held in memory.
fn cut(mut r: impl BufRead, arch: &str) -> Result<String> {
    let mut out = String::new();
    let mut para = String::new();
    let mut keep_para = true;
    let mut line = String::new();
    loop {
        line.clear();
        let n = r
            .read_line(&mut line)
            .context("reading the Packages index")?;
        let body = line.trim_end_matches(['\n', '\r']);
        if n == 0 || body.trim().is_empty() {
            if !para.is_empty() && keep_para {
                out.push_str(&para);
                out.push('\n');
            }
            para.clear();
            keep_para = true;
            if n == 0 {
                return Ok(out);
            }
            continue;
        }
        if body.starts_with([' ', '\t']) {
            // Continuation lines belong to fields the parser does not read.
            continue;
        }
        let Some((key, value)) = body.split_once(':') else {
            continue;
        };
        let key = key.trim();
        if key.eq_ignore_ascii_case("Architecture") {
            let a = value.trim();
            keep_para = a == arch || a == "all";
        }
        if KEPT.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            para.push_str(body);
            para.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::debian::index::Index;

    const INDEX: &str = "Package: a\nVersion: 1\nArchitecture: amd64\nMaintainer: x\nDepends: b (>= 2) | c\nDescription: long\n text that continues\n .\nFilename: pool/a.deb\nSize: 10\nSHA256: AB\n\nPackage: b\nVersion: 2\nArchitecture: arm64\nFilename: pool/b.deb\nSize: 1\nSHA256: cd\n\nPackage: c\nVersion: 3\nArchitecture: all\nProvides: v (= 1)\nFilename: pool/c.deb\nSize: 1\nSHA256: ef\n";

    #[test]
    fn the_cut_index_parses_to_the_same_packages() {
        let cutdown = cut(INDEX.as_bytes(), "amd64").unwrap();
        assert!(!cutdown.contains("Description") && !cutdown.contains("arm64"));
        let a = Index::parse(INDEX, "amd64").unwrap();
        let b = Index::parse(&cutdown, "amd64").unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(a.len(), b.len());
        for i in 0..a.len() {
            assert_eq!(a.get(i), b.get(i));
        }
    }

    #[test]
    fn a_cached_index_is_read_back_and_a_damaged_one_made_again() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::at(d.path().to_path_buf()).unwrap();
        let sha = "0".repeat(64);
        let full = || Ok(Box::new(INDEX.as_bytes()) as Box<dyn Read>);
        let first = packages_text(&cache, &sha, "amd64", full).unwrap();
        let again = packages_text(&cache, &sha, "amd64", || {
            anyhow::bail!("the index must not be read again")
        })
        .unwrap();
        assert_eq!(first, again);
        let path = entry(&cache, &sha, "amd64");
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(packages_text(&cache, &sha, "amd64", full).unwrap(), first);
    }
}
