//! `kiln matrix list`: the cells of a matrix, for a CI system to fan out over.

use anyhow::{bail, Result};

use super::{load, ExitStatus, Printer, ProfileArgs};
use crate::run::matrix::{self, Shard};

/// Prints the cells of the profile's `[matrix]` (and any `--kernel`): a line each, or
/// with `json` one JSON array of objects with the kernel, its path, and the `--shard`
/// that runs it when split `shards` ways.
pub fn matrix_list(
    a: &ProfileArgs,
    kernels: &[std::path::PathBuf],
    shards: usize,
    json: bool,
    printer: &Printer,
) -> Result<ExitStatus> {
    let lp = load(&a.profile)?;
    let all = super::matrix_kernels(&lp, kernels);
    if all.is_empty() {
        bail!(
            "{} has no [matrix] kernels, and no --kernel was given",
            a.profile.display()
        );
    }
    let cells = matrix::cells(&all);
    let shards = shards.max(1);
    let shard_of = |i: usize| Shard {
        index: i % shards + 1,
        count: shards,
    };
    if json {
        let v: Vec<serde_json::Value> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let s = shard_of(i);
                serde_json::json!({
                    "kernel": c.label,
                    "kernel_path": c.kernel.display().to_string(),
                    "test": "test",
                    "shard": format!("{}/{}", s.index, s.count),
                })
            })
            .collect();
        printer.out(serde_json::Value::Array(v));
    } else {
        for (i, c) in cells.iter().enumerate() {
            let s = shard_of(i);
            printer.out(format!(
                "{}/{}\t{}\t{}",
                s.index,
                s.count,
                c.label,
                c.kernel.display()
            ));
        }
    }
    Ok(ExitStatus::SUCCESS)
}
