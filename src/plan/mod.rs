//! Everything decided before a byte is written: where outputs go, which writer makes the
//! image, where the kernel comes from, and how a run of the image is configured. Layers
//! above (the build, the VM, runs) read the plan, never the profile.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};

use crate::output::cpio::CpioOptions;
use crate::output::disk::{self, DiskOptions, PartitionSpec};
use crate::output::options::{Compression, DEFAULT_FREE_SPACE};
use crate::output::tar::TarWriter;
use crate::output::ImageWriter;
pub use crate::profile::Accel;
use crate::profile::{Format, LoadedProfile, Splats};
use crate::source::PackageOptions;

mod kernels;
pub use kernels::{unique_labels, CellKernel, KernelRef};

/// Settings for a build that come from the command line rather than the profile.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Where outputs go.
    pub out_dir: PathBuf,
    /// Boot this kernel instead of the profile's `[kernel]`.
    pub kernel: Option<PathBuf>,
    /// Package handling.
    pub packages: PackageOptions,
    /// `SOURCE_DATE_EPOCH` from the environment, which wins over the profile's. The
    /// caller reads the environment; the library never does.
    pub epoch: Option<i64>,
}

/// Where a run's kernel comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelPlan {
    /// A kernel image on the host.
    Host(PathBuf),
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

/// The run configuration the profile asks for, before command-line overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// The QEMU binary.
    pub qemu: String,
    /// Machine type.
    pub machine: String,
    /// CPU model; None: "host" under KVM, "max" under TCG.
    pub cpu: Option<String>,
    /// Guest memory in bytes.
    pub memory: u64,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Whether `cpus` was asked for (profile or command line) rather than defaulted, so
    /// a matrix may choose it.
    pub cpus_explicit: bool,
    /// Accelerator requested.
    pub accel: Accel,
    /// Kernel command-line words from the profile (kiln's own come first).
    pub cmdline: Vec<String>,
    /// Extra QEMU arguments from the profile.
    pub qemu_args: Vec<String>,
    /// Time limit for a test run.
    pub timeout: Duration,
    /// Size of the results disk.
    pub results_size: u64,
    /// A kernel splat on the console fails a passing test.
    pub splats_fail: bool,
    /// The test this run runs (`kiln.test=NAME` on the kernel command line); None for an
    /// image without tests.
    pub test: Option<String>,
    /// Guest directory whose contents come back after the test.
    pub results: Option<String>,
    /// Files (relative to the results) the test must leave.
    pub require: Vec<String>,
}

/// One test of the image, as a run needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct TestPlan {
    /// Its name.
    pub name: String,
    /// Its time limit, if the profile sets one.
    pub timeout: Option<Duration>,
    /// Guest directory whose contents come back after it.
    pub results: Option<String>,
    /// Size of its results disk, if the profile sets one.
    pub results_size: Option<u64>,
    /// What a kernel splat does to it.
    pub splats_fail: bool,
    /// Files it must leave in its results.
    pub require: Vec<String>,
    /// Glob patterns of the kernel labels it runs on; empty: every kernel.
    pub kernels: Vec<String>,
}

impl TestPlan {
    /// Whether this test runs on the kernel labelled `label`.
    pub fn runs_on(&self, label: &str) -> bool {
        self.kernels.is_empty()
            || self
                .kernels
                .iter()
                .any(|k| glob::Pattern::new(k).is_ok_and(|p| p.matches(label)))
    }
}

/// Default guest memory.
pub const DEFAULT_MEMORY: u64 = 1 << 30;
/// Default time limit of a test run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Default size of the results disk (sparse: it costs only what the guest writes).
pub const DEFAULT_RESULTS_SIZE: u64 = 1 << 30;

/// Settings given on the command line for one run; each wins over the profile.
#[derive(Debug, Clone, Default)]
pub struct RunOverrides {
    /// The QEMU binary.
    pub qemu: Option<String>,
    /// Machine type.
    pub machine: Option<String>,
    /// CPU model.
    pub cpu: Option<String>,
    /// Guest memory in bytes.
    pub memory: Option<u64>,
    /// Virtual CPUs.
    pub cpus: Option<u32>,
    /// Accelerator.
    pub accel: Option<Accel>,
    /// Extra kernel command-line words.
    pub append: Vec<String>,
    /// Extra QEMU arguments.
    pub qemu_args: Vec<String>,
    /// Time limit.
    pub timeout: Option<Duration>,
}

impl RunOverrides {
    /// The command-line options that give these settings, for a command that repeats a run.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        let mut opt = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                a.push(format!("--{k}={v}"));
            }
        };
        opt("qemu", self.qemu.clone());
        opt("machine", self.machine.clone());
        opt("cpu", self.cpu.clone());
        opt("memory", self.memory.map(|m| m.to_string()));
        opt("cpus", self.cpus.map(|n| n.to_string()));
        opt(
            "accel",
            self.accel.map(|x| {
                match x {
                    Accel::Auto => "auto",
                    Accel::Kvm => "kvm",
                    Accel::Tcg => "tcg",
                }
                .to_string()
            }),
        );
        opt("timeout", self.timeout.map(|t| format!("{}s", t.as_secs())));
        for w in &self.append {
            a.push(format!("--append={w}"));
        }
        for q in &self.qemu_args {
            a.push(format!("--qemu-arg={q}"));
        }
        a
    }
}

impl RunConfig {
    /// This configuration for a boot that runs no test (`kiln boot`): the image's tests
    /// stay inert, and no results disk is attached.
    pub fn without_test(&self) -> RunConfig {
        let mut c = self.clone();
        c.test = None;
        c.results = None;
        c.require.clear();
        c
    }

    /// This configuration for running `test` (its time limit, results and splat policy).
    pub fn for_test(&self, test: Option<&TestPlan>) -> RunConfig {
        let mut c = self.clone();
        if let Some(t) = test {
            c.timeout = t.timeout.unwrap_or(DEFAULT_TIMEOUT);
            c.results_size = t.results_size.unwrap_or(DEFAULT_RESULTS_SIZE);
            c.splats_fail = t.splats_fail;
            c.test = Some(t.name.clone());
            c.results = t.results.clone();
            c.require = t.require.clone();
        }
        c
    }

    /// This configuration with `o`'s settings applied.
    pub fn with(&self, o: &RunOverrides) -> RunConfig {
        let mut c = self.clone();
        if let Some(q) = &o.qemu {
            c.qemu = q.clone();
        }
        if let Some(m) = &o.machine {
            c.machine = m.clone();
        }
        if o.cpu.is_some() {
            c.cpu = o.cpu.clone();
        }
        c.memory = o.memory.unwrap_or(c.memory);
        if let Some(n) = o.cpus {
            c.cpus = n;
            c.cpus_explicit = true;
        }
        c.accel = o.accel.unwrap_or(c.accel);
        c.cmdline.extend(o.append.iter().cloned());
        c.qemu_args.extend(o.qemu_args.iter().cloned());
        c.timeout = o.timeout.unwrap_or(c.timeout);
        c
    }
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
                        })
                        .collect(),
                    time: epoch,
                    qcow2: o.qcow2.unwrap_or(false),
                }),
            ),
            Format::Tar => (at("tar"), WriterPlan::Tar),
        };
        let kernel = match (&opts.kernel, &p.kernel.path, &p.kernel.package) {
            (Some(k), _, _) => KernelPlan::Host(absolute(k)),
            (None, Some(k), _) => KernelPlan::Host(k.value.0.clone()),
            (None, None, Some(pkg)) => KernelPlan::Package {
                package: pkg.value.clone(),
                vmlinuz: at("vmlinuz"),
            },
            (None, None, None) => KernelPlan::None,
        };
        let boot_initrd = (format == Format::Disk && matches!(kernel, KernelPlan::Package { .. }))
            .then(|| at("initrd.cpio.zst"));
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
            cmdline: p.kernel.cmdline.clone(),
            qemu_args: q.args.clone(),
            timeout: DEFAULT_TIMEOUT,
            results_size: DEFAULT_RESULTS_SIZE,
            splats_fail: true,
            test: None,
            results: None,
            require: Vec::new(),
        }
        .for_test(tests.first());
        Ok(Plan {
            name: lp.name.clone(),
            profile: lp.path.clone(),
            format,
            epoch,
            manifest: at("manifest.json"),
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
            && (matches!(self.kernel, KernelPlan::Package { .. }) || self.cell_modules)
    }

    /// This plan booting `k` instead of its own kernel.
    pub fn use_kernel(&mut self, k: &CellKernel) {
        if matches!(&self.kernel, KernelPlan::Package { vmlinuz, .. } if *vmlinuz == k.image) {
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
