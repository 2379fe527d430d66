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

/// A step of work the user is told about: `kiln: <message>`.
pub fn step(msg: impl AsRef<str>) {
    if !quiet() {
        eprintln!("kiln: {}", msg.as_ref());
    }
}

/// Something the user should act on: `kiln: warning: <message>`, printed even when quiet.
pub fn warn(msg: impl AsRef<str>) {
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
