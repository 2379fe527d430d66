//! Many runs of one built image: one cell per kernel, run in parallel on throwaway
//! overlays, each in its own run directory. One cell's failure never stops another;
//! cancelling stops them all.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Result;

use super::{Cancel, Event, RunOptions, RunReport, Sink};
use crate::plan::{Accel, KernelPlan, Plan};
use crate::vm::kvm::{self, Accelerator};

/// One cell of a matrix: the image booted on one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// A short, unique name for tables and logs (the kernel's file name).
    pub label: String,
    /// The kernel image on the host.
    pub kernel: PathBuf,
}

/// Cells for kernel images, labelled by file name (with a number where names repeat).
pub fn cells(kernels: &[PathBuf]) -> Vec<Cell> {
    let mut out: Vec<Cell> = Vec::new();
    for k in kernels {
        let base = k
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| k.display().to_string());
        let mut label = base.clone();
        let mut n = 2;
        while out.iter().any(|c| c.label == label) {
            label = format!("{base}#{n}");
            n += 1;
        }
        out.push(Cell {
            label,
            kernel: std::path::absolute(k).unwrap_or_else(|_| k.clone()),
        });
    }
    out
}

/// A slice of a matrix for one CI job: shard `index` of `count`, both from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which shard, from 1.
    pub index: usize,
    /// How many shards.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("`{s}` is not a shard; write I/N with 1 <= I <= N, e.g. 2/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// The cells of this shard: every `count`-th cell from the `index`-th, so shards
    /// are deterministic, disjoint, and together cover every cell once.
    pub fn select(self, cells: Vec<Cell>) -> Vec<Cell> {
        cells
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % self.count == self.index - 1)
            .map(|(_, c)| c)
            .collect()
    }
}

/// Receives the events of every cell, tagged with the cell's index.
pub trait MatrixSink: Send {
    /// One event of cell `cell`.
    fn cell_event(&mut self, cell: usize, e: Event<'_>);
}

/// How many cells run at once by default: the host's CPUs divided by each cell's
/// vCPUs, at least one.
pub fn default_jobs(cpus_per_cell: u32) -> usize {
    let host = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (host / cpus_per_cell.max(1) as usize).max(1)
}

/// Runs every cell, `jobs` at a time. Returns each cell's report (or the error that kept
/// it from running), in cell order.
pub fn run_matrix(
    plan: &Plan,
    cells: &[Cell],
    opts: &RunOptions,
    jobs: usize,
    cancel: &Cancel,
    sink: &mut dyn MatrixSink,
) -> Vec<Result<RunReport>> {
    // One KVM probe for the whole matrix; every cell gets its answer.
    let mut opts = opts.clone();
    let choice = kvm::choose(opts.config.accel, &opts.config.qemu);
    if let Some(w) = &choice.warning {
        sink.cell_event(0, Event::Warning(w));
    }
    opts.config.accel = match choice.accel {
        Accelerator::Kvm => Accel::Kvm,
        Accelerator::Tcg => Accel::Tcg,
    };
    let queue = Mutex::new((0..cells.len()).collect::<VecDeque<usize>>());
    let results: Mutex<Vec<Option<Result<RunReport>>>> =
        Mutex::new((0..cells.len()).map(|_| None).collect());
    let sink = Mutex::new(sink);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, cells.len().max(1)) {
            s.spawn(|| loop {
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some(i) = next else { return };
                let r = if cancel.is_cancelled() {
                    Err(anyhow::anyhow!("cancelled before it started"))
                } else {
                    let mut p = plan.clone();
                    p.kernel = KernelPlan::Host(cells[i].kernel.clone());
                    let mut tagged = Tagged {
                        sink: &sink,
                        cell: i,
                    };
                    super::run(&p, &opts, cancel, &mut tagged)
                };
                if let Ok(mut res) = results.lock() {
                    res[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("the cell did not run"))))
        .collect()
}

/// Forwards one cell's events to the shared sink.
struct Tagged<'a, 'b> {
    sink: &'a Mutex<&'b mut dyn MatrixSink>,
    cell: usize,
}

impl Sink for Tagged<'_, '_> {
    fn event(&mut self, e: Event<'_>) {
        if let Ok(mut s) = self.sink.lock() {
            s.cell_event(self.cell, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_cell_exactly_once() {
        let all = cells(
            &(0..11)
                .map(|i| std::path::PathBuf::from(format!("/k/bzImage-{i}")))
                .collect::<Vec<_>>(),
        );
        for n in 1..=4 {
            let mut seen: Vec<String> = Vec::new();
            for i in 1..=n {
                let shard: Shard = format!("{i}/{n}").parse().unwrap();
                let part = shard.select(all.clone());
                assert!(part.len() >= all.len() / n, "{i}/{n} is balanced");
                seen.extend(part.into_iter().map(|c| c.label));
            }
            seen.sort();
            let mut want: Vec<String> = all.iter().map(|c| c.label.clone()).collect();
            want.sort();
            assert_eq!(seen, want, "n = {n}");
        }
        for bad in ["0/2", "3/2", "x", "1/0", "1/"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_are_unique_file_names() {
        let c = cells(&[
            "/k/a/vmlinuz".into(),
            "/k/b/vmlinuz".into(),
            "/k/bzImage".into(),
        ]);
        let labels: Vec<&str> = c.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["vmlinuz", "vmlinuz#2", "bzImage"]);
        assert_eq!(default_jobs(u32::MAX), 1);
    }
}
