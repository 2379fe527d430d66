//! The human reporter: renders a run's events as kiln has always printed them. It
//! decides nothing; the outcome comes from the run.

use super::matrix::{Cell, MatrixSink};
use super::{Event, Outcome, RunReport, Sink};
use crate::util::printer::Printer;

/// Lines of console shown after a run that did not pass.
pub const TAIL_LINES: usize = 25;

/// Text for a terminal or a CI log.
pub struct TextReporter<'a> {
    printer: &'a Printer,
    /// The console streams to stdout as the guest runs.
    verbose: bool,
}

impl<'a> TextReporter<'a> {
    /// A reporter writing through `printer`; with `verbose`, the console is streamed.
    pub fn new(printer: &'a Printer, verbose: bool) -> Self {
        TextReporter { printer, verbose }
    }

    fn finished(&self, r: &RunReport) {
        let p = self.printer;
        if !self.verbose {
            if let Some(out) = super::console::test_output(&r.files.console) {
                p.out("--- test output ---");
                for l in out {
                    p.out(l);
                }
                p.out("---");
            }
        }
        if r.hung_after_status {
            p.warn(
                "the guest reported its status but did not power off within 10 s; QEMU was killed",
            );
        }
        if r.outcome != super::Outcome::Passed && !self.verbose {
            p.err(format!(
                "kiln: last lines of the serial console ({}):",
                r.files.console.display()
            ));
            for l in super::console::last_lines(&r.files.console, TAIL_LINES) {
                p.err(format!("  | {l}"));
            }
        }
        cases(&|l| p.out(l), r, "");
        p.out(format!(
            "kiln: {} in {:.1}s",
            r.outcome,
            r.elapsed.as_secs_f64()
        ));
    }
}

/// A line per TAP case of the run, with a failure's detail under it.
fn cases(out: &dyn Fn(String), r: &RunReport, prefix: &str) {
    if r.cases.is_empty() {
        return;
    }
    let failed = r
        .cases
        .iter()
        .filter(|c| c.result == super::tap::CaseResult::Failed)
        .count();
    out(format!(
        "kiln: {prefix}{} TAP cases, {failed} not ok:",
        r.cases.len()
    ));
    for c in &r.cases {
        out(format!("kiln: {prefix}  {c}"));
        if c.result == super::tap::CaseResult::Failed {
            for l in c.detail.lines() {
                out(format!("kiln: {prefix}    {l}"));
            }
        }
    }
}

impl Sink for TextReporter<'_> {
    fn event(&mut self, e: Event<'_>) {
        let p = self.printer;
        match e {
            Event::Warning(w) => p.warn(w),
            Event::Note(n) => p.step(n),
            Event::Booting {
                name,
                accel,
                timeout,
                dir,
                detached,
            } => match timeout {
                Some(t) => p.step(format!(
                    "booting {name} under {} (time limit {t:.0?}; run directory {})",
                    accel.name().to_uppercase(),
                    dir.display()
                )),
                None if detached => p.step(format!(
                    "booting {name} under {} in the background",
                    accel.name().to_uppercase()
                )),
                None => p.step(format!(
                    "booting {name} under {}; press Ctrl-A X to quit QEMU",
                    accel.name().to_uppercase()
                )),
            },
            Event::Console(bytes) => {
                if self.verbose {
                    p.out_raw(bytes);
                }
            }
            Event::Results { files, dir } => {
                p.out(format!("kiln: results: {files} files in {}", dir.display()))
            }
            Event::ResultsFailed(e) => p.warn(format!("could not read the results disk: {e}")),
            Event::Finished(r) => {
                if r.interactive {
                    if let Some(super::GuestReport::Status(c)) = &r.guest {
                        p.step(format!("the guest reported exit status {c}"));
                    }
                } else {
                    self.finished(r);
                }
            }
        }
    }
}

/// Text for a matrix: a line per cell as it starts and finishes, then a summary table.
pub struct MatrixReporter<'a> {
    printer: &'a Printer,
    cells: Vec<Cell>,
    warned: Vec<String>,
    /// stdout carries JSON lines (or TAP at the end); human lines go to stderr.
    json: bool,
    machine: bool,
    /// Console lines stream to stderr, each prefixed with its cell.
    verbose: bool,
    /// Each cell's console bytes after its last complete line.
    partial: Vec<Vec<u8>>,
}

impl<'a> MatrixReporter<'a> {
    /// A reporter for `cells`, writing through `printer`. With `json`, each finished cell
    /// is a JSON line on stdout; with `machine` (JSON or TAP), human lines go to stderr;
    /// with `verbose`, every cell's console streams to stderr line by line.
    pub fn new(
        printer: &'a Printer,
        cells: &[Cell],
        json: bool,
        machine: bool,
        verbose: bool,
    ) -> Self {
        MatrixReporter {
            printer,
            cells: cells.to_vec(),
            warned: Vec::new(),
            json,
            machine,
            verbose,
            partial: vec![Vec::new(); cells.len()],
        }
    }

    fn human(&self, line: String) {
        if self.machine {
            self.printer.err(line);
        } else {
            self.printer.out(line);
        }
    }

    fn console(&mut self, cell: usize, bytes: &[u8], label: &str) {
        let Some(buf) = self.partial.get_mut(cell) else {
            return;
        };
        buf.extend_from_slice(bytes);
        while let Some(n) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=n).collect();
            let text = String::from_utf8_lossy(&line);
            self.printer
                .err(format!("[{label}] {}", text.trim_end_matches(['\r', '\n'])));
        }
    }
}

impl MatrixSink for MatrixReporter<'_> {
    fn cell_event(&mut self, cell: usize, e: Event<'_>) {
        let p = self.printer;
        let label = self.cells.get(cell).map(|c| c.name()).unwrap_or_default();
        match e {
            Event::Warning(w) => {
                if !self.warned.iter().any(|x| x == w) {
                    self.warned.push(w.to_string());
                    p.warn(w);
                }
            }
            Event::Booting { accel, dir, .. } => p.step(format!(
                "[{label}] booting under {} (run directory {})",
                accel.name().to_uppercase(),
                dir.display()
            )),
            Event::Console(b) => {
                if self.verbose {
                    self.console(cell, b, &label);
                }
            }
            Event::Note(n) => p.step(format!("[{label}] {n}")),
            Event::Results { files, dir } => self.human(format!(
                "kiln: [{label}] results: {files} files in {}",
                dir.display()
            )),
            Event::ResultsFailed(e) => {
                p.warn(format!("[{label}] could not read the results disk: {e}"))
            }
            Event::Finished(r) => {
                // The console's last line may have had no newline.
                if self.verbose && self.partial.get(cell).is_some_and(|b| !b.is_empty()) {
                    self.console(cell, b"\n", &label);
                }
                let prefix = format!("[{label}] ");
                cases(&|l| self.human(l), r, &prefix);
                self.human(format!(
                    "kiln: [{label}] {} in {:.1}s",
                    r.outcome,
                    r.elapsed.as_secs_f64()
                ));
                if let (true, Some(c)) = (self.json, self.cells.get(cell)) {
                    let result = super::formats::CellResult {
                        cell: c,
                        report: Ok(r),
                    };
                    p.out(super::formats::json_cell(&result));
                }
            }
        }
    }
}

/// The summary table of a matrix: one row per cell.
pub fn summary(out: &dyn Fn(String), cells: &[Cell], reports: &[anyhow::Result<RunReport>]) {
    let kw = cells
        .iter()
        .map(|c| c.kernel.label.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let tw = cells.iter().map(|c| c.test.len()).max().unwrap_or(4).max(4);
    out(format!(
        "{:<kw$}  {:<tw$}  {:<15} {:>6} {:>9}  run directory",
        "kernel", "test", "outcome", "status", "time"
    ));
    for (c, r) in cells.iter().zip(reports) {
        match r {
            Ok(r) => {
                let status = match &r.guest {
                    Some(super::GuestReport::Status(s)) => s.to_string(),
                    _ => "-".to_string(),
                };
                out(format!(
                    "{:<kw$}  {:<tw$}  {:<15} {:>6} {:>8.1}s  {}",
                    c.kernel.label,
                    c.test,
                    r.outcome.label(),
                    status,
                    r.elapsed.as_secs_f64(),
                    r.files.dir.display()
                ));
            }
            Err(e) => out(format!(
                "{:<kw$}  {:<tw$}  {:<15} {:>6} {:>9}  {e:#}",
                c.kernel.label, c.test, "error", "-", "-"
            )),
        }
    }
    let passed = reports
        .iter()
        .filter(|r| matches!(r, Ok(r) if r.outcome == Outcome::Passed))
        .count();
    out(format!("kiln: {passed} of {} cells passed", cells.len()));
}

/// Where the console of a command run (`kiln exec`) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Boot,
    Command,
    Shutdown,
}

/// `kiln exec`'s reporter for one command: on stdout, the command's output and nothing
/// else, as if it had run here (boot messages, kiln's banners and the power-off are left
/// to the run's console.log; the serial line's carriage returns are dropped). Progress and
/// the outcome go to stderr; a non-zero exit status is the process's own.
pub struct CommandReporter<'a> {
    inner: TextReporter<'a>,
    phase: Phase,
    line: Vec<u8>,
}

/// The guest's banners around a test (run-test.sh).
const STARTS: &[u8] = b"kiln: running test ";
const ENDS: &[u8] = b"kiln: test exited with status ";

impl<'a> CommandReporter<'a> {
    /// A reporter writing through `printer`.
    pub fn new(printer: &'a Printer) -> Self {
        CommandReporter {
            inner: TextReporter::new(printer, true),
            phase: Phase::Boot,
            line: Vec::new(),
        }
    }

    /// Takes console bytes; returns what of them goes to stdout.
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            while line.last() == Some(&b'\r') {
                line.pop();
            }
            match self.phase {
                Phase::Boot if line.starts_with(STARTS) => self.phase = Phase::Command,
                Phase::Command if line.starts_with(ENDS) => self.phase = Phase::Shutdown,
                Phase::Command => {
                    out.extend_from_slice(&line);
                    out.push(b'\n');
                }
                _ => {}
            }
        }
        out
    }

    /// What is left of an unfinished last line of the command's, when the run ends.
    fn rest(&mut self) -> Vec<u8> {
        let mut rest = std::mem::take(&mut self.line);
        if self.phase != Phase::Command {
            return Vec::new();
        }
        while rest.last() == Some(&b'\r') {
            rest.pop();
        }
        rest
    }
}

impl Sink for CommandReporter<'_> {
    fn event(&mut self, e: Event<'_>) {
        match e {
            Event::Console(bytes) => {
                let out = self.feed(bytes);
                if !out.is_empty() {
                    self.inner.printer.out_raw(&out);
                }
            }
            Event::Finished(r) => {
                let rest = self.rest();
                if !rest.is_empty() {
                    self.inner.printer.out_raw(&rest);
                }
                let p = self.inner.printer;
                match &r.outcome {
                    Outcome::Passed | Outcome::Failed(_) => {
                        p.step(format!("{} in {:.1}s", r.outcome, r.elapsed.as_secs_f64()))
                    }
                    // kiln's or the kernel's trouble, not the command's: say what and show
                    // the console's end.
                    _ => {
                        p.err(format!("kiln: {}", r.outcome));
                        p.err(format!(
                            "kiln: last lines of the serial console ({}):",
                            r.files.console.display()
                        ));
                        for l in super::console::last_lines(&r.files.console, TAIL_LINES) {
                            p.err(format!("  | {l}"));
                        }
                    }
                }
            }
            other => self.inner.event(other),
        }
    }
}

#[cfg(test)]
mod command_tests {
    use super::*;

    #[test]
    fn only_the_commands_lines_reach_stdout() {
        // The phases, fed in awkward pieces: banners and boot lines are dropped, CRs too.
        let printer = Printer::new(true);
        let mut r = CommandReporter::new(&printer);
        let mut out = Vec::new();
        for piece in [
            &b"[    0.1] boot\r\nkiln: running te"[..],
            b"st exec\r\n[    1.0] a kernel line while it runs\r\nout 1\r\nout",
            b" 2\r\nkiln: test exited with status 0\r\n[    4.2] reboot: Power down\r\n",
        ] {
            out.extend(r.feed(piece));
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[    1.0] a kernel line while it runs\nout 1\nout 2\n"
        );
        assert!(r.rest().is_empty());
        // A last line without a newline still arrives.
        let mut r = CommandReporter::new(&printer);
        assert_eq!(r.feed(b"kiln: running test exec\r\nno newline"), b"");
        assert_eq!(r.rest(), b"no newline");
    }
}
