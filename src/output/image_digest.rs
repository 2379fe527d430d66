//! A disk image's digest, hashed beside its writing.
//!
//! The sparse digest ([`crate::tree::digest`]) is built from 4 MiB segments that hash
//! apart. While the ext4 writer fills the root partition front to back, a thread hashes
//! the segments it has moved past, reading them back from the page cache; every write
//! counts up its segments' generations, so a segment written again after it was hashed
//! (the file system's metadata, written last) is hashed again at the end. The segments
//! left then are hashed on every core. An image with few holes gets its plain sha256
//! instead: one chain, hashed at the end, for which the early segments go unused.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use crate::tree::data::host_data_ranges_in;
use crate::tree::digest::{
    aligned_ranges, segment_sha256, FileDigest, Reader, Reading, BLOCK, SEGMENT_BLOCKS,
};

const SEGMENT: u64 = SEGMENT_BLOCKS * BLOCK;

/// What the writer tells the hashing thread: where it writes.
pub struct WriteWatch {
    /// The byte range only tracked writes reach (the root partition): segments wholly in
    /// it may be hashed early.
    lo: u64,
    hi: u64,
    /// Per segment of the range, counted up after every write into it.
    generations: Vec<AtomicU64>,
    /// The start of the furthest write so far: the writer has moved past what is before.
    frontier: AtomicU64,
    finished: AtomicBool,
    wake: (Mutex<()>, Condvar),
}

/// Calls [`WriteWatch::finish`] when dropped.
pub struct Finishing<'a>(&'a WriteWatch);

impl Drop for Finishing<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// A segment's sha256 as hashed early, and the generation it was hashed at.
pub struct Early(HashMap<u64, (u64, Option<[u8; 32]>)>);

impl WriteWatch {
    /// Watches writes into bytes `lo..hi` of an image.
    pub fn new(lo: u64, hi: u64) -> WriteWatch {
        let first = lo.div_ceil(SEGMENT);
        let end = hi / SEGMENT;
        WriteWatch {
            lo: first * SEGMENT,
            hi: end * SEGMENT,
            generations: (first..end.max(first)).map(|_| AtomicU64::new(0)).collect(),
            frontier: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            wake: (Mutex::new(()), Condvar::new()),
        }
    }

    fn generation(&self, segment: u64) -> Option<&AtomicU64> {
        let first = self.lo / SEGMENT;
        segment
            .checked_sub(first)
            .and_then(|i| self.generations.get(i as usize))
    }

    /// After `len` bytes were written at `offset`.
    pub fn wrote(&self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        for s in offset / SEGMENT..=(offset + len - 1) / SEGMENT {
            if let Some(g) = self.generation(s) {
                // After the write: a hash read before this sees a count that is now stale.
                g.fetch_add(1, Ordering::Release);
            }
        }
        let before = self.frontier.fetch_max(offset, Ordering::AcqRel);
        if offset / SEGMENT > before / SEGMENT {
            let _guard = self.wake.0.lock();
            self.wake.1.notify_one();
        }
    }

    /// A guard that calls [`WriteWatch::finish`] when dropped, even by a panicking
    /// writer: the hashing thread must not wait for a writer that is gone.
    pub fn finishing(&self) -> Finishing<'_> {
        Finishing(self)
    }

    /// The writer is done (or failed): the hashing thread stops.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Release);
        let _guard = self.wake.0.lock();
        self.wake.1.notify_one();
    }

    /// Hashes segments of `file` (of `len` bytes) as the writer moves past them, until
    /// [`WriteWatch::finish`]. Run on a thread of its own.
    pub fn hash_behind(&self, file: &File, len: u64) -> Early {
        // Behind the writer's threads, not beside them: what is left is hashed at the end
        // on every core anyway. (Linux keeps a nice value per thread.)
        // SAFETY: plain system calls on this thread's own id.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 10);
        }
        let mut early = HashMap::new();
        let mut next = self.lo / SEGMENT;
        let mut reader = Reader::new(Reading::Mapped);
        loop {
            let finished = self.finished.load(Ordering::Acquire);
            let frontier = self.frontier.load(Ordering::Acquire).min(self.hi);
            while !self.finished.load(Ordering::Acquire) && (next + 1) * SEGMENT <= frontier {
                let Some(g) = self.generation(next) else {
                    break;
                };
                let at = g.load(Ordering::Acquire);
                // Only the segment's data: a hole read would be zeroed by the kernel,
                // copied out and found zero, for nothing. A failed read is left to
                // the final pass, which reports it.
                let (lo, hi) = (next * SEGMENT, ((next + 1) * SEGMENT).min(len));
                let data = host_data_ranges_in(file, lo, hi)
                    .map(|r| aligned_ranges(&r, len))
                    .unwrap_or_else(|_| vec![(lo, hi)]);
                if let Ok(sha) = segment_sha256(file, len, next, &data, &mut reader) {
                    early.insert(next, (at, sha));
                }
                next += 1;
            }
            if finished {
                return Early(early);
            }
            let guard = self.wake.0.lock();
            if let Ok(g) = guard {
                if !self.finished.load(Ordering::Acquire)
                    && self.frontier.load(Ordering::Acquire).min(self.hi) < (next + 1) * SEGMENT
                {
                    let _ = self
                        .wake
                        .1
                        .wait_timeout(g, std::time::Duration::from_millis(50));
                }
            }
        }
    }

    /// A segment's sha256 hashed early, if nothing was written into it since.
    pub fn known(&self, early: &Early, segment: u64) -> Option<Option<[u8; 32]>> {
        let (at, sha) = early.0.get(&segment)?;
        let now = self.generation(segment)?.load(Ordering::Acquire);
        (now == *at).then_some(*sha)
    }
}

/// The digest of the first `len` bytes of an image written under `watch`: the sparse
/// digest, from the segments hashed early that nothing was written into since and the
/// others hashed now on every core; or, for an image with few holes, its plain sha256.
pub fn digest(
    file: &File,
    len: u64,
    watch: &WriteWatch,
    early: &Early,
) -> std::io::Result<FileDigest> {
    FileDigest::of_file_knowing(file, len, &|s| watch.known(early, s), Reading::Mapped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_segment_written_again_after_it_was_hashed_is_hashed_again() {
        // Mostly holes: the sparse digest, not the plain sha256.
        let len = 24 * SEGMENT;
        let f = tempfile::tempfile().unwrap();
        f.set_len(len).unwrap();
        let watch = WriteWatch::new(SEGMENT / 2, 7 * SEGMENT);
        let block = |b: u8| vec![b; BLOCK as usize];
        let early = std::thread::scope(|scope| {
            let hasher = scope.spawn(|| watch.hash_behind(&f, len));
            // Front to back, as the ext4 writer fills its partition, one block a segment.
            for s in 1..7u64 {
                f.write_all_at(&block(s as u8), s * SEGMENT + 3 * BLOCK)
                    .unwrap();
                watch.wrote(s * SEGMENT + 3 * BLOCK, BLOCK);
            }
            // Let the hasher pass the early segments before the writer goes back.
            while watch.frontier.load(Ordering::Acquire) < 6 * SEGMENT {}
            std::thread::sleep(std::time::Duration::from_millis(200));
            f.write_all_at(&block(0xee), SEGMENT + 7 * BLOCK).unwrap();
            watch.wrote(SEGMENT + 7 * BLOCK, BLOCK);
            watch.finish();
            hasher.join().unwrap()
        });
        assert!(early.0.contains_key(&1), "segment 1 was hashed early");
        assert_eq!(watch.known(&early, 1), None, "and written again since");
        assert!(watch.known(&early, 2).is_some(), "segment 2 was not");
        let got = digest(&f, len, &watch, &early).unwrap();
        let fresh = digest(&f, len, &WriteWatch::new(0, 0), &Early(HashMap::new())).unwrap();
        assert_eq!(got, fresh);
        assert!(matches!(got, FileDigest::Sparse(_)));
    }
}
