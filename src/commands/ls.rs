//! `kiln ls`.

use std::path::Path;

use anyhow::Result;

use super::{ExitStatus, Printer};
use crate::output::list::{self, Link, Listed};
use crate::tree::mode::mode_string;

/// One `ls -l`-like line: mode, owner, size (or device numbers), path and link target.
pub fn row(e: &Listed) -> String {
    let size = match e.rdev {
        Some((major, minor)) => format!("{major},{minor}"),
        None => e.size.to_string(),
    };
    let link = match &e.link {
        Some(Link::Symlink(t)) => format!(" -> {t}"),
        Some(Link::Hard(t)) => format!(" link to {t}"),
        None => String::new(),
    };
    format!(
        "{} {:>5} {:>5} {:>10} {}{}",
        mode_string(e.mode),
        e.uid,
        e.gid,
        size,
        e.path,
        link
    )
}

/// Lists the entries of an image. A reader that stops early (`| head`) is not an error.
pub fn ls(image: &Path, printer: &Printer) -> Result<ExitStatus> {
    for e in list::list(image)? {
        printer.out(row(&e));
        if printer.stdout_closed() {
            break;
        }
    }
    Ok(ExitStatus::SUCCESS)
}
