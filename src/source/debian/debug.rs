//! The vmlinux of Debian's `-dbg` kernel packages, for gdb, crash and drgn.
//!
//! A `-dbg` package is hundreds of MiB (mostly the modules' debug info), so it is pinned in
//! the lock with the kernel but fetched only when a run needs symbols, and only its vmlinux
//! is kept: streamed out of data.tar into the cache, under the .deb's sha256.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::index::Index;
use super::lock::LockedPackage;
use super::{kernel, locked, resolve, DebianOptions};
use crate::profile::{Distribution, LoadedProfile};
use crate::util::cache::Cache;
use crate::util::http::Http;
use crate::util::{download as fetch, progress};

/// Where a `-dbg` package keeps the vmlinux.
const VMLINUX_PREFIX: &str = "usr/lib/debug/boot/vmlinux-";

/// The `-dbg` companions, at the same version, of the kernel packages among `pkgs`. A
/// metapackage's companion is itself a metapackage and is left out; an error when the
/// versioned kernel has none.
pub fn resolve_companions(index: &Index, pkgs: &[LockedPackage]) -> Result<Vec<LockedPackage>> {
    let mut out = Vec::new();
    let mut wanted = Vec::new();
    for p in pkgs.iter().filter(|p| kernel::is_kernel_package(&p.name)) {
        let name = format!("{}-dbg", p.name);
        let dep = resolve::parse_request(&format!("{name}={}", p.version));
        let found = index.candidates(&dep);
        let Some(&i) = found.first() else {
            wanted.push(format!("{name} {}", p.version));
            continue;
        };
        // A metapackage's -dbg only points at the versioned one, resolved in its turn.
        let meta = index
            .get(i)
            .depends
            .iter()
            .flatten()
            .any(|d| kernel::is_kernel_package(&d.name) && d.name.ends_with("-dbg"));
        if meta {
            continue;
        }
        out.push(locked(index, i));
    }
    if out.is_empty() {
        bail!(
            "debug_symbols: the archive has no -dbg package for the kernel (looked for {}); remove debug_symbols and give [kernel] vmlinux",
            if wanted.is_empty() {
                "a kernel package".to_string()
            } else {
                wanted.join(", ")
            }
        );
    }
    Ok(out)
}

/// The vmlinux of the profile's locked `-dbg` package, fetched and extracted on first use.
/// `None` when the profile does not ask for debug symbols.
pub fn vmlinux(lp: &LoadedProfile, opts: &DebianOptions) -> Result<Option<PathBuf>> {
    let k = &lp.profile.kernel;
    if !k.debug_symbols.as_ref().is_some_and(|d| d.value) {
        return Ok(None);
    }
    let Some(d) = &lp.profile.distribution else {
        return Ok(None);
    };
    let d: &Distribution = &d.value;
    let cache = Cache::open()?;
    let http = Http::new()?.offline(opts.offline);
    // The lock when it is current, as for the image; else a fresh resolution.
    let lock = super::selection(lp, d, opts, &cache, &http)?;
    if lock.debug_packages.is_empty() {
        bail!(
            "{} pins no -dbg package; run `kiln lock --update {}`",
            crate::source::lock_path(&lp.path).display(),
            lp.path.display()
        );
    }
    let mirror = super::mirror(d, opts)?;
    for p in &lock.debug_packages {
        if let Some(found) = extracted(&cache, &p.sha256)? {
            return Ok(Some(found));
        }
    }
    for p in &lock.debug_packages {
        progress::step(format!(
            "fetching {} {} for the kernel's symbols ({})",
            p.name,
            p.version,
            crate::util::size::human_bytes(p.size)
        ));
        let d = fetch::Download {
            url: format!("{mirror}/{}", p.filename),
            sha256: p.sha256.clone(),
            size: p.size,
            what: format!("{} {} {}", p.name, p.version, p.architecture),
        };
        let paths = fetch::fetch_all(&cache, &http, &[d], 1)?;
        if let Some(found) = extract(&cache, &paths[0], &p.sha256)
            .with_context(|| format!("taking the vmlinux out of {} {}", p.name, p.version))?
        {
            return Ok(Some(found));
        }
    }
    bail!(
        "the -dbg packages pinned in {} hold no {VMLINUX_PREFIX}*",
        crate::source::lock_path(&lp.path).display()
    )
}

fn dir(cache: &Cache, deb_sha256: &str) -> PathBuf {
    cache.root.join("vmlinux").join(deb_sha256)
}

/// The vmlinux already taken out of the .deb with this hash.
fn extracted(cache: &Cache, deb_sha256: &str) -> Result<Option<PathBuf>> {
    let Ok(rd) = std::fs::read_dir(dir(cache, deb_sha256)) else {
        return Ok(None);
    };
    Ok(rd.flatten().map(|e| e.path()).find(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("vmlinux-"))
    }))
}

/// Streams data.tar of `deb` until the vmlinux, and moves it into the cache whole or not at
/// all (a directory renamed into place, so a killed extraction leaves nothing half-written).
fn extract(cache: &Cache, deb: &Path, deb_sha256: &str) -> Result<Option<PathBuf>> {
    let _lock = cache.lock(&format!("vmlinux-{deb_sha256}"))?;
    if let Some(found) = extracted(cache, deb_sha256)? {
        return Ok(Some(found));
    }
    let tmp = tempfile::Builder::new()
        .prefix("vmlinux-")
        .tempdir_in(cache.tmp_dir())?;
    // A build killed half way leaves it for the next one to remove.
    let _held = crate::util::atomic::hold_dir(tmp.path());
    let mut ar =
        ar::Archive::new(File::open(deb).with_context(|| format!("opening {}", deb.display()))?);
    let mut name = None;
    while let Some(entry) = ar.next_entry() {
        let entry = entry.with_context(|| format!("reading {} as an ar archive", deb.display()))?;
        let member = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if !member.starts_with("data.tar") {
            continue;
        }
        let mut tar =
            tar::Archive::new(crate::util::decompress::by_suffix(&member, ".tar", entry)?);
        for e in tar.entries()? {
            let mut e = e?;
            let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let Some(release) = path.trim_start_matches("./").strip_prefix(VMLINUX_PREFIX) else {
                continue;
            };
            if e.header().entry_type() != tar::EntryType::Regular
                || release.is_empty()
                || release.contains('/')
            {
                continue;
            }
            let file = format!("vmlinux-{release}");
            let mut out = File::create(tmp.path().join(&file))?;
            let size = e.size();
            std::io::copy(&mut (&mut e).take(size), &mut out)
                .with_context(|| format!("extracting {path}"))?;
            out.sync_all()?;
            name = Some(file);
            break;
        }
        break;
    }
    let Some(name) = name else {
        return Ok(None);
    };
    let dest = dir(cache, deb_sha256);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::rename(tmp.keep(), &dest)
        .with_context(|| format!("moving the vmlinux into {}", dest.display()))?;
    Ok(Some(dest.join(name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::debian::index::Index;

    fn pkg(name: &str, version: &str, size: u64) -> String {
        format!("Package: {name}\nVersion: {version}\nArchitecture: amd64\nSize: {size}\nFilename: pool/{name}.deb\nSHA256: {}\n\n", "0".repeat(64))
    }

    fn lp(name: &str, version: &str) -> LockedPackage {
        LockedPackage {
            name: name.into(),
            version: version.into(),
            architecture: "amd64".into(),
            size: 1,
            filename: String::new(),
            sha256: String::new(),
            multi_arch: None,
        }
    }

    #[test]
    fn finds_the_versioned_companion_at_the_same_version() {
        let text = [
            pkg(
                "linux-image-6.1.0-47-cloud-amd64-dbg",
                "6.1.170-3",
                281_000_000,
            ),
            pkg(
                "linux-image-6.1.0-47-cloud-amd64-dbg",
                "6.1.170-2",
                281_000_000,
            ),
            pkg("linux-image-cloud-amd64-dbg", "6.1.170-3", 1316).replace(
                "\n\n",
                "\nDepends: linux-image-6.1.0-47-cloud-amd64-dbg (= 6.1.170-3)\n\n",
            ),
        ]
        .concat();
        let index = Index::parse(&text, "amd64").unwrap();
        let got = resolve_companions(
            &index,
            &[
                lp("linux-image-6.1.0-47-cloud-amd64", "6.1.170-3"),
                lp("linux-image-cloud-amd64", "6.1.170-3"),
                lp("busybox-static", "1:1.35.0-4"),
            ],
        )
        .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, "linux-image-6.1.0-47-cloud-amd64-dbg");
        assert_eq!(got[0].version, "6.1.170-3");
    }

    #[test]
    fn a_kernel_without_a_companion_is_an_error_naming_it() {
        let index = Index::parse(&pkg("other-dbg", "1", 100_000), "amd64").unwrap();
        let e = resolve_companions(
            &index,
            &[lp("linux-image-6.1.0-47-cloud-amd64", "6.1.170-3")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("linux-image-6.1.0-47-cloud-amd64-dbg 6.1.170-3"),
            "{e}"
        );
    }
}
