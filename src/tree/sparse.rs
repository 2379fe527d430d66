//! The sparse digest (defined in [`super::digest`]): a file's non-zero 4 KiB blocks,
//! hashed by 4 MiB segments that hash apart, so that a disk image's segments are hashed
//! on every core, or beside its writing.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use super::digest::{is_zero, BLOCK};

/// Blocks in one segment of the sparse digest.
pub const SEGMENT_BLOCKS: u64 = 1024;

const TAG: &[u8] = b"kiln-sparse-sha256-v2\n";

/// The sparse digest, fed the non-zero blocks of a file in ascending order, or whole
/// segments' digests computed elsewhere.
#[derive(Clone)]
pub struct Sparse {
    outer: Sha256,
    segment: Option<(u64, Sha256)>,
}

impl Default for Sparse {
    fn default() -> Sparse {
        let mut outer = Sha256::new();
        outer.update(TAG);
        Sparse {
            outer,
            segment: None,
        }
    }
}

impl Sparse {
    /// A block holding a non-zero byte, by its index in the file.
    pub fn block(&mut self, index: u64, bytes: &[u8]) {
        let s = index / SEGMENT_BLOCKS;
        if self.segment.as_ref().map(|(i, _)| *i) != Some(s) {
            self.close_segment();
            self.segment = Some((s, Sha256::new()));
        }
        if let Some((_, h)) = &mut self.segment {
            h.update(index.to_le_bytes());
            h.update(bytes);
        }
    }

    /// A whole segment's sha256, from [`segment_sha256`]; segments come in ascending order.
    pub fn segment(&mut self, index: u64, sha256: &[u8; 32]) {
        self.close_segment();
        self.outer.update(index.to_le_bytes());
        self.outer.update(sha256);
    }

    fn close_segment(&mut self) {
        if let Some((i, h)) = self.segment.take() {
            self.outer.update(i.to_le_bytes());
            self.outer.update(h.finalize());
        }
    }

    /// The digest of a file of `size` bytes, hex.
    pub fn finish(mut self, size: u64) -> String {
        self.close_segment();
        self.outer.update(size.to_le_bytes());
        hex::encode(self.outer.finalize())
    }
}

/// How a digest gets at a file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Copied out with `pread`: safe whatever happens to the file meanwhile.
    Copied,
    /// Mapped from the page cache, without the copy (on a disk build, a copy of every
    /// byte of the image). A file truncated under a mapping, or a page the kernel fails
    /// to read back from the disk, kills the process with SIGBUS instead of returning an
    /// error, so this is only for a file no one else writes: the image kiln is writing,
    /// in its own locked temporary file, whose pages it has just written.
    Mapped,
}

/// At most this much of a file is mapped at once: its page tables stay small.
const MAPPED_PIECE: u64 = 16 << 20;

/// Where [`Reading`] puts the bytes: a buffer reused from range to range, or nothing.
pub struct Reader {
    how: Reading,
    buf: Vec<u8>,
}

impl Reader {
    /// A reader that reads the way `how` says.
    pub fn new(how: Reading) -> Reader {
        Reader {
            how,
            buf: Vec::new(),
        }
    }

    /// Calls `each` with the bytes `a..b` of `f`, front to back, in pieces of whole
    /// blocks (the last one as far as `b`), with each piece's offset.
    pub fn pieces(
        &mut self,
        f: &File,
        a: u64,
        b: u64,
        each: &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        if a >= b {
            return Ok(());
        }
        let mut a = a;
        if self.how == Reading::Mapped && b > f.metadata()?.len() {
            // Past the end, a mapping's pages would fault: the copy reports it instead.
            self.how = Reading::Copied;
        }
        while self.how == Reading::Mapped && a < b {
            let n = (b - a).min(MAPPED_PIECE);
            // SAFETY: the bytes lie below the file's size (checked above), and only this
            // process writes the file (see `Reading::Mapped`). Its writer may rewrite a
            // segment the thread hashing behind it has mapped (the file system's
            // metadata comes last): the bytes are then only compared with zero and
            // hashed, with no length or index taken from them, and that segment's hash
            // is thrown away by its generation count (`output::image_digest`).
            let map = unsafe {
                memmap2::MmapOptions::new()
                    .offset(a)
                    .len(n as usize)
                    .populate()
                    .map(f)
            };
            match map {
                Ok(map) => each(a, &map)?,
                // A file system that cannot map files (some FUSE ones): read instead.
                Err(_) => {
                    self.how = Reading::Copied;
                    break;
                }
            }
            a += n;
        }
        // Sized to what is read: checks of many small files must not clear a megabyte each.
        let want = (b - a).min(1 << 20) as usize;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let mut at = a;
        while at < b {
            let n = (b - at).min(self.buf.len() as u64) as usize;
            f.read_exact_at(&mut self.buf[..n], at)?;
            each(at, &self.buf[..n])?;
            at += n as u64;
        }
        Ok(())
    }
}

/// The sha256 of one segment of the first `len` bytes of `f`, as the sparse digest takes
/// it, reading only `data` (the file's data ranges, as [`aligned_ranges`](super::digest::aligned_ranges) gives them);
/// None when the segment holds no non-zero byte.
pub fn segment_sha256(
    f: &File,
    len: u64,
    segment: u64,
    data: &[(u64, u64)],
    reader: &mut Reader,
) -> io::Result<Option<[u8; 32]>> {
    let bytes = SEGMENT_BLOCKS * BLOCK;
    let (lo, hi) = (segment * bytes, ((segment + 1) * bytes).min(len));
    let mut h: Option<Sha256> = None;
    for &(a, b) in data {
        reader.pieces(f, a.max(lo), b.min(hi), &mut |at, piece| {
            for (k, block) in piece.chunks(BLOCK as usize).enumerate() {
                if !is_zero(block) {
                    let h = h.get_or_insert_with(Sha256::new);
                    h.update((at / BLOCK + k as u64).to_le_bytes());
                    h.update(block);
                }
            }
            Ok(())
        })?;
    }
    Ok(h.map(|h| h.finalize().into()))
}

/// The sparse digest of the first `len` bytes of `f`, whose data lies in `data` (as
/// [`aligned_ranges`](super::digest::aligned_ranges) gives it), its segments hashed on `threads` threads; `done` gives
/// segments' sha256s already known (Some(None): no non-zero byte), which are not read.
pub fn sparse_of_file(
    f: &File,
    len: u64,
    data: &[(u64, u64)],
    threads: usize,
    done: &dyn Fn(u64) -> Option<Option<[u8; 32]>>,
    how: Reading,
) -> io::Result<String> {
    let seg_bytes = SEGMENT_BLOCKS * BLOCK;
    // The segments holding data ranges, each once, in order.
    let mut segments: Vec<u64> = Vec::new();
    for &(a, b) in data {
        for s in a / seg_bytes..b.div_ceil(seg_bytes) {
            if segments.last() != Some(&s) {
                segments.push(s);
            }
        }
    }
    let mut sums: Vec<Option<Option<[u8; 32]>>> = segments.iter().map(|&s| done(s)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let hashed = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| -> io::Result<Vec<(usize, Option<[u8; 32]>)>> {
                    let mut reader = Reader::new(how);
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&s) = segments.get(i) else {
                            return Ok(out);
                        };
                        if sums[i].is_none() {
                            out.push((i, segment_sha256(f, len, s, data, &mut reader)?));
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a hashing thread panicked")))
            })
            .collect::<io::Result<Vec<_>>>()
    })?;
    for (i, sum) in hashed.into_iter().flatten() {
        sums[i] = Some(sum);
    }
    let mut h = Sparse::default();
    for (&s, sum) in segments.iter().zip(sums) {
        match sum {
            Some(Some(sha)) => h.segment(s, &sha),
            Some(None) => {}
            None => return Err(io::Error::other("a segment was left unhashed")),
        }
    }
    Ok(h.finish(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(how: Reading, f: &File, a: u64, b: u64) -> (Vec<u8>, Reading) {
        let mut r = Reader::new(how);
        let mut got = Vec::new();
        r.pieces(f, a, b, &mut |at, piece| {
            assert_eq!(at, a + got.len() as u64);
            got.extend_from_slice(piece);
            Ok(())
        })
        .unwrap();
        (got, r.how)
    }

    #[test]
    fn a_mapped_read_gives_the_bytes_a_copied_one_does() {
        let f = tempfile::tempfile().unwrap();
        let bytes: Vec<u8> = (0..3 * MAPPED_PIECE + 5000)
            .map(|i| (i % 251) as u8)
            .collect();
        f.write_all_at(&bytes, 0).unwrap();
        let (a, b) = (4096, bytes.len() as u64);
        let (mapped, how) = read(Reading::Mapped, &f, a, b);
        assert_eq!(how, Reading::Mapped);
        assert_eq!(mapped, read(Reading::Copied, &f, a, b).0);
        assert_eq!(mapped, &bytes[a as usize..]);
    }

    #[test]
    fn a_file_that_cannot_be_mapped_is_read() {
        // The kernel's files cannot be mapped, but can be read at an offset.
        let f = File::open("/proc/self/cmdline").unwrap();
        let (got, how) = read(Reading::Mapped, &f, 0, 4);
        assert_eq!(how, Reading::Copied);
        assert_eq!(got, read(Reading::Copied, &f, 0, 4).0);
    }
}
