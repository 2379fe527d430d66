//! PVH boot: QEMU loads a kernel's uncompressed vmlinux and enters it at the 32-bit entry
//! its PVH note names, so the guest never runs the bzImage's decompressor. Under TCG that
//! decompressor is the slowest part of a short run: Debian's xz-compressed 6.1 kernel
//! powers a minimal initramfs run off in 3.7 s entered through PVH against 8.5 s from the
//! bzImage. Each kernel is decompressed once, on the host, into the cache.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::kernel_payload::{self, Format};
use crate::util::atomic::{self, AtomicFile};
use crate::util::cache::Cache;

/// Larger files are not kernels kiln boots.
const MAX_IMAGE: u64 = 256 << 20;
/// A vmlinux without debug information is tens of MiB; this bounds a hostile payload.
const MAX_VMLINUX: u64 = 512 << 20;
/// Decompressed kernels kept: a kernel developer's rebuilds each add one.
const KEEP: usize = 16;
/// The ELF note of a PVH entry point: owner "Xen", type XEN_ELFNOTE_PHYS32_ENTRY.
const PHYS32_ENTRY: u32 = 18;
/// Changes when what this module writes for a kernel changes.
const LAYOUT: &str = "pvh-2";

/// The vmlinux inside `kernel`, decompressed into `cache` (or found there), when QEMU can
/// enter it through PVH; otherwise `Ok(Err(why))`. A file that is not a bzImage (an ELF
/// vmlinux, which QEMU enters by itself) is a reason, not an error.
pub fn vmlinux(kernel: &Path, cache: &Cache) -> Result<std::result::Result<PathBuf, String>> {
    let image = match read_image(kernel)? {
        Ok(image) => image,
        Err(why) => return Ok(Err(why)),
    };
    let key = hex::encode(
        Sha256::new_with_prefix(LAYOUT)
            .chain_update(&image)
            .finalize(),
    );
    let dir = cache.root.join("pvh");
    let found = dir.join(format!("{key}.vmlinux"));
    let refused = dir.join(format!("{key}.none"));
    // Two cells of a matrix may boot the same kernel at once: one decompresses it.
    let _lock = cache.lock(&format!("pvh-{key}"))?;
    if found.exists() {
        // The newest used are the ones kept.
        let _ = File::options()
            .append(true)
            .open(&found)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        return Ok(Ok(found));
    }
    if let Ok(why) = std::fs::read_to_string(&refused) {
        return Ok(Err(why));
    }
    let made = extract(&image, &found)?;
    match &made {
        Ok(_) => prune(&dir),
        Err(why) => atomic::write(&refused, why.as_bytes())?,
    }
    Ok(made)
}

/// The kernel's bytes, or why they are not a kernel kiln decompresses.
fn read_image(kernel: &Path) -> Result<std::result::Result<Vec<u8>, String>> {
    let file = File::open(kernel).with_context(|| format!("opening {}", kernel.display()))?;
    let mut image = Vec::new();
    file.take(MAX_IMAGE + 1)
        .read_to_end(&mut image)
        .with_context(|| format!("reading {}", kernel.display()))?;
    if image.len() as u64 > MAX_IMAGE {
        return Ok(Err(format!("it is larger than {} MiB", MAX_IMAGE >> 20)));
    }
    Ok(Ok(image))
}

/// Decompresses the payload of `image` to `dest` when it is a vmlinux with a PVH entry.
fn extract(image: &[u8], dest: &Path) -> Result<std::result::Result<PathBuf, String>> {
    let Some(payload) = kernel_payload::payload(image) else {
        return Ok(Err(
            "it is not a bzImage (boot protocol 2.08 or later)".into()
        ));
    };
    let Some(decoder) = Format::detect(payload).and_then(|f| f.decoder(payload)) else {
        return Ok(Err(
            "its payload is not compressed with gzip, xz, zstd, lz4 or lzma".into(),
        ));
    };
    let mut out = AtomicFile::create(dest)?;
    // Read errors are the payload's fault and a reason; write errors are the cache's.
    let mut decoder = decoder.take(MAX_VMLINUX + 1);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Ok(Err(format!("its payload does not decompress: {e}"))),
        };
        total += n as u64;
        if total > MAX_VMLINUX {
            return Ok(Err(format!(
                "its payload decompresses to more than {} MiB",
                MAX_VMLINUX >> 20
            )));
        }
        out.file()
            .write_all(&buf[..n])
            .with_context(|| format!("writing {}", out.path().display()))?;
    }
    out.file().flush()?;
    let elf =
        std::fs::read(out.path()).with_context(|| format!("reading {}", out.path().display()))?;
    if let Err(why) = has_pvh_entry(&elf) {
        return Ok(Err(why));
    }
    Ok(Ok(out.commit()?))
}

/// Whether `elf` is an x86-64 ELF image with a PVH entry note (CONFIG_PVH).
fn has_pvh_entry(elf: &[u8]) -> std::result::Result<(), String> {
    use object::read::elf::{FileHeader, ProgramHeader};
    let header = object::elf::FileHeader64::<object::Endianness>::parse(elf)
        .map_err(|_| "its payload is not a 64-bit ELF vmlinux".to_string())?;
    let bad = |_| "its vmlinux has malformed ELF headers".to_string();
    let endian = header.endian().map_err(bad)?;
    if header.e_machine(endian) != object::elf::EM_X86_64 {
        return Err("its vmlinux is not for x86-64".into());
    }
    for ph in header.program_headers(endian, elf).map_err(bad)? {
        let Some(mut notes) = ph.notes(endian, elf).map_err(bad)? else {
            continue;
        };
        while let Some(note) = notes.next().map_err(bad)? {
            if note.name() == b"Xen" && note.n_type(endian) == object::elf::NoteType(PHYS32_ENTRY) {
                return Ok(());
            }
        }
    }
    Err("it has no PVH entry point (CONFIG_PVH is not set)".into())
}

/// Removes all but the [`KEEP`] most recently used decompressed kernels.
fn prune(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut kernels: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".vmlinux"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    kernels.sort_by_key(|k| std::cmp::Reverse(k.0));
    for (_, old) in kernels.into_iter().skip(KEEP) {
        let _ = std::fs::remove_file(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::kernel_payload::tests::bzimage;

    /// A minimal x86-64 ELF executable with one PT_NOTE segment holding `note`.
    fn elf_with_note(owner: &[u8], n_type: u32) -> Vec<u8> {
        let mut note = Vec::new();
        note.extend_from_slice(&(owner.len() as u32 + 1).to_le_bytes());
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&n_type.to_le_bytes());
        note.extend_from_slice(owner);
        note.push(0);
        while note.len() % 4 != 0 {
            note.push(0);
        }
        note.extend_from_slice(&0x0100_0000u32.to_le_bytes());
        let mut e = vec![0u8; 64 + 56];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2; // 64-bit
        e[5] = 1; // little-endian
        e[6] = 1;
        e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        e[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
        e[20..24].copy_from_slice(&1u32.to_le_bytes());
        e[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        e[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        e[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        e[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let ph = &mut e[64..];
        ph[..4].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        ph[8..16].copy_from_slice(&120u64.to_le_bytes()); // p_offset
        ph[32..40].copy_from_slice(&(note.len() as u64).to_le_bytes()); // p_filesz
        ph[40..48].copy_from_slice(&(note.len() as u64).to_le_bytes());
        ph[48..56].copy_from_slice(&4u64.to_le_bytes()); // p_align
        e.extend_from_slice(&note);
        e
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn finds_the_pvh_note() {
        assert_eq!(has_pvh_entry(&elf_with_note(b"Xen", PHYS32_ENTRY)), Ok(()));
        assert!(has_pvh_entry(&elf_with_note(b"Xen", 5))
            .unwrap_err()
            .contains("CONFIG_PVH"));
        assert!(has_pvh_entry(&elf_with_note(b"GNU", PHYS32_ENTRY)).is_err());
        assert!(has_pvh_entry(b"not an elf").is_err());
    }

    #[test]
    fn decompresses_once_into_the_cache() {
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(cache_dir.path().to_path_buf()).unwrap();
        let elf = elf_with_note(b"Xen", PHYS32_ENTRY);
        let kernel = cache_dir.path().join("bzImage");
        std::fs::write(&kernel, bzimage(27, &xz(&elf))).unwrap();
        let out = vmlinux(&kernel, &cache).unwrap().unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), elf);
        // The second time, the cached file is the answer (its content is not rewritten).
        std::fs::write(&out, b"cached").unwrap();
        assert_eq!(vmlinux(&kernel, &cache).unwrap().unwrap(), out);
        assert_eq!(std::fs::read(&out).unwrap(), b"cached");
    }

    #[test]
    fn says_why_a_kernel_cannot_be_entered() {
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(cache_dir.path().to_path_buf()).unwrap();
        let kernel = cache_dir.path().join("k");
        let cases: [(Vec<u8>, &str); 4] = [
            (elf_with_note(b"Xen", PHYS32_ENTRY), "not a bzImage"),
            (bzimage(4, b"plain bytes"), "not compressed"),
            (bzimage(4, &xz(b"no elf here")), "not a 64-bit ELF"),
            (bzimage(4, &xz(&elf_with_note(b"Xen", 1))), "CONFIG_PVH"),
        ];
        for (image, why) in cases {
            std::fs::write(&kernel, image).unwrap();
            let got = vmlinux(&kernel, &cache).unwrap().unwrap_err();
            assert!(got.contains(why), "{got}");
            // Remembered, and nothing half-written is left behind.
            assert_eq!(vmlinux(&kernel, &cache).unwrap().unwrap_err(), got);
        }
        let left: Vec<_> = std::fs::read_dir(cache_dir.path().join("pvh"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.iter().all(|n| n.ends_with(".none")), "{left:?}");
    }

    #[test]
    fn a_truncated_payload_is_a_reason() {
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(cache_dir.path().to_path_buf()).unwrap();
        let kernel = cache_dir.path().join("k");
        let full = xz(&elf_with_note(b"Xen", PHYS32_ENTRY));
        std::fs::write(&kernel, bzimage(4, &full[..full.len() / 2])).unwrap();
        assert!(vmlinux(&kernel, &cache).unwrap().is_err());
    }
}
