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

#[cfg(test)]
mod tests {
    use super::*;

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
