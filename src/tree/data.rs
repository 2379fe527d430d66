//! Where a regular file's bytes come from. Contents are never copied into the tree:
//! writers open the source when they reach the file and stream it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::digest::FileDigest;

/// The source of a regular file's contents.
#[derive(Debug, Clone)]
pub enum Data {
    /// Bytes held in memory: inline profile content, rendered templates, generated files.
    Bytes(Arc<[u8]>),
    /// A file on the host, read when the image is written. `size` is what it was when planned.
    Host {
        /// The file on the host.
        path: PathBuf,
        /// Its length in bytes when planned; a different length when written is an error.
        size: u64,
        /// Its contents' digest when known without reading them: an overlay file whose
        /// stamp is as the last build recorded it, with the digest that build computed.
        digest: Option<FileDigest>,
    },
    /// A byte range of a larger file, e.g. a member of an uncompressed package archive in the cache.
    Slice {
        /// The containing file.
        file: Arc<PathBuf>,
        /// Where the range starts in `file`, in bytes.
        offset: u64,
        /// Length of the range in bytes.
        len: u64,
        /// The range's digest, when known ahead (a package member's, computed once when
        /// the package was unpacked): writers then need not hash it again.
        digest: Option<FileDigest>,
    },
}

impl Data {
    /// In-memory contents, copied from `b`.
    pub fn bytes(b: impl Into<Vec<u8>>) -> Data {
        Data::Bytes(Arc::from(b.into().into_boxed_slice()))
    }

    /// A host file of `size` bytes (as planned), its digest not known ahead.
    pub fn host(path: impl Into<PathBuf>, size: u64) -> Data {
        Data::Host {
            path: path.into(),
            size,
            digest: None,
        }
    }

    /// Length of the contents in bytes (for a host file, as planned).
    pub fn len(&self) -> u64 {
        match self {
            Data::Bytes(b) => b.len() as u64,
            Data::Host { size, .. } => *size,
            Data::Slice { len, .. } => *len,
        }
    }

    /// The contents' digest when known without reading them.
    pub fn known_digest(&self) -> Option<&FileDigest> {
        match self {
            Data::Slice { digest, .. } | Data::Host { digest, .. } => digest.as_ref(),
            Data::Bytes(_) => None,
        }
    }

    /// Whether the contents are zero bytes long.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Describes the source for error messages.
    pub fn describe(&self) -> String {
        match self {
            Data::Bytes(_) => "generated content".to_string(),
            Data::Host { path, .. } => path.display().to_string(),
            Data::Slice { file, offset, .. } => format!("{} at offset {offset}", file.display()),
        }
    }

    /// A reader over exactly `len()` bytes; a source that got shorter or longer since it
    /// was planned is an error rather than a silently different image.
    pub fn open(&self) -> io::Result<DataReader> {
        Ok(match self {
            Data::Bytes(b) => DataReader::Bytes {
                data: b.clone(),
                pos: 0,
            },
            Data::Host { path, size, .. } => {
                let f = File::open(path)?;
                let actual = f.metadata()?.len();
                if actual != *size {
                    return Err(io::Error::other(format!(
                        "{} changed while the image was being built ({} bytes planned, {} now)",
                        path.display(),
                        size,
                        actual
                    )));
                }
                DataReader::File {
                    file: Arc::new(f),
                    start: 0,
                    pos: 0,
                    len: *size,
                }
            }
            Data::Slice {
                file, offset, len, ..
            } => {
                let f = shared(file)?;
                DataReader::File {
                    file: f,
                    start: *offset,
                    pos: 0,
                    len: *len,
                }
            }
        })
    }

    /// Byte ranges that hold data, in order; everything else reads as zeros. Lets writers
    /// skip the holes of sparse host files without reading them.
    pub fn data_ranges(&self) -> io::Result<Vec<(u64, u64)>> {
        let len = self.len();
        match self {
            Data::Host { path, .. } if len > SMALL => {
                let f = File::open(path)?;
                host_data_ranges(&f, len)
            }
            _ if len == 0 => Ok(Vec::new()),
            _ => Ok(vec![(0, len)]),
        }
    }
}

/// The files ranges are read from (a package's data.tar holds hundreds of members),
/// opened once and shared: opening one again for every member walked its path in the
/// cache each time, thousands of times a build. Keyed by the `Arc` a tree's members of
/// one file share (kept alive here, so its address names nothing else): a tree made later
/// (after a damaged cache entry was unpacked again under the same path) opens afresh.
/// Bounded, so that a long run of builds (a matrix) cannot run out of file descriptors.
fn shared(path: &Arc<PathBuf>) -> io::Result<Arc<File>> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    type Open = HashMap<usize, (Arc<PathBuf>, Arc<File>)>;
    static OPEN: Mutex<Option<Open>> = Mutex::new(None);
    const MAX: usize = 256;
    let key = Arc::as_ptr(path) as usize;
    if let Ok(open) = OPEN.lock() {
        if let Some((_, f)) = open.as_ref().and_then(|m| m.get(&key)) {
            return Ok(f.clone());
        }
    }
    let f = Arc::new(File::open(path.as_path())?);
    if let Ok(mut open) = OPEN.lock() {
        let map = open.get_or_insert_with(HashMap::new);
        if map.len() >= MAX {
            map.clear();
        }
        map.insert(key, (path.clone(), f.clone()));
    }
    Ok(f)
}

/// Files up to this size are read whole: asking the file system for their holes costs
/// more than reading them, and all-zero blocks are found by content anyway.
const SMALL: u64 = 256 * 1024;

/// The data ranges of the first `len` bytes of an open file (SEEK_DATA/SEEK_HOLE); the
/// rest reads as zeros.
pub fn host_data_ranges(f: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    host_data_ranges_in(f, 0, len)
}

/// The data ranges of the bytes `from..len` of an open file, as [`host_data_ranges`].
pub fn host_data_ranges_in(f: &File, from: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let fd = f.as_raw_fd();
    let mut ranges = Vec::new();
    let mut pos: u64 = from;
    while pos < len {
        // SAFETY: lseek on a file descriptor we own; no memory is passed.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                // No more data after pos: the rest is a hole.
                Some(libc::ENXIO) => Ok(ranges),
                // File system without SEEK_DATA: treat the whole file as data.
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => {
                    Ok(vec![(from, len.saturating_sub(from))])
                }
                _ => Err(err),
            };
        }
        let data = data as u64;
        if data >= len {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data as libc::off_t, libc::SEEK_HOLE) };
        let hole = if hole < 0 {
            len
        } else {
            (hole as u64).min(len)
        };
        ranges.push((data, hole - data));
        pos = hole;
    }
    Ok(ranges)
}

/// An open [`Data`] source from [`Data::open`]: reads and seeks within exactly the planned bytes.
pub enum DataReader {
    /// In-memory contents.
    Bytes {
        /// The contents.
        data: Arc<[u8]>,
        /// Read position, in bytes from the start.
        pos: usize,
    },
    /// A host file, or a byte range of one.
    File {
        /// The open file.
        file: Arc<File>,
        /// Offset in `file` where the contents begin.
        start: u64,
        /// Read position, relative to `start`.
        pos: u64,
        /// Length of the contents in bytes.
        len: u64,
    },
}

impl DataReader {
    /// Copies the rest of the contents to `out` at its position: a range of a file is
    /// copied by the kernel (`copy_file_range`, a reflink where the file system shares
    /// blocks), not through a buffer here.
    pub fn copy_to(&mut self, out: &mut File) -> io::Result<u64> {
        use std::os::fd::AsRawFd;
        let DataReader::File {
            file,
            start,
            pos,
            len,
        } = self
        else {
            return io::copy(self, out);
        };
        let mut copied = 0u64;
        while *pos < *len {
            let mut from = (*start + *pos) as libc::loff_t;
            let want = (*len - *pos).min(1 << 30) as usize;
            // SAFETY: both descriptors are open for the call; `from` outlives it, and
            // a null output offset writes at (and moves) `out`'s position.
            let n = unsafe {
                libc::copy_file_range(
                    file.as_raw_fd(),
                    &mut from,
                    out.as_raw_fd(),
                    std::ptr::null_mut(),
                    want,
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    // Across file systems on older kernels, or where it is not offered.
                    Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP)
                        if copied == 0 =>
                    {
                        io::copy(self, out)
                    }
                    _ => Err(e),
                };
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended before its planned length",
                ));
            }
            *pos += n as u64;
            copied += n as u64;
        }
        Ok(copied)
    }

    /// Like `Data::data_ranges`, on the already open source.
    pub fn data_ranges(&self) -> io::Result<Vec<(u64, u64)>> {
        match self {
            DataReader::Bytes { data, .. } if data.is_empty() => Ok(Vec::new()),
            DataReader::Bytes { data, .. } => Ok(vec![(0, data.len() as u64)]),
            DataReader::File { len, .. } if *len == 0 => Ok(Vec::new()),
            DataReader::File {
                file,
                start: 0,
                len,
                ..
            } if *len > SMALL => host_data_ranges(file, *len),
            DataReader::File { len, .. } => Ok(vec![(0, *len)]),
        }
    }

    /// Reads at an absolute offset within the data without moving the stream position.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            DataReader::Bytes { data, .. } => {
                let off = (offset as usize).min(data.len());
                let n = buf.len().min(data.len() - off);
                buf[..n].copy_from_slice(&data[off..off + n]);
                Ok(n)
            }
            DataReader::File {
                file, start, len, ..
            } => {
                if offset >= *len {
                    return Ok(0);
                }
                let want = (buf.len() as u64).min(len - offset) as usize;
                file.read_at(&mut buf[..want], start + offset)
            }
        }
    }

    /// The whole contents, read into a new buffer that is not zeroed first: clearing the
    /// buffers of a tree's thousands of small files was 2–3 % of a disk build's CPU.
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        use std::os::fd::AsRawFd;
        let (file, start, len) = match self {
            DataReader::Bytes { data, .. } => return Ok(data.to_vec()),
            DataReader::File {
                file, start, len, ..
            } => (file, start, len),
        };
        let len = usize::try_from(*len).map_err(io::Error::other)?;
        let mut out: Vec<u8> = Vec::with_capacity(len);
        let spare = out.spare_capacity_mut();
        let mut filled = 0usize;
        while filled < len {
            let rest = &mut spare[filled..len];
            // SAFETY: the kernel writes at most `rest.len()` bytes into `rest`, memory this
            // Vec owns; nothing reads it before `set_len`, which only covers filled bytes.
            let n = unsafe {
                libc::pread(
                    file.as_raw_fd(),
                    rest.as_mut_ptr().cast(),
                    rest.len(),
                    (*start + filled as u64) as libc::off_t,
                )
            };
            match n {
                n if n < 0 => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "source file ended early",
                    ))
                }
                n => filled += n as usize,
            }
        }
        // SAFETY: the loop above initialised all `len` bytes.
        unsafe { out.set_len(len) };
        Ok(out)
    }

    /// Fills `buf` completely from `offset`, failing if the source ends early.
    pub fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.read_at(buf, offset)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "source ended early",
                ));
            }
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }
}

impl Read for DataReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            DataReader::Bytes { data, pos } => {
                let n = buf.len().min(data.len() - *pos);
                buf[..n].copy_from_slice(&data[*pos..*pos + n]);
                *pos += n;
                Ok(n)
            }
            DataReader::File {
                file,
                start,
                pos,
                len,
            } => {
                if *pos >= *len {
                    return Ok(0);
                }
                let want = (buf.len() as u64).min(*len - *pos) as usize;
                let n = file.read_at(&mut buf[..want], *start + *pos)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "source file ended early",
                    ));
                }
                *pos += n as u64;
                Ok(n)
            }
        }
    }
}

impl Seek for DataReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let (cur, len) = match self {
            DataReader::Bytes { data, pos } => (*pos as u64, data.len() as u64),
            DataReader::File { pos, len, .. } => (*pos, *len),
        };
        let new = match to {
            SeekFrom::Start(n) => n as i64,
            SeekFrom::Current(d) => cur as i64 + d,
            SeekFrom::End(d) => len as i64 + d,
        };
        if new < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before start",
            ));
        }
        let new = new as u64;
        match self {
            DataReader::Bytes { pos, data } => *pos = (new as usize).min(data.len()),
            DataReader::File { pos, .. } => *pos = new,
        }
        Ok(new)
    }
}

#[cfg(test)]
#[path = "data_tests.rs"]
mod tests;
