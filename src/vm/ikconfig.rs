//! A kernel built with CONFIG_IKCONFIG carries its own `.config`; the preflight reads it
//! from the image when no configuration file sits beside the kernel.

use std::io::{self, Read};
use std::path::Path;

use super::kernel_payload::{Format, FORMATS};

const START: &[u8] = b"IKCFG_ST";
/// Larger files are not kernels kiln would boot, and reading them whole would be costly.
const MAX_IMAGE: u64 = 256 << 20;
/// Decompressed bytes allowed over all candidates of one image: a vmlinux is tens of MiB,
/// and a hostile image must not keep the decoders busy forever.
const MAX_DECOMPRESSED: u64 = 512 << 20;
/// A real `.config` is a few hundred KiB; this bounds a gzip bomb after the marker.
const MAX_CONFIG: u64 = 16 << 20;
/// Decompressed bytes awaited after a marker before its gzip data is tried; a compressed
/// `.config` is tens of KiB.
const MAX_PENDING: usize = 2 << 20;
/// Places a format's magic is tried from. The real payload comes early in a bzImage;
/// the rest are chance matches inside compressed data.
const MAX_CANDIDATES: usize = 64;
/// Markers tried per searched stream: a kernel has one, a hostile image could have many.
const MAX_MARKERS: usize = 16;
const CHUNK: usize = 64 << 10;

/// The configuration embedded in a kernel image (bzImage/vmlinuz, or an uncompressed
/// vmlinux), if any.
pub fn extract(image: &[u8]) -> Option<String> {
    in_image(image).or_else(|| in_payload(image))
}

/// Reads `path` (at most 256 MiB; return None beyond) and calls [`extract`].
pub fn read(path: &Path) -> Option<String> {
    // The cells of a matrix boot one kernel many times; decompress it once per process.
    type Seen =
        std::collections::HashMap<(std::path::PathBuf, u64, std::time::SystemTime), Option<String>>;
    static SEEN: std::sync::OnceLock<std::sync::Mutex<Seen>> = std::sync::OnceLock::new();
    let md = std::fs::metadata(path).ok()?;
    let key = (path.to_path_buf(), md.len(), md.modified().ok()?);
    let seen = SEEN.get_or_init(Default::default);
    if let Some(hit) = seen.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return hit;
    }
    let found = read_uncached(path);
    if let Ok(mut m) = seen.lock() {
        m.insert(key, found.clone());
    }
    found
}

fn read_uncached(path: &Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    if file.metadata().ok()?.len() > MAX_IMAGE {
        return None;
    }
    let mut image = Vec::new();
    // The file may have grown since its length was asked.
    file.take(MAX_IMAGE + 1).read_to_end(&mut image).ok()?;
    if image.len() as u64 > MAX_IMAGE {
        return None;
    }
    extract(&image)
}

/// The configuration of an uncompressed vmlinux.
fn in_image(image: &[u8]) -> Option<String> {
    occurrences(image, START)
        .take(MAX_MARKERS)
        .find_map(|at| config_at(&image[at + START.len()..]))
}

/// The configuration of a bzImage, whose vmlinux is compressed: every place a stream
/// could start is decompressed and searched, as `scripts/extract-ikconfig` does, since
/// where the payload starts differs between kernel versions.
fn in_payload(image: &[u8]) -> Option<String> {
    let mut budget = MAX_DECOMPRESSED;
    for format in FORMATS {
        for at in occurrences(image, format.magic()).take(MAX_CANDIDATES) {
            if budget == 0 {
                return None;
            }
            if let Some(config) = search_payload(format, &image[at..], &mut budget) {
                return Some(config);
            }
        }
    }
    None
}

/// Decompresses `payload` as `format` and searches the result.
fn search_payload(format: Format, payload: &[u8], budget: &mut u64) -> Option<String> {
    scan(format.decoder(payload)?, budget)
}

/// Searches what `decoder` produces for a configuration, reading at most `*budget` bytes
/// and taking what it reads off the budget. The output is searched as it comes, so a
/// vmlinux is never held whole and a decoder that fails part way has its output so far
/// searched: a payload is often followed by bytes its decoder chokes on.
fn scan(decoder: impl Read, budget: &mut u64) -> Option<String> {
    let mut input = decoder.take(*budget);
    let mut chunk = vec![0u8; CHUNK];
    // Output not yet ruled out: a marker and what follows it, or a tail short enough to
    // be the beginning of one.
    let mut window: Vec<u8> = Vec::new();
    // Where in `window` the search for a marker resumes.
    let mut from = 0;
    let mut attempts = 0;
    let found = 'read: loop {
        let done = match input.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => {
                window.extend_from_slice(&chunk[..n]);
                false
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
            Err(_) => true,
        };
        while let Some(at) = find(&window[from..], START).map(|i| from + i) {
            let gzip = &window[at + START.len()..];
            if !done && gzip.len() < MAX_PENDING {
                // The configuration may not all be out yet.
                window.drain(..at);
                from = 0;
                continue 'read;
            }
            if let Some(config) = config_at(gzip) {
                break 'read Some(config);
            }
            attempts += 1;
            if attempts == MAX_MARKERS {
                break 'read None;
            }
            from = at + 1;
        }
        if done {
            break None;
        }
        let keep = window.len().saturating_sub(START.len() - 1).max(from);
        window.drain(..keep);
        from = 0;
    };
    *budget = input.limit();
    found
}

/// The configuration whose gzip data starts `data`, as it follows the marker `IKCFG_ST`.
/// The closing `IKCFG_ED` is not looked for: the gzip member says where it ends.
fn config_at(data: &[u8]) -> Option<String> {
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(MAX_CONFIG + 1)
        .read_to_end(&mut text)
        .ok()?;
    if text.len() as u64 > MAX_CONFIG {
        return None;
    }
    let text = String::from_utf8(text)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    // Data that merely gunzips after a chance marker is not a configuration.
    text.contains("CONFIG_").then_some(text)
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while let Some(i) = haystack[from..].iter().position(|&b| b == first) {
        let at = from + i;
        if haystack[at + 1..].starts_with(rest) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Every place `needle` occurs in `haystack`, overlapping ones included.
fn occurrences<'a>(haystack: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    let mut from = 0;
    std::iter::from_fn(move || {
        let at = from + find(haystack.get(from..)?, needle)?;
        from = at + 1;
        Some(at)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const CONFIG: &str = "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86 6.1.0 Kernel Configuration\n#\nCONFIG_64BIT=y\nCONFIG_VIRTIO_BLK=y\n# CONFIG_DEBUG_INFO is not set\nCONFIG_LOCALVERSION=\"-kiln\"\n";

    /// Incompressible bytes, different for each seed.
    fn junk(len: usize, seed: u32) -> Vec<u8> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (state >> 16) as u8
            })
            .collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 3).unwrap()
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// The configuration well past the first chunk the scanner reads, and followed by
    /// less than it waits for, so that the end of the stream is what lets it try.
    fn vmlinux(config: &str) -> Vec<u8> {
        cat(&[
            &junk(200_000, 1),
            START,
            &gzip(config.as_bytes()),
            b"IKCFG_ED",
            &junk(100_000, 2),
        ])
    }

    /// A header, the payload, and what the kernel appends after it (here junk).
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        cat(&[&junk(20_000, 3), payload, &junk(5_000, 4)])
    }

    /// Hands out `step` bytes a read, then fails as a decoder does on trailing data.
    struct Choppy<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Choppy<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.data.is_empty() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "trailing data"));
            }
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn reads_an_uncompressed_vmlinux() {
        assert_eq!(extract(&vmlinux(CONFIG)).as_deref(), Some(CONFIG));
    }

    #[test]
    fn reads_a_zstd_bzimage() {
        let image = bzimage(&zstd(&vmlinux(CONFIG)));
        // The decompressing path itself: the marker may also sit in raw literals.
        assert_eq!(in_payload(&image).as_deref(), Some(CONFIG));
        assert_eq!(extract(&image).as_deref(), Some(CONFIG));
    }

    #[test]
    fn reads_an_xz_bzimage() {
        let image = bzimage(&xz(&vmlinux(CONFIG)));
        assert_eq!(in_payload(&image).as_deref(), Some(CONFIG));
        assert_eq!(extract(&image).as_deref(), Some(CONFIG));
    }

    #[test]
    fn reads_a_gzip_bzimage() {
        let image = bzimage(&gzip(&vmlinux(CONFIG)));
        assert_eq!(in_payload(&image).as_deref(), Some(CONFIG));
        assert_eq!(extract(&image).as_deref(), Some(CONFIG));
    }

    #[test]
    fn skips_candidates_that_do_not_decompress() {
        let image = cat(&[
            &junk(1_000, 5),
            Format::Zstd.magic(),
            &junk(1_000, 6),
            Format::Xz.magic(),
            &junk(1_000, 7),
            &zstd(&vmlinux(CONFIG)),
            &junk(1_000, 8),
        ]);
        assert_eq!(in_payload(&image).as_deref(), Some(CONFIG));
    }

    #[test]
    fn nothing_without_a_configuration() {
        assert_eq!(extract(&junk(50_000, 9)), None);
        assert_eq!(extract(&bzimage(&zstd(&junk(50_000, 10)))), None);
        assert_eq!(extract(&bzimage(&xz(&junk(50_000, 11)))), None);
        // A marker, but what follows gunzips to something else.
        let image = cat(&[&junk(1_000, 12), START, &gzip(b"hello"), &junk(1_000, 13)]);
        assert_eq!(extract(&image), None);
        // A marker, but nothing gzip after it.
        let image = cat(&[&junk(1_000, 14), START, &junk(1_000, 15)]);
        assert_eq!(extract(&image), None);
    }

    #[test]
    fn ignores_what_follows_the_gzip_member() {
        let gz = gzip(CONFIG.as_bytes());
        assert_eq!(
            config_at(&cat(&[&gz, &junk(10_000, 16)])).as_deref(),
            Some(CONFIG)
        );
        let image = cat(&[&junk(1_000, 17), START, &gz, &junk(10_000, 18)]);
        assert_eq!(extract(&image).as_deref(), Some(CONFIG));
    }

    #[test]
    fn finds_markers_split_across_reads_and_before_an_error() {
        let image = cat(&[&junk(5_000, 19), START, &gzip(CONFIG.as_bytes())]);
        for step in [1, 3, 7, 8, 9, 4096] {
            let mut budget = MAX_DECOMPRESSED;
            let found = scan(Choppy { data: &image, step }, &mut budget);
            assert_eq!(found.as_deref(), Some(CONFIG), "step {step}");
        }
    }

    #[test]
    fn stops_at_the_budget() {
        let image = vmlinux(CONFIG);
        let mut budget = 100_000;
        assert_eq!(scan(&image[..], &mut budget), None);
        assert_eq!(budget, 0);
        let mut budget = MAX_DECOMPRESSED;
        assert_eq!(scan(&image[..], &mut budget).as_deref(), Some(CONFIG));
    }

    #[test]
    fn reads_a_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("vmlinuz");
        std::fs::write(&path, bzimage(&zstd(&vmlinux(CONFIG)))).unwrap();
        assert_eq!(read(&path).as_deref(), Some(CONFIG));
        assert_eq!(read(&d.path().join("missing")), None);
    }

    #[test]
    fn finds_every_occurrence() {
        assert_eq!(find(b"abcabc", b"ca"), Some(2));
        assert_eq!(find(b"abc", b"cd"), None);
        assert_eq!(find(b"ab", b"abc"), None);
        let all: Vec<usize> = occurrences(b"aaaa", b"aa").collect();
        assert_eq!(all, [0, 1, 2]);
    }
}
