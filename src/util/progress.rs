//! Progress reporting on stderr: a bar when stderr is a terminal, quiet lines otherwise,
//! so CI logs stay readable.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Turns off step messages and progress bars; warnings still print.
pub fn set_quiet(q: bool) {
    QUIET.store(q, Ordering::Relaxed);
}

/// Whether [`set_quiet`] turned output off.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A step or a warning, as told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// From [`step`].
    Step(String),
    /// From [`warn`].
    Warn(String),
}

thread_local! {
    /// What [`capture`] is collecting on this thread.
    static CAPTURED: std::cell::RefCell<Option<Vec<Line>>> = const { std::cell::RefCell::new(None) };
}

fn captured(line: Line) {
    CAPTURED.with(|c| {
        if let Some(lines) = c.borrow_mut().as_mut() {
            lines.push(line);
        }
    });
}

/// Runs `f`, telling what it tells as usual, and returns what it told on this thread too:
/// work kept in a cache tells it again when taken back ([`replay`]).
pub fn capture<T>(f: impl FnOnce() -> T) -> (T, Vec<Line>) {
    let outer = CAPTURED.with(|c| c.borrow_mut().replace(Vec::new()));
    let out = f();
    let lines = CAPTURED.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer));
    (out, lines.unwrap_or_default())
}

/// Tells again what [`capture`] collected.
pub fn replay(lines: &[Line]) {
    for l in lines {
        match l {
            Line::Step(m) => step(m),
            Line::Warn(m) => warn(m),
        }
    }
}

/// A step of work the user is told about: `kiln: <message>`.
pub fn step(msg: impl AsRef<str>) {
    captured(Line::Step(msg.as_ref().to_string()));
    if !quiet() {
        eprintln!("kiln: {}", msg.as_ref());
    }
}

/// Something the user should act on: `kiln: warning: <message>`, printed even when quiet.
pub fn warn(msg: impl AsRef<str>) {
    captured(Line::Warn(msg.as_ref().to_string()));
    eprintln!("kiln: warning: {}", msg.as_ref());
}

fn interactive() -> bool {
    !quiet() && std::io::stderr().is_terminal()
}

/// A byte-counting progress bar, hidden when stderr is not a terminal.
pub fn bytes(total: u64, msg: &str) -> ProgressBar {
    if !interactive() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "kiln: {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// An item-counting progress bar, hidden when stderr is not a terminal.
pub fn items(total: u64, msg: &str) -> ProgressBar {
    if !interactive() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("kiln: {msg} [{bar:30}] {pos}/{len} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}
