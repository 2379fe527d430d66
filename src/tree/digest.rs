//! A regular file's digest, as a disk image's manifest gives it.
//!
//! Most files get their plain sha256. A file with more than [`PLAIN_LIMIT`] bytes in
//! all-zero blocks gets a `sparse_sha256` instead: a disk image keeps those blocks as
//! holes and never reads them, and hashing them as zeros would make a 2 TiB file with one
//! byte in it cost a quarter of an hour. Which digest a file gets, and its value, depend
//! only on the file's bytes, not on how sparse the host's copy was, so the same tree
//! gives the same manifest on any file system.
//!
//! `sparse_sha256` is the sha256 of: the tag `kiln-sparse-sha256-v2\n`; then, for each
//! segment of [`SEGMENT_BLOCKS`] 4096-byte blocks (4 MiB), counted from the start of the
//! file, that holds a non-zero byte, the segment's index as 8 bytes little-endian followed
//! by the segment's sha256: the sha256 of, for each block of the segment that holds a
//! non-zero byte, the block's index in the file as 8 bytes little-endian followed by the
//! block's bytes (the last block only as far as the file goes); then the file's size as 8
//! bytes little-endian. Segments hash independently, so a disk image's digest is computed
//! on every core, and a segment already hashed while the image was written is not read
//! again unless something was written into it since.
//! `tools/sparse-sha256` computes it for a file, skipping holes with `SEEK_DATA`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

pub use super::sparse::{segment_sha256, sparse_of_file, Reader, Reading, Sparse, SEGMENT_BLOCKS};

/// The block size the sparse digest counts in (the ext4 block size kiln writes).
pub const BLOCK: u64 = 4096;

/// A file with more bytes than this in all-zero blocks gets the sparse digest. At most
/// this many zeros are hashed for any one file.
pub const PLAIN_LIMIT: u64 = 64 << 20;

/// A file's digest as it appears in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileDigest {
    /// The sha256 of the whole content, hex: what `sha256sum` prints.
    Sha256(String),
    /// The sparse digest described in this module, hex.
    Sparse(String),
}

impl FileDigest {
    /// The plain sha256 of bytes held in memory.
    pub fn of_bytes(b: &[u8]) -> FileDigest {
        FileDigest::Sha256(hex::encode(Sha256::digest(b)))
    }

    /// The digest of the first `len` bytes of a host file, reading only its data ranges.
    pub fn of_file(f: &File, len: u64) -> io::Result<FileDigest> {
        FileDigest::of_file_knowing(f, len, &|_| None, Reading::Copied)
    }

    /// [`FileDigest::of_file`], taking the sparse digest's segments `known` gives (see
    /// [`sparse_of_file`]) as they are instead of reading them, and reading the rest as
    /// `how` says.
    pub fn of_file_knowing(
        f: &File,
        len: u64,
        known: &dyn Fn(u64) -> Option<Option<[u8; 32]>>,
        how: Reading,
    ) -> io::Result<FileDigest> {
        let ranges = aligned_ranges(&super::data::host_data_ranges(f, len)?, len);
        let data: u64 = ranges.iter().map(|&(a, b)| b.min(len) - a.min(len)).sum();
        if len - data.min(len) > PLAIN_LIMIT {
            // The sparse digest from the start: its segments on every core.
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            return sparse_of_file(f, len, &ranges, threads, known, how).map(FileDigest::Sparse);
        }
        let reread = |buf: &mut [u8], at: u64| f.read_exact_at(buf, at);
        let mut h = FileHasher::new(len, &ranges);
        let mut reader = Reader::new(how);
        let mut pos = 0;
        for &(a, b) in &ranges {
            h.hole(a - pos, &reread)?;
            let b = b.min(len);
            reader.pieces(f, a, b, &mut |_, piece| h.data(piece, &[], &reread))?;
            pos = b;
        }
        h.hole(len - pos, &reread)?;
        Ok(h.finish())
    }
}

/// The digest of `len` bytes read front to back from `r`; `reread` reads them again at
/// an offset, should the digest switch to its sparse form part way.
pub fn of_reader(r: &mut impl io::Read, len: u64, reread: ReadAt) -> io::Result<FileDigest> {
    let whole = [(0, len.div_ceil(BLOCK) * BLOCK)];
    let mut h = FileHasher::new(len, &whole);
    let mut buf = vec![0u8; len.clamp(1, 1 << 20) as usize];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        r.read_exact(&mut buf[..n])?;
        h.data(&buf[..n], &[], reread)?;
        at += n as u64;
    }
    Ok(h.finish())
}

impl std::fmt::Display for FileDigest {
    /// `sha256:HEX` or `sparse_sha256:HEX`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileDigest::Sha256(h) => write!(f, "sha256:{h}"),
            FileDigest::Sparse(h) => write!(f, "sparse_sha256:{h}"),
        }
    }
}

/// Block-aligned, merged data ranges of a file of `size` bytes.
pub fn aligned_ranges(ranges: &[(u64, u64)], size: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(off, len) in ranges {
        let a = off / BLOCK * BLOCK;
        let b = ((off + len).div_ceil(BLOCK) * BLOCK).min(size.div_ceil(BLOCK) * BLOCK);
        if b <= a {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.1 >= a => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Reads bytes of the file being hashed again, at an offset.
pub type ReadAt<'a> = &'a dyn Fn(&mut [u8], u64) -> io::Result<()>;

/// Hashes a file fed front to back in block-aligned pieces: data as read, holes as
/// lengths. Starts with the plain sha256 and switches to the sparse digest, reading the
/// data ranges before that point again, once the zeros pass [`PLAIN_LIMIT`].
pub struct FileHasher {
    size: u64,
    pos: u64,
    zeros: u64,
    /// The file's data ranges, block-aligned and in order: everything else is a hole.
    ranges: Vec<(u64, u64)>,
    plain: Option<Sha256>,
    sparse: Option<Sparse>,
}

impl FileHasher {
    /// A hasher for a file of `size` bytes whose data lies in `ranges`.
    pub fn new(size: u64, ranges: &[(u64, u64)]) -> FileHasher {
        // Holes read as zeros: when they alone pass the limit, the digest is the sparse
        // one from the start, and nothing is hashed twice.
        let data: u64 = ranges.iter().map(|&(a, b)| b.min(size) - a.min(size)).sum();
        let sparse_from_start = size - data.min(size) > PLAIN_LIMIT;
        FileHasher {
            size,
            pos: 0,
            zeros: 0,
            ranges: ranges.to_vec(),
            plain: (!sparse_from_start).then(Sha256::new),
            sparse: sparse_from_start.then(Sparse::default),
        }
    }

    /// `n` bytes that read as zeros (a hole), from the current, block-aligned position.
    pub fn hole(&mut self, n: u64, src: ReadAt) -> io::Result<()> {
        let n = n.min(self.size - self.pos);
        self.zeros += n;
        if self.plain.is_some() && self.zeros > PLAIN_LIMIT {
            self.switch(src)?;
        }
        if let Some(h) = &mut self.plain {
            let zeros = [0u8; 1 << 16];
            let mut left = n;
            while left > 0 {
                let k = left.min(zeros.len() as u64) as usize;
                h.update(&zeros[..k]);
                left -= k as u64;
            }
        }
        self.pos += n;
        Ok(())
    }

    /// File bytes from the current, block-aligned position; `zero[k]` says whether its
    /// `k`-th block is all zeros (the writer has looked already).
    pub fn data(&mut self, bytes: &[u8], zero: &[bool], src: ReadAt) -> io::Result<()> {
        let bs = BLOCK as usize;
        for (k, block) in bytes.chunks(bs).enumerate() {
            if zero.get(k).copied().unwrap_or_else(|| is_zero(block)) {
                self.zeros += block.len() as u64;
            }
        }
        if self.plain.is_some() && self.zeros > PLAIN_LIMIT {
            self.switch(src)?;
        }
        match (&mut self.plain, &mut self.sparse) {
            (Some(h), _) => h.update(bytes),
            (None, Some(h)) => {
                for (k, block) in bytes.chunks(bs).enumerate() {
                    if !zero.get(k).copied().unwrap_or_else(|| is_zero(block)) {
                        h.block(self.pos / BLOCK + k as u64, block);
                    }
                }
            }
            (None, None) => {}
        }
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// The digest of everything fed.
    pub fn finish(self) -> FileDigest {
        match (self.plain, self.sparse) {
            (Some(h), _) => FileDigest::Sha256(hex::encode(h.finalize())),
            (None, Some(h)) => FileDigest::Sparse(h.finish(self.size)),
            (None, None) => FileDigest::Sha256(String::new()),
        }
    }

    /// Drops the plain hash and hashes the non-zero blocks before the current position.
    fn switch(&mut self, src: ReadAt) -> io::Result<()> {
        self.plain = None;
        let mut h = Sparse::default();
        let mut buf = vec![0u8; 1 << 20];
        for &(a, b) in &self.ranges {
            let end = b.min(self.pos).min(self.size);
            let mut at = a;
            while at < end {
                let n = (end - at).min(buf.len() as u64) as usize;
                src(&mut buf[..n], at)?;
                for (k, block) in buf[..n].chunks(BLOCK as usize).enumerate() {
                    if !is_zero(block) {
                        h.block(at / BLOCK + k as u64, block);
                    }
                }
                at += n as u64;
            }
        }
        self.sparse = Some(h);
        Ok(())
    }
}

/// Whether a block is all zeros, sixteen bytes at a time.
pub fn is_zero(block: &[u8]) -> bool {
    let mut chunks = block.chunks_exact(16);
    chunks
        .by_ref()
        .all(|c| u128::from_ne_bytes(c.try_into().unwrap_or([1; 16])) == 0)
        && chunks.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest of `content` fed as the writer feeds it: data in `ranges`, the rest holes.
    fn fed(content: &[u8], ranges: &[(u64, u64)], piece: usize) -> FileDigest {
        let read = |buf: &mut [u8], at: u64| {
            buf.copy_from_slice(&content[at as usize..at as usize + buf.len()]);
            Ok(())
        };
        let mut h = FileHasher::new(content.len() as u64, ranges);
        let mut pos = 0u64;
        for &(a, b) in ranges {
            h.hole(a - pos, &read).unwrap();
            let b = b.min(content.len() as u64);
            for c in content[a as usize..b as usize].chunks(piece) {
                h.data(c, &[], &read).unwrap();
            }
            pos = b;
        }
        h.hole(content.len() as u64 - pos, &read).unwrap();
        h.finish()
    }

    /// The sparse digest straight from its definition.
    fn by_definition(content: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(b"kiln-sparse-sha256-v2\n");
        let seg = (SEGMENT_BLOCKS * BLOCK) as usize;
        for (s, segment) in content.chunks(seg).enumerate() {
            let mut inner = Sha256::new();
            let mut any = false;
            for (k, block) in segment.chunks(BLOCK as usize).enumerate() {
                if block.iter().any(|&b| b != 0) {
                    any = true;
                    inner.update(((s * seg / BLOCK as usize + k) as u64).to_le_bytes());
                    inner.update(block);
                }
            }
            if any {
                h.update((s as u64).to_le_bytes());
                h.update(inner.finalize());
            }
        }
        h.update((content.len() as u64).to_le_bytes());
        hex::encode(h.finalize())
    }

    #[test]
    fn few_zeros_give_the_plain_sha256() {
        let content: Vec<u8> = (0..3 * BLOCK as usize + 17).map(|i| i as u8).collect();
        let whole = [(0, content.len() as u64)];
        assert_eq!(fed(&content, &whole, 4096), FileDigest::of_bytes(&content));
    }

    #[test]
    fn mostly_zeros_give_the_sparse_digest_however_the_holes_were_found() {
        let len = PLAIN_LIMIT as usize + 5 * BLOCK as usize + 100;
        let mut content = vec![0u8; len];
        content[10] = 1;
        content[8 * BLOCK as usize + 3] = 2;
        content[len - 1] = 3;
        let want = FileDigest::Sparse(by_definition(&content));
        // Dense: every byte read, the zero blocks found by content.
        let dense = [(0, len as u64)];
        assert_eq!(fed(&content, &dense, 1 << 20), want);
        // Sparse: only the blocks with data read; the switch comes at a hole.
        let last = (len as u64 - 1) / BLOCK * BLOCK;
        let holes = [(0, BLOCK), (8 * BLOCK, 9 * BLOCK), (last, last + BLOCK)];
        assert_eq!(fed(&content, &holes, 4096), want);
    }

    #[test]
    fn segments_hashed_apart_or_known_ahead_give_the_digest_of_the_definition() {
        use std::io::Write;
        let seg = (SEGMENT_BLOCKS * BLOCK) as usize;
        let len = 5 * seg + 3 * BLOCK as usize + 9;
        let mut content = vec![0u8; len];
        for at in [7, seg - 1, 3 * seg + 5 * BLOCK as usize, len - 2] {
            content[at] = at as u8 | 1;
        }
        let mut f = tempfile::tempfile().unwrap();
        // Written with holes where the content is zeros, as a disk image is.
        for (k, block) in content.chunks(BLOCK as usize).enumerate() {
            if !is_zero(block) {
                f.write_all_at(block, (k * BLOCK as usize) as u64).unwrap();
            }
        }
        f.set_len(len as u64).unwrap();
        f.flush().unwrap();
        let want = by_definition(&content);
        let data = aligned_ranges(
            &crate::tree::data::host_data_ranges(&f, len as u64).unwrap(),
            len as u64,
        );
        for (threads, how) in [(1, Reading::Copied), (3, Reading::Mapped)] {
            let got = sparse_of_file(&f, len as u64, &data, threads, &|_| None, how).unwrap();
            assert_eq!(got, want, "{threads} threads, {how:?}");
        }
        // A segment known ahead is taken as given, not read: a wrong one shows.
        let s3 =
            segment_sha256(&f, len as u64, 3, &data, &mut Reader::new(Reading::Copied)).unwrap();
        let known = |s: u64| (s == 3).then_some(s3);
        assert_eq!(
            sparse_of_file(&f, len as u64, &data, 2, &known, Reading::Mapped).unwrap(),
            want
        );
        let wrong = |s: u64| (s == 3).then_some(Some([0u8; 32]));
        assert_ne!(
            sparse_of_file(&f, len as u64, &data, 2, &wrong, Reading::Copied).unwrap(),
            want
        );
        // With fewer zeros than the limit, a file's digest stays the plain one.
        let plain = FileDigest::of_bytes(&content);
        assert_eq!(FileDigest::of_file(&f, len as u64).unwrap(), plain);
        let mapped = FileDigest::of_file_knowing(&f, len as u64, &|_| None, Reading::Mapped);
        assert_eq!(mapped.unwrap(), plain);
    }
}
