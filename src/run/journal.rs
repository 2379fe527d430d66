//! The guest's journal on the host: a systemd image streams it (export format) to a
//! virtio-serial port while it runs, into the run directory's `journal.export`; after
//! the run kiln turns that into a journal file with the host's systemd-journal-remote,
//! so `journalctl --directory=RUNDIR/journal` reads it, after a failed or hung run too.
//!
//! Why a stream and not the results disk or the guest's own files: the disk's writes go
//! to a throwaway overlay, a results disk exists only when a test asks for one and is
//! written at the test's end, and a panicked or hung guest writes nothing more; a stream
//! has everything up to the moment the guest stopped.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::configure::access::JOURNAL_PORT;

/// The stream's file in a run directory.
pub const EXPORT: &str = "journal.export";

/// The journal directory made from it.
pub const DIR: &str = "journal";

/// The QEMU arguments of the journal's port on kiln's virtio-serial bus, into `file`.
pub fn args(file: &Path) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!(
            "file,id=kiln-journal,path={}",
            crate::vm::qemu::option_path(file)
        ),
        "-device".into(),
        format!("virtserialport,bus=kiln-vs.0,chardev=kiln-journal,name={JOURNAL_PORT}"),
    ]
}

/// Where the host's systemd-journal-remote is, if installed.
fn journal_remote() -> Option<PathBuf> {
    [
        "/usr/lib/systemd/systemd-journal-remote",
        "/lib/systemd/systemd-journal-remote",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// Turns the run's stream into `RUNDIR/journal/`. Returns a note for the user, or None
/// when the guest streamed nothing.
pub fn collect(run_dir: &Path) -> Option<String> {
    let export = run_dir.join(EXPORT);
    if std::fs::metadata(&export).map(|m| m.len()).unwrap_or(0) == 0 {
        return None;
    }
    let Some(remote) = journal_remote() else {
        return Some(format!(
            "the guest's journal is in {} (export format); install systemd-journal-remote and kiln makes it a journal `journalctl --directory` reads",
            export.display()
        ));
    };
    let dir = run_dir.join(DIR);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return Some(format!("could not create {}: {e}", dir.display()));
    }
    let out = Command::new(&remote)
        .arg(format!("--output={}", dir.join("guest.journal").display()))
        .arg(&export)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(format!(
            "the guest's journal: journalctl --directory={}",
            dir.display()
        )),
        Ok(o) => Some(format!(
            "systemd-journal-remote could not read {}: {}",
            export.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("running {}: {e}", remote.display())),
    }
}
