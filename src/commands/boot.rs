//! `kiln boot`.

use anyhow::Result;

use super::{load, plan_or_build, ExitStatus, Printer, ProfileArgs};
use crate::plan::RunOverrides;
use crate::run::report::TextReporter;
use crate::run::{self, Cancel, GuestReport, Mode, Outcome, RunOptions};

/// What `kiln boot` takes besides the profile.
#[derive(Debug, Clone, Default)]
pub struct BootArgs {
    /// Run settings from the command line.
    pub overrides: RunOverrides,
    /// Boot the image already built.
    pub no_build: bool,
    /// Run a test with the console attached: Some("") the first, Some(NAME) that one;
    /// None boots without running any.
    pub test: Option<String>,
    /// Boot in the background and return once QEMU runs.
    pub detach: bool,
}

/// Builds and boots with the console on this terminal, running no test unless asked.
/// Exits with the status the guest reported, 0 when it reported none, 126 when QEMU
/// failed.
pub fn boot(a: &ProfileArgs, b: &BootArgs, printer: &Printer) -> Result<ExitStatus> {
    let lp = load(&a.profile)?;
    let plan = plan_or_build(&lp, a, b.no_build)?;
    let config = match b.test.as_deref() {
        None => plan.run.without_test(),
        Some("") if plan.tests.is_empty() => anyhow::bail!(
            "--test: {} has no test; `kiln boot` without --test boots it",
            a.profile.display()
        ),
        Some("") => plan.run.clone(),
        Some(name) => {
            let t = super::test::selected_tests(&plan, &[name.to_string()])?;
            plan.run.for_test(t.first())
        }
    };
    // Two guests writing one disk image would corrupt it: a second boot of an image
    // already running gets a throwaway overlay.
    let running = crate::run::vm::running_under(&plan.runs_dir());
    let persist = running.is_empty();
    if !persist && plan.format == crate::profile::Format::Disk {
        printer.step(format!(
            "{} is already running (pid {}); this boot's writes go to a throwaway overlay",
            plan.name, running[0].pid
        ));
    }
    let opts = RunOptions {
        config: super::with_debug_symbols(&lp, a, config.with(&b.overrides))?,
        persist,
        mode: if b.detach {
            Mode::Detached
        } else {
            Mode::Interactive
        },
        dir: None,
    };
    let mut reporter = TextReporter::new(printer, false);
    if b.detach {
        let v = run::start_detached(&plan, &opts, &mut reporter)?;
        let profile = a.profile.display();
        printer.step(format!(
            "{} runs in the background (pid {}); run directory {}",
            v.name,
            v.pid,
            v.dir.display()
        ));
        if let Some(c) = &v.console {
            printer.step(format!("  console:  tail -f {}", c.display()));
        }
        if v.ssh_port.is_some() {
            printer.step(format!("  log in:   kiln ssh {profile}"));
            printer.step(format!("  copy:     kiln cp {profile} :/etc/os-release ."));
        }
        printer.step(format!("  stop:     kiln stop {profile}"));
        return Ok(ExitStatus::SUCCESS);
    }
    let report = run::run(&plan, &opts, &Cancel::new(), &mut reporter)?;
    Ok(match (&report.outcome, &report.guest) {
        (o @ (Outcome::QemuFailed(_) | Outcome::Preflight(_)), _) => {
            printer.err(format!("kiln: {o}"));
            ExitStatus::from_code(o.exit_code())
        }
        (_, Some(GuestReport::Status(_))) | (_, Some(GuestReport::Infrastructure(_))) => {
            ExitStatus::from_code(report.outcome.exit_code())
        }
        (_, None) => ExitStatus::SUCCESS,
    })
}
