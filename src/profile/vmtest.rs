//! vmtest's configuration, `vmtest.toml`, read as vmtest documents it and mapped onto
//! `kiln exec` runs: each `[[target]]` is a kernel, a command, and the VM's settings.
//! Relative paths are relative to the file, as vmtest resolves them. vmtest ignores
//! keys it does not know; kiln names them (a misspelt key is caught), and names what it
//! cannot run yet (disk-image and UEFI targets), with file, line and key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::de::from_node;
use super::diag::{ProfileError, SourceFile};
use super::node::Node;
use super::types::{Located, RelPath, Size};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    target: Vec<Located<RawTarget>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: String,
    command: String,
    kernel: Option<Located<RelPath>>,
    kernel_args: Option<String>,
    image: Option<Located<RelPath>>,
    uefi: Option<Located<bool>>,
    rootfs: Option<Located<RelPath>>,
    arch: Option<Located<String>>,
    qemu_command: Option<String>,
    kvm_cpu_args: Option<String>,
    vm: Option<RawVm>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    num_cpus: Option<u32>,
    memory: Option<Size>,
    bios: Option<Located<RelPath>>,
    #[serde(default)]
    extra_args: Vec<String>,
    #[serde(default)]
    mounts: std::collections::BTreeMap<String, Located<RawMount>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMount {
    host_path: RelPath,
    writable: Option<bool>,
}

/// A host directory a target mounts in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where the guest sees it.
    pub guest: String,
    /// The host directory.
    pub host: PathBuf,
    /// The guest may write to it.
    pub writable: bool,
}

/// One `[[target]]`: a command under a kernel, with the host's userspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The target's name, for the summary.
    pub name: String,
    /// The kernel image.
    pub kernel: PathBuf,
    /// Words added to the kernel command line.
    pub kernel_args: Vec<String>,
    /// The command, run by the shell in the config's directory.
    pub command: String,
    /// The directory shared as the guest's root (default `/`).
    pub rootfs: PathBuf,
    /// The QEMU binary, when the target names one.
    pub qemu: Option<String>,
    /// The CPU model vmtest passes under KVM (`kvm_cpu_args`), when given.
    pub cpu: Option<String>,
    /// Virtual CPUs (vmtest's default is 2).
    pub cpus: u32,
    /// Guest memory in bytes (vmtest's default is 4 GiB).
    pub memory: u64,
    /// QEMU arguments appended as given.
    pub extra_args: Vec<String>,
    /// More host directories in the guest.
    pub mounts: Vec<Mount>,
}

/// vmtest's defaults.
const DEFAULT_CPUS: u32 = 2;
const DEFAULT_MEMORY: u64 = 4 << 30;

/// Reads `path` as a vmtest.toml.
pub fn load(path: &Path) -> Result<Vec<Target>, ProfileError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ProfileError::new(format!("cannot read `{}`: {e}", path.display())))?;
    let file = Arc::new(SourceFile {
        path: path.to_path_buf(),
        text,
    });
    let node = Node::parse(file)?;
    let f: File = from_node(&node)?;
    if f.target.is_empty() {
        return Err(ProfileError::new(format!(
            "{} has no [[target]]",
            path.display()
        )));
    }
    let mut out: Vec<Target> = Vec::new();
    for t in &f.target {
        let v = &t.value;
        if v.name.trim().is_empty() || v.command.trim().is_empty() {
            return Err(t.error("a target needs a non-empty `name` and `command`"));
        }
        if out.iter().any(|o| o.name == v.name) {
            return Err(t.field_error("name", format!("two targets are named `{}`", v.name)));
        }
        if let Some(i) = &v.image {
            return Err(i.error(
                "disk-image targets are not supported: kiln exec runs the host's userspace under `kernel`; for an image, write a kiln profile",
            ));
        }
        if let Some(u) = v.uefi.as_ref().filter(|u| u.value) {
            return Err(u.error("UEFI targets are not supported (they boot a disk `image`)"));
        }
        if let Some(b) = v.vm.as_ref().and_then(|vm| vm.bios.as_ref()) {
            return Err(b.error("`bios` goes with UEFI image targets, which are not supported"));
        }
        if let Some(a) = v.arch.as_ref().filter(|a| a.value != "x86_64") {
            return Err(a.error(format!("arch `{}`: kiln runs x86_64 guests only", a.value)));
        }
        let Some(kernel) = &v.kernel else {
            return Err(t.error("a target needs `kernel` (or `image`, which kiln does not run)"));
        };
        let vm = v.vm.as_ref();
        out.push(Target {
            name: v.name.clone(),
            kernel: kernel.value.0.clone(),
            kernel_args: v
                .kernel_args
                .as_deref()
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect(),
            command: v.command.clone(),
            rootfs: v
                .rootfs
                .as_ref()
                .map(|r| r.value.0.clone())
                .unwrap_or_else(|| PathBuf::from("/")),
            qemu: v.qemu_command.clone(),
            cpu: v.kvm_cpu_args.clone(),
            cpus: vm.and_then(|vm| vm.num_cpus).unwrap_or(DEFAULT_CPUS),
            memory: vm
                .and_then(|vm| vm.memory.as_ref())
                .map(|m| m.0)
                .unwrap_or(DEFAULT_MEMORY),
            extra_args: vm.map(|vm| vm.extra_args.clone()).unwrap_or_default(),
            mounts: vm
                .map(|vm| {
                    vm.mounts
                        .iter()
                        .map(|(guest, m)| Mount {
                            guest: guest.clone(),
                            host: m.value.host_path.0.clone(),
                            writable: m.value.writable.unwrap_or(false),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Vec<Target>, String> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("vmtest.toml");
        std::fs::write(&p, text).unwrap();
        load(&p).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_targets_as_vmtest_documents_them() {
        let t = load_text(
            "[[target]]\nname = \"check if kernel is 6.2\"\nkernel = \"./bzImage-v6.2\"\nkernel_args = \"quiet loglevel=3\"\ncommand = \"/bin/bash -c 'uname -r | grep -e ^6.2'\"\n\n[[target]]\nname = \"six cpus\"\nkernel = \"/boot/vmlinuz\"\ncommand = \"nproc\"\n[target.vm]\nnum_cpus = 6\nmemory = \"1G\"\nextra_args = [\"-s\"]\n[target.vm.mounts]\n\"/mnt/data\" = { host_path = \"data\", writable = true }\n",
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert!(t[0].kernel.ends_with("bzImage-v6.2") && t[0].kernel.is_absolute());
        assert_eq!(t[0].kernel_args, ["quiet", "loglevel=3"]);
        assert_eq!((t[0].cpus, t[0].memory), (2, 4 << 30));
        assert_eq!(t[0].rootfs, PathBuf::from("/"));
        assert_eq!((t[1].cpus, t[1].memory), (6, 1 << 30));
        assert_eq!(t[1].extra_args, ["-s"]);
        assert_eq!(t[1].mounts[0].guest, "/mnt/data");
        assert!(t[1].mounts[0].host.ends_with("data") && t[1].mounts[0].writable);
    }

    #[test]
    fn what_kiln_cannot_run_is_named_with_its_line() {
        let e = load_text("[[target]]\nname = \"a\"\ncommand = \"true\"\nimage = \"disk.qcow2\"\n")
            .unwrap_err();
        assert!(
            e.contains("vmtest.toml:4") && e.contains("disk-image"),
            "{e}"
        );
        let e = load_text(
            "[[target]]\nname = \"a\"\ncommand = \"true\"\nkernel = \"k\"\nkernal_args = \"x\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("vmtest.toml:5") && e.contains("kernal_args"),
            "{e}"
        );
        let e = load_text(
            "[[target]]\nname = \"a\"\ncommand = \"true\"\nkernel = \"k\"\narch = \"aarch64\"\n",
        )
        .unwrap_err();
        assert!(e.contains("aarch64") && e.contains("x86_64"), "{e}");
        let e = load_text("[[target]]\nname = \"a\"\ncommand = \"true\"\n").unwrap_err();
        assert!(e.contains("needs `kernel`"), "{e}");
    }
}
