//! A run as a library: one boot of one built image. [`run`] takes a plan and run
//! options, emits [`Event`]s into a [`Sink`] as the run goes (booting, console bytes,
//! results, finished) and returns a typed [`RunReport`]. Reporters render events and
//! never decide outcomes. Each run has its own directory ([`dir::RunDir`]), so runs of
//! one image do not collide; a [`Cancel`] the caller owns stops them.
//! Preparing a run (preflight, kernel entry, shares and their daemons) is
//! [`prepare`]'s; supervising it and deciding its outcome is here.

pub mod console;
pub mod dir;
pub mod formats;
pub mod host;
pub mod journal;
pub mod matrix;
pub mod outcome;
pub mod postmortem;
pub mod prepare;
pub mod report;
pub mod results;
pub mod ssh_key;
pub mod supervise;
pub mod tap;
pub mod vm;
pub mod wiring;

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

pub use console::GuestReport;
pub use dir::RunDir;
pub use outcome::Outcome;
pub use prepare::{attach_results, cpus_for, launch_for, spec};
pub use supervise::Cancel;

use crate::plan::{Plan, RunConfig};
use crate::vm::kvm::Accelerator;
use crate::vm::virtiofsd::Daemon;

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

/// How many times a run starts QEMU again when a port or CID it chose was taken.
const STARTS: u32 = 3;

/// Boots `plan`'s image in the background and returns the running VM's record, which
/// `kiln ssh`, `cp`, `stop` and `ps` find it by.
pub fn start_detached(plan: &Plan, opts: &RunOptions, sink: &mut dyn Sink) -> Result<vm::VmInfo> {
    let p = match prepare::prepare(plan, opts, sink)? {
        Ok(p) => p,
        Err(report) => anyhow::bail!("{}", report.outcome),
    };
    let mut attempt = 0;
    loop {
        let (args, w) = prepare::wired_command(plan, opts, &p, attempt)?;
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
    let p = match prepare::prepare(plan, opts, sink)? {
        Ok(p) => p,
        Err(report) => return Ok(report),
    };
    let files = &p.files;
    let interactive = opts.mode == Mode::Interactive;
    let channels = [files.status_virtio.as_path(), files.status_uart.as_path()];
    let mut attempt = 0;
    let (outcome, guest, elapsed, hung) = loop {
        let (args, w) = prepare::wired_command(plan, opts, &p, attempt)?;
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
    let prepare::Prepared { files, .. } = p;
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
