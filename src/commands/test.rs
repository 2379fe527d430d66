//! `kiln test`.

use anyhow::Result;

use super::{load, plan_or_build, ExitStatus, Printer, ProfileArgs};
use crate::plan::RunOverrides;
use crate::run::report::TextReporter;
use crate::run::{self, Cancel, Mode, RunOptions};

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
    let mut reporter = TextReporter::new(printer, t.verbose);
    let report = run::run(&plan, &opts, cancel, &mut reporter)?;
    Ok(ExitStatus::from_code(report.outcome.exit_code()))
}
