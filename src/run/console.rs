//! Reading what a guest wrote: the status channel's report, the panic line, the test's
//! own output between the wrapper's markers, and the console's last lines.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// What the guest reported on its status channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestReport {
    /// The test's exit status (`KILN_EXIT_STATUS=N`).
    Status(i32),
    /// kiln's own step in the guest failed (`KILN_INFRA_ERROR=message`).
    Infrastructure(String),
}

/// The last report in a status channel's text. An infrastructure error wins over a status.
pub fn parse_report(text: &str) -> Option<GuestReport> {
    let mut status = None;
    for l in text.lines().map(str::trim) {
        if let Some(m) = l.strip_prefix("KILN_INFRA_ERROR=") {
            return Some(GuestReport::Infrastructure(m.trim().to_string()));
        }
        if let Some(v) = l.strip_prefix("KILN_EXIT_STATUS=") {
            if let Ok(c) = v.trim().parse::<i32>() {
                status = Some(GuestReport::Status(c));
            }
        }
    }
    status
}

/// The report from whichever channel carried one.
pub fn read_report(channels: &[&Path]) -> Option<GuestReport> {
    channels
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .find_map(|t| parse_report(&t))
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

/// The first kernel splat on the console: an Oops, a `BUG:`, a `WARNING:`, a
/// general protection fault, or a sanitizer or lockdep report.
pub fn splat_line(console: &str) -> Option<String> {
    const MARKERS: [&str; 9] = [
        "Oops:",
        "BUG:",
        "WARNING:",
        "general protection fault",
        "KASAN:",
        "UBSAN:",
        "KFENCE:",
        "possible circular locking dependency detected",
        "INFO: task ",
    ];
    console.lines().find_map(|l| {
        // Kernel lines start with "[ seconds] "; a test printing "WARNING:" is not a splat.
        let (stamp, rest) = l.trim_start().strip_prefix('[')?.split_once("] ")?;
        // A printk timestamp ("    3.141592"), so a test printing "[step 2] WARNING:" is not one.
        let stamp = stamp.trim();
        if stamp.is_empty() || !stamp.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return None;
        }
        let rest = rest.trim_end();
        MARKERS
            .iter()
            .any(|m| rest.starts_with(m))
            .then(|| rest.to_string())
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

/// Follows the console log while QEMU runs, handing out what is new.
pub struct ConsoleTail {
    file: Option<std::fs::File>,
    path: PathBuf,
    pos: u64,
}

impl ConsoleTail {
    /// Follows `path` from its start.
    pub fn new(path: &Path) -> ConsoleTail {
        ConsoleTail {
            file: None,
            path: path.to_path_buf(),
            pos: 0,
        }
    }

    /// The bytes written since the last call (empty when there are none).
    pub fn read_new(&mut self) -> Vec<u8> {
        if self.file.is_none() {
            self.file = std::fs::File::open(&self.path).ok();
        }
        let mut buf = Vec::new();
        let Some(f) = self.file.as_mut() else {
            return buf;
        };
        if f.seek(SeekFrom::Start(self.pos)).is_ok() {
            if let Ok(n) = f.read_to_end(&mut buf) {
                self.pos += n as u64;
            }
        }
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reports() {
        assert_eq!(
            parse_report("noise\r\nKILN_EXIT_STATUS=3\r\n"),
            Some(GuestReport::Status(3))
        );
        assert_eq!(
            parse_report("KILN_EXIT_STATUS=0\n"),
            Some(GuestReport::Status(0))
        );
        assert_eq!(parse_report("KILN_EXIT_STATUS=x\n"), None);
        assert_eq!(parse_report(""), None);
        assert_eq!(
            parse_report("KILN_INFRA_ERROR=cannot mount the results disk\nKILN_EXIT_STATUS=0\n"),
            Some(GuestReport::Infrastructure(
                "cannot mount the results disk".into()
            ))
        );
    }

    #[test]
    fn finds_splats_in_kernel_lines_only() {
        let log = "[    1.0] ok\nWARNING: from a test script\n[    3.2] WARNING: CPU: 0 PID: 1 at mm/x.c:10 f+0x1/0x2\n";
        assert_eq!(
            splat_line(log).unwrap(),
            "WARNING: CPU: 0 PID: 1 at mm/x.c:10 f+0x1/0x2"
        );
        assert!(splat_line("[ 2.0] BUG: kernel NULL pointer dereference").is_some());
        assert!(splat_line("[ 2.0] ==================================================================\n[ 2.1] BUG: KASAN: slab-out-of-bounds").is_some());
        assert!(splat_line("[ 1.0] all fine\nBUG: user text\n").is_none());
        assert!(splat_line("[step 2] WARNING: retrying\n").is_none());
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

    #[test]
    fn tail_hands_out_only_new_bytes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.log");
        std::fs::write(&p, "one\n").unwrap();
        let mut t = ConsoleTail::new(&p);
        assert_eq!(t.read_new(), b"one\n");
        assert!(t.read_new().is_empty());
        std::fs::write(&p, "one\ntwo\n").unwrap();
        assert_eq!(t.read_new(), b"two\n");
    }
}
