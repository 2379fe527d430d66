//! What kiln keeps from a guest before it kills a run that timed out or panicked: a
//! task dump (SysRq t and w, pressed through QEMU's monitor, printed by the kernel on the
//! console), and with `--dump-on-failure` a memory dump (an ELF core) that crash, drgn
//! and gdb open.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::dir::RunDir;
use super::supervise::Ending;
use crate::plan::RunConfig;
use crate::vm::qmp::Qmp;

/// The memory dump's file name in the run directory.
pub const VMCORE: &str = "vmcore";

/// How long a guest may take to print its task dump.
const DUMP_QUIET: Duration = Duration::from_millis(700);
const DUMP_LIMIT: Duration = Duration::from_secs(8);

/// Waits until the console has not grown for [`DUMP_QUIET`], at most [`DUMP_LIMIT`].
fn wait_for_console(console: &Path) {
    let start = Instant::now();
    let mut last = (0, Instant::now());
    while start.elapsed() < DUMP_LIMIT {
        let len = std::fs::metadata(console).map(|m| m.len()).unwrap_or(0);
        if len != last.0 {
            last = (len, Instant::now());
        } else if last.1.elapsed() > DUMP_QUIET {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asks the guest (through the monitor at `qmp`) for what a post-mortem needs, while
/// QEMU still runs. Returns notes for the user.
pub fn before_kill(qmp: &Path, files: &RunDir, config: &RunConfig, why: Ending) -> Vec<String> {
    let mut notes = Vec::new();
    let mut q = match Qmp::connect(qmp, Duration::from_secs(5)) {
        Ok(q) => q,
        Err(e) => {
            notes.push(format!("no post-mortem: {e:#}"));
            return notes;
        }
    };
    if why == Ending::TimedOut {
        // A panicked kernel no longer handles keys; a hung one usually does.
        let mut pressed = true;
        for key in ["t", "w"] {
            pressed &= q.send_keys(&["alt", "sysrq", key]).is_ok();
            wait_for_console(&files.console);
        }
        if pressed {
            notes.push(format!(
                "asked the guest for a task dump (SysRq t and w); it is in {}",
                files.console.display()
            ));
        }
    }
    if config.dump_on_failure {
        let core = files.dir.join(VMCORE);
        let _ = std::fs::remove_file(&core);
        let started = Instant::now();
        let _ = q.set_timeout(Duration::from_secs(300));
        match q.execute(
            "dump-guest-memory",
            json!({ "paging": false, "protocol": format!("file:{}", core.display()) }),
        ) {
            Ok(_) => {
                let vmlinux = config
                    .vmlinux
                    .as_ref()
                    .map(|v| v.display().to_string())
                    .unwrap_or_else(|| "VMLINUX".to_string());
                notes.push(format!(
                    "guest memory dump in {:.1}s: {} (ELF core); open it with `crash {vmlinux} {}` or `drgn -c {} -s {vmlinux}`",
                    started.elapsed().as_secs_f64(),
                    core.display(),
                    core.display(),
                    core.display()
                ));
            }
            Err(e) => notes.push(format!("no memory dump: {e:#}")),
        }
    }
    notes
}
