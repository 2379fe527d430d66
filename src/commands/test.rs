//! `kiln test`.

use anyhow::Result;

use super::{load, plan_or_build, BadInput, ExitStatus, Printer, ProfileArgs};
use crate::plan::{CellKernel, KernelPlan, KernelRef, Plan, RunOverrides, TestPlan};
use crate::run::formats::{self, CellResult};
use crate::run::report::{summary, MatrixReporter, TextReporter};
use crate::run::{self, matrix, Cancel, Mode, Outcome, RunDir, RunOptions};

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
    /// Kernels to run on (paths, globs, directories or Debian packages); more than one
    /// makes a matrix.
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
    /// Run only these tests (default: all).
    pub tests: Vec<String>,
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
    if t.matrix && lp.profile.matrix.kernels.is_empty() {
        anyhow::bail!(
            "{}: --matrix needs `kernels` in a [matrix] table",
            a.profile.display()
        );
    }
    let cwd = std::env::current_dir()?;
    let mut refs: Vec<KernelRef> = if t.matrix {
        KernelRef::from_matrix(&lp)
    } else {
        Vec::new()
    };
    refs.extend(
        t.kernels
            .iter()
            .map(|k| KernelRef::parse(&k.to_string_lossy(), &cwd)),
    );
    // One host kernel keeps today's single run on it; anything else leaves the image's
    // own kernel alone and gives each cell its kernel.
    let mut a = a.clone();
    a.build.kernel = match refs.as_slice() {
        [KernelRef::Host(k)] if !t.matrix => Some(k.clone()),
        _ => None,
    };
    let plan = plan_or_build(&lp, &a, t.no_build)?;
    let tests = selected_tests(&plan, &t.tests)?;
    let kernels = match refs.as_slice() {
        [] | [KernelRef::Host(_)] if !t.matrix => vec![own_kernel(&plan)?],
        _ => crate::build::kernels::cell_kernels(&lp, &plan, &refs, &a.build.packages)?,
    };
    let base = RunOptions {
        config: plan.run.with(&t.overrides),
        persist: t.persist,
        mode: Mode::Test,
        dir: None,
    };
    let config = |tp: &TestPlan| plan.run.for_test(Some(tp)).with(&t.overrides);
    let mut cells = matrix::cells(&kernels, &tests, &config);
    let several = cells.len() > 1;
    if several || t.matrix || t.json || t.tap || t.junit.is_some() || t.shard.is_some() {
        if let Some(shard) = t.shard {
            let all = cells.len();
            cells = shard.select(cells);
            if cells.is_empty() {
                anyhow::bail!(
                    "shard {}/{} of {all} cells selects none; use at most {all} shards",
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
        return run_cells(&plan, &base, cells, &a, t, cancel, printer);
    }
    let Some(cell) = cells.pop() else {
        anyhow::bail!(
            "no test runs on kernel {}: every test's `kernels` excludes it",
            kernels.first().map(|k| k.label.as_str()).unwrap_or("-")
        );
    };
    let mut plan = plan.clone();
    plan.use_kernel(&cell.kernel);
    let opts = RunOptions {
        config: cell.config,
        ..base
    };
    let mut reporter = TextReporter::new(printer, t.verbose);
    let report = run::run(&plan, &opts, cancel, &mut reporter)?;
    Ok(ExitStatus::from_code(report.outcome.exit_code()))
}

/// The tests `names` picks (all when empty), or an error naming the ones there are.
pub(super) fn selected_tests(plan: &Plan, names: &[String]) -> Result<Vec<TestPlan>> {
    if plan.tests.is_empty() {
        // An image whose own init reports a status: one run, under the default name.
        return Ok(vec![TestPlan {
            name: crate::profile::DEFAULT_TEST_NAME.to_string(),
            timeout: None,
            results: None,
            results_size: None,
            splats_fail: plan.run.splats_fail,
            require: Vec::new(),
            kernels: Vec::new(),
        }]);
    }
    if names.is_empty() {
        return Ok(plan.tests.clone());
    }
    names
        .iter()
        .map(|n| {
            plan.test(n).cloned().ok_or_else(|| {
                anyhow::anyhow!(
                    "--test {n}: {} has no test of that name; its tests: {}",
                    plan.profile.display(),
                    plan.tests
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
                .context(BadInput)
            })
        })
        .collect()
}

/// The kernel the plan boots, as a cell's.
fn own_kernel(plan: &Plan) -> Result<CellKernel> {
    match &plan.kernel {
        KernelPlan::Host(k) => Ok(CellKernel::host(k)),
        KernelPlan::Package { package, vmlinuz } => Ok(CellKernel {
            label: package.clone(),
            image: vmlinuz.clone(),
            initrd: plan.boot_initrd.clone(),
        }),
        KernelPlan::None => anyhow::bail!(
            "{}: no kernel to boot; set [kernel] in the profile or pass --kernel PATH",
            plan.profile.display()
        ),
    }
}

/// The cells, in parallel: a line per cell, a summary (or JSON lines, TAP, JUnit). One
/// cell keeps the single-run exit-status table; several exit 0 only when every cell
/// passed, 130 when cancelled, else 1.
fn run_cells(
    plan: &Plan,
    base: &RunOptions,
    mut cells: Vec<matrix::Cell>,
    a: &ProfileArgs,
    t: &TestArgs,
    cancel: &Cancel,
    printer: &Printer,
) -> Result<ExitStatus> {
    if base.persist && cells.len() > 1 {
        anyhow::bail!("--persist cannot be combined with several cells: they share one image");
    }
    // Under TCG, two 1-vCPU guests on two cores finish sooner than two 2-vCPU guests
    // (each vCPU is a host thread), and one guest is no slower with one vCPU: so a matrix
    // gives each VM one vCPU unless the profile or --cpus says otherwise.
    if cells.len() > 1 {
        for c in cells.iter_mut().filter(|c| !c.config.cpus_explicit) {
            c.config.cpus = 1;
        }
    }
    let cpus = cells.iter().map(|c| c.config.cpus).max().unwrap_or(1);
    let jobs = t.jobs.unwrap_or_else(|| matrix::default_jobs(cpus));
    let machine = t.json || t.tap;
    let human = |line: String| {
        if machine {
            printer.err(line)
        } else {
            printer.out(line)
        }
    };
    let kernels = {
        let mut k: Vec<&str> = cells.iter().map(|c| c.kernel.label.as_str()).collect();
        k.dedup();
        k.len()
    };
    let files = RunDir::create(&plan.runs_dir(), &plan.latest_run())?;
    printer.step(format!(
        "running {} cell{} of {} ({kernels} kernel{}), {jobs} at a time, {cpus} vCPU{} each, in {}",
        cells.len(),
        plural(cells.len()),
        plan.name,
        plural(kernels),
        plural(cpus as usize),
        files.dir.display()
    ));
    let mut reporter = MatrixReporter::new(printer, &cells, t.json, machine, t.verbose);
    let reports = matrix::run_matrix(plan, &cells, base, &files.dir, jobs, cancel, &mut reporter);
    summary(&human, &cells, &reports);
    for (c, r) in cells.iter().zip(&reports) {
        if !matches!(r, Ok(r) if r.outcome == Outcome::Passed) {
            human(format!(
                "kiln: rerun [{}]: {}",
                c.name(),
                rerun(plan, a, t, c)
            ));
        }
    }
    let all_passed = reports
        .iter()
        .all(|r| matches!(r, Ok(r) if r.outcome == Outcome::Passed));
    let code = match (cells.len(), reports.first()) {
        (1, Some(Ok(r))) => r.outcome.exit_code(),
        _ if cancel.is_cancelled() => crate::run::outcome::EXIT_CANCELLED,
        _ if all_passed => 0,
        _ => 1,
    };
    let results: Vec<CellResult> = cells
        .iter()
        .zip(&reports)
        .map(|(c, r)| CellResult::new(c, r))
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

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The kiln command that re-runs one cell on the image already built, with the run
/// settings this one had.
fn rerun(plan: &Plan, a: &ProfileArgs, t: &TestArgs, c: &matrix::Cell) -> String {
    use crate::util::shell::shell_quote;
    let q = |s: &str| shell_quote(s);
    let path = |p: &std::path::Path| q(&p.display().to_string());
    let mut line = format!(
        "kiln test {} -o {} --no-build",
        path(&a.profile),
        path(&plan.out_dir)
    );
    let own = matches!(&plan.kernel, KernelPlan::Package { package, .. } if *package == c.kernel.label)
        || matches!(&plan.kernel, KernelPlan::Host(k) if *k == c.kernel.image);
    if !own {
        // A package is named as it was asked for, so the kernels lock pins it again.
        let k = if c
            .kernel
            .image
            .starts_with(plan.out_dir.join(format!("{}.kernels", plan.name)))
        {
            c.kernel.label.clone()
        } else {
            c.kernel.image.display().to_string()
        };
        line.push_str(&format!(" --kernel {}", q(&k)));
    }
    if plan.tests.len() > 1 {
        line.push_str(&format!(" --test {}", q(&c.test)));
    }
    for arg in t.overrides.to_args() {
        line.push(' ');
        line.push_str(&q(&arg));
    }
    line
}
