//! The one place that chooses a decompressor from a file name's suffix (package members,
//! archive indexes, kernel modules).

use std::io::Read;

use anyhow::{bail, Result};

/// A compression kiln reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// `.xz`
    Xz,
    /// `.zst`
    Zstd,
    /// `.gz`
    Gzip,
    /// No compression.
    None,
}

impl Codec {
    /// The codec a name's suffix says; names without a known suffix are uncompressed.
    pub fn from_name(name: &str) -> Codec {
        if name.ends_with(".xz") {
            Codec::Xz
        } else if name.ends_with(".zst") {
            Codec::Zstd
        } else if name.ends_with(".gz") {
            Codec::Gzip
        } else {
            Codec::None
        }
    }

    /// Wraps `r` in this codec's decoder.
    pub fn reader<'a>(self, r: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Codec::Xz => Box::new(liblzma::read::XzDecoder::new(r)),
            Codec::Zstd => Box::new(zstd::stream::Decoder::new(r)?),
            Codec::Gzip => Box::new(flate2::read::GzDecoder::new(r)),
            Codec::None => Box::new(r),
        })
    }
}

/// A decoder for `name`, which must end in `.xz`, `.zst`, `.gz` or `plain` (such as
/// `.tar`): anything else is an error naming the member.
pub fn by_suffix<'a>(name: &str, plain: &str, r: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let codec = Codec::from_name(name);
    if codec == Codec::None && !name.ends_with(plain) {
        bail!("{name} uses a compression kiln does not read (xz, zstd, gzip or none)");
    }
    codec.reader(r)
}

/// A reader that fails, rather than ends, once more than `limit` bytes came out of
/// `inner`: a decompression bomb is refused with a message, not truncated silently.
pub struct Bounded<R> {
    inner: R,
    left: u64,
    limit: u64,
    what: String,
}

impl<R: Read> Bounded<R> {
    /// `inner`, allowed `limit` bytes; `what` names it in the error.
    pub fn new(inner: R, limit: u64, what: impl Into<String>) -> Bounded<R> {
        Bounded {
            inner,
            left: limit,
            limit,
            what: what.into(),
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // One byte past the limit tells a stream that ends there from one that goes on.
        let want = buf
            .len()
            .min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} decompresses to more than {}; refusing it",
                    self.what,
                    crate::util::size::human_bytes(self.limit)
                ),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_refuses_past_its_limit_and_passes_what_fits() {
        let mut out = Vec::new();
        Bounded::new(&[7u8; 100][..], 100, "x")
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len(), 100);
        let e = Bounded::new(std::io::repeat(0), 1 << 20, "control.tar of p")
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("control.tar of p decompresses to more than"),
            "{e}"
        );
    }

    #[test]
    fn round_trips_each_codec() {
        let text = b"hello, kiln".repeat(100);
        let zst = zstd::encode_all(&text[..], 3).unwrap();
        let mut out = Vec::new();
        by_suffix("x.tar.zst", ".tar", &zst[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, text);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &text).unwrap();
        let gz = gz.finish().unwrap();
        out.clear();
        Codec::from_name("a.gz")
            .reader(&gz[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, text);
        assert!(by_suffix("data.tar.lz4", ".tar", &b""[..]).is_err());
        assert_eq!(Codec::from_name("m.ko"), Codec::None);
    }
}
