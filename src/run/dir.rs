//! One directory per run, so runs of the same image never share files: `OUT/NAME.runs/N/`
//! with N counting up, and `OUT/NAME.run` a symlink to the latest. A run holds a lock on
//! its directory while it lives; old, unlocked run directories are pruned.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// How many finished runs of an image are kept.
pub const KEEP_RUNS: u64 = 20;

/// The files of one run.
#[derive(Debug)]
pub struct RunDir {
    /// The directory.
    pub dir: PathBuf,
    /// Its number among the image's runs.
    pub number: u64,
    /// The serial console.
    pub console: PathBuf,
    /// What the guest wrote to its second UART.
    pub status_uart: PathBuf,
    /// What the guest wrote to the virtio-serial status port.
    pub status_virtio: PathBuf,
    /// QEMU's standard error.
    pub qemu_stderr: PathBuf,
    /// The QEMU command the run used, as a shell script.
    pub qemu_sh: PathBuf,
    /// The results disk.
    pub results_img: PathBuf,
    /// Where the results disk's contents are copied.
    pub results: PathBuf,
    // Held for the run's lifetime: a locked directory is never pruned.
    _lock: Option<File>,
}

impl RunDir {
    /// The file layout of a run in `dir`, without creating anything (for printing a
    /// command).
    pub fn at(dir: &Path) -> RunDir {
        RunDir {
            dir: dir.to_path_buf(),
            number: 0,
            console: dir.join("console.log"),
            status_uart: dir.join("status-uart"),
            status_virtio: dir.join("status-virtio"),
            qemu_stderr: dir.join("qemu-stderr.log"),
            qemu_sh: dir.join("qemu.sh"),
            results_img: dir.join("results.img"),
            results: dir.join("results"),
            _lock: None,
        }
    }

    /// The descriptor of the lock this run holds, for a detached QEMU to inherit.
    pub fn lock_fd(&self) -> Option<i32> {
        use std::os::fd::AsRawFd;
        self._lock.as_ref().map(|f| f.as_raw_fd())
    }

    /// Creates the next run directory under `runs`, locks it, empties its files, points
    /// `latest` at it, and prunes old runs.
    pub fn create(runs: &Path, latest: &Path) -> Result<RunDir> {
        std::fs::create_dir_all(runs).with_context(|| format!("creating {}", runs.display()))?;
        let mut n = highest(runs)? + 1;
        let dir = loop {
            let d = runs.join(n.to_string());
            match std::fs::create_dir(&d) {
                Ok(()) => break d,
                // Another run took this number first.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(e).with_context(|| format!("creating {}", d.display())),
            }
        };
        let mut rd = RunDir::locked(&dir)?;
        rd.number = n;
        point_latest(latest, runs, n)?;
        prune(runs, n);
        Ok(rd)
    }

    /// Creates (or reuses) the directory `dir` for a run, locks it and empties its files:
    /// a matrix's cell inside the matrix's own run directory.
    pub fn create_at(dir: &Path) -> Result<RunDir> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        RunDir::locked(dir)
    }

    fn locked(dir: &Path) -> Result<RunDir> {
        let lock = File::create(dir.join(".lock"))?;
        lock.lock()
            .with_context(|| format!("locking {}", dir.display()))?;
        let mut rd = RunDir::at(dir);
        rd._lock = Some(lock);
        for f in [
            &rd.console,
            &rd.status_uart,
            &rd.status_virtio,
            &rd.qemu_stderr,
        ] {
            std::fs::write(f, b"").with_context(|| format!("creating {}", f.display()))?;
        }
        Ok(rd)
    }
}

fn highest(runs: &Path) -> Result<u64> {
    let mut max = 0;
    for e in std::fs::read_dir(runs).with_context(|| format!("reading {}", runs.display()))? {
        if let Some(n) = e?.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) {
            max = max.max(n);
        }
    }
    Ok(max)
}

/// Makes `latest` a relative symlink to run `n`, replacing it atomically. A directory
/// there (from kiln versions before run directories) is removed first.
fn point_latest(latest: &Path, runs: &Path, n: u64) -> Result<()> {
    let target = PathBuf::from(runs.file_name().unwrap_or_default()).join(n.to_string());
    if std::fs::symlink_metadata(latest).is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(latest)
            .with_context(|| format!("replacing the old run directory {}", latest.display()))?;
    }
    // Unique per call: the cells of a matrix are threads of one process.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = latest.with_extension(format!("run.{}.{k}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    std::fs::rename(&tmp, latest).with_context(|| format!("updating {}", latest.display()))?;
    Ok(())
}

/// Removes runs older than the last [`KEEP_RUNS`], except those still running.
fn prune(runs: &Path, newest: u64) {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return;
    };
    for e in entries.flatten() {
        let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
            continue;
        };
        if n + KEEP_RUNS > newest {
            continue;
        }
        let free = File::open(e.path().join(".lock")).is_ok_and(|f| f.try_lock().is_ok());
        if free {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_get_their_own_directories_and_latest_follows() {
        let d = tempfile::tempdir().unwrap();
        let runs = d.path().join("x.runs");
        let latest = d.path().join("x.run");
        // An old-style run directory is replaced by the link.
        std::fs::create_dir_all(latest.join("results")).unwrap();
        let a = RunDir::create(&runs, &latest).unwrap();
        let b = RunDir::create(&runs, &latest).unwrap();
        assert_ne!(a.dir, b.dir);
        assert_eq!((a.number, b.number), (1, 2));
        assert_eq!(
            std::fs::canonicalize(&latest).unwrap(),
            std::fs::canonicalize(&b.dir).unwrap()
        );
        assert!(a.console.exists() && b.status_uart.exists());
    }

    #[test]
    fn prunes_old_finished_runs_but_not_running_ones() {
        let d = tempfile::tempdir().unwrap();
        let runs = d.path().join("x.runs");
        let latest = d.path().join("x.run");
        let first = RunDir::create(&runs, &latest).unwrap();
        for _ in 0..KEEP_RUNS + 2 {
            drop(RunDir::create(&runs, &latest).unwrap());
        }
        assert!(first.dir.exists(), "a running run is never pruned");
        assert!(!runs.join("2").exists(), "an old finished run is pruned");
        assert!(runs.join((KEEP_RUNS + 3).to_string()).exists());
    }
}
