//! Before booting: does this kernel have what the run needs? The kernel's build
//! configuration is read from beside the kernel image (`config-RELEASE` next to
//! `vmlinuz-RELEASE`, `NAME.config` next to a packaged kernel kiln wrote as
//! `NAME.vmlinuz`, or `.config` in the same directory, as in a build tree), and each
//! missing option is named with what it is for. A kernel whose configuration cannot be
//! found is booted anyway; the caller says so in one line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::output::options::{Compression, Format};
use crate::plan::{Plan, RunConfig, WriterPlan};

/// A kernel's build configuration: option → value (`y`, `m`, a number, a string).
#[derive(Debug, Default, Clone)]
pub struct KernelConfig {
    values: HashMap<String, String>,
}

impl KernelConfig {
    /// Parses a `.config`: `CONFIG_X=value` lines; `# CONFIG_X is not set` and anything
    /// else mean the option is off.
    pub fn parse(text: &str) -> KernelConfig {
        let values = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("CONFIG_"))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        KernelConfig { values }
    }

    /// The value of `CONFIG_<name>`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
}

/// Where the configuration of the kernel at `kernel` is, if anywhere.
pub fn find_config(kernel: &Path) -> Option<PathBuf> {
    let dir = kernel.parent()?;
    let name = kernel.file_name()?.to_string_lossy();
    let mut candidates = Vec::new();
    for prefix in ["vmlinuz-", "bzImage-", "vmlinux-"] {
        if let Some(release) = name.strip_prefix(prefix) {
            candidates.push(dir.join(format!("config-{release}")));
        }
    }
    if name.ends_with(".vmlinuz") {
        candidates.push(kernel.with_extension("config"));
    }
    candidates.push(dir.join(".config"));
    // A build tree: arch/x86/boot/bzImage with .config at the top.
    if dir.ends_with("arch/x86/boot") {
        if let Some(top) = dir.ancestors().nth(3) {
            candidates.push(top.join(".config"));
        }
    }
    candidates.into_iter().find(|c| c.is_file())
}

/// One option a run needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// The option, without `CONFIG_`.
    pub option: &'static str,
    /// Whether a module (`m`) does: only where kiln loads modules before they are needed.
    pub module_ok: bool,
    /// What it is for.
    pub why: &'static str,
}

/// What a run of `plan` under `run` needs from its kernel.
pub fn needs(plan: &Plan, run: &RunConfig) -> Vec<Need> {
    let need = |option, module_ok, why| Need {
        option,
        module_ok,
        why,
    };
    let mut v = vec![need(
        "SERIAL_8250_CONSOLE",
        false,
        "the serial console on ttyS0 and the status channel on ttyS1",
    )];
    let initrd = plan.format == Format::Initramfs || plan.boot_initrd.is_some();
    if initrd {
        v.push(need("BLK_DEV_INITRD", false, "booting an initramfs"));
        v.push(need("DEVTMPFS", false, "/dev in kiln's init"));
    }
    let zstd = match &plan.writer {
        WriterPlan::Initramfs(o) => o.compression == Compression::Zstd,
        _ => plan.boot_initrd.is_some(),
    };
    if zstd {
        v.push(need("RD_ZSTD", false, "a zstd-compressed initramfs"));
    }
    if plan.format == Format::Disk {
        // A packaged kernel's boot initramfs loads these; any other kernel needs them built in.
        let m = plan.boot_initrd.is_some();
        v.push(need("VIRTIO_PCI", m, "virtio devices (the root disk)"));
        v.push(need("VIRTIO_BLK", m, "the root disk"));
        v.push(need("EXT4_FS", m, "the root file system"));
    }
    if run.results.is_some() {
        // Modules do where kiln loads this kernel's before the test: a disk's boot
        // initramfs, or an initramfs that carries this kernel's modules.
        let m = plan.boot_initrd.is_some() || plan.initrd_has_modules();
        for (option, why) in [
            ("VIRTIO_PCI", "the results disk (virtio)"),
            ("VIRTIO_BLK", "the results disk"),
            ("EXT4_FS", "the results disk's file system"),
        ] {
            if !v.iter().any(|n| n.option == option) {
                v.push(need(option, m, why));
            }
        }
    }
    v
}

/// What `config` lacks of `needs`: one line each.
pub fn missing(config: &KernelConfig, needs: &[Need]) -> Vec<String> {
    needs
        .iter()
        .filter_map(|n| match config.get(n.option) {
            Some("y") => None,
            Some("m") if n.module_ok => None,
            Some("m") => Some(format!(
                "CONFIG_{}=m, but it must be built in (=y) for {}",
                n.option, n.why
            )),
            _ => Some(format!(
                "CONFIG_{} is not set; it is needed for {}",
                n.option, n.why
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_configs_and_names_what_is_missing() {
        let c = KernelConfig::parse(
            "# comment\nCONFIG_SERIAL_8250_CONSOLE=y\nCONFIG_VIRTIO_BLK=m\n# CONFIG_RD_ZSTD is not set\nCONFIG_LOCALVERSION=\"-x\"\n",
        );
        assert_eq!(c.get("VIRTIO_BLK"), Some("m"));
        assert_eq!(c.get("LOCALVERSION"), Some("-x"));
        assert_eq!(c.get("RD_ZSTD"), None);
        let needs = [
            Need {
                option: "SERIAL_8250_CONSOLE",
                module_ok: false,
                why: "a",
            },
            Need {
                option: "VIRTIO_BLK",
                module_ok: true,
                why: "b",
            },
            Need {
                option: "RD_ZSTD",
                module_ok: false,
                why: "c",
            },
        ];
        assert_eq!(
            missing(&c, &needs),
            ["CONFIG_RD_ZSTD is not set; it is needed for c"]
        );
        let strict = [Need {
            option: "VIRTIO_BLK",
            module_ok: false,
            why: "d",
        }];
        assert_eq!(
            missing(&c, &strict),
            ["CONFIG_VIRTIO_BLK=m, but it must be built in (=y) for d"]
        );
    }

    #[test]
    fn finds_configs_beside_kernels() {
        let d = tempfile::tempdir().unwrap();
        let boot = d.path().join("boot");
        std::fs::create_dir(&boot).unwrap();
        std::fs::write(boot.join("vmlinuz-6.1.0-1-amd64"), "").unwrap();
        assert_eq!(find_config(&boot.join("vmlinuz-6.1.0-1-amd64")), None);
        std::fs::write(boot.join("config-6.1.0-1-amd64"), "").unwrap();
        assert_eq!(
            find_config(&boot.join("vmlinuz-6.1.0-1-amd64")),
            Some(boot.join("config-6.1.0-1-amd64"))
        );
        let tree = d.path().join("linux");
        std::fs::create_dir_all(tree.join("arch/x86/boot")).unwrap();
        std::fs::write(tree.join(".config"), "").unwrap();
        assert_eq!(
            find_config(&tree.join("arch/x86/boot/bzImage")),
            Some(tree.join(".config"))
        );
        std::fs::write(d.path().join("x.config"), "").unwrap();
        assert_eq!(
            find_config(&d.path().join("x.vmlinuz")),
            Some(d.path().join("x.config"))
        );
    }
}
