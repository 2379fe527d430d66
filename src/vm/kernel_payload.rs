//! The compressed vmlinux inside an x86 bzImage: where the boot header says it lies, and
//! the decoders of the formats distributions compress it in.

use std::io::Read;

use liblzma::stream::Stream;

/// Kernels are compressed with dictionaries of at most 64 MiB; a stream claiming more
/// must not make liblzma allocate it.
const LZMA_MEMLIMIT: u64 = 256 << 20;

/// The formats a bzImage's payload is read in: what distributions ship (Debian's generic
/// kernels are xz, its cloud kernels LZ4). bzip2 and LZO kernels are not read: no decoder
/// for them is among kiln's dependencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// gzip (the kernel's default).
    Gzip,
    /// xz (Debian's kernels).
    Xz,
    /// zstd.
    Zstd,
    /// Legacy LZMA.
    Lzma,
    /// LZ4 in its legacy framing (`lz4 -l`), as the kernel's build writes it.
    Lz4,
}

/// In the order `scripts/extract-ikconfig` tries them; LZMA last because its magic is
/// short and turns up in code by chance.
pub const FORMATS: [Format; 5] = [
    Format::Gzip,
    Format::Xz,
    Format::Zstd,
    Format::Lz4,
    Format::Lzma,
];

/// What a legacy LZ4 stream starts with (and restarts with, when streams are joined).
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
/// The most one block of legacy LZ4 decompresses to.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

impl Format {
    /// The bytes a stream of this format starts with.
    pub fn magic(self) -> &'static [u8] {
        match self {
            Format::Gzip => &[0x1f, 0x8b, 0x08],
            Format::Xz => &[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00],
            Format::Zstd => &[0x28, 0xb5, 0x2f, 0xfd],
            Format::Lzma => &[0x5d, 0x00, 0x00],
            Format::Lz4 => &LZ4_LEGACY_MAGIC,
        }
    }

    /// The format `data` starts in, if kiln reads it.
    pub fn detect(data: &[u8]) -> Option<Format> {
        FORMATS.into_iter().find(|f| data.starts_with(f.magic()))
    }

    /// A reader of what `data`, a stream in this format, decompresses to. It stops at the
    /// end of the first gzip member or zstd frame: what the kernel appends after its
    /// payload (the decompressed size) is not another one.
    pub fn decoder<'a>(self, data: &'a [u8]) -> Option<Box<dyn Read + 'a>> {
        Some(match self {
            Format::Gzip => Box::new(flate2::read::GzDecoder::new(data)),
            Format::Xz => {
                let stream = Stream::new_stream_decoder(LZMA_MEMLIMIT, 0).ok()?;
                Box::new(liblzma::read::XzDecoder::new_stream(data, stream))
            }
            Format::Lzma => {
                let stream = Stream::new_lzma_decoder(LZMA_MEMLIMIT).ok()?;
                Box::new(liblzma::read::XzDecoder::new_stream(data, stream))
            }
            Format::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(data)
                    .ok()?
                    .single_frame(),
            ),
            Format::Lz4 => Box::new(Lz4Legacy {
                input: data,
                block: Vec::new(),
                at: 0,
            }),
        })
    }
}

/// A reader of legacy-framed LZ4: blocks of at most 8 MiB, each after its compressed
/// length (32-bit little-endian), with the stream's magic possibly repeated between them.
/// The kernel's build appends the decompressed size, four bytes that end the stream.
struct Lz4Legacy<'a> {
    input: &'a [u8],
    block: Vec<u8>,
    at: usize,
}

impl Lz4Legacy<'_> {
    /// Decodes the next block into `self.block`; false at the end of the stream.
    fn next_block(&mut self) -> std::io::Result<bool> {
        let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        loop {
            let Some((len, rest)) = self.input.split_first_chunk::<4>() else {
                return Ok(false);
            };
            if *len == LZ4_LEGACY_MAGIC {
                self.input = rest;
                continue;
            }
            let len = u32::from_le_bytes(*len) as usize;
            if rest.is_empty() {
                // The appended size.
                return Ok(false);
            }
            let Some(compressed) = rest.get(..len) else {
                return Err(bad(format!(
                    "an LZ4 block of {len} bytes, with {} left",
                    rest.len()
                )));
            };
            self.block.resize(LZ4_LEGACY_BLOCK, 0);
            let n = lz4_flex::block::decompress_into(compressed, &mut self.block)
                .map_err(|e| bad(format!("LZ4: {e}")))?;
            self.block.truncate(n);
            self.input = &rest[len..];
            self.at = 0;
            return Ok(true);
        }
    }
}

impl Read for Lz4Legacy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The compressed vmlinux of a bzImage, as its boot header (protocol 2.08 or later)
/// locates it; None for anything else.
pub fn payload(image: &[u8]) -> Option<&[u8]> {
    let u8_at = |at: usize| image.get(at).copied();
    let u16_at = |at: usize| Some(u16::from_le_bytes(image.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(image.get(at..at + 4)?.try_into().ok()?));
    if image.get(0x202..0x206)? != b"HdrS" || u16_at(0x206)? < 0x208 {
        return None;
    }
    // The boot protocol's rule for old images: 0 setup sectors means 4.
    let setup_sects = match u8_at(0x1f1)? {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + usize::try_from(u32_at(0x248)?).ok()?;
    let len = usize::try_from(u32_at(0x24c)?).ok()?;
    image.get(start..start.checked_add(len)?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A bzImage-shaped file: a boot header at its place, `setup_sects` sectors of setup
    /// code, then some protected-mode code before `payload`, and a trailer after it.
    pub(crate) fn bzimage(setup_sects: u8, payload: &[u8]) -> Vec<u8> {
        let sects = if setup_sects == 0 {
            4
        } else {
            setup_sects as usize
        };
        let code = 1000;
        let mut image = vec![0u8; (sects + 1) * 512 + code];
        image[0x1f1] = setup_sects;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        image[0x248..0x24c].copy_from_slice(&(code as u32).to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(payload);
        image.extend_from_slice(&[0xaa; 16]);
        image
    }

    #[test]
    fn the_header_locates_the_payload() {
        let image = bzimage(27, b"\x28\xb5\x2f\xfdrest");
        assert_eq!(payload(&image), Some(&b"\x28\xb5\x2f\xfdrest"[..]));
        assert_eq!(Format::detect(payload(&image).unwrap()), Some(Format::Zstd));
        // Zero setup sectors means four.
        let image = bzimage(0, b"xyz");
        assert_eq!(payload(&image), Some(&b"xyz"[..]));
    }

    /// `data` in legacy LZ4 framing, in blocks of `block` bytes, with the kernel's
    /// trailer.
    pub(crate) fn lz4_legacy(data: &[u8], block: usize) -> Vec<u8> {
        let mut out = LZ4_LEGACY_MAGIC.to_vec();
        for chunk in data.chunks(block) {
            let c = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&(c.len() as u32).to_le_bytes());
            out.extend_from_slice(&c);
        }
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    #[test]
    fn reads_legacy_lz4_as_the_kernel_writes_it() {
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
            .collect();
        let stream = lz4_legacy(&data, 1 << 20);
        assert_eq!(Format::detect(&stream), Some(Format::Lz4));
        let mut out = Vec::new();
        Format::Lz4
            .decoder(&stream)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        // A block cut short is an error, not a short kernel.
        let cut = &stream[..stream.len() / 2];
        let mut out = Vec::new();
        assert!(Format::Lz4
            .decoder(cut)
            .unwrap()
            .read_to_end(&mut out)
            .is_err());
    }

    #[test]
    fn anything_else_has_no_payload() {
        assert_eq!(payload(b"\x7fELF"), None);
        let mut old = bzimage(4, b"xyz");
        old[0x206..0x208].copy_from_slice(&0x207u16.to_le_bytes());
        assert_eq!(payload(&old), None, "protocol 2.07 has no payload fields");
        let mut past_end = bzimage(4, b"xyz");
        past_end[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(payload(&past_end), None);
    }
}
