//! Profile format v1: the typed shape of a merged profile. Every table rejects unknown keys.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::types::{Located, Mode, RelPath, Seconds, Size};
pub use crate::output::options::{Compression, FreeSpace, PartitionFs, PartitionType, RootSize};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Format version; must be 1.
    pub version: Option<Located<i64>>,
    /// Other profiles layered beneath this one (consumed while loading).
    #[serde(default)]
    pub include: Vec<RelPath>,
    /// Image name; output files are `<name>.<ext>`. Default: the profile's file name without `.toml`.
    pub name: Option<String>,
    pub description: Option<String>,
    /// Timestamp for every entry; the SOURCE_DATE_EPOCH environment variable overrides it.
    pub source_date_epoch: Option<Located<i64>>,
    /// Variables for templates, available as `{{name}}`.
    #[serde(default)]
    pub variables: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub output: Output,
    pub distribution: Option<Located<Distribution>>,
    #[serde(default)]
    pub kernel: Kernel,
    #[serde(default)]
    pub overlay: Vec<Located<Overlay>>,
    #[serde(default)]
    pub file: Vec<Located<FileSpec>>,
    #[serde(default)]
    pub directory: Vec<Located<DirectorySpec>>,
    #[serde(default)]
    pub symlink: Vec<Located<SymlinkSpec>>,
    #[serde(default)]
    pub hardlink: Vec<Located<HardlinkSpec>>,
    #[serde(default)]
    pub device: Vec<Located<DeviceSpec>>,
    #[serde(default)]
    pub binary: Vec<Located<BinarySpec>>,
    /// Glob patterns of image paths removed after packages are unpacked.
    #[serde(default)]
    pub remove: Vec<Located<String>>,
    #[serde(default)]
    pub system: System,
    pub test: Option<Located<Test>>,
    #[serde(default)]
    pub qemu: Qemu,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Initramfs,
    Disk,
    Tar,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Output {
    pub format: Option<Format>,
    /// Initramfs compression.
    pub compression: Option<Compression>,
    pub compression_level: Option<Located<i32>>,
    /// zstd worker threads; 0 means one per CPU.
    pub compression_threads: Option<u32>,
    /// Size of the root file system: "auto" or a size.
    pub root_size: Option<RootSize>,
    /// Free space added to an automatically sized root file system: "20%" or a size.
    pub free_space: Option<FreeSpace>,
    /// Extra partitions after the root partition.
    #[serde(default)]
    pub partition: Vec<Located<PartitionSpec>>,
    /// Also write a qcow2 copy of the disk (needs qemu-img).
    pub qcow2: Option<bool>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    /// GPT partition name; also how the runner and tests refer to it.
    pub label: String,
    /// Discoverable Partitions type: "linux-generic", "var", "home", "srv", "tmp", "swap", "esp", or a GUID.
    #[serde(rename = "type")]
    pub kind: Option<PartitionType>,
    pub size: Size,
    /// "ext4" to create an empty ext4 file system in it, "none" to leave it blank.
    pub filesystem: Option<PartitionFs>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Base {
    #[default]
    None,
    Essential,
    Minbase,
    Important,
}

impl Base {
    /// The name as a profile writes it; stable, so lock hashes can use it.
    pub fn name(self) -> &'static str {
        match self {
            Base::None => "none",
            Base::Essential => "essential",
            Base::Minbase => "minbase",
            Base::Important => "important",
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Distribution {
    /// "debian"
    pub name: Option<String>,
    pub suite: String,
    #[serde(default)]
    pub components: Vec<String>,
    pub architecture: Option<String>,
    /// Archive URL; default: the host's apt configuration.
    pub mirror: Option<String>,
    /// OpenPGP keyring that signs the archive.
    pub keyring: Option<RelPath>,
    #[serde(default)]
    pub packages: Vec<String>,
    /// Packages never installed, even when something depends on them.
    #[serde(default)]
    pub exclude: Vec<String>,
    pub base: Option<Base>,
    /// Accept an InRelease whose Valid-Until has passed (e.g. a snapshot).
    pub ignore_valid_until: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// A kernel image (bzImage/vmlinuz) on the host.
    pub path: Option<Located<RelPath>>,
    /// A Debian package that provides the kernel and its modules.
    pub package: Option<Located<String>>,
    /// Kernel command line words, appended to kiln's defaults.
    #[serde(default)]
    pub cmdline: Vec<String>,
    /// Modules (from the kernel package) loaded at boot, with their dependencies.
    #[serde(default)]
    pub modules: Vec<String>,
    /// Also install the kernel package into the image.
    pub install: Option<bool>,
    /// Copy the packaged kernel's modules into the image (with a first-boot depmod), so
    /// udev can load drivers. Default: true for disk images.
    pub install_modules: Option<bool>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    #[default]
    Root,
    Host,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    pub source: RelPath,
    /// Where the directory's contents go in the image (default "/").
    pub destination: Option<String>,
    /// "root": every entry owned by 0:0 (default); "host": keep the host's uid/gid.
    pub owner: Option<Owner>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub path: String,
    pub source: Option<RelPath>,
    pub content: Option<String>,
    /// Render the source or content as a handlebars template.
    pub template: Option<bool>,
    pub mode: Option<Mode>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Extended attributes; values are text, or bytes written as "0x…" hex.
    #[serde(default)]
    pub xattrs: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct DirectorySpec {
    pub path: String,
    pub mode: Option<Mode>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SymlinkSpec {
    pub path: String,
    pub target: String,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct HardlinkSpec {
    pub path: String,
    /// An existing regular file in the image.
    pub target: String,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Char,
    Block,
    Fifo,
    Socket,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: DeviceKind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub mode: Option<Mode>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct BinarySpec {
    /// A host executable: a path, or a bare name looked up in $PATH.
    pub source: String,
    /// Where it goes in the image (default: the host path).
    pub path: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct System {
    pub hostname: Option<String>,
    /// Password for root ("" for none); without it root cannot log in with a password.
    pub root_password: Option<String>,
    /// SSH public keys authorised for root (files on the host).
    #[serde(default)]
    pub ssh_authorized_keys: Vec<RelPath>,
    /// systemd units to enable (their [Install] section is followed).
    #[serde(default)]
    pub enable: Vec<String>,
    /// Log root in automatically on the serial console.
    pub autologin: Option<bool>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Test {
    /// Shell command run in the guest by /bin/sh -c.
    pub command: Option<String>,
    /// Host script copied into the guest and run instead of `command`.
    pub script: Option<RelPath>,
    /// How long the whole run (boot, test, power-off) may take.
    pub timeout: Option<Seconds>,
    /// A directory in the guest whose contents come back to the host after the run.
    pub results: Option<String>,
    /// Size of the results disk (default 64M).
    pub results_size: Option<Size>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Qemu {
    pub binary: Option<String>,
    pub machine: Option<String>,
    pub cpu: Option<String>,
    pub memory: Option<Size>,
    pub cpus: Option<u32>,
    pub accel: Option<Accel>,
    /// Extra QEMU arguments, appended as given.
    #[serde(default)]
    pub args: Vec<String>,
}
