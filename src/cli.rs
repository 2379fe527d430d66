//! The command line's shape: every verb, option and its help text, and their
//! translation into the library's typed arguments.
//!
//! Over 500 lines because every verb's options and help live together here, so `--help`
//! reads as one text; the shared groups (build, run, reports) are already their own
//! structs. Splitting it per verb is the next step when it grows.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use kiln::commands::ProfileArgs;
use kiln::plan::{self, Accel, BuildOptions, GdbRequest, KernelEntry, RunOverrides};
use kiln::profile::forward::Forward;
use kiln::profile::NetworkMode;
use kiln::profile::{Seconds, Size};
use kiln::source::PackageOptions;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Rootless, declarative VM image builder and test runner",
    long_about = "kiln reads a TOML profile and, without root, loop devices or mounts, writes an \
initramfs (newc cpio + zstd), a tar, or a GPT disk image with ext4 itself, from Debian packages, \
overlays and files; then boots it in QEMU, runs the profile's tests inside (each a boot, on each \
kernel asked for) and reports their exit status \
and results.\n\nExit status of `kiln test`: 0 passed; 1-119 the test's own status; 120 \
kiln's own step in the guest failed; 121 kernel splat; 122 preflight (the kernel lacks what the \
run needs; not booted); 123 the test exited with 120 or more; 124 timed out; 125 kernel panic; \
126 QEMU failed; 127 the guest reported no status; 128 the test passed but left out a file its `require` lists; 129 the test passed but its TAP (`tap`) \
has a `not ok`; 130 interrupted. With several cells (kernels × tests): 0 \
when every run passed, 130 interrupted, else 1. Any command: 2 for a bad profile, 1 for other \
errors."
)]
pub struct Cli {
    /// Print only errors and results, no progress.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Build the image a profile describes, with its manifest, into the output directory.
    Build {
        #[command(flatten)]
        build: BuildArgs,
        /// Print one JSON object on stdout: the outputs with their sizes and sha256, the
        /// entry count, whether it was up to date, and the time taken (progress stays on
        /// stderr).
        #[arg(long)]
        json: bool,
    },
    /// Print (--print) or run the QEMU command for a profile's image.
    Qemu {
        #[command(flatten)]
        build: BuildArgs,
        #[command(flatten)]
        run: RunArgs,
        /// Print the command instead of running it.
        #[arg(long)]
        print: bool,
        /// The command as `kiln test` runs it (console and status into the files of the
        /// latest run, OUT/NAME.run/) rather than as `kiln boot` does (console on this
        /// terminal). Without --print, runs the test as `kiln test --no-build`.
        #[arg(long)]
        test: bool,
    },
    /// Build, then boot with the serial console on this terminal (Ctrl-A X quits QEMU).
    /// The profile's tests do not run (the same image bytes run them under `kiln test`):
    /// an initramfs opens a shell on the console, a disk boots to its login (a root shell
    /// with [system] autologin). A disk image keeps what the guest writes.
    Boot {
        #[command(flatten)]
        build: BuildArgs,
        #[command(flatten)]
        run: RunArgs,
        /// Boot the image already in the output directory instead of building it first.
        #[arg(long)]
        no_build: bool,
        /// Run a test with the console attached: the first, or the one named; kiln then
        /// exits with its status.
        #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
        test: Option<String>,
        /// Boot in the background: the console goes to the run directory's console.log,
        /// and kiln prints how to reach the VM (kiln ssh, kiln cp, kiln stop).
        #[arg(long)]
        detach: bool,
    },
    /// A root shell, or one command, in a running VM over SSH (the host's ssh, the
    /// image's own key; sshd must be in the image). Exits with the command's status.
    Ssh {
        #[command(flatten)]
        vm: VmArgs,
        /// How long to wait for sshd to answer (a VM still booting).
        #[arg(long, value_name = "DURATION", default_value = "300s")]
        wait: Seconds,
        /// The command to run instead of a shell, after `--`.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Copy files out of (`:PATH`) or into a running VM with scp, e.g.
    /// `kiln cp PROFILE :/tmp/kmap ./kmap` or `kiln cp PROFILE ./tool :/usr/local/bin/`.
    Cp {
        #[command(flatten)]
        vm: VmArgs,
        /// How long to wait for sshd to answer.
        #[arg(long, value_name = "DURATION", default_value = "300s")]
        wait: Seconds,
        /// Sources, then the destination; guest paths start with `:`.
        #[arg(value_name = "PATH", num_args = 2.., required = true)]
        paths: Vec<String>,
    },
    /// Print an OpenSSH `Host` block for a running VM, for ~/.ssh/config (then plain
    /// `ssh NAME`, rsync and editors' remote plugins reach it).
    SshConfig {
        #[command(flatten)]
        vm: VmArgs,
    },
    /// Stop a running VM: an ACPI power-off, then QEMU's quit after the grace period,
    /// then a kill.
    Stop {
        #[command(flatten)]
        vm: VmArgs,
        /// How long the guest may take to power off before QEMU is told to quit
        /// ("0" quits at once).
        #[arg(long, value_name = "DURATION", default_value = "15s")]
        grace: Seconds,
        /// Stop every running VM of the profile.
        #[arg(long, conflicts_with = "pid")]
        all: bool,
    },
    /// List the running VMs kiln started (any profile, any directory).
    Ps {
        /// One JSON object per VM (pid, ports, key, run directory).
        #[arg(long)]
        json: bool,
    },
    /// Build, boot, run the profile's tests (on each kernel asked for), bring their results
    /// back, exit with the status (one cell) or 0 when every cell passed.
    Test {
        #[command(flatten)]
        build: BuildArgs,
        #[command(flatten)]
        run: RunArgs,
        /// Test the image already in the output directory instead of building it first.
        #[arg(long)]
        no_build: bool,
        /// Time limit for the whole run (boot, test, power-off), e.g. "90s" or "5m";
        /// overrides [test] timeout (default 5m).
        #[arg(long, value_name = "DURATION")]
        timeout: Option<Seconds>,
        /// Show the serial console as the guest runs.
        #[arg(short, long)]
        verbose: bool,
        /// Let the guest's writes reach the disk image (by default they go to a
        /// throwaway overlay, so every run starts from the built image).
        #[arg(long)]
        persist: bool,
        /// When a run panics or times out, keep a guest memory dump (an ELF core,
        /// `vmcore`) in its run directory, with the crash/drgn command that opens it;
        /// a panicking kernel then waits for the dump (panic=0) instead of ending.
        #[arg(long)]
        dump_on_failure: bool,
        #[command(flatten)]
        reports: ReportArgs,
        /// Run only shard I of N of the cells (every N-th from the I-th), e.g. 2/4, so
        /// N CI jobs cover every cell once.
        #[arg(long, value_name = "I/N")]
        shard: Option<kiln::run::matrix::Shard>,
        /// Run over the kernels of the profile's [matrix] table (any --kernel is added).
        #[arg(long)]
        matrix: bool,
        /// Run only the test with this name (repeatable; default: every test of the
        /// profile). What meson's test() calls: `kiln test PROFILE --test NAME --no-build`.
        #[arg(long = "test", value_name = "NAME")]
        tests: Vec<String>,
    },
    /// Run a command from the host under a chosen kernel, with the host's own userspace
    /// and no image to build: the host's / is shared read-only, the current directory
    /// read-write, and the command runs as you, there, with your environment. The
    /// directories travel over 9p where the kernel has it (Debian's generic
    /// linux-image-*-amd64), else over virtiofs (Debian's cloud kernels), which needs
    /// QEMU's virtiofsd and, without root, subordinate ids (the uidmap package).
    /// Exits with the command's status (one kernel), or as `kiln test` does for several.
    /// With no command, a shell on the console. Without --kernel, runs the targets of
    /// vmtest's configuration (./vmtest.toml, or --config). The kernel's crypto
    /// self-tests are skipped (cryptomgr.notests); --append cryptomgr.notests=0 runs them.
    Exec {
        /// A kernel to run under (repeatable: each kernel is one run, in parallel): an
        /// image, a build tree, a directory or glob of images, or a Debian kernel package
        /// such as linux-image-6.1.0-47-amd64 (PACKAGE/SUITE to pick the suite).
        #[arg(long, value_name = "KERNEL")]
        kernel: Vec<PathBuf>,
        /// A vmtest.toml whose [[target]]s to run (default: ./vmtest.toml when no
        /// --kernel is given), in parallel, with a line per target and a summary.
        #[arg(long, value_name = "FILE", conflicts_with = "kernel")]
        config: Option<PathBuf>,
        /// Run only the targets whose name matches this regular expression.
        #[arg(long, value_name = "REGEX", conflicts_with = "kernel")]
        filter: Option<String>,
        /// How host directories reach the guest: 9p or virtiofs (default: 9p where the
        /// kernel has it, else virtiofs).
        #[arg(long, value_name = "KIND", value_parser = ["9p", "virtiofs"])]
        share: Option<String>,
        #[command(flatten)]
        run: RunArgs,
        /// Time limit for each run (boot, command, power-off), e.g. "90s" (default 30m).
        #[arg(long, value_name = "DURATION")]
        timeout: Option<Seconds>,
        #[command(flatten)]
        reports: ReportArgs,
        /// An environment variable not to pass to the command (repeatable).
        #[arg(long, value_name = "NAME")]
        env_exclude: Vec<String>,
        /// Debian mirror URL for packaged kernels (default: the host's apt configuration).
        #[arg(long, value_name = "URL", env = "KILN_MIRROR")]
        mirror: Option<String>,
        /// The command and its arguments, after `--`; none: a shell on the console.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// The cells of a matrix.
    Matrix {
        #[command(subcommand)]
        command: MatrixCmd,
    },
    /// List the entries of an image: initramfs (.cpio, .cpio.zst), tar, ext4, or GPT disk (its root file system).
    Ls {
        /// The image file.
        image: PathBuf,
        /// One JSON object per entry (path, type, mode, uid, gid, size, target, major,
        /// minor; the manifest's field names), one per line.
        #[arg(long)]
        json: bool,
    },
    /// Copy a file or directory out of an ext4 image or GPT disk, without root or mounting.
    /// Symlinks inside are copied as symlinks; nothing is written outside DEST.
    Extract {
        /// The image file (ext4, or a GPT disk whose root partition is read).
        image: PathBuf,
        /// Path inside the image, e.g. /etc/os-release or /var/log.
        path: String,
        /// Directory to copy into (created if missing).
        dest: PathBuf,
    },
    /// Write a commented profile that builds and passes as it is, to start from: NAME.toml,
    /// and the files it names beside it. Refuses to overwrite anything.
    Init {
        /// The profile to write (".toml" is added unless given).
        name: PathBuf,
        /// busybox (an initramfs whose test prints `uname -r`), debian-disk (a GPT disk
        /// booting systemd, with a test script), memorizer (the Memorizer tracing test) or
        /// kernel-matrix (one test over several Debian kernels).
        #[arg(long, value_enum, default_value = "busybox")]
        template: TemplateArg,
    },
    /// Read profiles as a build would (includes, types, the rules between keys) and build
    /// nothing: prints `PROFILE: ok` for each, or the first error (exit status 2).
    Check {
        /// The profiles to read.
        #[arg(required = true)]
        profiles: Vec<PathBuf>,
    },
    /// Rewrite profiles in the current profile format, in place, keeping comments and
    /// layout. kiln reads every older format as it is, so upgrading is never forced.
    Fmt {
        /// Upgrade to the current format (the only rewrite `kiln fmt` makes).
        #[arg(long, required = true)]
        upgrade: bool,
        /// Write nothing; exit 1 when a profile is in an older format (for CI).
        #[arg(long)]
        check: bool,
        /// The profile files (each file is rewritten on its own; includes are not followed).
        #[arg(required = true)]
        profiles: Vec<PathBuf>,
    },
    /// Turn an mkosi configuration (mkosi 14's layout or the current one) into a kiln
    /// profile: what has a kiln equivalent is mapped, every other setting and script is
    /// listed on stderr with its file and line.
    #[command(name = "import-mkosi")]
    ImportMkosi {
        /// mkosi.conf or mkosi.default, or the directory holding it (with its .d/
        /// drop-ins, mkosi.extra/ and scripts beside it).
        config: PathBuf,
        /// Write the profile here (only if the import succeeds) instead of stdout; paths
        /// in it are relative to this file's directory (on stdout: to the current one).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print the SBOM (SPDX 2.3 JSON) of a built image from its manifest: the same bytes
    /// as the NAME.spdx.json each build writes beside the image.
    Sbom {
        /// The image's manifest (OUT/NAME.manifest.json).
        manifest: PathBuf,
    },
    /// Print the JSON Schema of profile format v1 (editors that use taplo, such as VS Code's
    /// Even Better TOML, validate and complete a profile whose first line is
    /// `#:schema PATH-TO-SCHEMA`).
    Schema,
    /// Print a shell completion script: `kiln completions bash >
    /// ~/.local/share/bash-completion/completions/kiln` (zsh: a `_kiln` file on $fpath;
    /// fish: ~/.config/fish/completions/kiln.fish).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print kiln's man page (roff), or with --dir write it and one page per command
    /// (kiln-build.1, ...) there: `kiln man --dir ~/.local/share/man/man1`, then `man kiln`.
    Man {
        /// Write kiln.1 and kiln-COMMAND.1 into this directory (created if missing)
        /// instead of printing kiln.1.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Resolve the profile's Debian packages and write its lock (profiles/x.toml → profiles/x.lock).
    Lock {
        #[command(flatten)]
        build: BuildArgs,
        /// Resolve afresh even if the lock still matches the profile (picks up new package
        /// versions); also removes PROFILE.kernels.lock, so a matrix's kernels are resolved
        /// afresh on its next run.
        #[arg(long)]
        update: bool,
        /// Print the lock as one JSON object on stdout (with `lock`, its path, and
        /// `written`: whether this run wrote it).
        #[arg(long)]
        json: bool,
    },
}

/// `kiln matrix` subcommands.
#[derive(Subcommand)]
pub enum MatrixCmd {
    /// List the cells (kernel × test) of the profile's [matrix] (and any --kernel), each
    /// with the --shard that runs it, for a CI system's job matrix.
    List {
        #[command(flatten)]
        build: BuildArgs,
        /// One JSON array: kernel, kernel_path, test and shard of each cell.
        #[arg(long)]
        json: bool,
        /// How many shards (CI jobs) to split the cells over.
        #[arg(long, value_name = "N", default_value_t = 1)]
        shards: usize,
    },
}

#[derive(Args, Clone)]
pub struct BuildArgs {
    /// The profile (TOML) to read. Without one: ./kiln.toml, else kiln's built-in busybox
    /// test (a Debian trixie initramfs on Debian's cloud kernel that prints `uname -r`).
    profile: Option<PathBuf>,
    /// Directory for images, manifests and run directories.
    #[arg(
        short,
        long,
        value_name = "DIR",
        default_value = "out",
        env = "KILN_OUT_DIR"
    )]
    out_dir: PathBuf,
    /// Kernel image (bzImage/vmlinuz) to boot, instead of the profile's [kernel]. `kiln
    /// test` also takes a directory or glob of kernel images, or a Debian kernel package
    /// (linux-image-6.1.0-47-cloud-amd64, or PACKAGE/SUITE such as
    /// linux-image-cloud-amd64/bookworm), and takes --kernel several times: each test
    /// runs once on each kernel (a matrix).
    #[arg(long, value_name = "KERNEL")]
    kernel: Vec<PathBuf>,
    /// A kernel build tree after `make` (the source directory, or the O= directory), instead
    /// of the profile's [kernel]: its arch/x86/boot/bzImage boots, the modules it built go
    /// into the image (the ones [kernel] modules asks for, and for a disk all of them, with
    /// modules.dep), its vmlinux serves --gdb and its .config the preflight.
    #[arg(long, value_name = "DIR", conflicts_with = "kernel")]
    kernel_tree: Option<PathBuf>,
    /// Debian mirror URL, instead of the profile's or the host's apt configuration
    /// (also $KILN_MIRROR, e.g. on a CI runner whose apt sources are not Debian's).
    #[arg(long, value_name = "URL", env = "KILN_MIRROR")]
    mirror: Option<String>,
    /// Fail if the lock is missing or no longer matches the profile, instead of resolving afresh.
    #[arg(long)]
    locked: bool,
    /// Accept an archive whose InRelease Valid-Until has passed (e.g. a snapshot mirror).
    #[arg(long)]
    ignore_valid_until: bool,
    /// Parallel downloads (default 6).
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    downloads: usize,
    /// Never touch the network: build from the lock and the cache alone, and name what is
    /// missing from the cache. Implies --locked.
    #[arg(long)]
    offline: bool,
    /// An unlocked build fetches the suite's InRelease every time; with this, one fetched
    /// within DURATION (e.g. "10m", "1h") is used from the cache instead, its signature
    /// and Valid-Until checked again (also $KILN_INDEX_MAX_AGE).
    #[arg(long, value_name = "DURATION", env = "KILN_INDEX_MAX_AGE")]
    index_max_age: Option<Seconds>,
    /// Build even when the outputs are up to date. Without it, a build whose inputs
    /// (profile, lock or resolved packages, host files, kernel, SOURCE_DATE_EPOCH, kiln
    /// itself) did not change and whose outputs are intact prints `up to date` and does
    /// nothing else. With it, the package layers are made afresh too, not taken from
    /// the layer cache, and every host file is hashed, none taken from the last build.
    #[arg(long)]
    rebuild: bool,
}

/// Which running VM: a profile's (the newest, or the one with --pid).
#[derive(Args, Clone)]
pub struct VmArgs {
    /// The profile the VM was booted from (without one, as for `kiln boot`).
    profile: Option<PathBuf>,
    /// The output directory it was booted in.
    #[arg(
        short,
        long,
        value_name = "DIR",
        default_value = "out",
        env = "KILN_OUT_DIR"
    )]
    out_dir: PathBuf,
    /// The VM with this QEMU pid, when several of the profile run (see `kiln ps`).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
}

impl VmArgs {
    /// The profile and output directory.
    pub fn profile_args(&self) -> Result<ProfileArgs> {
        Ok(ProfileArgs {
            profile: kiln::profile::default::locate(self.profile.as_deref(), &self.out_dir)?,
            build: BuildOptions {
                out_dir: self.out_dir.clone(),
                ..Default::default()
            },
        })
    }
}

/// How runs of several cells (kernels × tests, or targets) report.
#[derive(Args, Clone, Default)]
pub struct ReportArgs {
    /// With several cells (kernels × tests): how many VMs run at once (default: the
    /// host's CPUs divided by each VM's vCPUs, at least 1).
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<usize>,
    /// JSON lines on stdout: one object per finished run (kernel, test, outcome,
    /// exit code, guest status, duration, run directory), then a summary object.
    #[arg(long, conflicts_with = "tap")]
    pub json: bool,
    /// Also write a JUnit XML report here: one testsuite per kernel, one testcase
    /// per test, the console's tail in <system-out>.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// TAP (version 13) on stdout: one line per cell; status 77 is a SKIP.
    #[arg(long)]
    pub tap: bool,
}

#[derive(Args, Clone, Default)]
pub struct RunArgs {
    /// Guest memory, e.g. "2G" (default: [qemu] memory, else 1G).
    #[arg(long, value_name = "SIZE")]
    memory: Option<Size>,
    /// Number of virtual CPUs (default: [qemu] cpus, else 2 under KVM and 1 under TCG).
    #[arg(long, value_name = "N")]
    cpus: Option<u32>,
    /// QEMU machine type (default: [qemu] machine, else q35).
    #[arg(long, value_name = "TYPE")]
    machine: Option<String>,
    /// QEMU CPU model (default: host under KVM, max under TCG).
    #[arg(long, value_name = "MODEL")]
    cpu: Option<String>,
    /// Accelerator: auto probes whether KVM really runs guests and falls back to TCG.
    #[arg(long, value_enum)]
    accel: Option<AccelArg>,
    /// How QEMU enters an x86 kernel: auto goes through PVH (the vmlinux inside the
    /// bzImage, decompressed once into the cache) when the kernel has CONFIG_PVH, which
    /// skips seconds of decompression under TCG; pvh insists; image boots the bzImage as
    /// it is (default: [qemu] kernel_entry, else auto).
    #[arg(long, value_enum, value_name = "HOW")]
    kernel_entry: Option<KernelEntryArg>,
    /// Extra kernel command-line word(s); repeatable.
    #[arg(long, value_name = "WORDS")]
    append: Vec<String>,
    /// Extra QEMU argument; repeatable, e.g. --qemu-arg=-s.
    #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
    qemu_args: Vec<String>,
    /// QEMU binary (default: [qemu] binary, else qemu-system-x86_64).
    #[arg(long, value_name = "PATH")]
    qemu: Option<String>,
    /// The guest's network: "user" (QEMU's user-mode network, no root needed) or
    /// "none" (default: [network] mode, else user when the image has sshd).
    #[arg(long, value_enum, value_name = "MODE")]
    network: Option<NetworkArg>,
    /// Forward a port from 127.0.0.1 into the guest: HOST:GUEST (e.g. 8888:80), GUEST
    /// alone for a free host port (recorded in the run directory), udp: before either
    /// for UDP; repeatable. Added to [network] forward.
    #[arg(long, value_name = "SPEC", value_parser = parse_forward)]
    forward: Vec<Forward>,
    /// QEMU's gdb stub on 127.0.0.1:PORT (a free port when none is given); adds nokaslr
    /// to the kernel command line and prints the gdb command that attaches.
    #[arg(long, value_name = "PORT", num_args = 0..=1, default_missing_value = "0")]
    gdb: Option<u16>,
    /// With the gdb stub, hold the CPU at reset until gdb continues it (implies --gdb).
    #[arg(long)]
    gdb_wait: bool,
    /// The kernel's uncompressed image with symbols, for the printed gdb and crash
    /// commands (default: [kernel] vmlinux, else a vmlinux beside the kernel or at the
    /// top of its build tree).
    #[arg(long, value_name = "PATH")]
    vmlinux: Option<PathBuf>,
}

fn parse_forward(s: &str) -> Result<Forward, String> {
    Forward::parse(s)
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum NetworkArg {
    User,
    None,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum KernelEntryArg {
    Auto,
    Pvh,
    Image,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

impl BuildArgs {
    /// The profile and build settings, with SOURCE_DATE_EPOCH read from the environment.
    /// Only `kiln test` accepts several kernels; see [`BuildArgs::kernels`].
    pub fn profile_args(&self) -> Result<ProfileArgs> {
        if self.kernel.len() > 1 {
            anyhow::bail!(
                "--kernel was given {} times; only `kiln test` runs several kernels",
                self.kernel.len()
            );
        }
        self.profile_args_any()
    }

    /// Every --kernel, for a matrix.
    pub fn kernels(&self) -> &[PathBuf] {
        &self.kernel
    }

    /// The profile and build settings, whatever the number of kernels (the first, if
    /// any, is the plan's).
    pub fn profile_args_any(&self) -> Result<ProfileArgs> {
        // The environment is read here, at the edge; the library takes values.
        let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) => Some(plan::parse_epoch(&v)?),
            Err(_) => None,
        };
        Ok(ProfileArgs {
            profile: kiln::profile::default::locate(self.profile.as_deref(), &self.out_dir)?,
            build: BuildOptions {
                out_dir: self.out_dir.clone(),
                kernel: self.kernel.first().cloned(),
                kernel_tree: self.kernel_tree.clone(),
                packages: PackageOptions {
                    // An empty $KILN_MIRROR (an unset CI variable) means none.
                    mirror: self.mirror.clone().filter(|m| !m.is_empty()),
                    ignore_valid_until: self.ignore_valid_until,
                    locked: self.locked || self.offline,
                    jobs: self.downloads,
                    offline: self.offline,
                    index_max_age: self.index_max_age.map(|s| s.0),
                },
                epoch,
                rebuild: self.rebuild,
            },
        })
    }
}

impl RunArgs {
    /// The run settings given on the command line.
    pub fn overrides(&self, timeout: Option<Seconds>) -> RunOverrides {
        RunOverrides {
            qemu: self.qemu.clone(),
            machine: self.machine.clone(),
            cpu: self.cpu.clone(),
            memory: self.memory.map(|s| s.0),
            cpus: self.cpus,
            accel: self.accel.map(|a| match a {
                AccelArg::Auto => Accel::Auto,
                AccelArg::Kvm => Accel::Kvm,
                AccelArg::Tcg => Accel::Tcg,
            }),
            kernel_entry: self.kernel_entry.map(|e| match e {
                KernelEntryArg::Auto => KernelEntry::Auto,
                KernelEntryArg::Pvh => KernelEntry::Pvh,
                KernelEntryArg::Image => KernelEntry::Image,
            }),
            append: self
                .append
                .iter()
                .flat_map(|a| a.split_whitespace().map(String::from))
                .collect(),
            qemu_args: self.qemu_args.clone(),
            timeout: timeout.map(|t| t.0),
            network: self.network.map(|n| match n {
                NetworkArg::User => NetworkMode::User,
                NetworkArg::None => NetworkMode::None,
            }),
            forwards: self.forward.clone(),
            gdb: (self.gdb.is_some() || self.gdb_wait).then(|| GdbRequest {
                port: self.gdb.filter(|p| *p != 0),
                wait: self.gdb_wait,
            }),
            vmlinux: self
                .vmlinux
                .as_deref()
                .map(std::path::absolute)
                .transpose()
                .ok()
                .flatten(),
            dump_on_failure: false,
            shares: Vec::new(),
            share_transport: None,
        }
    }
}

/// `kiln init --template`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum TemplateArg {
    /// A busybox initramfs whose test prints `uname -r`.
    Busybox,
    /// A GPT disk with an ext4 root booting systemd, and a test script.
    DebianDisk,
    /// The Memorizer kernel-tracing test.
    Memorizer,
    /// One test over several Debian kernels.
    KernelMatrix,
}

impl From<TemplateArg> for kiln::commands::Template {
    fn from(t: TemplateArg) -> Self {
        match t {
            TemplateArg::Busybox => kiln::commands::Template::Busybox,
            TemplateArg::DebianDisk => kiln::commands::Template::DebianDisk,
            TemplateArg::Memorizer => kiln::commands::Template::Memorizer,
            TemplateArg::KernelMatrix => kiln::commands::Template::KernelMatrix,
        }
    }
}
