//! Many runs of one built image: one cell per kernel, run in parallel on throwaway
//! overlays, each in its own run directory. One cell's failure never stops another;
//! cancelling stops them all.

use std::collections::VecDeque;
use std::sync::Mutex;

use anyhow::Result;

use super::{Cancel, Event, RunOptions, RunReport, Sink};
pub use crate::plan::{unique_labels, CellKernel};
use crate::plan::{Accel, Plan, RunConfig, TestPlan};
use crate::vm::kvm::{self, Accelerator};

/// One cell of a matrix: the image booted on one kernel to run one test.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// The kernel.
    pub kernel: CellKernel,
    /// The test's name.
    pub test: String,
    /// The run's configuration (the test's settings and the command line's applied).
    pub config: RunConfig,
}

impl Cell {
    /// `kernel test`, for lines and tables.
    pub fn name(&self) -> String {
        format!("{} {}", self.kernel.label, self.test)
    }
}

/// The cells of `kernels` × `tests`, kernel by kernel, skipping tests restricted to other
/// kernels. `config` makes each test's run configuration.
pub fn cells(
    kernels: &[CellKernel],
    tests: &[TestPlan],
    config: &dyn Fn(&TestPlan) -> RunConfig,
) -> Vec<Cell> {
    let mut out = Vec::new();
    for k in kernels {
        for t in tests.iter().filter(|t| t.runs_on(&k.label)) {
            out.push(Cell {
                kernel: k.clone(),
                test: t.name.clone(),
                config: config(t),
            });
        }
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

/// Runs every cell, `jobs` at a time, each in its own directory `dir/<kernel>/<test>/`.
/// Returns each cell's report (or the error that kept it from running), in cell order.
pub fn run_matrix(
    plan: &Plan,
    cells: &[Cell],
    opts: &RunOptions,
    dir: &std::path::Path,
    jobs: usize,
    cancel: &Cancel,
    sink: &mut dyn MatrixSink,
) -> Vec<Result<RunReport>> {
    // Cancelling stops the cells; the caller still writes its reports.
    let _hold = cancel.hold();
    // One KVM probe for the whole matrix; every cell gets its answer.
    let choice = kvm::choose(opts.config.accel, &opts.config.qemu);
    if let Some(w) = &choice.warning {
        sink.cell_event(0, Event::Warning(w));
    }
    let accel = match choice.accel {
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
                    let c = &cells[i];
                    let mut p = plan.clone();
                    p.use_kernel(&c.kernel);
                    let mut o = opts.clone();
                    o.config = c.config.clone();
                    o.config.accel = accel;
                    o.dir = Some(dir.join(c.kernel.dir_name()).join(&c.test));
                    let mut tagged = Tagged {
                        sink: &sink,
                        cell: i,
                    };
                    super::run(&p, &o, cancel, &mut tagged)
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

    fn test(name: &str, kernels: &[&str]) -> TestPlan {
        TestPlan {
            name: name.into(),
            timeout: None,
            results: None,
            results_size: None,
            splats_fail: true,
            require: Vec::new(),
            tap: None,
            kernels: kernels.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn config(_: &TestPlan) -> RunConfig {
        crate::plan::RunConfig {
            kernel_entry: Default::default(),
            qemu: "qemu".into(),
            machine: "q35".into(),
            cpu: None,
            memory: 1,
            cpus: 1,
            cpus_explicit: false,
            accel: Accel::Tcg,
            cmdline: Vec::new(),
            qemu_args: Vec::new(),
            timeout: std::time::Duration::from_secs(1),
            results_size: 1,
            splats_fail: true,
            test: None,
            results: None,
            require: Vec::new(),
            tap: None,
            network: Default::default(),
            gdb: None,
            vmlinux: None,
            dump_on_failure: false,
            shares: Vec::new(),
            share_transport: None,
            host: None,
        }
    }

    #[test]
    fn shards_cover_every_cell_exactly_once() {
        let kernels: Vec<CellKernel> = (0..6)
            .map(|i| CellKernel::host(std::path::Path::new(&format!("/k/bzImage-{i}"))))
            .collect();
        let all = cells(
            &kernels,
            &[test("a", &[]), test("b", &["*-[0-2]"])],
            &config,
        );
        assert_eq!(all.len(), 6 + 3);
        for n in 1..=4 {
            let mut seen: Vec<String> = Vec::new();
            for i in 1..=n {
                let shard: Shard = format!("{i}/{n}").parse().unwrap();
                let part = shard.select(all.clone());
                assert!(part.len() >= all.len() / n, "{i}/{n} is balanced");
                seen.extend(part.into_iter().map(|c| c.name()));
            }
            seen.sort();
            let mut want: Vec<String> = all.iter().map(|c| c.name()).collect();
            want.sort();
            assert_eq!(seen, want, "n = {n}");
        }
        for bad in ["0/2", "3/2", "x", "1/0", "1/"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_are_unique_file_names() {
        let mut k: Vec<CellKernel> = ["/k/a/vmlinuz", "/k/b/vmlinuz", "/k/bzImage"]
            .iter()
            .map(|p| CellKernel::host(std::path::Path::new(p)))
            .collect();
        unique_labels(&mut k);
        let labels: Vec<&str> = k.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["vmlinuz", "vmlinuz#2", "bzImage"]);
        assert_eq!(default_jobs(u32::MAX), 1);
    }

    #[test]
    fn tests_restricted_to_kernels_skip_the_others() {
        let mut k = CellKernel::host(std::path::Path::new("/k/x"));
        k.label = "linux-image-cloud-amd64/bookworm".into();
        assert_eq!(k.dir_name(), "linux-image-cloud-amd64@bookworm");
        let c = cells(
            &[k],
            &[test("a", &["*trixie*"]), test("b", &["*/bookworm"])],
            &config,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].name(), "linux-image-cloud-amd64/bookworm b");
    }
}
