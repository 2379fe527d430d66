//! Profile format v1: the typed shape of a merged profile. Every table rejects unknown keys.
//!
//! Over 500 lines because each key's doc comment is its documentation (and will be the
//! JSON Schema's descriptions); the tables are split out when a section grows its own
//! logic, as `[test]` (tests.rs) and `[[forward]]` (forward.rs) already are.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::tests::Tests;
use super::types::{Located, Mode, RelPath, Size};
pub use crate::tree::path::ImagePath;
pub use crate::util::options::{
    Compression, Format, FreeSpace, PartitionFs, PartitionType, RootSize,
};

/// A merged profile: everything that describes one image and how to test it.
#[derive(Debug, Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Format version; must be 1.
    pub version: Option<Located<i64>>,
    /// Other profiles layered beneath this one (consumed while loading).
    #[serde(default)]
    pub include: Vec<RelPath>,
    /// Image name; output files are `<name>.<ext>`. Default: the profile's file name without `.toml`.
    pub name: Option<String>,
    /// Free-form description of the image; informational only.
    pub description: Option<String>,
    /// Timestamp for every entry; the SOURCE_DATE_EPOCH environment variable overrides it.
    pub source_date_epoch: Option<Located<i64>>,
    /// Variables for templates, available as `{{name}}`.
    #[serde(default)]
    pub variables: BTreeMap<String, serde_json::Value>,
    /// How the image is written: `[output]`.
    #[serde(default)]
    pub output: Output,
    /// The Debian archive packages come from, and which to install: `[distribution]`.
    pub distribution: Option<Located<Distribution>>,
    /// The kernel that boots the image: `[kernel]`.
    #[serde(default)]
    pub kernel: Kernel,
    /// Host directories copied into the image: `[[overlay]]`.
    #[serde(default)]
    pub overlay: Vec<Located<Overlay>>,
    /// Files to create: `[[file]]`.
    #[serde(default)]
    pub file: Vec<Located<FileSpec>>,
    /// Directories to create: `[[directory]]`.
    #[serde(default)]
    pub directory: Vec<Located<DirectorySpec>>,
    /// Symbolic links to create: `[[symlink]]`.
    #[serde(default)]
    pub symlink: Vec<Located<SymlinkSpec>>,
    /// Hard links to create: `[[hardlink]]`.
    #[serde(default)]
    pub hardlink: Vec<Located<HardlinkSpec>>,
    /// Device nodes, FIFOs and sockets to create: `[[device]]`.
    #[serde(default)]
    pub device: Vec<Located<DeviceSpec>>,
    /// Host executables copied in with the shared libraries they need: `[[binary]]`.
    #[serde(default)]
    pub binary: Vec<Located<BinarySpec>>,
    /// Glob patterns of image paths removed after packages are unpacked.
    #[serde(default)]
    pub remove: Vec<Located<String>>,
    /// Configuration of the installed system: `[system]`.
    #[serde(default)]
    pub system: System,
    /// How to test the image in a VM: one `[test]`, or several `[[test]]`.
    pub test: Option<Located<Tests>>,
    /// The virtual machine that boots the image: `[qemu]`.
    #[serde(default)]
    pub qemu: Qemu,
    /// The kernels `kiln test --matrix` runs the test on: `[matrix]`.
    #[serde(default)]
    pub matrix: Matrix,
    /// The guest's network: `[network]`.
    #[serde(default)]
    pub network: Network,
    /// Boot into the host's own userspace instead of the image's: `[host]`.
    pub host: Option<Located<Host>>,
}

/// `[host]`: the image (an initramfs) boots into the host's userspace: the host's root
/// read-only, the directory kiln runs in read-write at its own path, tmpfs on /tmp,
/// /run and /var/tmp, and each test's `command` run there as the calling user, with the
/// caller's environment. The image's own files are only what boots it. This is what
/// `kiln exec` runs.
#[derive(Debug, Deserialize, schemars::JsonSchema, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// The host directory the guest sees as `/`; default "/".
    pub root: Option<RelPath>,
    /// How host directories reach the guest: "9p" or "virtiofs"; default per kernel:
    /// 9p where the kernel has it, else virtiofs.
    pub share: Option<ShareKind>,
}

/// `[host].share`.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq)]
pub enum ShareKind {
    /// virtio-9p, served by QEMU itself.
    #[serde(rename = "9p")]
    NineP,
    /// virtiofs, served by QEMU's virtiofsd.
    #[serde(rename = "virtiofs")]
    VirtioFs,
}

/// `[network].mode`.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// QEMU's user-mode network: the guest reaches out through the host, and the host
    /// reaches in through forwarded ports on 127.0.0.1. No root needed.
    User,
    /// No network device.
    None,
}

/// `[network]`: the guest's network device and the host ports forwarded into it.
#[derive(Debug, Deserialize, schemars::JsonSchema, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// "user" or "none"; default "user" when the image has sshd, else "none".
    pub mode: Option<NetworkMode>,
    /// Ports forwarded from 127.0.0.1 on the host into the guest: "8888:22" (host port
    /// 8888 to guest port 22), "22" (a free host port, chosen per run and recorded in the
    /// run directory), "udp:5353:53".
    #[serde(default)]
    pub forward: Vec<Located<String>>,
    /// QEMU's NIC model; default "virtio-net-pci".
    pub model: Option<String>,
}

/// `[matrix]`: what `kiln test --matrix` and `kiln matrix list` run over.
#[derive(Debug, Deserialize, schemars::JsonSchema, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Matrix {
    /// The kernels, one cell each (per test): a kernel image on the host (relative to the
    /// profile), a directory or glob of them, a Debian kernel package
    /// ("linux-image-6.1.0-47-cloud-amd64", or "PACKAGE/SUITE"), or a table
    /// `{ package = "linux-image-cloud-amd64", suite = "bookworm" }`.
    #[serde(default)]
    pub kernels: Vec<Located<MatrixKernel>>,
}

/// One entry of `[matrix] kernels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatrixKernel {
    /// A path, a glob, or a package name, as written.
    Name(String),
    /// A kernel package from a given suite.
    Package {
        /// The package, e.g. "linux-image-cloud-amd64".
        package: String,
        /// The suite to take it from; default: the first that has it.
        suite: Option<String>,
    },
}

impl<'de> Deserialize<'de> for MatrixKernel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            package: String,
            suite: Option<String>,
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = MatrixKernel;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a kernel path or package name, or { package = \"…\", suite = \"…\" }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MatrixKernel, E> {
                Ok(MatrixKernel::Name(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<MatrixKernel, A::Error> {
                let t = Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(MatrixKernel::Package {
                    package: t.package,
                    suite: t.suite,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `[output]`: the image format and its options.
#[derive(Debug, Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Image format; default initramfs.
    pub format: Option<Format>,
    /// Initramfs compression.
    pub compression: Option<Compression>,
    /// zstd compression level, 1 to 22; default 3.
    pub compression_level: Option<Located<i32>>,
    /// zstd worker threads; 0 means one per CPU.
    pub compression_threads: Option<u32>,
    /// Size of the root file system: "auto" or a size.
    pub root_size: Option<RootSize>,
    /// Free space added to an automatically sized root file system: "20%" or a size.
    pub free_space: Option<FreeSpace>,
    /// Extra partitions, after the root partition unless `before_root`.
    #[serde(default)]
    pub partition: Vec<Located<PartitionSpec>>,
    /// Also write a qcow2 copy of the disk (needs qemu-img).
    pub qcow2: Option<bool>,
    /// Disk: also give the plain sha256 of the whole image, holes hashed as zeros (about
    /// 0.6 s per GiB of disk); by default a mostly empty disk gets the sparse digest only.
    pub image_sha256: Option<bool>,
}

/// `[[output.partition]]`: an extra partition of a disk image.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    /// GPT partition name; also how the runner and tests refer to it.
    pub label: String,
    /// Discoverable Partitions type: "linux-generic", "var", "home", "srv", "tmp", "swap", "esp", or a GUID.
    #[serde(rename = "type")]
    pub kind: Option<PartitionType>,
    /// Partition size in bytes.
    pub size: Size,
    /// "ext4" to create an empty ext4 file system in it, "none" to leave it blank.
    pub filesystem: Option<PartitionFs>,
    /// Put it ahead of the root partition, numbered before it (root on partition 2, as
    /// some scripts expect); default false: after it.
    pub before_root: Option<bool>,
}

/// A base set of Debian packages installed in addition to the listed ones.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Base {
    /// No base set: only the listed packages and their dependencies (the default).
    #[default]
    None,
    /// Packages marked Essential.
    Essential,
    /// Essential packages, packages of priority required, and apt.
    Minbase,
    /// As minbase, plus packages of priority important.
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

/// `[distribution]`: a Debian archive and what to install from it.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct Distribution {
    /// "debian"
    pub name: Option<String>,
    /// Suite or codename, e.g. "bookworm"; must match the Release file's Suite or Codename.
    pub suite: String,
    /// Archive components; default `["main"]`.
    #[serde(default)]
    pub components: Vec<String>,
    /// Debian architecture; default "amd64".
    pub architecture: Option<String>,
    /// Archive URL; default: the host's apt configuration.
    pub mirror: Option<String>,
    /// OpenPGP keyring that signs the archive.
    pub keyring: Option<RelPath>,
    /// Packages to install, with their dependencies.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Packages never installed, even when something depends on them.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Base package set installed as well; default none.
    pub base: Option<Base>,
    /// Accept an InRelease whose Valid-Until has passed (e.g. a snapshot).
    pub ignore_valid_until: Option<bool>,
}

/// `[kernel]`: the kernel that boots the image, a host file or a Debian package (not both).
#[derive(Debug, Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// A kernel image (bzImage/vmlinuz) on the host.
    pub path: Option<Located<RelPath>>,
    /// A Debian package that provides the kernel and its modules.
    pub package: Option<Located<String>>,
    /// A kernel build tree after `make` (the source directory or an `O=` one): its
    /// bzImage boots, its modules go into the image, its vmlinux serves gdb.
    pub tree: Option<Located<RelPath>>,
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
    /// The kernel's uncompressed image with symbols (vmlinux) on the host, for `--gdb`
    /// and memory dumps; default: one found beside the kernel or at its build tree's top.
    pub vmlinux: Option<Located<RelPath>>,
    /// Pin the kernel package's Debian `-dbg` companion in the lock and, when a run needs
    /// symbols (`--gdb`, `--dump-on-failure`), fetch it and take its vmlinux.
    pub debug_symbols: Option<Located<bool>>,
}

/// Ownership of the entries an overlay copies into the image.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    /// Every entry owned by 0:0 (the default).
    #[default]
    Root,
    /// Keep the host's uid and gid.
    Host,
}

/// `[[overlay]]`: a host directory whose contents are copied into the image.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// Host directory, relative to the profile file; must exist.
    pub source: RelPath,
    /// Where the directory's contents go in the image (default "/").
    pub destination: Option<ImagePath>,
    /// "root": every entry owned by 0:0 (default); "host": keep the host's uid/gid.
    pub owner: Option<Owner>,
}

/// `[[file]]`: a regular file, from a host file or inline text (exactly one of them).
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Absolute path in the image.
    pub path: ImagePath,
    /// Host file whose contents are used.
    pub source: Option<RelPath>,
    /// Inline file contents.
    pub content: Option<String>,
    /// Render the source or content as a handlebars template.
    pub template: Option<bool>,
    /// Permission bits; default 0644, or a copied (untemplated) source's own permissions.
    pub mode: Option<Mode>,
    /// Owner uid; default 0.
    pub uid: Option<u32>,
    /// Owner gid; default 0.
    pub gid: Option<u32>,
    /// Extended attributes; values are text, or bytes written as "0x…" hex.
    #[serde(default)]
    pub xattrs: BTreeMap<String, String>,
}

/// `[[directory]]`: a directory to create.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct DirectorySpec {
    /// Absolute path in the image.
    pub path: ImagePath,
    /// Permission bits; default 0755.
    pub mode: Option<Mode>,
    /// Owner uid; default 0.
    pub uid: Option<u32>,
    /// Owner gid; default 0.
    pub gid: Option<u32>,
}

/// `[[symlink]]`: a symbolic link (mode 0777).
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct SymlinkSpec {
    /// Absolute path of the link in the image.
    pub path: ImagePath,
    /// Link target, stored as written; must not be empty.
    pub target: String,
    /// Owner uid; default 0.
    pub uid: Option<u32>,
    /// Owner gid; default 0.
    pub gid: Option<u32>,
}

/// `[[hardlink]]`: another name for a regular file already in the image.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct HardlinkSpec {
    /// Absolute path of the new link in the image.
    pub path: ImagePath,
    /// An existing regular file in the image.
    pub target: ImagePath,
}

/// The type of a `[[device]]` entry.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// Character device.
    Char,
    /// Block device.
    Block,
    /// Named pipe.
    Fifo,
    /// Unix domain socket.
    Socket,
}

/// `[[device]]`: a device node, FIFO or socket.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// Absolute path in the image.
    pub path: ImagePath,
    /// Node type, written `type`.
    #[serde(rename = "type")]
    pub kind: DeviceKind,
    /// Major number, at most 4095; required for char and block devices, not allowed otherwise.
    pub major: Option<u32>,
    /// Minor number, at most 1048575; required for char and block devices, not allowed otherwise.
    pub minor: Option<u32>,
    /// Permission bits; default 0600 for char and block devices, 0644 otherwise.
    pub mode: Option<Mode>,
    /// Owner uid; default 0.
    pub uid: Option<u32>,
    /// Owner gid; default 0.
    pub gid: Option<u32>,
}

/// `[[binary]]`: a host executable copied in with its ELF interpreter and shared libraries.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct BinarySpec {
    /// A host executable: a path, or a bare name looked up in $PATH.
    pub source: String,
    /// Where it goes in the image (default: the host path).
    pub path: Option<ImagePath>,
}

/// `[system]`: configuration of the installed system.
#[derive(Debug, Deserialize, schemars::JsonSchema, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct System {
    /// Written to /etc/hostname; default: the image name.
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

/// QEMU accelerator.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when it is usable, else TCG (the default).
    #[default]
    Auto,
    /// KVM hardware virtualisation.
    Kvm,
    /// TCG software emulation: works anywhere, much slower.
    Tcg,
}

/// How QEMU enters an x86 kernel given as a bzImage.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum KernelEntry {
    /// Through PVH when the bzImage's vmlinux has a PVH entry (CONFIG_PVH), else the
    /// bzImage (the default).
    #[default]
    Auto,
    /// Through PVH, or not at all: the run stops and says why.
    Pvh,
    /// The bzImage as it is, through its decompressor.
    Image,
}

/// `[qemu]`: the virtual machine that boots the image.
#[derive(Debug, Deserialize, schemars::JsonSchema, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Qemu {
    /// QEMU executable; default "qemu-system-x86_64".
    pub binary: Option<String>,
    /// Machine type; default "q35".
    pub machine: Option<String>,
    /// CPU model; default "host" under KVM, "max" under TCG.
    pub cpu: Option<String>,
    /// Guest memory in bytes; default 1G.
    pub memory: Option<Size>,
    /// Virtual CPUs; default 2 under KVM, 1 under TCG.
    pub cpus: Option<u32>,
    /// Accelerator; default auto.
    pub accel: Option<Accel>,
    /// How QEMU enters an x86 kernel; default auto (through PVH where it can).
    pub kernel_entry: Option<KernelEntry>,
    /// Extra QEMU arguments, appended as given.
    #[serde(default)]
    pub args: Vec<String>,
}
