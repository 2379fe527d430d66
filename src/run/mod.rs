//! A run as a library: one boot of one built image. [`run`] takes a plan and run
//! options, emits [`Event`]s into a [`Sink`] as the run goes (booting, console bytes,
//! results, finished) and returns a typed [`RunReport`]. Reporters render events and
//! never decide outcomes. Each run has its own directory ([`dir::RunDir`]), so runs of
//! one image do not collide; a [`Cancel`] the caller owns stops them.
//!
//! Over 500 lines: preparing a run (preflight, shares and their daemons) and supervising
//! it are still one file; preparation is the part to move into its own module next.

pub mod console;
pub mod dir;
pub mod formats;
pub mod host;
pub mod journal;
pub mod matrix;
pub mod outcome;
pub mod postmortem;
pub mod report;
pub mod results;
pub mod ssh_key;
pub mod supervise;
pub mod tap;
pub mod vm;
pub mod wiring;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

pub use console::GuestReport;
pub use dir::RunDir;
pub use outcome::Outcome;
pub use supervise::Cancel;

use crate::plan::{Plan, RunConfig};
use crate::vm::kvm::{self, Accelerator};
use crate::vm::qemu::{self, Console, Disk, Launch, RunSpec, StatusChannel};
use crate::vm::share::{self, Share, Transport};
use crate::vm::virtiofsd::{Daemon, Virtiofsd};
use crate::vm::{launch, preflight};

/// How the console is wired and the run is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Console into a log, supervised with a time limit; the guest's status decides.
    Test,
    /// Console on this terminal until QEMU exits (Ctrl-A X).
    Interactive,
    /// Console into a log, QEMU left running in the background (`kiln boot --detach`).
    Detached,
}

/// Everything a run needs besides the plan.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run configuration, command-line overrides applied.
    pub config: RunConfig,
    /// Let the guest's writes reach the disk image.
    pub persist: bool,
    /// Test or interactive.
    pub mode: Mode,
    /// The run's directory; None: the next numbered one under the image's runs.
    pub dir: Option<std::path::PathBuf>,
}

impl RunOptions {
    fn run_dir(&self, plan: &Plan) -> Result<RunDir> {
        match &self.dir {
            Some(d) => RunDir::create_at(d),
            None => RunDir::create(&plan.runs_dir(), &plan.latest_run()),
        }
    }
}

/// Something that happened during a run.
#[derive(Debug)]
pub enum Event<'a> {
    /// Something the user should know (e.g. KVM is not usable).
    Warning(&'a str),
    /// A note on how the run proceeds (e.g. no kernel configuration to check).
    Note(&'a str),
    /// QEMU is about to start.
    Booting {
        /// Image name.
        name: &'a str,
        /// The accelerator chosen.
        accel: Accelerator,
        /// The time limit, for supervised runs.
        timeout: Option<Duration>,
        /// The run directory.
        dir: &'a Path,
        /// QEMU runs in the background, with no console here.
        detached: bool,
    },
    /// Console bytes, as they arrive (supervised runs).
    Console(&'a [u8]),
    /// The results disk's contents were copied back.
    Results {
        /// Files copied.
        files: u64,
        /// Where they are.
        dir: &'a Path,
    },
    /// The results disk could not be read.
    ResultsFailed(&'a str),
    /// The run is over.
    Finished(&'a RunReport),
}

/// Receives a run's events.
pub trait Sink {
    /// Handles one event.
    fn event(&mut self, e: Event<'_>);
}

/// A sink that drops every event.
pub struct Discard;

impl Sink for Discard {
    fn event(&mut self, _: Event<'_>) {}
}

/// What a run came to.
#[derive(Debug)]
pub struct RunReport {
    /// The outcome.
    pub outcome: Outcome,
    /// What the guest reported on its status channel, if anything.
    pub guest: Option<GuestReport>,
    /// Wall time.
    pub elapsed: Duration,
    /// The run's files.
    pub files: RunDir,
    /// The guest reported a status but did not power off; QEMU was killed.
    pub hung_after_status: bool,
    /// An interactive run.
    pub interactive: bool,
    /// The cases of the TAP the test left (`[test] tap`), in order.
    pub cases: Vec<tap::Case>,
}

/// The machine and run wiring for `plan` under `opts`, before anything is created:
/// for printing the command (`kiln qemu --print`) and for [`run`].
pub fn launch_for(plan: &Plan, opts: &RunOptions) -> Result<Launch> {
    launch::launch(plan, &opts.config, opts.persist)
}

/// The run spec of a run whose files are `files`.
pub fn spec(accel: Accelerator, files: &RunDir, mode: Mode) -> RunSpec {
    RunSpec {
        accel,
        console: match mode {
            Mode::Interactive => Console::Interactive,
            Mode::Test | Mode::Detached => Console::LogFile(files.console.clone()),
        },
        status: StatusChannel {
            uart: files.status_uart.clone(),
            virtio: files.status_virtio.clone(),
        },
    }
}

/// The vCPUs a run gets: under TCG one, unless the profile or `--cpus` asked for more.
/// Each TCG vCPU is a host thread and a guest boots no slower on one; and Debian's
/// kernels can oops while patching their code (int3 in `sched_clock_cpu`) on several
/// TCG vCPUs.
pub fn cpus_for(config: &RunConfig, accel: Accelerator) -> u32 {
    if accel == Accelerator::Tcg && !config.cpus_explicit {
        1
    } else {
        config.cpus
    }
}

/// Adds the results disk of a plan that asks for results.
pub fn attach_results(config: &RunConfig, l: &mut Launch, files: &RunDir) {
    if config.results.is_some() {
        l.disks
            .push(Disk::raw(files.results_img.clone(), results::SERIAL));
    }
}

/// A run whose QEMU is about to start: its machine, files and devices.
struct Prepared {
    launch: Launch,
    files: RunDir,
    accel: Accelerator,
    facts: wiring::ImageFacts,
    /// The shared directories, each with the transport this kernel takes.
    shares: Vec<Share>,
    /// The daemon of virtiofs shares, found by the preflight.
    virtiofsd: Option<Virtiofsd>,
    /// Where virtiofs shares' daemons listen.
    sockets: Option<tempfile::TempDir>,
}

impl Prepared {
    /// Starts a virtiofsd for each virtiofs share, before each QEMU start (a daemon
    /// serves one connection).
    fn start_daemons(&self) -> Result<Vec<Daemon>> {
        let mut out = Vec::new();
        for s in self
            .shares
            .iter()
            .filter(|s| s.transport == Transport::VirtioFs)
        {
            let (Some(v), Some(dir)) = (&self.virtiofsd, &self.sockets) else {
                anyhow::bail!("a virtiofs share without its daemon");
            };
            let socket = dir.path().join(format!("{}.sock", s.tag));
            let _ = std::fs::remove_file(&socket);
            let log = self.files.dir.join(format!("virtiofsd-{}.log", s.tag));
            out.push(v.start(s, &socket, &log)?);
        }
        Ok(out)
    }
}

/// Checks the kernel against what the run needs and creates the run's files. Err(report):
/// the preflight failed and nothing is booted.
fn prepare(
    plan: &Plan,
    opts: &RunOptions,
    sink: &mut dyn Sink,
) -> Result<std::result::Result<Prepared, RunReport>> {
    let mut l = launch_for(plan, opts)?;
    launch::check_files(&plan.profile, &l)?;
    let config = match preflight::find_config(&l.kernel) {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        ),
        // A kernel built with CONFIG_IKCONFIG carries its configuration inside.
        None => crate::vm::ikconfig::read(&l.kernel),
    };
    let kconfig = config.as_deref().map(preflight::KernelConfig::parse);
    let mut needs = preflight::needs(plan, &opts.config);
    let mut lacks = Vec::new();
    let vfs = std::cell::OnceCell::new();
    let mut transport = None;
    if !opts.config.shares.is_empty() || opts.config.host.is_some() {
        let daemon = || {
            vfs.get_or_init(Virtiofsd::find)
                .as_ref()
                .map(|_| ())
                .map_err(Clone::clone)
        };
        match share::choose(kconfig.as_ref(), opts.config.share_transport, &daemon) {
            Ok(t) => {
                // An initramfs loads what the kernel has as modules before its init
                // mounts anything.
                let module_ok = plan.format == crate::output::options::Format::Initramfs;
                needs.extend(share::needs(t).0.iter().map(|option| preflight::Need {
                    option,
                    module_ok,
                    why: "the shared host directories",
                }));
                l.cmdline.push(format!("kiln.fs={}", share::name(t)));
                transport = Some(t);
            }
            Err(e) => lacks.push(e),
        }
    }
    match &kconfig {
        Some(c) => lacks.extend(preflight::missing(c, &needs)),
        None => {
            sink.event(Event::Note(&format!(
                "no configuration found beside {} or inside it (CONFIG_IKCONFIG); booting without a preflight",
                l.kernel.display()
            )));
        }
    };
    if !lacks.is_empty() {
        let report = RunReport {
            outcome: Outcome::Preflight(lacks.join("; ")),
            guest: None,
            elapsed: Duration::ZERO,
            files: opts.run_dir(plan)?,
            hung_after_status: false,
            interactive: opts.mode == Mode::Interactive,
            cases: Vec::new(),
        };
        sink.event(Event::Finished(&report));
        return Ok(Err(report));
    }
    let choice = kvm::choose(opts.config.accel, &opts.config.qemu);
    if let Some(w) = &choice.warning {
        sink.event(Event::Warning(w));
    }
    let files = opts.run_dir(plan)?;
    if opts.config.results.is_some() {
        results::prepare(
            &files.results_img,
            &plan.name,
            opts.config.results_size,
            plan.epoch,
        )?;
    }
    attach_results(&opts.config, &mut l, &files);
    l.cpus = cpus_for(&opts.config, choice.accel);
    let mut shares = opts.config.shares.clone();
    if let Some(h) = &opts.config.host {
        let dir = files.dir.join("host");
        host::write_files(&dir, h)?;
        shares.extend(host::shares(h, &dir));
    }
    for s in &mut shares {
        s.transport = transport.unwrap_or(Transport::NineP);
    }
    let virtiofs = shares.iter().any(|s| s.transport == Transport::VirtioFs);
    let sockets = if virtiofs {
        // A short path: a Unix socket's path is limited to 107 bytes.
        Some(
            tempfile::Builder::new()
                .prefix("kiln-vfs-")
                .tempdir()
                .context("creating virtiofsd's socket directory")?,
        )
    } else {
        None
    };
    let mut args = Vec::new();
    for s in &shares {
        let socket = sockets
            .as_ref()
            .map(|d| d.path().join(format!("{}.sock", s.tag)));
        args.extend(s.args(socket.as_deref()));
    }
    if virtiofs {
        args.extend(share::shared_memory_args(l.memory_mib << 20));
    }
    l.extra_args.splice(0..0, args);
    Ok(Ok(Prepared {
        facts: wiring::ImageFacts::read(plan),
        launch: l,
        files,
        accel: choice.accel,
        shares,
        virtiofsd: vfs.into_inner().and_then(|v| v.ok()),
        sockets,
    }))
}

/// The QEMU command of a prepared run with its devices wired, written into the run
/// directory as a script so the run can be repeated by hand.
fn wired_command(
    plan: &Plan,
    opts: &RunOptions,
    p: &Prepared,
    attempt: u32,
) -> Result<(Vec<String>, wiring::Wiring)> {
    let mut l = p.launch.clone();
    let w = wiring::wire(plan, &opts.config, p.facts, &p.files, attempt, &mut l)?;
    let args = qemu::command(&l, &spec(p.accel, &p.files, opts.mode));
    let script = format!(
        "#!/bin/sh\n# The QEMU command of this run.\nexec {}",
        qemu::printable(&args)
    );
    let files = &p.files;
    std::fs::write(&files.qemu_sh, script)
        .and_then(|_| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&files.qemu_sh, std::fs::Permissions::from_mode(0o755))
        })
        .with_context(|| format!("writing {}", files.qemu_sh.display()))?;
    Ok((args, w))
}

/// How many times a run starts QEMU again when a port or CID it chose was taken.
const STARTS: u32 = 3;

/// Boots `plan`'s image in the background and returns the running VM's record, which
/// `kiln ssh`, `cp`, `stop` and `ps` find it by.
pub fn start_detached(plan: &Plan, opts: &RunOptions, sink: &mut dyn Sink) -> Result<vm::VmInfo> {
    let p = match prepare(plan, opts, sink)? {
        Ok(p) => p,
        Err(report) => anyhow::bail!("{}", report.outcome),
    };
    let mut attempt = 0;
    loop {
        let (args, w) = wired_command(plan, opts, &p, attempt)?;
        let daemons = p.start_daemons()?;
        sink.event(Event::Booting {
            name: &plan.name,
            accel: p.accel,
            timeout: None,
            dir: &p.files.dir,
            detached: true,
        });
        match supervise::detach(&args, &p.files, Duration::from_millis(500)) {
            Ok(pid) => {
                // They serve the detached QEMU, and exit with it.
                daemons.into_iter().for_each(Daemon::release);
                let info = w.info(plan, &p.files, pid, true, true);
                info.save()?;
                for n in w.notes(plan, &opts.config, &p.launch.kernel) {
                    sink.event(Event::Note(&n));
                }
                // The record now holds the directory for as long as QEMU runs.
                return Ok(info);
            }
            Err(e) if wiring::clashed(&e) && attempt + 1 < STARTS => attempt += 1,
            Err(e) => anyhow::bail!("QEMU did not start: {e}"),
        }
    }
}

/// Boots `plan`'s image once, as `opts` says, and reports what happened.
pub fn run(
    plan: &Plan,
    opts: &RunOptions,
    cancel: &Cancel,
    sink: &mut dyn Sink,
) -> Result<RunReport> {
    if opts.mode == Mode::Detached {
        anyhow::bail!("a detached run is started with run::start_detached");
    }
    let p = match prepare(plan, opts, sink)? {
        Ok(p) => p,
        Err(report) => return Ok(report),
    };
    let files = &p.files;
    let interactive = opts.mode == Mode::Interactive;
    let channels = [files.status_virtio.as_path(), files.status_uart.as_path()];
    let mut attempt = 0;
    let (outcome, guest, elapsed, hung) = loop {
        let (args, w) = wired_command(plan, opts, &p, attempt)?;
        // Held until this start's QEMU has ended.
        let _daemons = p.start_daemons()?;
        sink.event(Event::Booting {
            name: &plan.name,
            accel: p.accel,
            timeout: (!interactive).then_some(opts.config.timeout),
            dir: &files.dir,
            detached: false,
        });
        for n in w.notes(plan, &opts.config, &p.launch.kernel) {
            sink.event(Event::Note(&n));
        }
        let mut record: Option<vm::VmInfo> = None;
        let mut on_start = |pid: u32| {
            let info = w.info(plan, files, pid, !interactive, false);
            // Without the record, `kiln ssh` cannot find the VM; the run goes on.
            let _ = info.save();
            record = Some(info);
        };
        if interactive {
            let start = std::time::Instant::now();
            let exit = supervise::foreground(&args, &mut on_start);
            if let Some(r) = record.take() {
                r.remove();
            }
            let guest = console::read_report(&channels);
            let outcome = match (&exit, &guest) {
                (Err(e), _) => Outcome::QemuFailed(e.clone()),
                (_, Some(g)) => from_report(g),
                (Ok(s), None) if !s.success() => {
                    Outcome::QemuFailed(format!("QEMU exited with {s}"))
                }
                (Ok(_), None) => Outcome::NoStatus,
            };
            break (outcome, guest, start.elapsed(), false);
        }
        let mut kept: Vec<String> = Vec::new();
        let mut before_kill = |why| {
            kept = postmortem::before_kill(&w.qmp, files, &opts.config, why);
        };
        let supervised = supervise::supervise(
            &args,
            files,
            opts.config.timeout,
            cancel,
            supervise::Hooks {
                on_start: &mut on_start,
                on_console: &mut |b| sink.event(Event::Console(b)),
                before_kill: &mut before_kill,
                end_on_panic: opts.config.dump_on_failure,
            },
        );
        if let Some(r) = record.take() {
            r.remove();
        }
        for n in &kept {
            sink.event(Event::Note(n));
        }
        let ended = match supervised {
            Err(e) => break (Outcome::QemuFailed(e), None, Duration::ZERO, false),
            Ok(ended) => ended,
        };
        let early =
            ended.elapsed < Duration::from_secs(5) && ended.exit.is_some_and(|s| !s.success());
        if early
            && attempt + 1 < STARTS
            && wiring::clashed(&std::fs::read_to_string(&files.qemu_stderr).unwrap_or_default())
        {
            attempt += 1;
            continue;
        }
        let guest = console::read_report(&channels);
        let mut outcome = decide(&ended, guest.as_ref(), files);
        if outcome == Outcome::Passed {
            let text = std::fs::read(&files.console).unwrap_or_default();
            if let Some(line) = console::splat_line(&String::from_utf8_lossy(&text)) {
                if opts.config.splats_fail {
                    outcome = Outcome::KernelSplat(line);
                } else {
                    sink.event(Event::Warning(&format!(
                        "the test passed, but the kernel reported a splat: {line}"
                    )));
                }
            }
        }
        break (outcome, guest, ended.elapsed, ended.hung_after_status);
    };
    let Prepared { files, .. } = p;
    if let Some(note) = journal::collect(&files.dir) {
        sink.event(Event::Note(&note));
    }
    let (outcome, cases) = results::settle(&opts.config, &files, outcome, sink);
    let report = RunReport {
        outcome,
        guest,
        elapsed,
        files,
        hung_after_status: hung,
        interactive,
        cases,
    };
    sink.event(Event::Finished(&report));
    Ok(report)
}

fn from_report(g: &GuestReport) -> Outcome {
    match g {
        GuestReport::Infrastructure(m) => Outcome::Infrastructure(m.clone()),
        GuestReport::Status(0) => Outcome::Passed,
        GuestReport::Status(c) => Outcome::Failed(*c),
    }
}

/// The outcome of a supervised run, from how it ended and what the guest said.
fn decide(ended: &supervise::Ended, guest: Option<&GuestReport>, files: &RunDir) -> Outcome {
    if ended.cancelled {
        return Outcome::Cancelled;
    }
    if let Some(g) = guest {
        return from_report(g);
    }
    let console = std::fs::read(&files.console).unwrap_or_default();
    if let Some(line) = console::panic_line(&String::from_utf8_lossy(&console)) {
        return Outcome::KernelPanic(line);
    }
    if ended.timed_out {
        return Outcome::TimedOut(ended.elapsed);
    }
    match ended.exit {
        Some(s) if !s.success() => {
            let err = std::fs::read_to_string(&files.qemu_stderr).unwrap_or_default();
            let err = err.trim();
            Outcome::QemuFailed(if err.is_empty() {
                format!("QEMU exited with {s}")
            } else {
                err.to_string()
            })
        }
        _ => Outcome::NoStatus,
    }
}
