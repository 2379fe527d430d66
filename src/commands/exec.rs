//! `kiln exec`: a command from the host, with the host's own userspace, under a chosen
//! kernel, and no image to build. The guest mounts the host's `/` read-only and the
//! current directory read-write (over 9p, or virtiofs where the kernel has no 9p), and
//! runs the command as the caller, in the caller's directory, with the caller's
//! environment; its exit status is kiln's.
//!
//! The boot image is a `[host]` profile kiln keeps in its cache (the host's busybox and
//! kiln's host init), so each kernel, or each target of a vmtest.toml, is one cell of the
//! ordinary matrix: packaged kernels get their 9p and virtiofs modules appended, cells
//! run in parallel, and reports (summary, JSON, TAP, JUnit) are the matrix's.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::test::{run_cells, selected_tests, CellReports};
use super::{load, plan_or_build, ExitStatus, Printer, ProfileArgs};
use crate::plan::{BuildOptions, HostRun, KernelRef, RunOverrides};
use crate::run::report::{CommandReporter, TextReporter};
use crate::run::{self, matrix, Cancel, Mode, RunOptions};
use crate::source::PackageOptions;
use crate::util::shell::shell_quote;
use crate::vm::share::Transport;

/// What `kiln exec` takes.
#[derive(Debug, Clone, Default)]
pub struct ExecArgs {
    /// Kernels to run the command under: images, build trees or Debian packages.
    pub kernels: Vec<PathBuf>,
    /// The command and its arguments; empty: an interactive shell on the console.
    pub command: Vec<String>,
    /// The directory the command runs in, shared read-write.
    pub cwd: PathBuf,
    /// Environment variables not passed to the command (exact names).
    pub env_exclude: Vec<String>,
    /// Run settings from the command line.
    pub overrides: RunOverrides,
    /// Package handling for packaged kernels.
    pub packages: PackageOptions,
    /// How host directories reach the guest; None: per kernel.
    pub share: Option<Transport>,
    /// Reports of several runs, as `kiln test` writes them.
    pub reports: CellReports,
}

/// The profile of exec's boot image. Its test never runs as written: each run gives
/// the command.
const PROFILE: &str = r#"# Written by kiln: the boot image of `kiln exec` (kiln rewrites it).
version = 1
name = "exec"
description = "kiln exec: the host's userspace under a chosen kernel"

[kernel]
# The command's output, not the boot's, on the console.
cmdline = ["quiet"]

[host]

[test]
name = "exec"
command = "true"
timeout = "30m"
"#;

/// One run of exec: a command under a kernel (or each kernel a glob names).
#[derive(Debug, Clone)]
struct Target {
    /// Its name in lines and reports.
    name: String,
    /// The kernel, as --kernel names it.
    kernel: PathBuf,
    /// What runs and where.
    host: HostRun,
    /// Its VM settings.
    overrides: RunOverrides,
}

/// Runs the command under each kernel; the exit status of one run is the command's.
/// `kiln exec` as typed: with `--kernel`, the command under each kernel; else the targets
/// of vmtest's configuration (`config`, by default ./vmtest.toml), filtered.
pub fn exec_or_targets(
    e: &ExecArgs,
    config: Option<PathBuf>,
    filter: Option<&str>,
    cancel: &Cancel,
    printer: &Printer,
) -> Result<ExitStatus> {
    let config = config.or_else(|| e.kernels.is_empty().then(|| PathBuf::from("vmtest.toml")));
    match config {
        Some(c) => exec_config(&c, filter, e, cancel, printer),
        None => exec(e, cancel, printer),
    }
}

/// With no command, a shell on the console under the one kernel.
pub fn exec(e: &ExecArgs, cancel: &Cancel, printer: &Printer) -> Result<ExitStatus> {
    if e.kernels.is_empty() {
        anyhow::bail!("--kernel is required: an image, a build tree or a Debian kernel package");
    }
    let interactive = e.command.is_empty();
    if interactive && e.kernels.len() > 1 {
        anyhow::bail!(
            "a shell runs under one kernel; give a command after -- to run under several"
        );
    }
    let command = if interactive {
        // The caller's login shell, as the caller, on the console.
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "exec \"${SHELL:-/bin/sh}\" -i".into(),
        ]
    } else {
        e.command.clone()
    };
    let host = HostRun {
        root: "/".into(),
        cwd: e.cwd.clone(),
        command: Some(command),
        env_exclude: e.env_exclude.clone(),
        mounts: Vec::new(),
        terminal: interactive,
    };
    let targets: Vec<Target> = e
        .kernels
        .iter()
        .map(|k| Target {
            name: "exec".into(),
            kernel: k.clone(),
            host: host.clone(),
            overrides: e.overrides.clone(),
        })
        .collect();
    let rerun = |c: &matrix::Cell| {
        let words: Vec<String> = e.command.iter().map(|w| shell_quote(w)).collect();
        format!(
            "kiln exec --kernel {} -- {}",
            shell_quote(c.kernel.spec.as_deref().unwrap_or(&c.kernel.label)),
            words.join(" ")
        )
    };
    run_targets(&targets, e, interactive, &rerun, cancel, printer)
}

/// The targets of a vmtest.toml, each a run of its command (by bash, as vmtest runs
/// it, in the file's directory) under its kernel with its VM settings, in parallel, as
/// one matrix; `filter` (a regular expression) picks targets by name.
pub fn exec_config(
    config: &Path,
    filter: Option<&str>,
    base: &ExecArgs,
    cancel: &Cancel,
    printer: &Printer,
) -> Result<ExitStatus> {
    let config = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
    let targets = crate::profile::vmtest::load(&config)
        .map_err(|e| anyhow::Error::new(e).context(super::BadInput))?;
    let re = filter
        .map(regex::Regex::new)
        .transpose()
        .context("--filter is not a regular expression")?;
    let dir = config.parent().unwrap_or(Path::new("/")).to_path_buf();
    let targets: Vec<Target> = targets
        .into_iter()
        .filter(|t| re.as_ref().is_none_or(|r| r.is_match(&t.name)))
        .map(|t| {
            let mut o = base.overrides.clone();
            o.memory = o.memory.or(Some(t.memory));
            o.cpus = o.cpus.or(Some(t.cpus));
            if t.qemu.is_some() {
                o.qemu = t.qemu.clone();
            }
            if t.cpu.is_some() && o.cpu.is_none() {
                o.cpu = t.cpu.clone();
            }
            o.append.extend(t.kernel_args.iter().cloned());
            o.qemu_args.extend(t.extra_args.iter().cloned());
            Target {
                // A cell's name is also its directory's.
                name: t.name.replace('/', "_"),
                kernel: t.kernel.clone(),
                host: HostRun {
                    root: t.rootfs.clone(),
                    cwd: dir.clone(),
                    command: Some(vec!["bash".into(), "-c".into(), t.command.clone()]),
                    env_exclude: base.env_exclude.clone(),
                    mounts: t
                        .mounts
                        .iter()
                        .map(|m| (m.guest.clone(), m.host.clone(), m.writable))
                        .collect(),
                    terminal: false,
                },
                overrides: o,
            }
        })
        .collect();
    if targets.is_empty() {
        anyhow::bail!("no target of {} matches the filter", config.display());
    }
    let rerun = |c: &matrix::Cell| {
        format!(
            "kiln exec --config {} --filter {}",
            shell_quote(&config.to_string_lossy()),
            shell_quote(&format!("^{}$", regex::escape(&c.test)))
        )
    };
    run_targets(&targets, base, false, &rerun, cancel, printer)
}

/// Builds exec's image (once), readies each target's kernel, and runs the targets as
/// cells of one matrix; a single target runs alone, with its console streamed.
fn run_targets(
    targets: &[Target],
    e: &ExecArgs,
    interactive: bool,
    rerun: &dyn Fn(&matrix::Cell) -> String,
    cancel: &Cancel,
    printer: &Printer,
) -> Result<ExitStatus> {
    let home = crate::cache::cache_dir().join("exec");
    let a = ProfileArgs {
        profile: write_profile(&home)?,
        build: BuildOptions {
            out_dir: home.join("out"),
            packages: e.packages.clone(),
            ..Default::default()
        },
    };
    let lp = load(&a.profile)?;
    let plan = plan_or_build(&lp, &a, false)?;
    let Some(test) = selected_tests(&plan, &[])?.into_iter().next() else {
        anyhow::bail!("exec's profile has no test");
    };
    let cwd = std::env::current_dir()?;
    let mut cells = Vec::new();
    for t in targets {
        let r = KernelRef::parse(&t.kernel.to_string_lossy(), &cwd);
        let kernels = crate::build::kernels::cell_kernels(
            &lp,
            &plan,
            std::slice::from_ref(&r),
            &e.packages,
            None,
            true,
        )?;
        let mut config = plan.run.for_test(Some(&test)).with(&t.overrides);
        config.host = Some(t.host.clone());
        if e.share.is_some() {
            config.share_transport = e.share;
        }
        cells.extend(kernels.into_iter().map(|kernel| matrix::Cell {
            kernel,
            test: t.name.clone(),
            config: config.clone(),
        }));
    }
    // Two targets of one name on one kernel would share a run directory.
    let mut seen = std::collections::BTreeSet::new();
    for c in &mut cells {
        let base = c.test.clone();
        let mut n = 1;
        while !seen.insert(c.name()) {
            n += 1;
            c.test = format!("{base} ({n})");
        }
    }
    let base = RunOptions {
        config: plan.run.with(&e.overrides),
        persist: false,
        mode: Mode::Test,
        dir: None,
    };
    let single = cells.len() == 1 && targets.len() == 1 && !e.reports.any();
    if !single {
        return run_cells(&plan, &base, cells, &e.reports, rerun, cancel, printer);
    }
    let Some(cell) = cells.pop() else {
        anyhow::bail!("no kernel to run under");
    };
    let mut plan = plan.clone();
    plan.use_kernel(&cell.kernel);
    let opts = RunOptions {
        config: cell.config,
        mode: if interactive {
            Mode::Interactive
        } else {
            Mode::Test
        },
        ..base
    };
    let report = if interactive {
        run::run(&plan, &opts, cancel, &mut TextReporter::new(printer, true))?
    } else {
        // The command's output alone on stdout, as vng and vmtest give it.
        run::run(&plan, &opts, cancel, &mut CommandReporter::new(printer))?
    };
    Ok(ExitStatus::from_code(report.outcome.exit_code()))
}

/// Writes exec's profile into `home` (when it changed), so the image is built from the
/// same bytes every time.
fn write_profile(home: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
    let path = home.join("exec.toml");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(PROFILE) {
        crate::util::atomic::write(&path, PROFILE.as_bytes())?;
    }
    Ok(path)
}
