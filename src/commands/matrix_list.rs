//! `kiln matrix list`: the cells of a matrix, for a CI system to fan out over.

use anyhow::{bail, Result};

use super::{load, ExitStatus, Printer, ProfileArgs};
use crate::plan::{KernelRef, Plan};
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
    let cwd = std::env::current_dir()?;
    let mut refs = KernelRef::from_matrix(&lp);
    refs.extend(
        kernels
            .iter()
            .map(|k| KernelRef::parse(&k.to_string_lossy(), &cwd)),
    );
    if refs.is_empty() {
        bail!(
            "{} has no [matrix] kernels, and no --kernel was given",
            a.profile.display()
        );
    }
    let plan = Plan::new(&lp, &a.build)?;
    let tests = super::test::selected_tests(&plan, &[])?;
    let ks = crate::build::kernels::without_fetching(&refs)?;
    let cells = matrix::cells(&ks, &tests, &|t| plan.run.for_test(Some(t)));
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
                    "kernel": c.kernel.label,
                    "kernel_path": c.kernel.image.display().to_string(),
                    "test": c.test,
                    "shard": format!("{}/{}", s.index, s.count),
                })
            })
            .collect();
        printer.out(serde_json::Value::Array(v));
    } else {
        for (i, c) in cells.iter().enumerate() {
            let s = shard_of(i);
            printer.out(format!(
                "{}/{}\t{}\t{}\t{}",
                s.index,
                s.count,
                c.kernel.label,
                c.test,
                c.kernel.image.display()
            ));
        }
    }
    Ok(ExitStatus::SUCCESS)
}
