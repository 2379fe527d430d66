//! Debian packages without apt, dpkg or root: resolve from the signed index, fetch into
//! the cache, unpack into the tree.
//!
//! Over 500 lines because this is the seam's one implementation: the source (lock or
//! resolve, then fetch) and the fetched packages behind `FetchedPackages`; each step
//! already lives in its own module below, and what stays here is their order.

pub mod cell_kernel;
pub mod cleartext;
pub mod control;
pub mod deb;
pub mod debug;
pub mod deps;
pub mod dpkg;
pub mod index;
pub mod index_cache;
pub mod install;
pub mod kernel;
pub mod lock;
pub mod mirror;
pub mod postinst_users;
pub mod release;
pub mod resolution;
pub mod resolve;
pub mod version;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};

use crate::profile::{Distribution, Kernel, LoadedProfile};
use crate::util::cache::Cache;
use crate::util::progress;
use crate::util::{download as fetch, http};
use deb::Unpacked;
use index::Index;
use lock::{LockFile, LockedPackage};

pub use source::{Debian, DebianFetched};

mod source;

/// The keyring that signs Debian's archive, as the debian-archive-keyring package installs it.
pub const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The package that gives a disk's boot initramfs its shell and tools.
pub const BOOT_SHELL: &str = "busybox-static";

/// Command-line settings for package handling.
pub type DebianOptions = crate::source::PackageOptions;

/// The mirror to use, without a trailing slash: --mirror, else the profile's, else the first
/// Debian archive in the host's apt configuration.
pub fn mirror(d: &Distribution, opts: &DebianOptions) -> Result<String> {
    if let Some(m) = opts.mirror.clone().or_else(|| d.mirror.clone()) {
        return Ok(m.trim_end_matches('/').to_string());
    }
    mirror::default_mirror(Path::new("/etc/apt")).context(
        "no Debian mirror found in the host's apt configuration (/etc/apt/sources.list, /etc/apt/sources.list.d/); \
         set `mirror` in [distribution] or pass --mirror",
    )
}

/// The keyring that must sign the archive: the profile's, else [`DEFAULT_KEYRING`].
pub fn keyring_path(d: &Distribution) -> PathBuf {
    d.keyring
        .as_ref()
        .map(|k| k.0.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_KEYRING))
}

/// The most a Packages index may decompress to.
const MAX_PACKAGES: u64 = 1 << 30;

/// The most an `InRelease` may be: Debian's are a few hundred KiB.
const MAX_INRELEASE: u64 = 16 << 20;

/// The verified Release of a suite and its merged Packages index.
pub struct Archive {
    /// The suite's Release, its signature and Valid-Until checked.
    pub release: release::Release,
    /// The packages of every configured component, for the build's architecture.
    pub index: Index,
}

fn fetch_index(
    cache: &Cache,
    http: &http::Http,
    base: &str,
    rel: &release::Release,
    path_xz: &str,
    what: &str,
    arch: &str,
) -> Result<String> {
    // Prefer .xz; fall back to .gz or uncompressed, whichever the Release lists.
    let stem = path_xz.trim_end_matches(".xz");
    let (path, (sha, size)) = [format!("{stem}.xz"), format!("{stem}.gz"), stem.to_string()]
        .into_iter()
        .find_map(|p| rel.sha256.get(&p).map(|h| (p.clone(), h.clone())))
        .with_context(|| format!("{what}: the Release file does not list {stem}(.xz|.gz); is the component or architecture right?"))?;
    let url = if rel.acquire_by_hash {
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        format!("{base}/{dir}/by-hash/SHA256/{sha}")
    } else {
        format!("{base}/{path}")
    };
    index_cache::packages_text(cache, &sha, arch, || {
        let blob = match cache.verified_blob(&sha)? {
            Some(p) => p,
            None => cache.store(&sha, Some(size), &format!("{path} from {url}"), |f| {
                http.get_to(&url, f, size, &|_| {})?;
                Ok(())
            })?,
        };
        let f = std::fs::File::open(&blob)?;
        // Debian's largest Packages (main, amd64) is under 100 MiB.
        Ok(Box::new(crate::util::decompress::Bounded::new(
            crate::util::decompress::Codec::from_name(&path).reader(std::io::BufReader::new(f))?,
            MAX_PACKAGES,
            path.clone(),
        )))
    })
    .with_context(|| format!("reading {path}"))
}

/// Where a suite's InRelease is kept between builds, for `--index-max-age`; the file's
/// time is when it was fetched.
fn kept_inrelease(cache: &Cache, url: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    cache
        .root()
        .join("release")
        .join(hex::encode(Sha256::digest(url.as_bytes())))
}

/// The kept InRelease of `url` when it was fetched at most `max_age` ago, with its age.
fn recent_inrelease(
    cache: &Cache,
    url: &str,
    max_age: Option<std::time::Duration>,
) -> Option<(Vec<u8>, std::time::Duration)> {
    let max = max_age.filter(|m| !m.is_zero())?;
    let kept = kept_inrelease(cache, url);
    let fetched = std::fs::metadata(&kept).and_then(|m| m.modified()).ok()?;
    let age = SystemTime::now().duration_since(fetched).ok()?;
    if age > max {
        return None;
    }
    Some((std::fs::read(&kept).ok()?, age))
}

/// Fetches and verifies InRelease, then the Packages indexes it vouches for.
pub fn load_archive(
    d: &Distribution,
    opts: &DebianOptions,
    cache: &Cache,
    http: &http::Http,
) -> Result<Archive> {
    let verified = load_release(d, opts, cache, http)?;
    let index = load_index(d, cache, http, &verified)?;
    Ok(Archive {
        release: verified.release,
        index,
    })
}

/// A suite's Release, verified, with where it came from.
pub struct VerifiedRelease {
    /// The parsed Release.
    pub release: release::Release,
    /// sha256 of the signed Release text: it names every index, so it names the archive.
    pub signed_sha256: String,
    /// `MIRROR/dists/SUITE`.
    base: String,
    /// The InRelease URL, for messages.
    url: String,
}

/// Fetches (or, within `--index-max-age`, reads from the cache) and verifies a suite's
/// InRelease.
pub fn load_release(
    d: &Distribution,
    opts: &DebianOptions,
    cache: &Cache,
    http: &http::Http,
) -> Result<VerifiedRelease> {
    let mirror = mirror(d, opts)?;
    let keyring = release::Keyring::load(&keyring_path(d))?;
    let base = format!("{mirror}/dists/{}", d.suite);
    let url = format!("{base}/InRelease");
    let verified = |inrelease: &[u8]| -> Result<(release::Release, String)> {
        let text = std::str::from_utf8(inrelease).with_context(|| format!("{url} is not text"))?;
        let now = SystemTime::now();
        let signed = release::verify_inrelease(text, &keyring, &url, now)?;
        let rel = release::parse_release(&signed)?;
        if rel.codename != d.suite && rel.suite != d.suite {
            bail!(
                "{url}: the signed Release is for {} ({}), not {}; refusing it",
                rel.codename,
                rel.suite,
                d.suite
            );
        }
        release::check_valid_until(
            &rel,
            &url,
            now,
            opts.ignore_valid_until || d.ignore_valid_until.unwrap_or(false),
        )?;
        Ok((
            rel,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(signed.as_bytes())),
        ))
    };
    // A kept copy that no longer verifies (damaged, or past Valid-Until) is fetched again.
    let kept = recent_inrelease(cache, &url, opts.index_max_age)
        .and_then(|(bytes, age)| Some((verified(&bytes).ok()?, age)));
    let (release, signed_sha256) = match kept {
        Some((rel, age)) => {
            progress::step(format!(
                "reading the {} index from {mirror} (its InRelease fetched {:.0} s ago; --index-max-age)",
                d.suite,
                age.as_secs_f64()
            ));
            rel
        }
        None => {
            progress::step(format!("reading the {} index from {mirror}", d.suite));
            let bytes = http.get_bytes(&url, MAX_INRELEASE)?;
            let rel = verified(&bytes)?;
            // Kept only once verified. Failing to keep it costs the next build a fetch.
            let kept = kept_inrelease(cache, &url);
            if let Some(dir) = kept.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = crate::util::atomic::write(&kept, &bytes);
            rel
        }
    };
    Ok(VerifiedRelease {
        release,
        signed_sha256,
        base,
        url,
    })
}

/// The Packages indexes of every configured component that a verified Release vouches
/// for, as one index.
fn load_index(
    d: &Distribution,
    cache: &Cache,
    http: &http::Http,
    v: &VerifiedRelease,
) -> Result<Index> {
    let (rel, base, url) = (&v.release, &v.base, &v.url);
    let arch = lock::architecture(d);
    // The components' indexes, one after another, as one index; each is checked on its
    // own so that an error names it.
    let components = lock::components(d);
    let mut text = String::new();
    let mut index = None;
    for comp in &components {
        let path = format!("{comp}/binary-{arch}/Packages.xz");
        let part = fetch_index(cache, http, base, rel, &path, url, &arch)?;
        let parsed = |t: String| {
            Index::parse_owned(t, &arch).map_err(|e| anyhow::anyhow!("{base}/{path}: {e}"))
        };
        if components.len() == 1 {
            index = Some(parsed(part)?);
        } else {
            parsed(part.clone())?;
            text.push_str(&part);
            text.push_str("\n\n");
        }
    }
    match index {
        Some(i) => Ok(i),
        None => Index::parse_owned(text, &arch).map_err(|e| anyhow::anyhow!("{base}: {e}")),
    }
}

pub(crate) fn locked(index: &Index, i: usize) -> LockedPackage {
    let p = index.get(i);
    LockedPackage {
        name: p.name.clone(),
        version: p.version.clone(),
        architecture: p.arch.clone(),
        size: p.size,
        filename: p.filename.clone(),
        sha256: p.sha256.clone(),
        multi_arch: (p.multi_arch == "same").then(|| "same".to_string()),
    }
}

/// The kernel package and the linux-image packages it depends on (a metapackage such as
/// linux-image-cloud-amd64 points at the versioned one), nothing else.
pub fn resolve_kernel(index: &Index, name: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    let mut queue = vec![resolve::parse_request(name)];
    while let Some(dep) = queue.pop() {
        let Some(&i) = index.candidates(&dep).first() else {
            bail!("kernel package `{dep}` is not in the index");
        };
        if out.contains(&i) {
            continue;
        }
        out.push(i);
        for alts in &index.get(i).depends {
            if let Some(d) = alts.iter().find(|d| kernel::is_kernel_package(&d.name)) {
                queue.push(d.clone());
            }
        }
    }
    out.sort_by(|&a, &b| index.get(a).name.cmp(&index.get(b).name));
    Ok(out)
}

/// Whether the build may make an initramfs to boot a disk, so needs busybox from the
/// archive: a disk image whose kernel is not a fixed host file (a package, a build tree,
/// or none yet: `--kernel-tree` may give one).
pub fn needs_boot_initrd(lp: &LoadedProfile) -> bool {
    lp.profile.kernel.path.is_none()
        && lp.profile.output.format.unwrap_or_default() == crate::profile::Format::Disk
}

/// Resolves a profile's packages against the archive, fresh.
pub fn resolve_fresh(
    lp: &LoadedProfile,
    d: &Distribution,
    opts: &DebianOptions,
    cache: &Cache,
    http: &http::Http,
) -> Result<LockFile> {
    let verified = load_release(d, opts, cache, http)?;
    let k: &Kernel = &lp.profile.kernel;
    let inputs = lock::inputs_hash(d, k, needs_boot_initrd(lp));
    let remembered = resolution::path(cache, &inputs, &verified.signed_sha256);
    if let Some(r) = resolution::read(&remembered) {
        for c in &r.conflicts {
            progress::warn(format!("package conflict: {c}"));
        }
        progress::step(format!(
            "resolved {} packages from {} {} (as the last build did: the same request, the same signed Release)",
            r.lock.packages.len(),
            d.suite,
            r.lock.release_date
        ));
        return Ok(r.lock);
    }
    let archive = Archive {
        index: load_index(d, cache, http, &verified)?,
        release: verified.release,
    };
    let mut requests = d.packages.clone();
    let kernel_in_image = k.install.unwrap_or(false);
    if kernel_in_image {
        if let Some(kp) = &k.package {
            requests.push(kp.value.clone());
        }
    }
    let res = resolve::resolve(
        &archive.index,
        &requests,
        d.base.unwrap_or_default(),
        &d.exclude,
    )
    .map_err(|e| match &lp.profile.distribution {
        // Point at the [distribution] table that asked for the packages.
        Some(dist) => {
            anyhow::Error::new(dist.field_error("packages", format!("resolving packages: {e}")))
        }
        None => anyhow::anyhow!("{}: resolving packages: {e}", lp.path.display()),
    })?;
    for c in &res.conflicts {
        progress::warn(format!("package conflict: {c}"));
    }
    let mut kernel: Vec<LockedPackage> = match &k.package {
        Some(kp) if !kernel_in_image => resolve_kernel(&archive.index, &kp.value)
            .map_err(|e| kp.error(format!("{e:#}")))?
            .into_iter()
            .map(|i| locked(&archive.index, i))
            .collect(),
        _ => Vec::new(),
    };
    if needs_boot_initrd(lp) {
        let r = resolve::resolve(
            &archive.index,
            &[BOOT_SHELL.to_string()],
            crate::profile::Base::None,
            &[],
        )
        .map_err(|e| anyhow::anyhow!("resolving busybox for the boot initramfs: {e}"))?;
        kernel.extend(r.selected.iter().map(|&i| locked(&archive.index, i)));
    }
    progress::step(format!(
        "resolved {} packages from {} {}",
        res.selected.len(),
        d.suite,
        archive.release.date
    ));
    let packages: Vec<LockedPackage> = res
        .selected
        .iter()
        .map(|&i| locked(&archive.index, i))
        .collect();
    let debug_packages = match &k.debug_symbols {
        Some(ds) if ds.value => {
            let kernels: Vec<LockedPackage> = packages.iter().chain(&kernel).cloned().collect();
            debug::resolve_companions(&archive.index, &kernels)
                .map_err(|e| ds.error(format!("{e:#}")))?
        }
        _ => Vec::new(),
    };
    let lock = LockFile {
        version: lock::LOCK_VERSION,
        inputs,
        suite: d.suite.clone(),
        architecture: lock::architecture(d),
        release_date: archive.release.date.clone(),
        packages,
        kernel_packages: kernel,
        debug_packages,
    };
    resolution::write(
        &remembered,
        &resolution::Resolution {
            lock: lock.clone(),
            conflicts: res.conflicts.clone(),
        },
    );
    Ok(lock)
}

/// Whether a profile's lock exists and still matches it.
pub enum LockState {
    /// The lock matches the profile.
    Current(LockFile),
    /// The lock exists but was made from other inputs.
    Stale,
    /// There is no lock file.
    Missing,
}

/// Reads the profile's lock and compares its inputs hash with the profile's.
pub fn lock_state(lp: &LoadedProfile, d: &Distribution) -> Result<LockState> {
    let want = lock::inputs_hash(d, &lp.profile.kernel, needs_boot_initrd(lp));
    Ok(match lock::read(&crate::source::lock_path(&lp.path))? {
        Some(l) if l.inputs == want => LockState::Current(l),
        Some(_) => LockState::Stale,
        None => LockState::Missing,
    })
}

/// The package selection for a build: the lock when it matches the profile, else a fresh
/// resolution (or an error with --locked).
pub fn selection(
    lp: &LoadedProfile,
    d: &Distribution,
    opts: &DebianOptions,
    cache: &Cache,
    http: &http::Http,
) -> Result<LockFile> {
    let path = crate::source::lock_path(&lp.path);
    match lock_state(lp, d)? {
        LockState::Current(l) => {
            progress::step(format!("using {} ({} packages, {} {})", path.display(), l.packages.len(), l.suite, l.release_date));
            Ok(l)
        }
        LockState::Stale if opts.locked => bail!(
            "{} no longer matches {} (its packages, base, suite or kernel changed); run `kiln lock --update {}`",
            path.display(),
            lp.path.display(),
            lp.path.display()
        ),
        LockState::Missing if opts.locked => bail!("--locked: {} does not exist; run `kiln lock {}`", path.display(), lp.path.display()),
        LockState::Stale => {
            progress::warn(format!("{} is out of date; resolving afresh (run `kiln lock --update` to refresh it)", path.display()));
            resolve_and_release(lp, d, opts, cache, http)
        }
        LockState::Missing => resolve_and_release(lp, d, opts, cache, http),
    }
}

/// Resolves, then gives the memory the index took back to the system before the image
/// is written: glibc keeps freed small allocations for reuse, and the index's tens of
/// megabytes would otherwise count again in the build's peak beside the compressor's.
fn resolve_and_release(
    lp: &LoadedProfile,
    d: &Distribution,
    opts: &DebianOptions,
    cache: &Cache,
    http: &http::Http,
) -> Result<LockFile> {
    let lock = resolve_fresh(lp, d, opts, cache, http);
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory to the system; no pointer is touched.
    unsafe {
        libc::malloc_trim(0);
    }
    lock
}

/// Downloads (as needed) and unpacks (once) the given packages.
pub fn fetch_and_unpack(
    pkgs: &[LockedPackage],
    mirror: &str,
    opts: &DebianOptions,
    cache: &Cache,
    http: &http::Http,
) -> Result<Vec<Unpacked>> {
    let downloads: Vec<fetch::Download> = pkgs
        .iter()
        .map(|p| fetch::Download {
            url: format!("{mirror}/{}", p.filename),
            sha256: p.sha256.clone(),
            size: p.size,
            what: format!("{} {} {}", p.name, p.version, p.architecture),
        })
        .collect();
    let jobs = if opts.jobs == 0 {
        fetch::DEFAULT_JOBS
    } else {
        opts.jobs
    };
    let paths = fetch::fetch_all(cache, http, &downloads, jobs)?;
    let work: Vec<(&LockedPackage, &PathBuf)> = pkgs.iter().zip(paths.iter()).collect();
    let pb = progress::items(work.len() as u64, "unpacking");
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let out = fetch::parallel(&work, cpus, |(p, path)| {
        let u = deb::unpack(cache, path, &p.sha256)
            .with_context(|| format!("unpacking {} {}", p.name, p.version))?;
        pb.inc(1);
        Ok(u)
    })?;
    pb.finish_and_clear();
    Ok(out)
}
