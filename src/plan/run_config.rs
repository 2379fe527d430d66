//! How a run of the image is configured: the profile's settings, one test's, and the
//! command line's overrides on top.

use std::path::PathBuf;
use std::time::Duration;

pub use crate::profile::forward::{Forward, Proto};
pub use crate::profile::Accel;
pub use crate::profile::KernelEntry;
use crate::profile::NetworkMode;
use crate::vm::share::{Share, Transport};

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
    /// How QEMU enters the kernel.
    pub kernel_entry: KernelEntry,
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
    /// The file (relative to the results) holding the test's TAP, if it writes any.
    pub tap: Option<String>,
    /// The guest's network.
    pub network: NetConfig,
    /// QEMU's gdb stub, when asked for.
    pub gdb: Option<GdbRequest>,
    /// The kernel's uncompressed image with symbols, for gdb and crash dumps.
    pub vmlinux: Option<PathBuf>,
    /// On a panic or a timeout, keep a guest memory dump in the run directory.
    pub dump_on_failure: bool,
    /// Host directories shared into the guest; their transport is chosen per kernel
    /// before the boot, unless `share_transport` says which.
    pub shares: Vec<Share>,
    /// The transport every share takes; None: 9p where the kernel has it, else virtiofs.
    pub share_transport: Option<Transport>,
    /// The run boots into the host's userspace (`[host]`, `kiln exec`).
    pub host: Option<HostRun>,
}

/// A run in the host's userspace: what the guest shares and runs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HostRun {
    /// The host directory the guest's root is.
    pub root: PathBuf,
    /// The directory the command runs in, shared read-write.
    pub cwd: PathBuf,
    /// The command, when the run gives one (`kiln exec`); None: the test's own.
    pub command: Option<Vec<String>>,
    /// Environment variables not passed on (exact names).
    pub env_exclude: Vec<String>,
    /// More host directories: guest path, host directory, writable.
    pub mounts: Vec<(String, PathBuf, bool)>,
    /// The command gets the console as its terminal (an interactive shell).
    pub terminal: bool,
}

/// The network a run asks for, before host ports are chosen.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetConfig {
    /// The mode; None: user-mode when the image has sshd, else none.
    pub mode: Option<NetworkMode>,
    /// Ports forwarded from 127.0.0.1 into the guest.
    pub forwards: Vec<Forward>,
    /// The NIC model.
    pub model: Option<String>,
}

/// `--gdb[=PORT]` and `--gdb-wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GdbRequest {
    /// The port; None: a free one.
    pub port: Option<u16>,
    /// Hold the CPU at reset until gdb continues it.
    pub wait: bool,
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
    /// The file of its results that holds TAP.
    pub tap: Option<String>,
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

/// A network mode as the profile and the command line write it.
pub fn network_name(m: NetworkMode) -> &'static str {
    match m {
        NetworkMode::User => "user",
        NetworkMode::None => "none",
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
    /// How QEMU enters the kernel.
    pub kernel_entry: Option<KernelEntry>,
    /// Extra kernel command-line words.
    pub append: Vec<String>,
    /// Extra QEMU arguments.
    pub qemu_args: Vec<String>,
    /// Time limit.
    pub timeout: Option<Duration>,
    /// The network mode.
    pub network: Option<NetworkMode>,
    /// More forwarded ports.
    pub forwards: Vec<Forward>,
    /// QEMU's gdb stub.
    pub gdb: Option<GdbRequest>,
    /// The kernel's image with symbols.
    pub vmlinux: Option<PathBuf>,
    /// Keep a guest memory dump when the run panics or times out.
    pub dump_on_failure: bool,
    /// More shared host directories.
    pub shares: Vec<Share>,
    /// The transport of the shares.
    pub share_transport: Option<Transport>,
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
        opt(
            "kernel-entry",
            self.kernel_entry.map(|e| {
                match e {
                    KernelEntry::Auto => "auto",
                    KernelEntry::Pvh => "pvh",
                    KernelEntry::Image => "image",
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
        if let Some(n) = self.network {
            a.push(format!("--network={}", network_name(n)));
        }
        for f in &self.forwards {
            a.push(format!("--forward={f}"));
        }
        if let Some(v) = &self.vmlinux {
            a.push(format!("--vmlinux={}", v.display()));
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
        c.tap = None;
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
            c.tap = t.tap.clone();
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
        c.kernel_entry = o.kernel_entry.unwrap_or(c.kernel_entry);
        c.cmdline.extend(o.append.iter().cloned());
        c.qemu_args.extend(o.qemu_args.iter().cloned());
        c.timeout = o.timeout.unwrap_or(c.timeout);
        if o.network.is_some() {
            c.network.mode = o.network;
        }
        c.network.forwards.extend(o.forwards.iter().copied());
        if o.gdb.is_some() {
            c.gdb = o.gdb;
        }
        if o.vmlinux.is_some() {
            c.vmlinux = o.vmlinux.clone();
        }
        c.dump_on_failure |= o.dump_on_failure;
        c.shares.extend(o.shares.iter().cloned());
        if o.share_transport.is_some() {
            c.share_transport = o.share_transport;
        }
        c
    }
}
