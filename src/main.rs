//! The kiln command line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use kiln::build::{self, BuildOptions, Plan};
use kiln::output::ext4::reader;
use kiln::profile::{self, Accel, LoadedProfile, Seconds, Size};
use kiln::progress;
use kiln::source::debian::{self, DebianOptions};
use kiln::vm::{kvm, launch, qemu, results, runner};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Rootless, declarative VM image builder and test runner",
    long_about = "kiln reads a TOML profile and, without root, loop devices or mounts, writes an \
initramfs (newc cpio + zstd), a tar, or a GPT disk image with ext4 itself, from Debian packages, \
overlays and files; then boots it in QEMU, runs the profile's test inside and reports its exit \
status and results.\n\nExit status of `kiln test`: 0 passed; the test's own status when it \
failed; 124 timed out; 125 kernel panic; 126 QEMU failed; 127 the guest reported no status. \
Any command: 2 for a bad profile, 1 for other errors."
)]
struct Cli {
    /// Print only errors and results, no progress.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the image a profile describes, with its manifest, into the output directory.
    Build(BuildArgs),
    /// Print (--print) or run the QEMU command for a profile's image.
    Qemu {
        #[command(flatten)]
        build: BuildArgs,
        #[command(flatten)]
        run: RunArgs,
        /// Print the command instead of running it.
        #[arg(long)]
        print: bool,
        /// The command as `kiln test` runs it (console and status into files under
        /// OUT/NAME.run/) rather than as `kiln boot` does (console on this terminal).
        #[arg(long)]
        test: bool,
    },
    /// Build, then boot with the serial console on this terminal (Ctrl-A X quits QEMU).
    /// A disk image keeps what the guest writes.
    Boot {
        #[command(flatten)]
        build: BuildArgs,
        #[command(flatten)]
        run: RunArgs,
        /// Boot the image already in the output directory instead of building it first.
        #[arg(long)]
        no_build: bool,
    },
    /// Build, boot, run the profile's test, bring its results back, exit with its status.
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
    },
    /// List the entries of an image: initramfs (.cpio, .cpio.zst), tar, ext4, or GPT disk (its root file system).
    Ls {
        /// The image file.
        image: PathBuf,
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
    /// Resolve the profile's Debian packages and write its lock (profiles/x.toml → profiles/x.lock).
    Lock {
        #[command(flatten)]
        build: BuildArgs,
        /// Resolve afresh even if the lock still matches the profile (picks up new package versions).
        #[arg(long)]
        update: bool,
    },
}

#[derive(Args, Clone)]
struct BuildArgs {
    /// The profile (TOML) to read.
    profile: PathBuf,
    /// Directory for images, manifests and run logs.
    #[arg(
        short,
        long,
        value_name = "DIR",
        default_value = "out",
        env = "KILN_OUT_DIR"
    )]
    out_dir: PathBuf,
    /// Kernel image (bzImage/vmlinuz) to boot, instead of the profile's [kernel].
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Debian mirror URL, instead of the profile's or the host's apt configuration.
    #[arg(long, value_name = "URL")]
    mirror: Option<String>,
    /// Fail if the lock is missing or no longer matches the profile, instead of resolving afresh.
    #[arg(long)]
    locked: bool,
    /// Accept an archive whose InRelease Valid-Until has passed (e.g. a snapshot mirror).
    #[arg(long)]
    ignore_valid_until: bool,
    /// Parallel downloads (default 6).
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    jobs: usize,
}

#[derive(Args, Clone, Default)]
struct RunArgs {
    /// Guest memory, e.g. "2G" (default: [qemu] memory, else 1G).
    #[arg(long, value_name = "SIZE")]
    memory: Option<Size>,
    /// Number of virtual CPUs (default: [qemu] cpus, else 2).
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
    /// Extra kernel command-line word(s); repeatable.
    #[arg(long, value_name = "WORDS")]
    append: Vec<String>,
    /// Extra QEMU argument; repeatable, e.g. --qemu-arg=-s.
    #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true)]
    qemu_args: Vec<String>,
    /// QEMU binary (default: [qemu] binary, else qemu-system-x86_64).
    #[arg(long, value_name = "PATH")]
    qemu: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

impl RunArgs {
    fn overrides(&self, timeout: Option<Duration>, persist: bool) -> launch::Overrides {
        launch::Overrides {
            qemu_binary: self.qemu.clone(),
            machine: self.machine.clone(),
            cpu: self.cpu.clone(),
            memory: self.memory,
            cpus: self.cpus,
            accel: self.accel.map(|a| match a {
                AccelArg::Auto => Accel::Auto,
                AccelArg::Kvm => Accel::Kvm,
                AccelArg::Tcg => Accel::Tcg,
            }),
            append: self
                .append
                .iter()
                .flat_map(|a| a.split_whitespace().map(String::from))
                .collect(),
            qemu_args: self.qemu_args.clone(),
            timeout,
            persist,
        }
    }
}

/// A bad profile: exit status 2, so scripts can tell it from a failed test.
#[derive(Debug)]
struct BadInput;

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid profile")
    }
}

fn load(b: &BuildArgs) -> Result<LoadedProfile> {
    profile::load(&b.profile).map_err(|e| anyhow::Error::new(e).context(BadInput))
}

fn debian_options(b: &BuildArgs) -> DebianOptions {
    DebianOptions {
        mirror: b.mirror.clone(),
        ignore_valid_until: b.ignore_valid_until,
        locked: b.locked,
        jobs: b.jobs,
    }
}

fn build_options(b: &BuildArgs) -> BuildOptions {
    BuildOptions {
        out_dir: b.out_dir.clone(),
        kernel: b.kernel.clone(),
        debian: debian_options(b),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    progress::set_quiet(cli.quiet);
    match run(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            // `kiln ls … | head` closes the pipe early; that is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            if e.downcast_ref::<BadInput>().is_some() {
                // The profile error already says where and what.
                let inner = e.chain().nth(1).map(|c| c.to_string()).unwrap_or_default();
                eprintln!("kiln: error: {inner}");
                return ExitCode::from(2);
            }
            eprintln!("kiln: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn choose_accel(lp: &LoadedProfile, o: &launch::Overrides) -> kvm::AccelChoice {
    let choice = kvm::choose(launch::accel(lp, o), &launch::qemu_binary(lp, o));
    if let Some(w) = &choice.warning {
        progress::warn(w);
    }
    choice
}

fn plan_or_build(lp: &LoadedProfile, b: &BuildArgs, no_build: bool) -> Result<Plan> {
    if no_build {
        let plan = Plan::new(lp, &build_options(b))?;
        if !plan.image.exists() {
            anyhow::bail!(
                "{} does not exist; run `kiln build {}` first",
                plan.image.display(),
                b.profile.display()
            );
        }
        Ok(plan)
    } else {
        Ok(build::build(lp, &build_options(b))?.plan)
    }
}

fn run_spec(accel: kvm::Accelerator, files: &runner::RunFiles, interactive: bool) -> qemu::RunSpec {
    qemu::RunSpec {
        accel,
        console: if interactive {
            qemu::Console::Interactive
        } else {
            qemu::Console::LogFile(files.console.clone())
        },
        status_uart: files.status_uart.clone(),
        status_virtio: files.status_virtio.clone(),
    }
}

/// Adds the results disk to a launch when the profile asks for results.
/// With `create` false (printing a command), only names the disk.
fn attach_results(
    lp: &LoadedProfile,
    plan: &Plan,
    l: &mut qemu::Launch,
    files: &runner::RunFiles,
    create: bool,
) -> Result<Option<PathBuf>> {
    if plan.results.is_none() {
        return Ok(None);
    }
    let img = if create {
        std::fs::create_dir_all(&files.dir)?;
        let size = lp
            .profile
            .test
            .as_ref()
            .and_then(|t| t.results_size)
            .map(|s| s.0)
            .unwrap_or(results::DEFAULT_SIZE);
        results::prepare(&files.dir, &plan.name, size, plan.epoch)?
    } else {
        files.dir.join("results.img")
    };
    l.disks.push(qemu::Disk {
        path: img.clone(),
        format: "raw".into(),
        serial: "kiln-results".into(),
        read_only: false,
        snapshot: false,
    });
    Ok(Some(img))
}

fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Cmd::Build(b) => {
            let lp = load(&b)?;
            build::build(&lp, &build_options(&b))?;
            Ok(0)
        }
        Cmd::Qemu {
            build: b,
            run: r,
            print,
            test,
        } => {
            let lp = load(&b)?;
            let plan = Plan::new(&lp, &build_options(&b))?;
            let o = r.overrides(None, !test);
            let mut l = launch::launch(&lp, &plan, &o)?;
            let files = runner::RunFiles::new(&plan.run_dir);
            let accel = match (print, launch::accel(&lp, &o)) {
                // Printing should not spend two seconds probing unless it must.
                (true, Accel::Kvm) => kvm::Accelerator::Kvm,
                (true, Accel::Tcg) => kvm::Accelerator::Tcg,
                _ => choose_accel(&lp, &o).accel,
            };
            attach_results(&lp, &plan, &mut l, &files, !print)?;
            let spec = run_spec(accel, &files, !test);
            if print {
                print!("{}", qemu::printable(&qemu::command(&l, &spec)));
                return Ok(0);
            }
            launch::check_files(&lp, &l)?;
            Ok(runner::run_interactive(&l, &spec, &files)?.unwrap_or(0))
        }
        Cmd::Boot {
            build: b,
            run: r,
            no_build,
        } => {
            let lp = load(&b)?;
            let plan = plan_or_build(&lp, &b, no_build)?;
            let o = r.overrides(None, true);
            let mut l = launch::launch(&lp, &plan, &o)?;
            launch::check_files(&lp, &l)?;
            let accel = choose_accel(&lp, &o).accel;
            let files = runner::RunFiles::new(&plan.run_dir);
            let results_img = attach_results(&lp, &plan, &mut l, &files, true)?;
            progress::step("booting; press Ctrl-A X to quit QEMU");
            let status = runner::run_interactive(&l, &run_spec(accel, &files, true), &files)?;
            bring_back(results_img.as_deref(), &files)?;
            match status {
                Some(code) => {
                    progress::step(format!("the guest reported exit status {code}"));
                    Ok(code)
                }
                None => Ok(0),
            }
        }
        Cmd::Test {
            build: b,
            run: r,
            no_build,
            timeout,
            verbose,
            persist,
        } => {
            runner::install_interrupt_handler();
            let lp = load(&b)?;
            if lp.profile.test.is_none() {
                progress::warn(format!(
                    "{} has no [test]; the run passes only if its own init reports a status",
                    b.profile.display()
                ));
            }
            let plan = plan_or_build(&lp, &b, no_build)?;
            let o = r.overrides(timeout.map(|t| t.0), persist);
            let mut l = launch::launch(&lp, &plan, &o)?;
            launch::check_files(&lp, &l)?;
            let accel = choose_accel(&lp, &o).accel;
            let files = runner::RunFiles::new(&plan.run_dir);
            files.prepare()?;
            let results_img = attach_results(&lp, &plan, &mut l, &files, true)?;
            let limit = launch::timeout(&lp, &o);
            progress::step(format!(
                "booting {} under {} (time limit {:.0?})",
                plan.name,
                accel.name().to_uppercase(),
                limit
            ));
            let spec = run_spec(accel, &files, false);
            let result = runner::run_test(
                &l,
                &spec,
                &files,
                &runner::RunOptions {
                    timeout: limit,
                    stream_console: verbose,
                },
            )?;
            report(&result, verbose);
            if let Err(e) = bring_back(results_img.as_deref(), &files) {
                progress::warn(format!("could not read the results disk: {e:#}"));
            }
            Ok(result.outcome.exit_code())
        }
        Cmd::Ls { image } => {
            list(&image)?;
            Ok(0)
        }
        Cmd::Extract { image, path, dest } => {
            let fs = reader::open(&image)?;
            let r = reader::extract(&fs, &path, &dest)?;
            progress::step(format!(
                "extracted {} files, {} directories, {} symlinks into {}",
                r.files,
                r.dirs,
                r.symlinks,
                dest.display()
            ));
            if !r.skipped.is_empty() {
                progress::warn(format!(
                    "{} device nodes, FIFOs or sockets not copied (they need root to create): {}",
                    r.skipped.len(),
                    r.skipped.join(" ")
                ));
            }
            Ok(0)
        }
        Cmd::Lock { build: b, update } => {
            let lp = load(&b)?;
            let Some(d) = &lp.profile.distribution else {
                anyhow::bail!(
                    "{} has no [distribution]; there is nothing to lock",
                    b.profile.display()
                );
            };
            let path = debian::lock::lock_path(&lp.path);
            if let (false, debian::LockState::Current(l)) = (update, debian::lock_state(&lp, d)?) {
                progress::step(format!(
                    "{} is up to date ({} packages); use --update to refresh it",
                    path.display(),
                    l.packages.len()
                ));
                return Ok(0);
            }
            let cache = kiln::cache::Cache::open()?;
            let http = debian::http::Http::new()?;
            let lock = debian::resolve_fresh(&lp, d, &debian_options(&b), &cache, &http)?;
            debian::lock::write(&path, &lock)?;
            progress::step(format!(
                "wrote {} ({} packages, {} kernel packages)",
                path.display(),
                lock.packages.len(),
                lock.kernel_packages.len()
            ));
            Ok(0)
        }
    }
}

/// Copies the results disk's contents to OUT/NAME.run/results.
fn bring_back(img: Option<&Path>, files: &runner::RunFiles) -> Result<()> {
    let Some(img) = img else { return Ok(()) };
    let dest = files.dir.join("results");
    let r = results::collect(img, &dest)?;
    println!("kiln: results: {} files in {}", r.files, dest.display());
    Ok(())
}

fn report(result: &runner::RunResult, verbose: bool) {
    if !verbose {
        if let Some(out) = runner::test_output(&result.console_log) {
            println!("--- test output ---");
            for l in out {
                println!("{l}");
            }
            println!("---");
        }
    }
    if result.hung_after_status {
        progress::warn(
            "the guest reported its status but did not power off within 10 s; QEMU was killed",
        );
    }
    if result.outcome != runner::Outcome::Passed && !verbose {
        eprintln!(
            "kiln: last lines of the serial console ({}):",
            result.console_log.display()
        );
        for l in runner::last_lines(&result.console_log, 25) {
            eprintln!("  | {l}");
        }
    }
    println!(
        "kiln: {} in {:.1}s",
        result.outcome,
        result.elapsed.as_secs_f64()
    );
}

fn mode_string(mode: u32) -> String {
    let t = match mode & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o020000 => 'c',
        0o060000 => 'b',
        0o010000 => 'p',
        0o140000 => 's',
        _ => '-',
    };
    let mut s = String::from(t);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let special = match i {
            2 if mode & 0o4000 != 0 => Some(if mode & bit != 0 { 's' } else { 'S' }),
            5 if mode & 0o2000 != 0 => Some(if mode & bit != 0 { 's' } else { 'S' }),
            8 if mode & 0o1000 != 0 => Some(if mode & bit != 0 { 't' } else { 'T' }),
            _ => None,
        };
        s.push(special.unwrap_or(if mode & bit != 0 { *c } else { '-' }));
    }
    s
}

/// One `kiln ls` line: mode, owner, size (or device numbers), path and link target.
fn row(
    out: &mut impl Write,
    mode: u32,
    uid: u32,
    gid: u32,
    size: &dyn std::fmt::Display,
    path: &str,
    target: &str,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{} {:>5} {:>5} {:>10} {}{}",
        mode_string(mode),
        uid,
        gid,
        size,
        path,
        target
    )
}

fn is_cpio(image: &Path) -> Result<bool> {
    let mut magic = [0u8; 6];
    let n = std::fs::File::open(image)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut magic))
        .with_context(|| format!("reading {}", image.display()))?;
    Ok(n >= 4 && (magic[..4] == [0x28, 0xb5, 0x2f, 0xfd] || &magic[..n.min(6)] == b"070701"))
}

fn is_tar(image: &Path) -> Result<bool> {
    let mut magic = [0u8; 5];
    let f = std::fs::File::open(image)?;
    use std::os::unix::fs::FileExt;
    Ok(f.read_exact_at(&mut magic, 257).is_ok() && &magic == b"ustar")
}

fn list(image: &Path) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if is_cpio(image)? {
        for e in kiln::output::cpio::list(image)
            .with_context(|| format!("listing {}", image.display()))?
        {
            let size = if matches!(e.mode & 0o170000, 0o020000 | 0o060000) {
                format!("{},{}", e.rdev.0, e.rdev.1)
            } else {
                e.size.to_string()
            };
            let name = if e.name == "." {
                "/".to_string()
            } else {
                format!("/{}", e.name.trim_start_matches("./"))
            };
            let target = e.target.map(|t| format!(" -> {t}")).unwrap_or_default();
            row(&mut out, e.mode, e.uid, e.gid, &size, &name, &target)?;
        }
        return Ok(());
    }
    if is_tar(image)? {
        let mut a = tar::Archive::new(std::fs::File::open(image)?);
        for e in a
            .entries()
            .with_context(|| format!("reading {}", image.display()))?
        {
            let e = e?;
            let h = e.header();
            let t = match h.entry_type() {
                tar::EntryType::Directory => 0o040000,
                tar::EntryType::Symlink => 0o120000,
                tar::EntryType::Char => 0o020000,
                tar::EntryType::Block => 0o060000,
                tar::EntryType::Fifo => 0o010000,
                _ => 0o100000,
            };
            let name = format!(
                "/{}",
                String::from_utf8_lossy(&e.path_bytes())
                    .trim_start_matches("./")
                    .trim_end_matches('/')
            );
            let target = match h.entry_type() {
                tar::EntryType::Symlink => format!(
                    " -> {}",
                    e.link_name()?
                        .map(|l| l.display().to_string())
                        .unwrap_or_default()
                ),
                tar::EntryType::Link => format!(
                    " link to /{}",
                    e.link_name()?
                        .map(|l| l.display().to_string())
                        .unwrap_or_default()
                ),
                _ => String::new(),
            };
            row(
                &mut out,
                t | (h.mode()? & 0o7777),
                h.uid()? as u32,
                h.gid()? as u32,
                &e.size(),
                &name,
                &target,
            )?;
        }
        return Ok(());
    }
    let fs = reader::open(image)?;
    for e in reader::list(&fs)? {
        let target = e.target.map(|t| format!(" -> {t}")).unwrap_or_default();
        row(&mut out, e.mode, e.uid, e.gid, &e.size, &e.path, &target)?;
    }
    Ok(())
}
