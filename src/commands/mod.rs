//! One function per verb. Each takes typed arguments and a [`Printer`], and returns an
//! [`ExitStatus`]; `main.rs` only parses the command line and dispatches here.

mod boot;
mod build;
mod check;
mod exec;
mod extract;
mod fmt;
mod import_mkosi;
mod init;
mod lock;
mod ls;
mod matrix_list;
mod qemu;
mod sbom;
mod schema;
mod stop;
mod test;
mod vm_access;

pub use boot::{boot, BootArgs};
pub use build::build;
pub use check::check;
pub use exec::{exec, exec_config, exec_or_targets, ExecArgs};
pub use extract::extract;
pub use fmt::fmt_upgrade;
pub use import_mkosi::import_mkosi;
pub use init::{init, Template};
pub use lock::lock;
pub use ls::ls;
pub use matrix_list::matrix_list;
pub use qemu::{qemu, QemuArgs};
pub use sbom::sbom;
pub use schema::schema;
pub use stop::{ps, stop, stop_vm, Stopped};
pub use test::{test, CellReports, TestArgs};
pub use vm_access::{cp, find_vm, ssh, ssh_config, wait_for_sshd};

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::plan::{BuildOptions, Plan};
use crate::profile::{self, LoadedProfile};
pub use crate::util::printer::Printer;

/// What a command exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus(pub u8);

impl ExitStatus {
    /// Success.
    pub const SUCCESS: ExitStatus = ExitStatus(0);
    /// Any error but a bad profile.
    pub const FAILURE: ExitStatus = ExitStatus(1);
    /// A bad profile (or a bad value in one).
    pub const BAD_INPUT: ExitStatus = ExitStatus(2);

    /// A run's exit code, clamped into a process exit status.
    pub fn from_code(code: i32) -> ExitStatus {
        ExitStatus(code.clamp(0, 255) as u8)
    }
}

/// Marks an error as the user's input being wrong: exit status 2.
#[derive(Debug)]
pub struct BadInput;

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid profile")
    }
}

/// What a command's result exits with, its error printed: 2 for the user's input (a
/// profile's mistake, found while reading it or while building), 1 for anything else.
pub fn exit_status(result: Result<ExitStatus>, printer: &Printer) -> ExitStatus {
    match result {
        Ok(status) => status,
        Err(e) if e.downcast_ref::<BadInput>().is_some() => {
            // The error under the marker already says where and what.
            let inner = e.chain().nth(1).map(|c| c.to_string()).unwrap_or_default();
            printer.err(format!("kiln: error: {inner}"));
            ExitStatus::BAD_INPUT
        }
        Err(e) if e.downcast_ref::<crate::profile::ProfileError>().is_some() => {
            printer.err(format!("kiln: error: {e:#}"));
            ExitStatus::BAD_INPUT
        }
        Err(e) => {
            printer.err(format!("kiln: error: {e:#}"));
            ExitStatus::FAILURE
        }
    }
}

/// Loads a profile; its errors are [`BadInput`].
pub fn load(path: &Path) -> Result<LoadedProfile> {
    profile::load(path).map_err(|e| anyhow::Error::new(e).context(BadInput))
}

/// A profile and how to build it: what every profile-reading command takes.
#[derive(Debug, Clone)]
pub struct ProfileArgs {
    /// The profile file.
    pub profile: PathBuf,
    /// Command-line build settings.
    pub build: BuildOptions,
}

/// The plan, after building the image unless `no_build` (then the image must exist).
fn plan_or_build(lp: &LoadedProfile, a: &ProfileArgs, no_build: bool) -> Result<Plan> {
    if !no_build {
        return Ok(crate::build::build(lp, &a.build)?.plan);
    }
    let plan = Plan::new(lp, &a.build)?;
    // A build killed while committing its outputs is finished before they are read.
    crate::output::staging::recover(&plan.out_dir, &plan.name)?;
    if !plan.image.exists() {
        anyhow::bail!(
            "{} does not exist; run `kiln build {}` first",
            plan.image.display(),
            a.profile.display()
        );
    }
    Ok(plan)
}

/// The run's vmlinux from the profile's `-dbg` package (`[kernel] debug_symbols`), fetched
/// when the run needs symbols (gdb, a memory dump) and nothing else named one. A kernel
/// given on the command line is not the package's, so its symbols are not either.
fn with_debug_symbols(
    lp: &LoadedProfile,
    a: &ProfileArgs,
    mut config: crate::plan::RunConfig,
) -> Result<crate::plan::RunConfig> {
    let needs = config.gdb.is_some() || config.dump_on_failure;
    if needs && config.vmlinux.is_none() && a.build.kernel.is_none() {
        config.vmlinux = crate::source::debian::debug::vmlinux(lp, &a.build.packages)?;
    }
    Ok(config)
}
