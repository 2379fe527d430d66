//! TAP a test leaves in its results (BATS writes it with `--formatter tap`): each case's
//! result, so reports show cases and a `not ok` fails the run even when the command that
//! wrote it exited 0.

use std::fmt;

/// How one TAP case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseResult {
    /// `ok`.
    Passed,
    /// `not ok`.
    Failed,
    /// `ok … # SKIP` (or `not ok … # SKIP`).
    Skipped,
    /// `not ok … # TODO`: expected to fail, does not fail the run.
    Todo,
}

/// One TAP test point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// Its number (the line's, or its position when the line has none).
    pub number: u32,
    /// Its description, without the leading `- `.
    pub name: String,
    /// How it ended.
    pub result: CaseResult,
    /// The directive's reason, or the YAML/diagnostic lines that followed a failure.
    pub detail: String,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self.result {
            CaseResult::Passed => "ok",
            CaseResult::Failed => "not ok",
            CaseResult::Skipped => "skipped",
            CaseResult::Todo => "todo",
        };
        write!(f, "{word} {} {}", self.number, self.name)
    }
}

/// A TAP stream, read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tap {
    /// The test points, in order.
    pub cases: Vec<Case>,
    /// The plan's count (`1..N`), if the stream had one.
    pub planned: Option<u32>,
    /// A `Bail out!` line's reason.
    pub bailed: Option<String>,
}

impl Tap {
    /// Reads TAP text: test points, the plan, directives, `Bail out!`; diagnostics
    /// (`# …`) and indented lines after a failure become its detail; anything else is
    /// ignored, as TAP consumers do.
    pub fn parse(text: &str) -> Tap {
        let mut tap = Tap::default();
        for line in text.lines() {
            let trimmed = line.trim_end();
            if let Some(rest) = trimmed.strip_prefix("1..") {
                let n = rest.split_whitespace().next().unwrap_or("");
                tap.planned = n.parse().ok();
                continue;
            }
            if let Some(reason) = trimmed.strip_prefix("Bail out!") {
                tap.bailed = Some(reason.trim().to_string());
                continue;
            }
            let (ok, rest) = if let Some(r) = trimmed.strip_prefix("not ok") {
                (false, r)
            } else if let Some(r) = trimmed.strip_prefix("ok") {
                (true, r)
            } else {
                // Detail of the last failing case.
                if let Some(last) = tap.cases.last_mut() {
                    if last.result == CaseResult::Failed
                        && (line.starts_with(' ') || line.starts_with('#'))
                    {
                        if !last.detail.is_empty() {
                            last.detail.push('\n');
                        }
                        last.detail.push_str(line.trim());
                    }
                }
                continue;
            };
            if !(rest.is_empty() || rest.starts_with(' ')) {
                continue;
            }
            let rest = rest.trim_start();
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            let number = rest[..digits].parse().unwrap_or(tap.cases.len() as u32 + 1);
            let rest = rest[digits..].trim_start();
            let rest = rest.strip_prefix("- ").unwrap_or(rest);
            let (name, directive) = match rest.split_once(" # ") {
                Some((n, d)) => (n, Some(d.trim())),
                None => match rest.strip_prefix("# ") {
                    Some(d) => ("", Some(d.trim())),
                    None => (rest, None),
                },
            };
            let upper = directive.map(str::to_ascii_uppercase).unwrap_or_default();
            let (result, detail) = if upper.starts_with("SKIP") {
                (CaseResult::Skipped, directive.unwrap_or("")[4..].trim())
            } else if upper.starts_with("TODO") {
                (
                    if ok {
                        CaseResult::Passed
                    } else {
                        CaseResult::Todo
                    },
                    directive.unwrap_or("")[4..].trim(),
                )
            } else if ok {
                (CaseResult::Passed, "")
            } else {
                (CaseResult::Failed, "")
            };
            tap.cases.push(Case {
                number,
                name: name.trim().to_string(),
                result,
                detail: detail.to_string(),
            });
        }
        tap
    }

    /// What fails the run: each `not ok` case, a `Bail out!`, fewer cases than planned.
    pub fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .cases
            .iter()
            .filter(|c| c.result == CaseResult::Failed)
            .map(|c| format!("not ok {} {}", c.number, c.name))
            .collect();
        if let Some(b) = &self.bailed {
            out.push(format!("Bail out! {b}"));
        }
        if let Some(p) = self.planned {
            if (self.cases.len() as u32) < p && self.bailed.is_none() {
                out.push(format!("{} of {p} planned cases ran", self.cases.len()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_bats_writes() {
        let text = "1..5\nok 1 boots\nnot ok 2 reads the kmap\n# (in test file t.bats, line 9)\n#   `false' failed\nok 3 skipped one # skip no debugfs\nnot ok 4 known bug # TODO later\nok 5 - dashed name\n";
        let t = Tap::parse(text);
        assert_eq!(t.planned, Some(5));
        assert_eq!(t.cases.len(), 5);
        assert_eq!(t.cases[1].result, CaseResult::Failed);
        assert_eq!(t.cases[1].name, "reads the kmap");
        assert!(t.cases[1].detail.contains("line 9"));
        assert_eq!(t.cases[2].result, CaseResult::Skipped);
        assert_eq!(t.cases[2].detail, "no debugfs");
        assert_eq!(t.cases[3].result, CaseResult::Todo);
        assert_eq!(t.cases[4].name, "dashed name");
        assert_eq!(t.problems(), ["not ok 2 reads the kmap"]);
    }

    #[test]
    fn a_short_run_or_a_bail_out_is_a_problem() {
        let t = Tap::parse("1..3\nok 1 a\n");
        assert_eq!(t.problems(), ["1 of 3 planned cases ran"]);
        let t = Tap::parse("1..3\nok 1 a\nBail out! no disk\n");
        assert_eq!(t.problems(), ["Bail out! no disk"]);
        assert!(Tap::parse("okay\nnot okay\n").cases.is_empty());
    }
}
