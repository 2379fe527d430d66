//! The kiln command line: parses arguments and dispatches to `kiln::commands`.

mod cli;
mod docs;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use cli::{Cli, Cmd, MatrixCmd};
use kiln::commands::{self, BadInput, ExitStatus, Printer};
use kiln::run::Cancel;

/// Ctrl-C cancels running VMs (their outcome is "cancelled", exit 130); with none
/// running, kiln stops at once.
fn cancel_on_interrupt() -> Cancel {
    let cancel = Cancel::new();
    let c = cancel.clone();
    // SIGINT and SIGTERM alike: a CI runner's timeout sends SIGTERM.
    let _ = ctrlc::set_handler(move || {
        let again = c.is_cancelled();
        let running = c.running();
        c.cancel();
        if again || !running {
            eprintln!("\nkiln: interrupted");
            std::process::exit(130);
        }
    });
    cancel
}

fn dispatch(cmd: Cmd, printer: &Printer) -> Result<ExitStatus> {
    match cmd {
        Cmd::Build { build, json } => commands::build(&build.profile_args()?, json, printer),
        Cmd::Qemu {
            build,
            run,
            print,
            test,
        } => {
            let q = commands::QemuArgs {
                overrides: run.overrides(None),
                print,
                test,
            };
            commands::qemu(&build.profile_args()?, &q, &cancel_on_interrupt(), printer)
        }
        Cmd::Boot {
            build,
            run,
            no_build,
            test,
            detach,
        } => {
            let b = commands::BootArgs {
                overrides: run.overrides(None),
                no_build,
                test,
                detach,
            };
            commands::boot(&build.profile_args()?, &b, printer)
        }
        Cmd::Test {
            build,
            run,
            no_build,
            timeout,
            verbose,
            persist,
            dump_on_failure,
            reports,
            shard,
            matrix,
            tests,
        } => {
            let mut overrides = run.overrides(timeout);
            overrides.dump_on_failure = dump_on_failure;
            let t = commands::TestArgs {
                overrides,
                no_build,
                verbose,
                persist,
                kernels: build.kernels().to_vec(),
                jobs: reports.jobs,
                json: reports.json,
                junit: reports.junit,
                tap: reports.tap,
                shard,
                matrix,
                tests,
            };
            commands::test(
                &build.profile_args_any()?,
                &t,
                &cancel_on_interrupt(),
                printer,
            )
        }
        Cmd::Matrix {
            command:
                MatrixCmd::List {
                    build,
                    json,
                    shards,
                },
        } => commands::matrix_list(
            &build.profile_args_any()?,
            build.kernels(),
            shards,
            json,
            printer,
        ),
        Cmd::Ssh { vm, wait, command } => {
            commands::ssh(&vm.profile_args()?, vm.pid, &command, wait.0, printer)
        }
        Cmd::Cp { vm, wait, paths } => {
            let (dest, sources) = paths.split_last().unwrap_or((&paths[0], &[]));
            commands::cp(&vm.profile_args()?, vm.pid, sources, dest, wait.0, printer)
        }
        Cmd::SshConfig { vm } => commands::ssh_config(&vm.profile_args()?, vm.pid, printer),
        Cmd::Stop { vm, grace, all } => {
            commands::stop(&vm.profile_args()?, vm.pid, all, grace.0, printer)
        }
        Cmd::Ps { json } => commands::ps(json, printer),
        Cmd::Exec {
            kernel,
            config,
            filter,
            share,
            run,
            timeout,
            reports,
            env_exclude,
            mirror,
            command,
        } => {
            let e = commands::ExecArgs {
                kernels: kernel,
                command,
                cwd: std::env::current_dir()?,
                env_exclude,
                overrides: run.overrides(timeout),
                share: share.map(|s| {
                    if s == "virtiofs" {
                        kiln::vm::share::Transport::VirtioFs
                    } else {
                        kiln::vm::share::Transport::NineP
                    }
                }),
                reports: commands::CellReports {
                    jobs: reports.jobs,
                    json: reports.json,
                    junit: reports.junit,
                    tap: reports.tap,
                    verbose: false,
                },
                packages: kiln::source::PackageOptions {
                    mirror: mirror.filter(|m| !m.is_empty()),
                    ..Default::default()
                },
            };
            commands::exec_or_targets(
                &e,
                config,
                filter.as_deref(),
                &cancel_on_interrupt(),
                printer,
            )
        }
        Cmd::Ls { image, json } => commands::ls(&image, json, printer),
        Cmd::Extract { image, path, dest } => commands::extract(&image, &path, &dest, printer),
        Cmd::Init { name, template } => commands::init(&name, template.into(), printer),
        Cmd::Schema => commands::schema(printer),
        Cmd::ImportMkosi { config, output } => {
            commands::import_mkosi(&config, output.as_deref(), printer)
        }
        Cmd::Sbom { manifest } => commands::sbom(&manifest, printer),
        Cmd::Fmt {
            upgrade: _,
            check,
            profiles,
        } => commands::fmt_upgrade(&profiles, check, printer),
        Cmd::Check { profiles } => commands::check(&profiles, printer),
        Cmd::Completions { shell } => docs::completions(shell),
        Cmd::Man { dir } => docs::man(dir.as_deref(), printer),
        Cmd::Lock {
            build,
            update,
            json,
        } => commands::lock(&build.profile_args()?, update, json, printer),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    kiln::util::progress::set_quiet(cli.quiet);
    let printer = Printer::new(cli.quiet);
    match dispatch(cli.command, &printer) {
        Ok(status) => ExitCode::from(status.0),
        Err(e) if e.downcast_ref::<BadInput>().is_some() => {
            // The profile error already says where and what.
            let inner = e.chain().nth(1).map(|c| c.to_string()).unwrap_or_default();
            printer.err(format!("kiln: error: {inner}"));
            ExitCode::from(ExitStatus::BAD_INPUT.0)
        }
        // A profile's mistake found while building (a template, a source file).
        Err(e) if e.downcast_ref::<kiln::profile::ProfileError>().is_some() => {
            printer.err(format!("kiln: error: {e:#}"));
            ExitCode::from(ExitStatus::BAD_INPUT.0)
        }
        Err(e) => {
            printer.err(format!("kiln: error: {e:#}"));
            ExitCode::from(ExitStatus::FAILURE.0)
        }
    }
}
