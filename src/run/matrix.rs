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
