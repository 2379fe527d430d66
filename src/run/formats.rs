//! Machine-readable reports of finished cells: JSON lines, JUnit XML and TAP. Each is a
//! pure function of the results, so the text reporter, CI systems and tests all see the
//! same outcomes.

use std::fmt::Write as _;

use serde_json::json;

use super::matrix::Cell;
use super::tap::{Case, CaseResult};
use super::{GuestReport, Outcome, RunReport};

/// Lines of console kept in a JUnit failure.
const JUNIT_TAIL: usize = 40;

/// One finished cell, as the formats describe it.
pub struct CellResult<'a> {
    /// The cell.
    pub cell: &'a Cell,
    /// Its report, or why it could not run.
    pub report: Result<&'a RunReport, &'a anyhow::Error>,
}

impl<'a> CellResult<'a> {
    /// A cell's result from what the matrix returned.
    pub fn new(cell: &'a Cell, r: &'a anyhow::Result<RunReport>) -> Self {
        CellResult {
            cell,
            report: r.as_ref(),
        }
    }
}

impl CellResult<'_> {
    fn outcome_label(&self) -> &'static str {
        match self.report {
            Ok(r) => r.outcome.label(),
            Err(_) => "error",
        }
    }

    fn passed(&self) -> bool {
        matches!(self.report, Ok(r) if r.outcome == Outcome::Passed)
    }

    fn message(&self) -> String {
        match self.report {
            Ok(r) => r.outcome.to_string(),
            Err(e) => format!("{e:#}"),
        }
    }
}

/// A cell as one JSON object (one line of `--json`).
pub fn json_cell(c: &CellResult) -> serde_json::Value {
    let (exit_code, guest, secs, dir, console) = match c.report {
        Ok(r) => (
            Some(r.outcome.exit_code()),
            match &r.guest {
                Some(GuestReport::Status(s)) => Some(*s),
                _ => None,
            },
            Some(r.elapsed.as_secs_f64()),
            Some(r.files.dir.display().to_string()),
            Some(r.files.console.display().to_string()),
        ),
        Err(_) => (None, None, None, None, None),
    };
    json!({
        "type": "cell",
        "kernel": c.cell.kernel.label,
        "kernel_path": c.cell.kernel.image.display().to_string(),
        "test": c.cell.test,
        "outcome": c.outcome_label(),
        "passed": c.passed(),
        "message": c.message(),
        "exit_code": exit_code,
        "guest_status": guest,
        "duration_s": secs,
        "run_dir": dir,
        "console_log": console,
        "cases": tap_cases(c).iter().map(|t| json!({
            "number": t.number,
            "name": t.name,
            "result": match t.result {
                CaseResult::Passed => "ok",
                CaseResult::Failed => "not ok",
                CaseResult::Skipped => "skip",
                CaseResult::Todo => "todo",
            },
        })).collect::<Vec<_>>(),
    })
}

/// The summary line of `--json`.
pub fn json_summary(cells: &[CellResult], exit_code: i32) -> serde_json::Value {
    let passed = cells.iter().filter(|c| c.passed()).count();
    json!({
        "type": "summary",
        "cells": cells.len(),
        "passed": passed,
        "not_passed": cells.len() - passed,
        "exit_code": exit_code,
    })
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 allows only these control characters; consoles have others.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// The TAP cases of a cell's run.
fn tap_cases<'a>(c: &'a CellResult) -> &'a [Case] {
    c.report.map(|r| r.cases.as_slice()).unwrap_or(&[])
}

/// JUnit XML: one `<testsuite>` per kernel, one `<testcase>` per test, followed by one
/// per case of the TAP the test left (named `TEST: CASE`). A cell that did not pass is a
/// `<failure>` whose type is the outcome (an `<error>` when QEMU or kiln failed,
/// `<skipped>` for status 77), with the console's tail.
pub fn junit(name: &str, cells: &[CellResult]) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let secs = |c: &CellResult| c.report.map(|r| r.elapsed.as_secs_f64()).unwrap_or(0.0);
    let count = |cs: &[&CellResult], k: Kind| {
        let in_cases = |c: &&CellResult| {
            tap_cases(c)
                .iter()
                .filter(|t| match k {
                    Kind::Failure => t.result == CaseResult::Failed,
                    Kind::Skipped => t.result == CaseResult::Skipped,
                    Kind::Passed => matches!(t.result, CaseResult::Passed | CaseResult::Todo),
                    Kind::Error => false,
                })
                .count()
        };
        cs.iter().filter(|c| kind(c) == k).count() + cs.iter().map(in_cases).sum::<usize>()
    };
    let tests =
        |cs: &[&CellResult]| cs.len() + cs.iter().map(|c| tap_cases(c).len()).sum::<usize>();
    let all: Vec<&CellResult> = cells.iter().collect();
    let _ = writeln!(
        x,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
        xml_escape(name),
        tests(&all),
        count(&all, Kind::Failure),
        count(&all, Kind::Error),
        count(&all, Kind::Skipped),
        all.iter().map(|c| secs(c)).sum::<f64>(),
    );
    let mut kernels: Vec<&str> = Vec::new();
    for c in cells {
        if !kernels.contains(&c.cell.kernel.label.as_str()) {
            kernels.push(&c.cell.kernel.label);
        }
    }
    for k in kernels {
        let suite: Vec<&CellResult> = cells.iter().filter(|c| c.cell.kernel.label == k).collect();
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
            xml_escape(k),
            tests(&suite),
            count(&suite, Kind::Failure),
            count(&suite, Kind::Error),
            count(&suite, Kind::Skipped),
            suite.iter().map(|c| secs(c)).sum::<f64>(),
        );
        for c in suite {
            let _ = writeln!(
                x,
                "    <testcase name=\"{}\" classname=\"{}.{}\" time=\"{:.3}\">",
                xml_escape(&c.cell.test),
                xml_escape(name),
                xml_escape(k),
                secs(c),
            );
            let msg = xml_escape(&c.message());
            let ty = c.outcome_label();
            match kind(c) {
                Kind::Passed => {}
                Kind::Skipped => {
                    let _ = writeln!(x, "      <skipped message=\"{msg}\"/>");
                }
                Kind::Failure => {
                    let _ = writeln!(x, "      <failure type=\"{ty}\" message=\"{msg}\"/>");
                }
                Kind::Error => {
                    let _ = writeln!(x, "      <error type=\"{ty}\" message=\"{msg}\"/>");
                }
            }
            if let Ok(r) = c.report {
                let tail = super::console::last_lines(&r.files.console, JUNIT_TAIL).join("\n");
                let _ = writeln!(x, "      <system-out>{}</system-out>", xml_escape(&tail));
            }
            x.push_str("    </testcase>\n");
            for t in tap_cases(c) {
                let _ = writeln!(
                    x,
                    "    <testcase name=\"{}: {}\" classname=\"{}.{}.{}\" time=\"0.000\">",
                    xml_escape(&c.cell.test),
                    xml_escape(&format!("{} {}", t.number, t.name)),
                    xml_escape(name),
                    xml_escape(k),
                    xml_escape(&c.cell.test),
                );
                match t.result {
                    CaseResult::Failed => {
                        let _ = writeln!(
                            x,
                            "      <failure type=\"not ok\" message=\"{}\">{}</failure>",
                            xml_escape(&format!("not ok {} {}", t.number, t.name)),
                            xml_escape(&t.detail)
                        );
                    }
                    CaseResult::Skipped => {
                        let _ =
                            writeln!(x, "      <skipped message=\"{}\"/>", xml_escape(&t.detail));
                    }
                    CaseResult::Passed | CaseResult::Todo => {}
                }
                x.push_str("    </testcase>\n");
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

#[derive(PartialEq, Eq)]
enum Kind {
    Passed,
    Skipped,
    Failure,
    Error,
}

fn kind(c: &CellResult) -> Kind {
    match c.report {
        Ok(r) => match &r.outcome {
            Outcome::Passed => Kind::Passed,
            Outcome::Failed(77) => Kind::Skipped,
            Outcome::QemuFailed(_) | Outcome::Infrastructure(_) | Outcome::Cancelled => Kind::Error,
            _ => Kind::Failure,
        },
        Err(_) => Kind::Error,
    }
}

/// TAP version 13: a plan, then `ok`/`not ok` per cell; status 77 is `# SKIP`.
pub fn tap(cells: &[CellResult]) -> String {
    let mut t = format!("TAP version 13\n1..{}\n", cells.len());
    for (i, c) in cells.iter().enumerate() {
        let desc = c.cell.name().replace('#', "\\#");
        let line = match kind(c) {
            Kind::Passed => format!("ok {} - {desc}", i + 1),
            Kind::Skipped => format!("ok {} - {desc} # SKIP status 77", i + 1),
            _ => format!(
                "not ok {} - {desc}\n  ---\n  outcome: {}\n  message: |-\n{}\n  ...",
                i + 1,
                c.outcome_label(),
                yaml_block(&c.message())
            ),
        };
        t.push_str(&line);
        t.push('\n');
    }
    t
}

/// `text` as the lines of a YAML literal block under a key at TAP's two-space indent:
/// nothing in it needs escaping.
fn yaml_block(text: &str) -> String {
    // A literal block takes its indentation from its first line, so that line must not
    // start with spaces of its own.
    let lines: Vec<String> = text
        .trim_start()
        .lines()
        .map(|l| {
            let l: String = l
                .chars()
                .filter(|c| !c.is_control() || *c == '\t')
                .collect();
            format!("    {l}")
        })
        .collect();
    if lines.is_empty() {
        "    ".to_string()
    } else {
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escapes_markup_and_drops_control_characters() {
        assert_eq!(
            xml_escape("a<b & \"c\" \u{1b}[0m"),
            "a&lt;b &amp; &quot;c&quot; [0m"
        );
    }
}
