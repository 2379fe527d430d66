//! `kiln test`.

use anyhow::Result;

use super::{load, plan_or_build, ExitStatus, Printer, ProfileArgs};
use crate::plan::KernelPlan;
use crate::plan::RunOverrides;
use crate::run::formats::{self, CellResult};
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
    /// JSON lines on stdout: one object per finished cell, then a summary.
    pub json: bool,
    /// Write JUnit XML here.
    pub junit: Option<std::path::PathBuf>,
    /// TAP on stdout.
    pub tap: bool,
    /// Run only this shard of the cells.
    pub shard: Option<matrix::Shard>,
    /// Run over the profile's `[matrix] kernels` (with any --kernel added).
    pub matrix: bool,
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
    let mut t = t.clone();
    if t.matrix {
        if lp.profile.matrix.kernels.is_empty() {
            anyhow::bail!(
                "{}: --matrix needs `kernels` in a [matrix] table",
                a.profile.display()
            );
        }
        t.kernels = super::matrix_kernels(&lp, &t.kernels);
    }
    let t = &t;
    let opts = RunOptions {
        config: plan.run.with(&t.overrides),
        persist: t.persist,
        mode: Mode::Test,
    };
    if t.matrix || t.kernels.len() > 1 || t.json || t.tap || t.junit.is_some() || t.shard.is_some()
    {
        return matrix(&plan, &opts, t, cancel, printer);
    }
    let mut reporter = TextReporter::new(printer, t.verbose);
    let report = run::run(&plan, &opts, cancel, &mut reporter)?;
    Ok(ExitStatus::from_code(report.outcome.exit_code()))
}

/// The test on every kernel, in parallel: a line per cell, a summary (or JSON lines,
/// TAP, JUnit). One cell keeps the single-run exit-status table; several exit 0 only
/// when every cell passed, 130 when cancelled, else 1.
fn matrix(
    plan: &crate::plan::Plan,
    opts: &RunOptions,
    t: &TestArgs,
    cancel: &Cancel,
    printer: &Printer,
) -> Result<ExitStatus> {
    if opts.persist && t.kernels.len() > 1 {
        anyhow::bail!(
            "--persist cannot be combined with several --kernel: the cells share one image"
        );
    }
    let kernels = match (&plan.kernel, t.kernels.is_empty()) {
        (_, false) => t.kernels.clone(),
        (KernelPlan::Host(k), true) => vec![k.clone()],
        (KernelPlan::Package { vmlinuz, .. }, true) => vec![vmlinuz.clone()],
        (KernelPlan::None, true) => anyhow::bail!(
            "{}: no kernel to boot; set [kernel] in the profile or pass --kernel PATH",
            plan.profile.display()
        ),
    };
    let mut cells = matrix::cells(&kernels);
    if let Some(shard) = t.shard {
        let all = cells.len();
        cells = shard.select(cells);
        if cells.is_empty() {
            anyhow::bail!(
                "shard {}/{} of {all} kernels selects none; use at most {all} shards, or --matrix for the profile's [matrix] kernels",
                shard.index,
                shard.count
            );
        }
        printer.step(format!(
            "shard {}/{}: {} of {all} cells",
            shard.index,
            shard.count,
            cells.len()
        ));
    }
    // Under TCG, two 1-vCPU guests on two cores finish sooner than two 2-vCPU guests
    // (each vCPU is a host thread), and one guest is no slower with one vCPU: so a matrix
    // gives each VM one vCPU unless the profile or --cpus says otherwise.
    let mut opts = opts.clone();
    if cells.len() > 1 && !opts.config.cpus_explicit {
        opts.config.cpus = 1;
    }
    let opts = &opts;
    let jobs = t
        .jobs
        .unwrap_or_else(|| matrix::default_jobs(opts.config.cpus));
    let machine = t.json || t.tap;
    let human = |line: String| {
        if machine {
            printer.err(line)
        } else {
            printer.out(line)
        }
    };
    printer.step(format!(
        "running {} on {} kernel{}, {jobs} at a time, {} vCPU{} each",
        plan.name,
        cells.len(),
        if cells.len() == 1 { "" } else { "s" },
        opts.config.cpus,
        if opts.config.cpus == 1 { "" } else { "s" }
    ));
    let mut reporter = MatrixReporter::new(printer, &cells, TEST_NAME, t.json, machine);
    let reports = matrix::run_matrix(plan, &cells, opts, jobs, cancel, &mut reporter);
    summary(&human, &cells, &reports);
    for (c, r) in cells.iter().zip(&reports) {
        if !matches!(r, Ok(r) if r.outcome == Outcome::Passed) {
            human(format!("kiln: rerun [{}]: {}", c.label, rerun(plan, c)));
        }
    }
    let all_passed = reports
        .iter()
        .all(|r| matches!(r, Ok(r) if r.outcome == Outcome::Passed));
    let code = match (cells.len(), reports.first()) {
        (1, Some(Ok(r))) => r.outcome.exit_code(),
        _ if all_passed => 0,
        _ if cancel.is_cancelled() => crate::run::outcome::EXIT_CANCELLED,
        _ => 1,
    };
    let results: Vec<CellResult> = cells
        .iter()
        .zip(&reports)
        .map(|(c, r)| CellResult::new(c, TEST_NAME, r))
        .collect();
    if t.json {
        // Cells that could not run produced no Finished event; they get their line here.
        for r in results.iter().filter(|r| r.report.is_err()) {
            printer.out(formats::json_cell(r));
        }
        printer.out(formats::json_summary(&results, code));
    }
    if t.tap {
        printer.out_raw(formats::tap(&results).as_bytes());
    }
    if let Some(path) = &t.junit {
        crate::util::atomic::write(path, formats::junit(&plan.name, &results).as_bytes())?;
        printer.step(format!("JUnit report: {}", path.display()));
    }
    if let (1, Some(Err(e))) = (cells.len(), reports.first()) {
        anyhow::bail!("{e:#}");
    }
    Ok(ExitStatus::from_code(code))
}

/// The kiln command that re-runs one cell on the image already built.
fn rerun(plan: &crate::plan::Plan, c: &matrix::Cell) -> String {
    use crate::util::shell::shell_quote;
    let path = |p: &std::path::Path| shell_quote(&p.display().to_string());
    format!(
        "kiln test {} -o {} --no-build --kernel {}",
        path(&plan.profile),
        path(&plan.out_dir),
        path(&c.kernel)
    )
}

/// The name of a profile's `[test]` in reports.
const TEST_NAME: &str = "test";
