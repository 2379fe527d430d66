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

/// How a run of several cells reports, and how many run at once.
#[derive(Debug, Clone, Default)]
pub struct CellReports {
    /// VMs at once (None: the default for the host).
    pub jobs: Option<usize>,
    /// JSON lines on stdout: one object per finished cell, then a summary.
    pub json: bool,
    /// Write JUnit XML here.
    pub junit: Option<std::path::PathBuf>,
    /// TAP on stdout.
    pub tap: bool,
    /// Stream the consoles.
    pub verbose: bool,
}

impl CellReports {
    /// Whether a machine-readable report is asked for.
    pub fn any(&self) -> bool {
        self.json || self.tap || self.junit.is_some()
    }
}

impl TestArgs {
    fn reports(&self) -> CellReports {
        CellReports {
            jobs: self.jobs,
            json: self.json,
            junit: self.junit.clone(),
            tap: self.tap,
            verbose: self.verbose,
        }
    }
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
    // A [host] image runs on a distribution kernel with the modules installed for it
    // (beside it, or on this host), as a matrix cell: its 9p and virtiofs modules.
    let host_modules = lp.profile.host.is_some();
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
    a.build.kernel = None;
    match refs.as_slice() {
        [KernelRef::Host(k)] if !t.matrix && !host_modules => a.build.kernel = Some(k.clone()),
        // One tree is --kernel-tree: its modules go into the image.
        [KernelRef::Tree(d)] if !t.matrix => a.build.kernel_tree = Some(d.clone()),
        _ => {}
    }
    let plan = plan_or_build(&lp, &a, t.no_build)?;
    let tests = selected_tests(&plan, &t.tests)?;
    let config = |tp: &TestPlan| plan.run.for_test(Some(tp)).with(&t.overrides);
    let own = match refs.as_slice() {
        [] | [KernelRef::Tree(_)] => !t.matrix,
        [KernelRef::Host(_)] => !t.matrix && !host_modules,
        _ => false,
    };
    // The cells are chosen (and sharded) on the kernels' names, so a CI job fetches
    // only the kernels of its own shard.
    let named = if own {
        vec![own_kernel(&lp, &plan)?]
    } else {
        crate::build::kernels::without_fetching(&refs)?
    };
    let mut cells = matrix::cells(&named, &tests, &config);
    for tp in &tests {
        if !cells.iter().any(|c| c.test == tp.name) && !tp.kernels.is_empty() {
            printer.warn(format!(
                "test {} runs on no kernel here: its `kernels` ({}) match none of {}",
                tp.name,
                tp.kernels.join(", "),
                named
                    .iter()
                    .map(|k| k.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if cells.is_empty() {
        let reports = t.matrix || t.json || t.tap || t.junit.is_some() || t.shard.is_some();
        if let ([k], false, false) = (named.as_slice(), t.tests.is_empty(), reports) {
            // What meson's test() asks for, on a kernel the test excludes: skipped.
            printer.out(format!(
                "kiln: SKIPPED: {} does not run on kernel {} (its `kernels`)",
                t.tests.join(", "),
                k.label
            ));
            return Ok(ExitStatus::from_code(77));
        }
        anyhow::bail!("no cell to run: every selected test's `kernels` excludes every kernel");
    }
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
    if !own {
        let wanted: std::collections::BTreeSet<String> =
            cells.iter().map(|c| c.kernel.label.clone()).collect();
        let kernels = crate::build::kernels::cell_kernels(
            &lp,
            &plan,
            &refs,
            &a.build.packages,
            Some(&wanted),
            host_modules,
        )?;
        for c in &mut cells {
            if let Some(k) = kernels.iter().find(|k| k.label == c.kernel.label) {
                c.kernel = k.clone();
            }
        }
    }
    let base = RunOptions {
        config: plan.run.with(&t.overrides),
        persist: t.persist,
        mode: Mode::Test,
        dir: None,
    };
    if cells.len() > 1 || t.matrix || t.json || t.tap || t.junit.is_some() || t.shard.is_some() {
        let rerun = |c: &matrix::Cell| rerun(&plan, &a, t, c);
        return run_cells(&plan, &base, cells, &t.reports(), &rerun, cancel, printer);
    }
    let Some(cell) = cells.pop() else {
        anyhow::bail!("no cell to run");
    };
    // Only another packaged kernel brings modules its boot initramfs copies into the root.
    let foreign = cell.kernel.spec.is_some() && cell.kernel.initrd.is_some();
    if t.persist && plan.format == crate::profile::Format::Disk && foreign {
        anyhow::bail!(
            "--persist with kernel {}: its modules would be copied into the image for good; run it without --persist",
            cell.kernel.label
        );
    }
    let mut plan = plan.clone();
    plan.use_kernel(&cell.kernel);
    let config = if own {
        super::with_debug_symbols(&lp, &a, cell.config)?
    } else {
        cell.config
    };
    let opts = RunOptions { config, ..base };
    let mut reporter = TextReporter::new(printer, t.verbose);
    let report = run::run(&plan, &opts, cancel, &mut reporter)?;
    Ok(ExitStatus::from_code(report.outcome.exit_code()))
}

/// The tests `names` picks (all when empty, each once), or an error naming the ones
/// there are.
pub(super) fn selected_tests(plan: &Plan, names: &[String]) -> Result<Vec<TestPlan>> {
    let list = || {
        plan.tests
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if plan.tests.is_empty() {
        if let Some(n) = names.first() {
            return Err(anyhow::anyhow!(
                "--test {n}: {} has no tests; its own init decides what runs",
                plan.profile.display()
            )
            .context(BadInput));
        }
        // An image whose own init reports a status: one run, under the default name.
        return Ok(vec![TestPlan {
            name: crate::profile::DEFAULT_TEST_NAME.to_string(),
            timeout: None,
            results: None,
            results_size: None,
            splats_fail: plan.run.splats_fail,
            require: Vec::new(),
            tap: None,
            kernels: Vec::new(),
        }]);
    }
    if names.is_empty() {
        return Ok(plan.tests.clone());
    }
    let mut out: Vec<TestPlan> = Vec::new();
    for n in names {
        let Some(t) = plan.test(n) else {
            return Err(anyhow::anyhow!(
                "--test {n}: {} has no test of that name; its tests: {}",
                plan.profile.display(),
                list()
            )
            .context(BadInput));
        };
        if !out.iter().any(|o| o.name == t.name) {
            out.push(t.clone());
        }
    }
    Ok(out)
}

/// The kernel the plan boots, as a cell's: a package is named with the profile's suite,
/// as a matrix names it.
fn own_kernel(lp: &crate::profile::LoadedProfile, plan: &Plan) -> Result<CellKernel> {
    match &plan.kernel {
        KernelPlan::Host(k) => Ok(CellKernel::host(k)),
        KernelPlan::Package { package, vmlinuz } => Ok(CellKernel {
            label: match &lp.profile.distribution {
                Some(d) => format!("{package}/{}", d.suite),
                None => package.clone(),
            },
            image: vmlinuz.clone(),
            initrd: plan.boot_initrd.clone(),
            spec: None,
        }),
        KernelPlan::Tree(t) => Ok(CellKernel {
            label: t.release.clone(),
            image: t.image.clone(),
            initrd: plan.boot_initrd.clone(),
            spec: None,
        }),
        KernelPlan::None => anyhow::bail!(
            "{}: no kernel to boot; set [kernel] in the profile or pass --kernel PATH (or --kernel-tree DIR)",
            plan.profile.display()
        ),
    }
}

/// The cells, in parallel: a line per cell, a summary (or JSON lines, TAP, JUnit). One
/// cell keeps the single-run exit-status table; several exit 0 only when every cell
/// passed, 130 when cancelled, else 1.
pub(super) fn run_cells(
    plan: &Plan,
    base: &RunOptions,
    mut cells: Vec<matrix::Cell>,
    t: &CellReports,
    rerun: &dyn Fn(&matrix::Cell) -> String,
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
            human(format!("kiln: rerun [{}]: {}", c.name(), rerun(c)));
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
    if let Some(k) = &c.kernel.spec {
        line.push_str(&format!(" --kernel {}", q(k)));
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
