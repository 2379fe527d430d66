//! A kernel build tree after `make`, in the source directory or an `O=` one: the image to
//! boot, vmlinux for gdb, `.config` for the preflight, and the modules the build made,
//! laid out as `make modules_install` would lay them out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::kernel::{module_name, KernelFiles};
use crate::tree::Data;

/// Where x86's image is, relative to the tree's top.
const IMAGE: &str = "arch/x86/boot/bzImage";

/// Suffixes a built module may have: `make` leaves `.ko`; a tree whose modules were
/// compressed afterwards keeps one of the others.
const MODULE_SUFFIXES: [&str; 4] = [".ko", ".ko.zst", ".ko.xz", ".ko.gz"];

/// A built kernel tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelTree {
    /// The tree's top (where `.config` is).
    pub dir: PathBuf,
    /// `uname -r` of the kernel it built (`include/config/kernel.release`).
    pub release: String,
    /// The image to boot.
    pub image: PathBuf,
    /// The uncompressed kernel with symbols, when the build kept it.
    pub vmlinux: Option<PathBuf>,
    /// The build's configuration.
    pub config: PathBuf,
}

/// Whether `dir` looks like a kernel build tree (configured, whether built or not): how
/// `--kernel DIR` tells a tree from a directory of kernel images.
pub fn is_tree(dir: &Path) -> bool {
    dir.join(".config").is_file() && (dir.join("Makefile").is_file() || dir.join(IMAGE).exists())
}

impl KernelTree {
    /// Opens the tree at `dir`, with errors that say what to run when it is not built.
    pub fn open(dir: &Path) -> Result<KernelTree> {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let shown = dir.display();
        if !dir.is_dir() {
            bail!("kernel tree {shown} is not a directory");
        }
        let config = dir.join(".config");
        let text = std::fs::read_to_string(&config).map_err(|_| {
            anyhow::anyhow!(
                "{shown} is not a configured kernel tree (no .config); run `make defconfig` there (or `make O={shown} defconfig` in the source), then `make`"
            )
        })?;
        if !text.lines().any(|l| l.trim() == "CONFIG_X86_64=y") {
            let arch = [
                "ARM64",
                "ARM",
                "RISCV",
                "PPC64",
                "S390",
                "X86_32",
                "MIPS",
                "LOONGARCH",
            ]
            .iter()
            .find(|a| text.lines().any(|l| l.trim() == format!("CONFIG_{a}=y")))
            .map(|a| a.to_lowercase())
            .unwrap_or_else(|| "another architecture".to_string());
            bail!(
                "{} is configured for {arch}, not x86_64, which is what kiln boots; configure it with `make ARCH=x86_64 defconfig`",
                config.display()
            );
        }
        let image = dir.join(IMAGE);
        if !image.is_file() {
            bail!("{shown} has no {IMAGE}: the kernel is not built; run `make -j$(nproc)` there first");
        }
        let release_file = dir.join("include/config/kernel.release");
        let release = std::fs::read_to_string(&release_file)
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .with_context(|| {
                format!(
                    "{shown} has no {}: the build did not finish; run `make` there first",
                    release_file.display()
                )
            })?;
        let vmlinux = Some(dir.join("vmlinux")).filter(|v| v.is_file());
        Ok(KernelTree {
            dir,
            release,
            image,
            vmlinux,
            config,
        })
    }

    /// Whether the configuration enables loadable modules.
    fn has_modules(&self) -> bool {
        std::fs::read_to_string(&self.config)
            .is_ok_and(|t| t.lines().any(|l| l.trim() == "CONFIG_MODULES=y"))
    }

    /// The kernel's files: its image, configuration, and every module `modules.order`
    /// lists, each under the path `make modules_install` gives it
    /// (`lib/modules/RELEASE/kernel/…`).
    pub fn files(&self) -> Result<KernelFiles> {
        let shown = self.dir.display();
        let mut modules = BTreeMap::new();
        let order = self.dir.join("modules.order");
        if self.has_modules() {
            let text = std::fs::read_to_string(&order).with_context(|| {
                format!("{shown} has no modules.order: its modules are not built; run `make modules` (or `make`) there")
            })?;
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let stem = line
                    .strip_suffix(".o")
                    .or_else(|| line.strip_suffix(".ko"))
                    .unwrap_or(line);
                if stem.starts_with('/') || stem.split('/').any(|c| c == "..") {
                    bail!(
                        "{}: `{line}` is not a path inside the tree",
                        order.display()
                    );
                }
                let found = MODULE_SUFFIXES
                    .iter()
                    .map(|s| format!("{stem}{s}"))
                    .find(|p| self.dir.join(p).is_file());
                let Some(rel) = found else {
                    bail!(
                        "{} lists {stem}.ko, which is not built; run `make modules` there",
                        order.display()
                    );
                };
                let path = self.dir.join(&rel);
                let size = std::fs::metadata(&path)?.len();
                modules.insert(
                    module_name(&rel),
                    (
                        format!("lib/modules/{}/kernel/{rel}", self.release),
                        Data::host(path, size),
                    ),
                );
            }
        }
        let builtin = std::fs::read_to_string(self.dir.join("modules.builtin"))
            .map(|t| t.lines().map(module_name).collect())
            .unwrap_or_else(|_| BTreeSet::new());
        let size = std::fs::metadata(&self.image)?.len();
        let config_size = std::fs::metadata(&self.config)?.len();
        Ok(KernelFiles {
            release: self.release.clone(),
            vmlinuz: Data::host(self.image.clone(), size),
            modules,
            builtin,
            config: Some(Data::host(self.config.clone(), config_size)),
        })
    }

    /// The files `make modules_install` writes beside the modules that kiln passes on as
    /// they are: (name in `lib/modules/RELEASE/`, path in the tree).
    pub fn module_metadata(&self) -> Vec<(&'static str, PathBuf)> {
        ["modules.builtin", "modules.builtin.modinfo"]
            .into_iter()
            .map(|n| (n, self.dir.join(n)))
            .filter(|(_, p)| p.is_file())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(config: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(".config"), config).unwrap();
        std::fs::write(d.path().join("Makefile"), "").unwrap();
        d
    }

    fn built(d: &Path) {
        std::fs::create_dir_all(d.join("arch/x86/boot")).unwrap();
        std::fs::write(d.join(IMAGE), b"image").unwrap();
        std::fs::create_dir_all(d.join("include/config")).unwrap();
        std::fs::write(d.join("include/config/kernel.release"), "6.6.0-mem+\n").unwrap();
    }

    #[test]
    fn an_unbuilt_tree_says_run_make() {
        let d = tree("CONFIG_X86_64=y\n");
        assert!(is_tree(d.path()));
        let e = KernelTree::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("not built") && e.contains("make -j"), "{e}");
        let e = KernelTree::open(&d.path().join("nowhere"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a directory"), "{e}");
    }

    #[test]
    fn another_architecture_is_named() {
        let d = tree("CONFIG_ARM64=y\n");
        built(d.path());
        let e = KernelTree::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("arm64") && e.contains("not x86_64"), "{e}");
    }

    #[test]
    fn modules_follow_modules_order_compressed_or_not() {
        let d = tree("CONFIG_X86_64=y\nCONFIG_MODULES=y\n");
        built(d.path());
        let t = KernelTree::open(d.path()).unwrap();
        assert_eq!(t.release, "6.6.0-mem+");
        assert!(t.vmlinux.is_none());
        let e = t.files().unwrap_err().to_string();
        assert!(
            e.contains("modules.order") && e.contains("make modules"),
            "{e}"
        );
        std::fs::create_dir_all(d.path().join("drivers/misc")).unwrap();
        std::fs::write(d.path().join("drivers/misc/a-b.ko"), b"a").unwrap();
        std::fs::write(d.path().join("drivers/misc/c.ko.xz"), b"c").unwrap();
        std::fs::write(
            d.path().join("modules.order"),
            "drivers/misc/a-b.o\ndrivers/misc/c.ko\n",
        )
        .unwrap();
        let f = t.files().unwrap();
        assert_eq!(
            f.modules["a_b"].0,
            "lib/modules/6.6.0-mem+/kernel/drivers/misc/a-b.ko"
        );
        assert_eq!(
            f.modules["c"].0,
            "lib/modules/6.6.0-mem+/kernel/drivers/misc/c.ko.xz"
        );
        std::fs::write(d.path().join("modules.order"), "drivers/misc/gone.o\n").unwrap();
        let e = t.files().unwrap_err().to_string();
        assert!(e.contains("gone.ko, which is not built"), "{e}");
        std::fs::write(d.path().join("modules.order"), "../etc/passwd.o\n").unwrap();
        assert!(t.files().is_err());
    }
}
