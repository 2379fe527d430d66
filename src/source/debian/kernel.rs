//! A kernel from Debian packages: the vmlinuz to boot and the modules to load.
//!
//! Debian's kernel packages ship no modules.dep (depmod writes it when the package is
//! installed), so dependencies come from each module's own `.modinfo` section
//! (`depends=a,b`). Compressed modules (.ko.xz, .ko.zst) are decompressed at build time:
//! busybox's insmod and older kernels read plain ELF only.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::deb::Unpacked;
use crate::tree::Data;

#[derive(Debug, Clone)]
pub struct KernelFiles {
    pub release: String,
    pub vmlinuz: Data,
    /// Module name (with '_') → (path in the package, compressed bytes' source).
    pub modules: BTreeMap<String, (String, Data)>,
    /// Modules built into the kernel (from modules.builtin).
    pub builtin: BTreeSet<String>,
}

pub fn module_name(file: &str) -> String {
    let base = file.rsplit('/').next().unwrap_or(file);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

pub fn kernel_files(pkgs: &[Unpacked]) -> Result<KernelFiles> {
    let mut vmlinuz = None;
    let mut modules = BTreeMap::new();
    let mut builtin_src = None;
    for u in pkgs {
        let tar = Arc::new(u.data_tar.clone());
        for m in &u.members {
            if m.kind != 'f' {
                continue;
            }
            let data = Data::Slice {
                file: tar.clone(),
                offset: m.offset,
                len: m.size,
            };
            let p = m.path.as_str();
            if let Some(rest) = p.strip_prefix("boot/vmlinuz-") {
                vmlinuz = Some((rest.to_string(), data));
            } else if p.contains("/modules/")
                && (p.ends_with(".ko")
                    || p.ends_with(".ko.xz")
                    || p.ends_with(".ko.zst")
                    || p.ends_with(".ko.gz"))
            {
                modules.insert(module_name(p), (p.to_string(), data));
            } else if p.ends_with("/modules.builtin") {
                builtin_src = Some(data);
            }
        }
    }
    let Some((release, vmlinuz)) = vmlinuz else {
        bail!("the kernel package has no /boot/vmlinuz-*; is it a linux-image package?");
    };
    let mut builtin = BTreeSet::new();
    if let Some(d) = builtin_src {
        let mut s = String::new();
        d.open()?.read_to_string(&mut s)?;
        builtin = s.lines().map(module_name).collect();
    }
    Ok(KernelFiles {
        release,
        vmlinuz,
        modules,
        builtin,
    })
}

/// A module's bytes as plain ELF.
pub fn module_bytes(path: &str, data: &Data) -> Result<Vec<u8>> {
    let mut raw = Vec::new();
    data.open()?.read_to_end(&mut raw)?;
    let mut out = Vec::new();
    if path.ends_with(".xz") {
        liblzma::read::XzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("decompressing {path}"))?;
    } else if path.ends_with(".zst") {
        zstd::stream::Decoder::new(&raw[..])?
            .read_to_end(&mut out)
            .with_context(|| format!("decompressing {path}"))?;
    } else if path.ends_with(".gz") {
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("decompressing {path}"))?;
    } else {
        out = raw;
    }
    Ok(out)
}

/// The `depends=` of a module, from its .modinfo section.
pub fn module_depends(elf: &[u8]) -> Result<Vec<String>> {
    use object::{Object, ObjectSection};
    let f = object::File::parse(elf).context("parsing a kernel module")?;
    let Some(s) = f.section_by_name(".modinfo") else {
        return Ok(Vec::new());
    };
    let data = s.data()?;
    for entry in data.split(|b| *b == 0) {
        if let Some(deps) = entry.strip_prefix(b"depends=") {
            return Ok(String::from_utf8_lossy(deps)
                .split(',')
                .filter(|d| !d.is_empty())
                .map(|d| d.replace('-', "_"))
                .collect());
        }
    }
    Ok(Vec::new())
}

/// A module ready to load: its name, where it goes in an image, its plain ELF bytes.
#[derive(Debug, Clone)]
pub struct LoadableModule {
    pub name: String,
    pub image_path: String,
    pub elf: Arc<[u8]>,
}

/// The requested modules and their dependencies, dependencies first. Built-in modules
/// need no loading and are skipped; unknown names are an error naming what exists.
pub fn closure(k: &KernelFiles, wanted: &[String]) -> Result<Vec<LoadableModule>> {
    let mut out: Vec<LoadableModule> = Vec::new();
    let mut visiting = BTreeSet::new();
    fn visit(
        k: &KernelFiles,
        name: &str,
        out: &mut Vec<LoadableModule>,
        visiting: &mut BTreeSet<String>,
    ) -> Result<()> {
        let name = name.replace('-', "_");
        if out.iter().any(|m| m.name == name) || k.builtin.contains(&name) {
            return Ok(());
        }
        if !visiting.insert(name.clone()) {
            bail!("module dependency cycle at {name}");
        }
        let Some((path, data)) = k.modules.get(&name) else {
            bail!(
                "kernel {} has no module `{name}` (neither a module file nor built in)",
                k.release
            );
        };
        let elf = module_bytes(path, data)?;
        for dep in module_depends(&elf)? {
            visit(k, &dep, out, visiting)?;
        }
        let plain = match path.find(".ko") {
            Some(i) => format!("{}.ko", &path[..i]),
            None => path.clone(),
        };
        out.push(LoadableModule {
            name,
            image_path: plain,
            elf: Arc::from(elf.into_boxed_slice()),
        });
        Ok(())
    }
    for w in wanted {
        visit(k, w, &mut out, &mut visiting)?;
    }
    Ok(out)
}

/// Whether the kernel has this module at all (as a file or built in).
pub fn has_module(k: &KernelFiles, name: &str) -> bool {
    let n = name.replace('-', "_");
    k.modules.contains_key(&n) || k.builtin.contains(&n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        assert_eq!(
            module_name("usr/lib/modules/6.12/kernel/drivers/block/virtio_blk.ko.xz"),
            "virtio_blk"
        );
        assert_eq!(module_name("kernel/crypto/crc32c-intel.ko"), "crc32c_intel");
    }
}
