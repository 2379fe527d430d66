//! Where commands and reporters write: results to stdout, progress and errors to
//! stderr. A closed stdout (`kiln ls | head`) is not an error and never a panic: the
//! printer notes it and drops further output, and the command decides what it means.

use std::fmt::Display;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Writes lines for a command.
#[derive(Debug, Default)]
pub struct Printer {
    quiet: bool,
    closed: AtomicBool,
}

impl Printer {
    /// A printer; `quiet` silences progress steps (not results, warnings or errors).
    pub fn new(quiet: bool) -> Printer {
        Printer {
            quiet,
            closed: AtomicBool::new(false),
        }
    }

    /// Whether progress steps are silenced.
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// Writes `s` to stdout as is.
    pub fn out_raw(&self, s: &[u8]) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let mut o = std::io::stdout().lock();
        if o.write_all(s).and_then(|_| o.flush()).is_err() {
            self.closed.store(true, Ordering::Relaxed);
        }
    }

    /// Writes one line to stdout.
    pub fn out(&self, line: impl Display) {
        self.out_raw(format!("{line}\n").as_bytes());
    }

    /// Whether stdout was closed by its reader.
    pub fn stdout_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// A progress step on stderr, `kiln: message`, unless quiet.
    pub fn step(&self, msg: impl Display) {
        if !self.quiet {
            self.err(format!("kiln: {msg}"));
        }
    }

    /// A warning on stderr.
    pub fn warn(&self, msg: impl Display) {
        self.err(format!("kiln: warning: {msg}"));
    }

    /// One line on stderr, always.
    pub fn err(&self, line: impl Display) {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}
