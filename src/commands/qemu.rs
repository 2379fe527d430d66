//! `kiln qemu`: print or run the QEMU command of a profile's image.

use anyhow::Result;

use super::{boot, load, ExitStatus, Printer, ProfileArgs};
use crate::plan::{Accel, Plan, RunOverrides};
use crate::run::{self, Cancel, Mode, RunDir, RunOptions};
use crate::vm::kvm::{self, Accelerator};
use crate::vm::qemu;

/// What `kiln qemu` takes besides the profile.
#[derive(Debug, Clone, Default)]
pub struct QemuArgs {
    /// Run settings from the command line.
    pub overrides: RunOverrides,
    /// Print the command instead of running it.
    pub print: bool,
    /// The command as `kiln test` runs it rather than as `kiln boot` does.
    pub test: bool,
}

/// Prints the command (one option per line, quoted for the shell), or runs it as
/// `kiln boot --no-build` (or, with `test`, `kiln test --no-build`) would.
pub fn qemu(
    a: &ProfileArgs,
    q: &QemuArgs,
    cancel: &Cancel,
    printer: &Printer,
) -> Result<ExitStatus> {
    if !q.print && q.test {
        let t = super::TestArgs {
            overrides: q.overrides.clone(),
            no_build: true,
            ..Default::default()
        };
        return super::test(a, &t, cancel, printer);
    }
    if !q.print {
        let b = boot::BootArgs {
            overrides: q.overrides.clone(),
            no_build: true,
            test: None,
            detach: false,
        };
        return boot::boot(a, &b, printer);
    }
    let lp = load(&a.profile)?;
    let plan = Plan::new(&lp, &a.build)?;
    let mode = if q.test {
        Mode::Test
    } else {
        Mode::Interactive
    };
    let config = if q.test {
        plan.run.clone()
    } else {
        plan.run.without_test()
    };
    let opts = RunOptions {
        config: config.with(&q.overrides),
        persist: !q.test,
        mode,
        dir: None,
    };
    let mut l = run::launch_for(&plan, &opts)?;
    // Printing should not spend two seconds probing unless it must.
    let accel = match opts.config.accel {
        Accel::Kvm => Accelerator::Kvm,
        Accel::Tcg => Accelerator::Tcg,
        Accel::Auto => {
            let c = kvm::choose(Accel::Auto, &opts.config.qemu);
            if let Some(w) = &c.warning {
                printer.warn(w);
            }
            c.accel
        }
    };
    // The files of the latest run: where `kiln test` would put them.
    l.cpus = run::cpus_for(&opts.config, accel);
    let files = RunDir::at(&plan.latest_run());
    run::attach_results(&opts.config, &mut l, &files);
    // The network, monitor and gdb stub as a run would have them (free ports are chosen
    // now, and may differ in the run).
    let facts = run::wiring::ImageFacts::read(&plan);
    run::wiring::wire(&plan, &opts.config, facts, &files, 0, &mut l)?;
    printer
        .out_raw(qemu::printable(&qemu::command(&l, &run::spec(accel, &files, mode))).as_bytes());
    Ok(ExitStatus::SUCCESS)
}
