//! Parallel, bounded downloads into the content-addressed cache.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, Result};

use crate::util::cache::Cache;
use crate::util::http::{Http, Status};
use crate::util::progress;

/// A file to fetch into the cache, checked against a known hash and size.
#[derive(Debug, Clone)]
pub struct Download {
    /// Where to fetch it from.
    pub url: String,
    /// Expected SHA-256 in hex; also names its cache entry.
    pub sha256: String,
    /// Expected length in bytes.
    pub size: u64,
    /// Shown in errors, e.g. "bash 5.2.37-1 amd64".
    pub what: String,
}

/// How many downloads run at once unless told otherwise.
pub const DEFAULT_JOBS: usize = 6;

/// Runs `f` over `items` on up to `jobs` threads, results in input order; stops at the first error.
pub fn parallel<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let queue: Mutex<VecDeque<usize>> = Mutex::new((0..items.len()).collect());
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let failed = AtomicBool::new(false);
    let error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(items.len().max(1)) {
            s.spawn(|| loop {
                if failed.load(Ordering::Relaxed) {
                    return;
                }
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some(i) = next else { return };
                match f(&items[i]) {
                    Ok(r) => {
                        if let Ok(mut res) = results.lock() {
                            res[i] = Some(r);
                        }
                    }
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        if let Ok(mut slot) = error.lock() {
                            slot.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = error.into_inner().ok().flatten() {
        return Err(e);
    }
    results
        .into_inner()
        .map_err(|_| anyhow!("a worker thread panicked"))?
        .into_iter()
        .map(|r| r.ok_or_else(|| anyhow!("a download did not finish")))
        .collect()
}

/// Makes every item present and verified in the cache; returns their paths in order.
pub fn fetch_all(
    cache: &Cache,
    http: &Http,
    items: &[Download],
    jobs: usize,
) -> Result<Vec<PathBuf>> {
    // Check what the cache already has (this re-hashes, so in parallel too).
    let present = parallel(items, jobs, |d| {
        let blob = cache.verified_blob(&d.sha256)?;
        if let Some(p) = &blob {
            // The content has the index's hash; a Size that disagrees is an index that
            // contradicts itself.
            let len = std::fs::metadata(p)?.len();
            if len != d.size {
                anyhow::bail!(
                    "{}: the signed index gives Size {} for the file with sha256 {}, which is {len} bytes; refusing an index that contradicts itself",
                    d.what,
                    d.size,
                    d.sha256
                );
            }
        }
        Ok(blob)
    })?;
    let missing: Vec<&Download> = items
        .iter()
        .zip(&present)
        .filter(|(_, p)| p.is_none())
        .map(|(d, _)| d)
        .collect();
    if !missing.is_empty() {
        let bytes: u64 = missing.iter().map(|d| d.size).sum();
        progress::step(format!(
            "downloading {} packages ({})",
            missing.len(),
            crate::util::size::human_bytes(bytes)
        ));
        let pb = progress::bytes(bytes, "downloading");
        parallel(&missing, jobs, |d| {
            cache.store(
                &d.sha256,
                Some(d.size),
                &format!("{} from {}", d.what, d.url),
                |f| match http.get_to(&d.url, f, d.size, &|n| pb.inc(n)) {
                    Ok(_) => Ok(()),
                    Err(e) if e.downcast_ref::<Status>().is_some_and(|s| s.code == 404) => {
                        Err(e.context(format!(
                            "the mirror no longer has {}: run `kiln lock --update` to take the version it has now, or set `mirror` to a snapshot archive (with `ignore_valid_until = true`) to keep this one",
                            d.what
                        )))
                    }
                    Err(e) => Err(e),
                },
            )
        })?;
        pb.finish_and_clear();
    }
    Ok(items.iter().map(|d| cache.blob_path(&d.sha256)).collect())
}
