//! Running a VM: start QEMU in its own process group, watch the clock, the console log
//! and the status channel, and say what happened.

use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::qemu::{self, Console, Launch, RunSpec};

/// What a test run came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// The test ran and exited with this non-zero status.
    Failed(i32),
    TimedOut(Duration),
    /// The kernel panicked; the panic line from the console.
    KernelPanic(String),
    /// QEMU exited with an error before the guest reported anything.
    QemuFailed(String),
    /// The guest shut down without reporting an exit status.
    NoStatus,
}

impl Outcome {
    /// `kiln test`'s exit status: 0 only for passed, the guest's own code for a failed test.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Passed => 0,
            Outcome::Failed(c) => (*c).clamp(1, 255),
            Outcome::TimedOut(_) => 124,
            Outcome::KernelPanic(_) => 125,
            Outcome::QemuFailed(_) => 126,
            Outcome::NoStatus => 127,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed(_) => "failed",
            Outcome::TimedOut(_) => "timed out",
            Outcome::KernelPanic(_) => "kernel panic",
            Outcome::QemuFailed(_) => "QEMU failed",
            Outcome::NoStatus => "no status",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Passed => write!(f, "PASSED"),
            Outcome::Failed(c) => write!(f, "FAILED: the test exited with status {c}"),
            Outcome::TimedOut(d) => write!(f, "TIMED OUT after {:.0?}; QEMU was killed", d),
            Outcome::KernelPanic(line) => write!(f, "KERNEL PANIC: {line}"),
            Outcome::QemuFailed(msg) => write!(f, "QEMU FAILED: {msg}"),
            Outcome::NoStatus => write!(
                f,
                "NO STATUS: the guest shut down without reporting an exit status"
            ),
        }
    }
}

#[derive(Debug)]
pub struct RunResult {
    pub outcome: Outcome,
    pub elapsed: Duration,
    pub console_log: PathBuf,
    /// Set when the guest reported a status but then failed to power off.
    pub hung_after_status: bool,
}

/// Files a run writes, in one directory per image.
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub dir: PathBuf,
    pub console: PathBuf,
    pub status_uart: PathBuf,
    pub status_virtio: PathBuf,
    pub qemu_stderr: PathBuf,
}

impl RunFiles {
    pub fn new(dir: &Path) -> RunFiles {
        RunFiles {
            dir: dir.to_path_buf(),
            console: dir.join("console.log"),
            status_uart: dir.join("status-uart"),
            status_virtio: dir.join("status-virtio"),
            qemu_stderr: dir.join("qemu-stderr.log"),
        }
    }

    /// Empties the files of a previous run so stale status lines are never read.
    pub fn prepare(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        for f in [
            &self.console,
            &self.status_uart,
            &self.status_virtio,
            &self.qemu_stderr,
        ] {
            std::fs::write(f, b"").with_context(|| format!("creating {}", f.display()))?;
        }
        Ok(())
    }
}

/// Process groups of running VMs, killed if kiln itself is interrupted.
static RUNNING: Mutex<Vec<i32>> = Mutex::new(Vec::new());

pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if let Ok(groups) = RUNNING.lock() {
            for pg in groups.iter() {
                // SAFETY: signalling process groups kiln created.
                unsafe { libc::kill(-pg, libc::SIGKILL) };
            }
        }
        eprintln!("\nkiln: interrupted; QEMU stopped");
        std::process::exit(130);
    });
}

pub struct RunOptions {
    pub timeout: Duration,
    /// Copy the console to stdout as it arrives.
    pub stream_console: bool,
}

/// Starts QEMU for a test and waits for it to finish, time out, or fail.
pub fn run_test(
    launch: &Launch,
    spec: &RunSpec,
    files: &RunFiles,
    opts: &RunOptions,
) -> Result<RunResult> {
    files.prepare()?;
    let args = qemu::command(launch, spec);
    let stderr = std::fs::File::create(&files.qemu_stderr)?;
    let start = Instant::now();
    let mut child = Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (is QEMU installed? apt-get install qemu-system-x86)",
                args[0]
            )
        })?;
    let pgid = child.id() as i32;
    if let Ok(mut g) = RUNNING.lock() {
        g.push(pgid);
    }
    let mut tail = ConsoleTail::new(&files.console, opts.stream_console);
    let mut timed_out = false;
    let mut hung_after_status = false;
    let exit = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        tail.pump();
        if start.elapsed() > opts.timeout {
            timed_out = true;
            break None;
        }
        // A guest that reported its status but does not power off gets a grace period.
        if read_status(files).is_some() {
            let reported = Instant::now();
            while reported.elapsed() < Duration::from_secs(10) {
                if let Some(status) = child.try_wait()? {
                    tail.pump();
                    return finish(files, &mut tail, start, Some(status), false, false, pgid);
                }
                tail.pump();
                std::thread::sleep(Duration::from_millis(50));
            }
            hung_after_status = true;
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if exit.is_none() {
        // SAFETY: signalling the process group we created for QEMU.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait();
    }
    tail.pump();
    finish(
        files,
        &mut tail,
        start,
        exit,
        timed_out,
        hung_after_status,
        pgid,
    )
}

fn finish(
    files: &RunFiles,
    tail: &mut ConsoleTail,
    start: Instant,
    exit: Option<std::process::ExitStatus>,
    timed_out: bool,
    hung_after_status: bool,
    pgid: i32,
) -> Result<RunResult> {
    if let Ok(mut g) = RUNNING.lock() {
        g.retain(|p| *p != pgid);
    }
    tail.pump();
    let elapsed = start.elapsed();
    let console = std::fs::read(&files.console).unwrap_or_default();
    let console = String::from_utf8_lossy(&console);
    let outcome = match read_status(files) {
        Some(0) => Outcome::Passed,
        Some(code) => Outcome::Failed(code),
        None => {
            if let Some(line) = panic_line(&console) {
                Outcome::KernelPanic(line)
            } else if timed_out {
                Outcome::TimedOut(elapsed)
            } else {
                match exit {
                    Some(s) if !s.success() => {
                        let err = std::fs::read_to_string(&files.qemu_stderr).unwrap_or_default();
                        let err = err.trim();
                        Outcome::QemuFailed(if err.is_empty() {
                            format!("QEMU exited with {s}")
                        } else {
                            err.to_string()
                        })
                    }
                    _ => Outcome::NoStatus,
                }
            }
        }
    };
    Ok(RunResult {
        outcome,
        elapsed,
        console_log: files.console.clone(),
        hung_after_status,
    })
}

/// The status the guest reported, from whichever channel carried it.
pub fn read_status(files: &RunFiles) -> Option<i32> {
    for f in [&files.status_virtio, &files.status_uart] {
        if let Ok(text) = std::fs::read_to_string(f) {
            if let Some(code) = parse_status(&text) {
                return Some(code);
            }
        }
    }
    None
}

pub fn parse_status(text: &str) -> Option<i32> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("KILN_EXIT_STATUS="))
        .filter_map(|v| v.trim().parse::<i32>().ok())
        .next_back()
}

/// The kernel's panic line, if the console shows one.
pub fn panic_line(console: &str) -> Option<String> {
    console
        .lines()
        .find(|l| l.contains("Kernel panic - not syncing"))
        .map(|l| {
            l.split_once("] ")
                .map(|(_, rest)| rest)
                .unwrap_or(l)
                .trim()
                .to_string()
        })
}

/// The last `n` lines of the console log.
pub fn last_lines(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect()
}

/// What the test printed: the console between the wrapper's start and end markers.
pub fn test_output(path: &Path) -> Option<Vec<String>> {
    let text = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(&text);
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    let start = lines.by_ref().find(|l| l.contains("kiln: running test"))?;
    // Under systemd the test's lines come through the journal as "[time] run-test[pid]: …",
    // interleaved with everything else on the console; keep only those, unprefixed.
    let journal_prefix = start.find("run-test[").map(|_| "run-test[");
    let mut out = Vec::new();
    for l in lines {
        if l.contains("kiln: test exited with status") {
            break;
        }
        match journal_prefix {
            Some(p) => {
                if let Some(i) = l.find(p) {
                    let rest = &l[i..];
                    if let Some(j) = rest.find("]: ") {
                        out.push(rest[j + 3..].to_string());
                    }
                }
            }
            None => out.push(l.to_string()),
        }
    }
    Some(out)
}

/// Follows the console log while QEMU runs.
struct ConsoleTail {
    file: Option<std::fs::File>,
    path: PathBuf,
    pos: u64,
    echo: bool,
}

impl ConsoleTail {
    fn new(path: &Path, echo: bool) -> ConsoleTail {
        ConsoleTail {
            file: None,
            path: path.to_path_buf(),
            pos: 0,
            echo,
        }
    }

    fn pump(&mut self) {
        if !self.echo {
            return;
        }
        if self.file.is_none() {
            self.file = std::fs::File::open(&self.path).ok();
        }
        let Some(f) = self.file.as_mut() else { return };
        if f.seek(SeekFrom::Start(self.pos)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if let Ok(n) = f.read_to_end(&mut buf) {
            self.pos += n as u64;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&buf);
            let _ = out.flush();
        }
    }
}

/// Runs QEMU in the foreground with the console on the terminal. Returns the status the
/// guest reported, if any.
pub fn run_interactive(launch: &Launch, spec: &RunSpec, files: &RunFiles) -> Result<Option<i32>> {
    files.prepare()?;
    let args = qemu::command(launch, spec);
    debug_assert!(matches!(spec.console, Console::Interactive));
    let status = Command::new(&args[0])
        .args(&args[1..])
        .status()
        .with_context(|| {
            format!(
                "starting {} (is QEMU installed? apt-get install qemu-system-x86)",
                args[0]
            )
        })?;
    if !status.success() {
        anyhow::bail!("QEMU exited with {status}");
    }
    Ok(read_status(files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status("noise\r\nKILN_EXIT_STATUS=3\r\n"), Some(3));
        assert_eq!(parse_status("KILN_EXIT_STATUS=0\n"), Some(0));
        assert_eq!(parse_status("KILN_EXIT_STATUS=x\n"), None);
        assert_eq!(parse_status(""), None);
    }

    #[test]
    fn finds_panics() {
        let log = "[    1.0] foo\n[    2.345] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n";
        assert_eq!(
            panic_line(log).unwrap(),
            "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"
        );
        assert_eq!(panic_line("all fine"), None);
    }

    #[test]
    fn exit_codes_are_distinct_for_non_test_outcomes() {
        assert_eq!(Outcome::Passed.exit_code(), 0);
        assert_eq!(Outcome::Failed(3).exit_code(), 3);
        assert_eq!(Outcome::Failed(300).exit_code(), 255);
        assert_eq!(Outcome::TimedOut(Duration::from_secs(1)).exit_code(), 124);
    }
}

#[cfg(test)]
mod output_tests {
    use super::*;

    #[test]
    fn test_output_from_a_systemd_console() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.log");
        std::fs::write(
            &p,
            "[ 1.0] boot\n[ 16.8] run-test[311]: kiln: running test[ 16.9] ACPI: noise\n[ 17.0] run-test[396]: hello\n[ 17.1] audit: x\n[!p]104[6n[ 20.8] run-test[396]: second\n[ 21.3] run-test[311]: kiln: test exited with status 0\n",
        )
        .unwrap();
        assert_eq!(test_output(&p).unwrap(), vec!["hello", "second"]);
        std::fs::write(
            &p,
            "kiln: running test\nraw line\nkiln: test exited with status 1\n",
        )
        .unwrap();
        assert_eq!(test_output(&p).unwrap(), vec!["raw line"]);
    }
}
