//! A kernel's files, wherever they come from (a package, later a build tree): the image
//! to boot and the modules to load, with their dependencies.
//!
//! Dependencies come from each module's own `.modinfo` section (`depends=a,b`), not from
//! modules.dep: Debian's kernel packages ship none (depmod writes it when the package is
//! installed). Compressed modules (.ko.xz, .ko.zst) are decompressed at build time:
//! busybox's insmod and older kernels read plain ELF only.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::tree::Data;

/// A kernel and its modules.
#[derive(Debug, Clone)]
pub struct KernelFiles {
    /// `uname -r`.
    pub release: String,
    /// The image to boot.
    pub vmlinuz: Data,
    /// Module name (with '_') → (path in the package, compressed bytes' source).
    pub modules: BTreeMap<String, (String, Data)>,
    /// Modules built into the kernel (from modules.builtin).
    pub builtin: BTreeSet<String>,
    /// The kernel's build configuration (`/boot/config-*`), when shipped.
    pub config: Option<Data>,
}

/// A module's name from its file name: `virtio-blk.ko.xz` → `virtio_blk`.
pub fn module_name(file: &str) -> String {
    let base = file.rsplit('/').next().unwrap_or(file);
    let stem = base.split(".ko").next().unwrap_or(base);
    stem.replace('-', "_")
}

/// A module's bytes as plain ELF.
pub fn module_bytes(path: &str, data: &Data) -> Result<Vec<u8>> {
    let mut raw = Vec::new();
    data.open()?.read_to_end(&mut raw)?;
    let mut out = Vec::new();
    crate::util::decompress::Codec::from_name(path)
        .reader(&raw[..])?
        .read_to_end(&mut out)
        .with_context(|| format!("decompressing {path}"))?;
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
    /// Module name, with '_' for '-'.
    pub name: String,
    /// Where it goes in the image: its path in the package, ending in plain `.ko`.
    pub image_path: String,
    /// The module as uncompressed ELF.
    pub elf: Arc<[u8]>,
}

/// The module of `k` (loadable or built in) whose name is nearest to `name`, if one is
/// near enough to be a likely typo.
fn nearest_module<'a>(k: &'a KernelFiles, name: &str) -> Option<&'a str> {
    k.modules
        .keys()
        .chain(k.builtin.iter())
        .map(|m| (strsim::levenshtein(m, name), m.as_str()))
        .filter(|(d, m)| *d <= 2.max(name.len() / 4) && *d < m.len())
        .min()
        .map(|(_, m)| m)
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
            let hint = nearest_module(k, &name)
                .map(|m| format!("; did you mean `{m}`?"))
                .unwrap_or_default();
            bail!(
                "kernel {} has no module `{name}` (neither a module file nor built in){hint}",
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

/// The modules of a distribution kernel image `vmlinuz-RELEASE` (or `bzImage-RELEASE`):
/// from `lib/modules/RELEASE` beside its directory (an unpacked package, `boot/` and
/// `lib/` side by side), else installed on this host (`/lib/modules/RELEASE`). `None`
/// for an image with no release in its name or no such directory.
pub fn installed_modules(image: &std::path::Path) -> Result<Option<KernelFiles>> {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(release) = ["vmlinuz-", "bzImage-"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .filter(|r| !r.is_empty())
    else {
        return Ok(None);
    };
    let beside = image
        .parent()
        .and_then(|b| b.parent())
        .map(|top| top.join("lib/modules").join(release));
    let host = std::path::Path::new("/lib/modules").join(release);
    let Some(dir) = beside
        .into_iter()
        .chain([host])
        .find(|d| d.join("kernel").is_dir())
    else {
        return Ok(None);
    };
    let mut modules = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir.join("kernel"))
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
    {
        let p = e.path();
        let s = p.to_string_lossy();
        if e.file_type().is_file()
            && [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                .iter()
                .any(|x| s.ends_with(x))
        {
            let rel = p.strip_prefix(&dir).unwrap_or(p).to_string_lossy();
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            modules.insert(
                module_name(&rel),
                (
                    format!("lib/modules/{release}/{rel}"),
                    Data::host(p.to_path_buf(), size),
                ),
            );
        }
    }
    let builtin = std::fs::read_to_string(dir.join("modules.builtin"))
        .map(|t| t.lines().map(module_name).collect())
        .unwrap_or_default();
    let size = std::fs::metadata(image)?.len();
    Ok(Some(KernelFiles {
        release: release.to_string(),
        vmlinuz: Data::host(image.to_path_buf(), size),
        modules,
        builtin,
        config: None,
    }))
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
    fn an_unknown_module_suggests_the_nearest() {
        let module = || ("m.ko".to_string(), crate::tree::Data::bytes(Vec::new()));
        let k = KernelFiles {
            release: "6.1.0-k".into(),
            vmlinuz: crate::tree::Data::bytes(Vec::new()),
            modules: [
                ("virtio_blk".to_string(), module()),
                ("9pnet_virtio".to_string(), module()),
            ]
            .into_iter()
            .collect(),
            builtin: ["ext4".to_string()].into_iter().collect(),
            config: None,
        };
        let e = closure(&k, &["virtio-blck".to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `virtio_blk`?"), "{e}");
        let e = closure(&k, &["ext3".to_string()]).unwrap_err().to_string();
        assert!(e.contains("did you mean `ext4`?"), "{e}");
        let e = closure(&k, &["zram".to_string()]).unwrap_err().to_string();
        assert!(!e.contains("did you mean"), "nothing near: {e}");
    }

    #[test]
    fn module_names() {
        assert_eq!(
            module_name("usr/lib/modules/6.12/kernel/drivers/block/virtio_blk.ko.xz"),
            "virtio_blk"
        );
        assert_eq!(module_name("kernel/crypto/crc32c-intel.ko"), "crc32c_intel");
    }
}
