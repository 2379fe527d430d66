//! Everything decided before a byte is written: where outputs go, which writer makes the
//! image, where the kernel comes from, and how a run of the image is configured. Layers
//! above (the build, the VM, runs) read the plan, never the profile.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::output::cpio::CpioOptions;
use crate::output::disk::{self, DiskOptions, PartitionSpec};
use crate::output::options::{Compression, DEFAULT_FREE_SPACE};
use crate::output::tar::TarWriter;
use crate::output::ImageWriter;
use crate::profile::schema::ShareKind;
pub use crate::profile::Accel;
use crate::profile::{Format, LoadedProfile, Splats};
use crate::source::kernel_tree::KernelTree;
use crate::source::PackageOptions;
use crate::vm::share::Transport;

mod kernels;
mod run_config;
pub use kernels::{unique_labels, CellKernel, KernelRef};
pub use run_config::*;

/// Settings for a build that come from the command line rather than the profile.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Where outputs go.
    pub out_dir: PathBuf,
    /// Boot this kernel instead of the profile's `[kernel]`.
    pub kernel: Option<PathBuf>,
    /// Boot the kernel of this build tree, with its modules, instead of the profile's
    /// `[kernel]` (`--kernel-tree`).
    pub kernel_tree: Option<PathBuf>,
    /// Package handling.
    pub packages: PackageOptions,
    /// `SOURCE_DATE_EPOCH` from the environment, which wins over the profile's. The
    /// caller reads the environment; the library never does.
    pub epoch: Option<i64>,
    /// Build even when the outputs are up to date (`--rebuild`).
    pub rebuild: bool,
}

/// Where a run's kernel comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelPlan {
    /// A kernel image on the host.
    Host(PathBuf),
    /// A kernel build tree: its bzImage boots, its modules go into the image.
    Tree(KernelTree),
    /// Taken from a package at build time and written here.
    Package {
        /// The package the profile names.
        package: String,
        /// Where the build writes its image.
        vmlinuz: PathBuf,
    },
    /// None given: the image can be built but not booted.
    None,
}

/// Which writer makes the image, with its options resolved.
#[derive(Debug, Clone)]
pub enum WriterPlan {
    /// newc cpio.
    Initramfs(CpioOptions),
    /// GPT disk with an ext4 root.
    Disk(DiskOptions),
    /// tar.
    Tar,
}

impl WriterPlan {
    /// The writer.
    pub fn writer(&self) -> &dyn ImageWriter {
        match self {
            WriterPlan::Initramfs(o) => o,
            WriterPlan::Disk(o) => o,
            WriterPlan::Tar => &TarWriter,
        }
    }
}

/// Everything decided before any byte is written.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Image name.
    pub name: String,
    /// The profile file, for messages that tell the user what to run next.
    pub profile: PathBuf,
    /// Output format.
    pub format: Format,
    /// Timestamp of every entry.
    pub epoch: i64,
    /// Output directory (absolute).
    pub out_dir: PathBuf,
    /// The image file.
    pub image: PathBuf,
    /// Its manifest.
    pub manifest: PathBuf,
    /// Its SBOM (SPDX 2.3 JSON).
    pub sbom: PathBuf,
    /// The writer and its options.
    pub writer: WriterPlan,
    /// Where the kernel comes from.
    pub kernel: KernelPlan,
    /// The image's tests, in profile order.
    pub tests: Vec<TestPlan>,
    /// The initramfs has modules appended for the kernel a cell boots.
    pub cell_modules: bool,
    /// The initramfs that boots a disk image with a packaged kernel.
    pub boot_initrd: Option<PathBuf>,
    /// PARTUUID of a disk image's root partition.
    pub root_partuuid: Option<String>,
    /// How runs of this image are configured, before command-line overrides.
    pub run: RunConfig,
}

/// The profile's timestamp, unless `env` (SOURCE_DATE_EPOCH) is given; the default is 0.
pub fn epoch(lp: &LoadedProfile, env: Option<i64>) -> i64 {
    env.unwrap_or_else(|| {
        lp.profile
            .source_date_epoch
            .as_ref()
            .map(|v| v.value)
            .unwrap_or(0)
    })
}

/// Parses a `SOURCE_DATE_EPOCH` value.
pub fn parse_epoch(v: &str) -> Result<i64> {
    let v = v.trim();
    match v.parse::<i64>() {
        Ok(n) if (0..=u32::MAX as i64).contains(&n) => Ok(n),
        _ => bail!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds between 0 and 4294967295"),
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

impl Plan {
    /// Decides the outputs and run configuration of `lp` under `opts`.
    pub fn new(lp: &LoadedProfile, opts: &BuildOptions) -> Result<Plan> {
        let p = &lp.profile;
        let o = &p.output;
        let format = o.format.unwrap_or_default();
        let epoch = epoch(lp, opts.epoch);
        // Absolute, so a printed QEMU command works from any directory.
        let out_dir = absolute(&opts.out_dir);
        let at = |ext: &str| out_dir.join(format!("{}.{ext}", lp.name));
        let (image, writer) = match format {
            Format::Initramfs => {
                let c = CpioOptions {
                    compression: o.compression.unwrap_or_default(),
                    level: o.compression_level.as_ref().map(|l| l.value).unwrap_or(3),
                    threads: o.compression_threads.unwrap_or(0),
                };
                let ext = match c.compression {
                    Compression::Zstd => "cpio.zst",
                    Compression::None => "cpio",
                };
                (at(ext), WriterPlan::Initramfs(c))
            }
            Format::Disk => (
                at("raw"),
                WriterPlan::Disk(DiskOptions {
                    name: lp.name.clone(),
                    root_size: o.root_size.unwrap_or_default(),
                    free_space: o.free_space.unwrap_or(DEFAULT_FREE_SPACE),
                    partitions: o
                        .partition
                        .iter()
                        .map(|part| PartitionSpec {
                            label: part.label.clone(),
                            kind: part.kind.unwrap_or_default(),
                            size: part.size.0,
                            content: part.filesystem.unwrap_or_default(),
                            before_root: part.before_root.unwrap_or(false),
                        })
                        .collect(),
                    time: epoch,
                    qcow2: o.qcow2.unwrap_or(false),
                    image_sha256: o.image_sha256.unwrap_or(false),
                }),
            ),
            Format::Tar => (at("tar"), WriterPlan::Tar),
        };
        let tree = opts
            .kernel_tree
            .as_ref()
            .map(|t| absolute(t))
            .or_else(|| p.kernel.tree.as_ref().map(|t| t.value.0.clone()));
        let kernel = match (&opts.kernel, tree, &p.kernel.path, &p.kernel.package) {
            (Some(k), _, _, _) => KernelPlan::Host(absolute(k)),
            (None, Some(t), _, _) => {
                KernelPlan::Tree(KernelTree::open(&t).map_err(|e| {
                    match (&opts.kernel_tree, &p.kernel.tree) {
                        (None, Some(pt)) => anyhow::Error::new(pt.error(format!("{e:#}"))),
                        _ => e.context("--kernel-tree"),
                    }
                })?)
            }
            (None, None, Some(k), _) => KernelPlan::Host(k.value.0.clone()),
            (None, None, None, Some(pkg)) => KernelPlan::Package {
                package: pkg.value.clone(),
                vmlinuz: at("vmlinuz"),
            },
            (None, None, None, None) => KernelPlan::None,
        };
        // Distribution kernels, and many a build tree, have virtio as modules: a disk
        // boots them through kiln's boot initramfs (its busybox comes from the archive).
        let boots_through_initrd = match &kernel {
            KernelPlan::Package { .. } => true,
            KernelPlan::Tree(_) => p.distribution.is_some(),
            _ => false,
        };
        let boot_initrd =
            (format == Format::Disk && boots_through_initrd).then(|| at("initrd.cpio.zst"));
        let q = &p.qemu;
        let tests: Vec<TestPlan> = p
            .tests()
            .iter()
            .map(|t| TestPlan {
                name: t
                    .name
                    .clone()
                    .unwrap_or_else(|| crate::profile::DEFAULT_TEST_NAME.to_string()),
                timeout: t.timeout.map(|s| s.0),
                results: t.results.as_ref().map(|r| r.to_string()),
                results_size: t.results_size.map(|s| s.0),
                splats_fail: t.splats.unwrap_or_default() == Splats::Fail,
                require: t.require.clone(),
                tap: t.tap.clone(),
                kernels: t.kernels.clone(),
            })
            .collect();
        let run = RunConfig {
            qemu: q
                .binary
                .clone()
                .unwrap_or_else(|| "qemu-system-x86_64".to_string()),
            machine: q.machine.clone().unwrap_or_else(|| "q35".to_string()),
            cpu: q.cpu.clone(),
            memory: q.memory.map(|s| s.0).unwrap_or(DEFAULT_MEMORY),
            cpus: q.cpus.unwrap_or(2),
            cpus_explicit: q.cpus.is_some(),
            accel: q.accel.unwrap_or_default(),
            kernel_entry: q.kernel_entry.unwrap_or_default(),
            cmdline: p.kernel.cmdline.clone(),
            qemu_args: q.args.clone(),
            timeout: DEFAULT_TIMEOUT,
            results_size: DEFAULT_RESULTS_SIZE,
            splats_fail: true,
            test: None,
            results: None,
            require: Vec::new(),
            tap: None,
            network: NetConfig {
                mode: p.network.mode,
                forwards: p
                    .network
                    .forward
                    .iter()
                    // Checked when the profile was loaded.
                    .filter_map(|f| Forward::parse(f).ok())
                    .collect(),
                model: p.network.model.clone(),
            },
            gdb: None,
            vmlinux: p
                .kernel
                .vmlinux
                .as_ref()
                .map(|v| v.value.0.clone())
                .or(match &kernel {
                    KernelPlan::Tree(t) => t.vmlinux.clone(),
                    _ => None,
                }),
            dump_on_failure: false,
            shares: Vec::new(),
            share_transport: p.host.as_ref().and_then(|h| h.share).map(|k| match k {
                ShareKind::NineP => Transport::NineP,
                ShareKind::VirtioFs => Transport::VirtioFs,
            }),
            host: p.host.as_ref().map(|h| HostRun {
                root: h
                    .root
                    .as_ref()
                    .map(|r| r.0.clone())
                    .unwrap_or_else(|| "/".into()),
                // Where kiln runs: the directory the tests work in, as with `kiln exec`.
                cwd: std::env::current_dir().unwrap_or_else(|_| "/".into()),
                ..Default::default()
            }),
        }
        .for_test(tests.first());
        Ok(Plan {
            name: lp.name.clone(),
            profile: lp.path.clone(),
            format,
            epoch,
            manifest: at("manifest.json"),
            sbom: at("spdx.json"),
            image,
            writer,
            out_dir,
            kernel,
            tests,
            cell_modules: false,
            boot_initrd,
            root_partuuid: (format == Format::Disk)
                .then(|| disk::root_partuuid(&lp.name).to_string()),
            run,
        })
    }

    /// Whether the initramfs loads modules built for the kernel it boots: the image's
    /// own packaged kernel, or a cell's kernel whose modules were appended.
    pub fn initrd_has_modules(&self) -> bool {
        self.format == Format::Initramfs
            && (matches!(
                self.kernel,
                KernelPlan::Package { .. } | KernelPlan::Tree(_)
            ) || self.cell_modules)
    }

    /// This plan booting `k` instead of its own kernel.
    pub fn use_kernel(&mut self, k: &CellKernel) {
        let own = match &self.kernel {
            KernelPlan::Package { vmlinuz, .. } => *vmlinuz == k.image,
            KernelPlan::Tree(t) => t.image == k.image,
            _ => false,
        };
        if own {
            return;
        }
        self.cell_modules = self.format == Format::Initramfs && k.initrd.is_some();
        self.kernel = KernelPlan::Host(k.image.clone());
        match self.format {
            Format::Initramfs => {
                if let Some(initrd) = &k.initrd {
                    self.image = initrd.clone();
                }
            }
            // A kernel of the host boots a disk directly, as `--kernel` always has.
            _ => self.boot_initrd = k.initrd.clone(),
        }
    }

    /// The test named `name`.
    pub fn test(&self, name: &str) -> Option<&TestPlan> {
        self.tests.iter().find(|t| t.name == name)
    }

    /// Whether any test brings results back (so the image needs what mounts them).
    pub fn has_results(&self) -> bool {
        self.tests.iter().any(|t| t.results.is_some())
    }

    /// Where runs of this image keep their directories: `OUT/NAME.runs/`.
    pub fn runs_dir(&self) -> PathBuf {
        self.out_dir.join(format!("{}.runs", self.name))
    }

    /// The link to the latest run's directory: `OUT/NAME.run`.
    pub fn latest_run(&self) -> PathBuf {
        self.out_dir.join(format!("{}.run", self.name))
    }
}
