//! Documents generated from the command line's own definitions, so they cannot drift
//! from `--help`: shell completion scripts and man pages.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;
use kiln::commands::{ExitStatus, Printer};

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<ExitStatus> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut Cli::command(), "kiln", &mut out);
    out.flush().context("writing the completion script")?;
    Ok(ExitStatus::SUCCESS)
}

/// Prints `kiln.1`, or writes it and a page per command (`kiln-build.1`, and
/// `kiln-matrix-list.1` for nested ones) into `dir`.
pub fn man(dir: Option<&Path>, printer: &Printer) -> Result<ExitStatus> {
    let mut cmd = Cli::command();
    cmd.build();
    let Some(dir) = dir else {
        let mut out = std::io::stdout().lock();
        clap_mangen::Man::new(cmd)
            .render(&mut out)
            .context("writing the man page")?;
        out.flush().context("writing the man page")?;
        return Ok(ExitStatus::SUCCESS);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut pages = Vec::new();
    collect(&cmd, "kiln", &mut pages);
    for (name, page) in &pages {
        let mut text = Vec::new();
        clap_mangen::Man::new(page.clone())
            .title(name.as_str())
            .render(&mut text)
            .with_context(|| format!("rendering {name}.1"))?;
        let path = dir.join(format!("{name}.1"));
        kiln::util::atomic::write(&path, &text)?;
    }
    printer.step(format!(
        "wrote {} man pages to {} (man kiln; man kiln-build; ...)",
        pages.len(),
        dir.display()
    ));
    Ok(ExitStatus::SUCCESS)
}

/// Every command with the page name it gets: `kiln`, `kiln-build`, `kiln-matrix-list`.
fn collect(cmd: &clap::Command, name: &str, pages: &mut Vec<(String, clap::Command)>) {
    // After `build()`, each command's bin name is its full path (`kiln matrix list`),
    // which is what its synopsis shows.
    pages.push((name.to_string(), cmd.clone()));
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        collect(sub, &format!("{name}-{}", sub.get_name()), pages);
    }
}
