//! What a run came to, and the one table that maps outcomes to exit statuses.

use std::fmt;
use std::time::Duration;

/// What a test run came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The test exited 0.
    Passed,
    /// The test ran and exited with this non-zero status.
    Failed(i32),
    /// kiln's own step in the guest failed (the root file system or the results disk
    /// could not be found or mounted); the guest's message.
    Infrastructure(String),
    /// The time limit passed; QEMU was killed.
    TimedOut(Duration),
    /// The kernel panicked; the panic line from the console.
    KernelPanic(String),
    /// QEMU could not start, or exited with an error before the guest reported anything.
    QemuFailed(String),
    /// The guest shut down without reporting an exit status.
    NoStatus,
    /// The caller cancelled the run (Ctrl-C); QEMU was killed.
    Cancelled,
    /// The kernel lacks what the run needs (from its configuration); not booted.
    Preflight(String),
    /// The test passed, but the kernel reported a splat (the console line).
    KernelSplat(String),
    /// The test passed, but did not leave the result files it must (their names).
    MissingResults(String),
    /// The test passed, but its TAP has `not ok` cases (or bailed out, or ran fewer
    /// cases than planned): what went wrong.
    CasesFailed(String),
}

/// The highest test status that passes through to kiln's exit status unchanged.
pub const MAX_PASSTHROUGH: i32 = 119;
/// Exit status for a test status above [`MAX_PASSTHROUGH`].
pub const EXIT_HIGH_STATUS: i32 = 123;
/// Exit status for [`Outcome::Infrastructure`].
pub const EXIT_INFRASTRUCTURE: i32 = 120;
/// Exit status for [`Outcome::KernelSplat`].
pub const EXIT_KERNEL_SPLAT: i32 = 121;
/// Exit status for [`Outcome::Preflight`].
pub const EXIT_PREFLIGHT: i32 = 122;
/// Exit status for [`Outcome::TimedOut`].
pub const EXIT_TIMED_OUT: i32 = 124;
/// Exit status for [`Outcome::KernelPanic`].
pub const EXIT_KERNEL_PANIC: i32 = 125;
/// Exit status for [`Outcome::QemuFailed`].
pub const EXIT_QEMU_FAILED: i32 = 126;
/// Exit status for [`Outcome::NoStatus`].
pub const EXIT_NO_STATUS: i32 = 127;
/// Exit status for [`Outcome::MissingResults`].
pub const EXIT_MISSING_RESULTS: i32 = 128;
/// Exit status for [`Outcome::CasesFailed`].
pub const EXIT_CASES_FAILED: i32 = 129;
/// Exit status for [`Outcome::Cancelled`], as a shell reports SIGINT.
pub const EXIT_CANCELLED: i32 = 130;

impl Outcome {
    /// The exit status of a single run: 0 only for passed; a failed test's own status
    /// when it is at most [`MAX_PASSTHROUGH`], else [`EXIT_HIGH_STATUS`]; one status for
    /// each other outcome. No number means two things.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Passed => 0,
            Outcome::Failed(c) if (1..=MAX_PASSTHROUGH).contains(c) => *c,
            Outcome::Failed(_) => EXIT_HIGH_STATUS,
            Outcome::Infrastructure(_) => EXIT_INFRASTRUCTURE,
            Outcome::TimedOut(_) => EXIT_TIMED_OUT,
            Outcome::KernelPanic(_) => EXIT_KERNEL_PANIC,
            Outcome::QemuFailed(_) => EXIT_QEMU_FAILED,
            Outcome::NoStatus => EXIT_NO_STATUS,
            Outcome::Cancelled => EXIT_CANCELLED,
            Outcome::Preflight(_) => EXIT_PREFLIGHT,
            Outcome::KernelSplat(_) => EXIT_KERNEL_SPLAT,
            Outcome::MissingResults(_) => EXIT_MISSING_RESULTS,
            Outcome::CasesFailed(_) => EXIT_CASES_FAILED,
        }
    }

    /// A short name, for tables.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed(_) => "failed",
            Outcome::Infrastructure(_) => "infrastructure",
            Outcome::TimedOut(_) => "timed out",
            Outcome::KernelPanic(_) => "kernel panic",
            Outcome::QemuFailed(_) => "QEMU failed",
            Outcome::NoStatus => "no status",
            Outcome::Cancelled => "cancelled",
            Outcome::Preflight(_) => "preflight",
            Outcome::KernelSplat(_) => "kernel splat",
            Outcome::MissingResults(_) => "missing results",
            Outcome::CasesFailed(_) => "cases failed",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Passed => write!(f, "PASSED"),
            Outcome::Failed(c) if *c > MAX_PASSTHROUGH => write!(
                f,
                "FAILED: the test exited with status {c} (kiln exits {EXIT_HIGH_STATUS}: statuses above {MAX_PASSTHROUGH} are kiln's own)"
            ),
            Outcome::Failed(c) => write!(f, "FAILED: the test exited with status {c}"),
            Outcome::Infrastructure(m) => write!(f, "INFRASTRUCTURE: kiln's step in the guest failed: {m}"),
            Outcome::TimedOut(d) => write!(f, "TIMED OUT after {:.0?}; QEMU was killed", d),
            Outcome::KernelPanic(line) => write!(f, "KERNEL PANIC: {line}"),
            Outcome::QemuFailed(msg) => write!(f, "QEMU FAILED: {msg}"),
            Outcome::NoStatus => write!(
                f,
                "NO STATUS: the guest shut down without reporting an exit status"
            ),
            Outcome::Cancelled => write!(f, "CANCELLED: interrupted; QEMU was killed"),
            Outcome::Preflight(m) => write!(f, "PREFLIGHT: not booted; the kernel lacks what the run needs: {m}"),
            Outcome::KernelSplat(l) => write!(f, "KERNEL SPLAT: the test passed, but the kernel reported: {l}"),
            Outcome::MissingResults(m) => write!(f, "MISSING RESULTS: the test passed, but did not leave {m}"),
            Outcome::CasesFailed(m) => write!(f, "CASES FAILED: the test exited 0, but its TAP says: {m}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_meaning_per_status() {
        let all = [
            Outcome::Passed,
            Outcome::Failed(3),
            Outcome::Failed(300),
            Outcome::Infrastructure("x".into()),
            Outcome::TimedOut(Duration::from_secs(1)),
            Outcome::KernelPanic("p".into()),
            Outcome::QemuFailed("q".into()),
            Outcome::NoStatus,
            Outcome::Cancelled,
            Outcome::Preflight("p".into()),
            Outcome::KernelSplat("s".into()),
            Outcome::MissingResults("r".into()),
            Outcome::CasesFailed("c".into()),
        ];
        let codes: Vec<i32> = all.iter().map(Outcome::exit_code).collect();
        assert_eq!(
            codes,
            [0, 3, 123, 120, 124, 125, 126, 127, 130, 122, 121, 128, 129]
        );
        for c in 1..=MAX_PASSTHROUGH {
            assert_eq!(Outcome::Failed(c).exit_code(), c);
        }
        for c in [120, 123, 124, 125, 126, 127, 255] {
            assert_eq!(Outcome::Failed(c).exit_code(), EXIT_HIGH_STATUS);
        }
    }
}
