//! `kiln test`.

use anyhow::Result;

use super::{load, plan_or_build, ExitStatus, Printer, ProfileArgs};
use crate::plan::RunOverrides;
use crate::run::report::{summary, MatrixReporter, TextReporter};
use crate::run::{self, matrix, Cancel, Mode, Outcome, RunOptions};

/// What `kiln test` takes besides the profile.
#[derive(Debug, Clone, Default)]
pub struct TestArgs {
    /// Run settings from the command line.
    pub overrides: RunOverrides,
    /// Test the image already built.
    pub no_build: bool,
    /// Stream the console.
    pub verbose: bool,
    /// Let the guest's writes reach the disk image.
    pub persist: bool,
    /// More than one: run the test on each (a matrix).
    pub kernels: Vec<std::path::PathBuf>,
    /// VMs at once in a matrix (None: the default for the host).
    pub jobs: Option<usize>,
}

/// Builds, boots, runs the test, brings its results back; exits with the outcome's status.
pub fn test(
    a: &ProfileArgs,
    t: &TestArgs,
    cancel: &Cancel,
    printer: &Printer,
) -> Result<ExitStatus> {
    let lp = load(&a.profile)?;
    if lp.profile.test.is_none() {
        printer.warn(format!(
            "{} has no [test]; the run passes only if its own init reports a status",
            a.profile.display()
        ));
    }
    let plan = plan_or_build(&lp, a, t.no_build)?;
    let opts = RunOptions {
        config: plan.run.with(&t.overrides),
        persist: t.persist,
        mode: Mode::Test,
    };
    if t.kernels.len() > 1 {
        return matrix(&plan, &opts, t, cancel, printer);
    }
    let mut reporter = TextReporter::new(printer, t.verbose);
    let report = run::run(&plan, &opts, cancel, &mut reporter)?;
    Ok(ExitStatus::from_code(report.outcome.exit_code()))
}

/// The test on every kernel, in parallel: a line per cell, a summary, and exit 0 only
/// when every cell passed (130 when cancelled, else 1).
fn matrix(
    plan: &crate::plan::Plan,
    opts: &RunOptions,
    t: &TestArgs,
    cancel: &Cancel,
    printer: &Printer,
) -> Result<ExitStatus> {
    if opts.persist {
        anyhow::bail!(
            "--persist cannot be combined with several --kernel: the cells share one image"
        );
    }
    let cells = matrix::cells(&t.kernels);
    let jobs = t
        .jobs
        .unwrap_or_else(|| matrix::default_jobs(opts.config.cpus));
    printer.step(format!(
        "running {} on {} kernels, {jobs} at a time",
        plan.name,
        cells.len()
    ));
    let mut reporter = MatrixReporter::new(printer, &cells);
    let reports = matrix::run_matrix(plan, &cells, opts, jobs, cancel, &mut reporter);
    summary(printer, &cells, &reports);
    let all_passed = reports
        .iter()
        .all(|r| matches!(r, Ok(r) if r.outcome == Outcome::Passed));
    Ok(if all_passed {
        ExitStatus::SUCCESS
    } else if cancel.is_cancelled() {
        ExitStatus::from_code(crate::run::outcome::EXIT_CANCELLED)
    } else {
        ExitStatus::FAILURE
    })
}
