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

/// One entry as `kiln ls --json` prints it, with the manifest's field names.
#[derive(serde::Serialize)]
struct JsonRow<'a> {
    path: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    mode: String,
    uid: u32,
    gid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    major: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    minor: Option<u32>,
}

fn json_row(e: &Listed) -> String {
    let kind = match (&e.link, e.mode & 0o170000) {
        (Some(Link::Hard(_)), _) => "hardlink",
        (_, 0o040000) => "directory",
        (_, 0o120000) => "symlink",
        (_, 0o020000) => "char",
        (_, 0o060000) => "block",
        (_, 0o010000) => "fifo",
        (_, 0o140000) => "socket",
        _ => "file",
    };
    let row = JsonRow {
        path: &e.path,
        kind,
        mode: format!("{:04o}", e.mode & 0o7777),
        uid: e.uid,
        gid: e.gid,
        size: matches!(kind, "file" | "hardlink").then_some(e.size),
        target: match &e.link {
            Some(Link::Symlink(t)) | Some(Link::Hard(t)) => Some(t),
            None => None,
        },
        major: e.rdev.map(|d| d.0),
        minor: e.rdev.map(|d| d.1),
    };
    serde_json::to_string(&row).unwrap_or_default()
}

/// Lists the entries of an image (with `json`, one JSON object per line). A reader that
/// stops early (`| head`) is not an error.
pub fn ls(image: &Path, json: bool, printer: &Printer) -> Result<ExitStatus> {
    for e in list::list(image)? {
        printer.out(if json { json_row(&e) } else { row(&e) });
        if printer.stdout_closed() {
            break;
        }
    }
    Ok(ExitStatus::SUCCESS)
}
