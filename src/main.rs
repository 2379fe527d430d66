//! The kiln command line: parses arguments and dispatches to `kiln::commands`.

mod cli;
mod docs;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use cli::{Cli, Cmd, MatrixCmd};
use kiln::commands::{self, ExitStatus, Printer};
use kiln::run::Cancel;

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
            commands::qemu(&build.profile_args()?, &q, &Cancel::on_interrupt(), printer)
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
                &Cancel::on_interrupt(),
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
                &Cancel::on_interrupt(),
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
    kiln::util::arenas::bound();
    let cli = Cli::parse();
    kiln::util::progress::set_quiet(cli.quiet);
    let printer = Printer::new(cli.quiet);
    let result = dispatch(cli.command, &printer);
    ExitCode::from(commands::exit_status(result, &printer).0)
}
