//! Supervising QEMU: start it in its own process group, watch the clock, the status
//! channel and the caller's cancellation, and kill the whole group when the run is over,
//! whatever path ends it.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::console::{read_report, ConsoleTail};
use super::dir::RunDir;

/// How long a guest that reported its status may take to power off.
pub const POWEROFF_GRACE: Duration = Duration::from_secs(10);

/// Cancels runs from outside (a Ctrl-C handler holds a clone). Cancelling kills every
/// QEMU process group the runs registered, at once, and makes the runs return
/// [`Outcome::Cancelled`](super::Outcome::Cancelled).
#[derive(Clone, Default)]
pub struct Cancel {
    inner: Arc<CancelInner>,
}

#[derive(Default)]
struct CancelInner {
    cancelled: AtomicBool,
    groups: Mutex<Vec<i32>>,
    holds: std::sync::atomic::AtomicUsize,
}

/// Keeps [`Cancel::running`] true while it lives: a matrix between two cells is still
/// running, and must be let finish its reports rather than be exited.
pub struct Hold<'a>(&'a Cancel);

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.0.inner.holds.fetch_sub(1, Ordering::SeqCst);
    }
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group kiln created; it has
    // no memory effects.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

impl Cancel {
    /// A token that Ctrl-C (and SIGTERM: a CI runner's timeout sends it) cancels: running
    /// VMs end as "cancelled" (exit 130); with none running, or on a second signal,
    /// kiln exits at once with 130.
    pub fn on_interrupt() -> Cancel {
        let cancel = Cancel::new();
        let c = cancel.clone();
        let _ = ctrlc::set_handler(move || {
            let again = c.is_cancelled();
            let running = c.running();
            c.cancel();
            if again || !running {
                eprintln!("\nkiln: interrupted");
                std::process::exit(130);
            }
        });
        cancel
    }

    /// A token nothing has cancelled.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Cancels every run using this token and kills their QEMU process groups.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        if let Ok(groups) = self.inner.groups.lock() {
            for pg in groups.iter() {
                kill_group(*pg);
            }
        }
    }

    /// Whether [`cancel`](Cancel::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Whether any run using this token has a QEMU running now, or a [`Hold`] is alive.
    pub fn running(&self) -> bool {
        self.inner.holds.load(Ordering::SeqCst) > 0
            || self.inner.groups.lock().is_ok_and(|g| !g.is_empty())
    }

    /// Marks work in progress that handles cancelling itself, until the hold is dropped.
    pub fn hold(&self) -> Hold<'_> {
        self.inner.holds.fetch_add(1, Ordering::SeqCst);
        Hold(self)
    }

    fn register(&self, pgid: i32) {
        if let Ok(mut g) = self.inner.groups.lock() {
            g.push(pgid);
        }
    }

    fn unregister(&self, pgid: i32) {
        if let Ok(mut g) = self.inner.groups.lock() {
            g.retain(|p| *p != pgid);
        }
    }
}

/// A started QEMU. Dropping it kills its process group, so no error path and no panic
/// leaves a guest running.
struct Guard<'a> {
    child: Child,
    pgid: i32,
    cancel: &'a Cancel,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        kill_group(self.pgid);
        let _ = self.child.wait();
        self.cancel.unregister(self.pgid);
    }
}

/// Why a supervised run is ending early, told to [`Hooks::before_kill`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The time limit passed.
    TimedOut,
    /// The console shows a kernel panic, and the guest was told to wait (panic=0).
    Panicked,
}

/// How a supervised QEMU ended.
#[derive(Debug)]
pub struct Ended {
    /// QEMU's exit status, when it exited by itself.
    pub exit: Option<ExitStatus>,
    /// The time limit passed.
    pub timed_out: bool,
    /// The guest reported a status but did not power off within [`POWEROFF_GRACE`].
    pub hung_after_status: bool,
    /// The caller cancelled.
    pub cancelled: bool,
    /// The console showed a panic and the run was ended for it.
    pub panicked: bool,
    /// Wall time from start to end.
    pub elapsed: Duration,
}

/// What the caller hears from a supervised run.
pub struct Hooks<'a> {
    /// QEMU started with this pid.
    pub on_start: &'a mut dyn FnMut(u32),
    /// Console bytes, as they arrive.
    pub on_console: &'a mut dyn FnMut(&[u8]),
    /// The run is about to be ended for this reason; QEMU still runs (for a task dump
    /// or a memory dump through its monitor).
    pub before_kill: &'a mut dyn FnMut(Ending),
    /// End the run when the console shows a panic (the guest waits instead of
    /// powering off).
    pub end_on_panic: bool,
}

/// The QEMU command, made to die with the thread that started it (so a killed kiln
/// leaves no guest behind, whatever signal killed it).
fn command(args: &[String]) -> Command {
    let mut c = Command::new(&args[0]);
    c.args(&args[1..]);
    // SAFETY: prctl(2) is async-signal-safe and touches only the child's own state.
    unsafe {
        c.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

fn cannot_start(program: &str, e: std::io::Error) -> String {
    format!("cannot start {program}: {e} (is QEMU installed? apt-get install qemu-system-x86)")
}

/// Runs `args` with the console and status channel in `files`, until QEMU exits, the
/// guest reports and powers off, `timeout` passes, or `cancel` fires. Err: QEMU could
/// not be started.
pub fn supervise(
    args: &[String],
    files: &RunDir,
    timeout: Duration,
    cancel: &Cancel,
    hooks: Hooks<'_>,
) -> Result<Ended, String> {
    let stderr = std::fs::File::create(&files.qemu_stderr)
        .map_err(|e| format!("creating {}: {e}", files.qemu_stderr.display()))?;
    let start = Instant::now();
    let child = command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|e| cannot_start(&args[0], e))?;
    let pgid = child.id() as i32;
    cancel.register(pgid);
    (hooks.on_start)(child.id());
    let mut guard = Guard {
        child,
        pgid,
        cancel,
    };
    let mut tail = ConsoleTail::new(&files.console);
    // The last few KiB of console, where a panic line is looked for.
    let mut recent: Vec<u8> = Vec::new();
    let on_console = hooks.on_console;
    let mut pump = |tail: &mut ConsoleTail, recent: &mut Vec<u8>| {
        let b = tail.read_new();
        if !b.is_empty() {
            on_console(&b);
            recent.extend_from_slice(&b);
            let excess = recent.len().saturating_sub(8192);
            recent.drain(..excess);
        }
    };
    let channels = [files.status_virtio.as_path(), files.status_uart.as_path()];
    let mut ended = Ended {
        exit: None,
        timed_out: false,
        hung_after_status: false,
        cancelled: false,
        panicked: false,
        elapsed: Duration::ZERO,
    };
    let mut reported: Option<Instant> = None;
    loop {
        pump(&mut tail, &mut recent);
        // Before looking at QEMU: cancelling kills it, and that exit is the cancel's.
        if cancel.is_cancelled() {
            ended.cancelled = true;
            break;
        }
        match guard.child.try_wait() {
            Ok(Some(status)) => {
                ended.exit = Some(status);
                ended.cancelled = cancel.is_cancelled();
                break;
            }
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for QEMU: {e}")),
        }
        if start.elapsed() > timeout {
            ended.timed_out = true;
            (hooks.before_kill)(Ending::TimedOut);
            break;
        }
        if hooks.end_on_panic
            && super::console::panic_line(&String::from_utf8_lossy(&recent)).is_some()
        {
            ended.panicked = true;
            (hooks.before_kill)(Ending::Panicked);
            break;
        }
        match reported {
            None if read_report(&channels).is_some() => reported = Some(Instant::now()),
            Some(at) if at.elapsed() > POWEROFF_GRACE => {
                ended.hung_after_status = true;
                break;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(guard);
    pump(&mut tail, &mut recent);
    ended.elapsed = start.elapsed();
    Ok(ended)
}

/// Runs `args` in the foreground with the terminal as its console (QEMU's stdio), and
/// waits for it; `on_start` hears its pid. Err: QEMU could not be started.
pub fn foreground(args: &[String], on_start: &mut dyn FnMut(u32)) -> Result<ExitStatus, String> {
    let mut child = command(args)
        .spawn()
        .map_err(|e| cannot_start(&args[0], e))?;
    on_start(child.id());
    child.wait().map_err(|e| format!("waiting for QEMU: {e}"))
}

/// Starts `args` in the background, in a session of its own with no terminal, its
/// console in `files` and the run directory's lock passed on (so the directory is not
/// pruned while QEMU runs). Waits `settle` for QEMU to fail early. Ok: its pid.
pub fn detach(args: &[String], files: &RunDir, settle: Duration) -> Result<u32, String> {
    let stderr = std::fs::File::create(&files.qemu_stderr)
        .map_err(|e| format!("creating {}: {e}", files.qemu_stderr.display()))?;
    let lock = files.lock_fd();
    let mut c = Command::new(&args[0]);
    c.args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    // SAFETY: setsid(2) and fcntl(2) are async-signal-safe; they change only the child.
    unsafe {
        c.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = lock {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            }
            Ok(())
        });
    }
    let mut child = c.spawn().map_err(|e| cannot_start(&args[0], e))?;
    let start = Instant::now();
    while start.elapsed() < settle {
        if let Ok(Some(status)) = child.try_wait() {
            let err = std::fs::read_to_string(&files.qemu_stderr).unwrap_or_default();
            return Err(if err.trim().is_empty() {
                format!("QEMU exited at once with {status}")
            } else {
                err.trim().to_string()
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Nobody waits for it now; when it exits, init reaps it.
    let pid = child.id();
    std::mem::forget(child);
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(on_console: &mut dyn FnMut(&[u8])) -> Hooks<'_> {
        Hooks {
            on_start: Box::leak(Box::new(|_| {})),
            on_console,
            before_kill: Box::leak(Box::new(|_| {})),
            end_on_panic: false,
        }
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    fn files() -> (tempfile::TempDir, RunDir) {
        let d = tempfile::tempdir().unwrap();
        let rd = RunDir::create(&d.path().join("r.runs"), &d.path().join("r.run")).unwrap();
        (d, rd)
    }

    #[test]
    fn a_timeout_kills_the_whole_group() {
        let (_d, rd) = files();
        let pidfile = rd.dir.join("grandchild");
        let script = format!("sleep 600 & echo $! > {}; wait", pidfile.display());
        let e = supervise(
            &sh(&script),
            &rd,
            Duration::from_millis(300),
            &Cancel::new(),
            hooks(&mut |_| {}),
        )
        .unwrap();
        assert!(e.timed_out);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| !s.contains(") Z "));
        assert!(!alive, "the grandchild outlived the timeout");
    }

    #[test]
    fn cancel_stops_a_run_from_another_thread() {
        let (_d, rd) = files();
        let c = Cancel::new();
        let c2 = c.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            c2.cancel();
        });
        let start = Instant::now();
        let e = supervise(
            &sh("sleep 600"),
            &rd,
            Duration::from_secs(60),
            &c,
            hooks(&mut |_| {}),
        )
        .unwrap();
        t.join().unwrap();
        assert!(e.cancelled && !e.timed_out);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn console_bytes_reach_the_callback_and_a_missing_binary_is_an_error() {
        let (_d, rd) = files();
        let script = format!("echo hello > {}", rd.console.display());
        let mut seen = Vec::new();
        let e = supervise(
            &sh(&script),
            &rd,
            Duration::from_secs(10),
            &Cancel::new(),
            hooks(&mut |b| seen.extend_from_slice(b)),
        )
        .unwrap();
        assert!(e.exit.is_some_and(|s| s.success()));
        assert_eq!(seen, b"hello\n");
        let err = supervise(
            &["/nonexistent/qemu".to_string()],
            &rd,
            Duration::from_secs(1),
            &Cancel::new(),
            hooks(&mut |_| {}),
        )
        .unwrap_err();
        assert!(err.contains("cannot start /nonexistent/qemu"), "{err}");
    }
}
