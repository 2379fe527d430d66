//! A QEMU Machine Protocol client over the run's unix socket: just enough to power a
//! guest down, quit QEMU, send keys (sysrq) and dump guest memory. QMP is JSON lines;
//! events may arrive between a command and its answer and are skipped.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// The `-qmp` arguments of a monitor listening on `socket`, which QEMU creates.
pub fn args(socket: &Path) -> Vec<String> {
    vec![
        "-qmp".into(),
        format!(
            "unix:{},server=on,wait=off",
            super::qemu::option_path(socket)
        ),
    ]
}

/// The longest path a unix socket address holds (sun_path, with its NUL).
const SUN_PATH_MAX: usize = 107;

/// Where the monitor socket of a run in `dir` goes: in the run directory, or, when that
/// path is too long for a socket address, under the user's runtime directory.
pub fn socket_path(dir: &Path, runtime: &Path, key: &str) -> PathBuf {
    let p = dir.join("qmp.sock");
    if p.as_os_str().len() <= SUN_PATH_MAX {
        p
    } else {
        runtime.join(format!("qmp-{key}.sock"))
    }
}

/// An open monitor connection, past the capabilities handshake.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to the monitor at `socket`, waiting at most `timeout` for each answer.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Qmp> {
        let s = UnixStream::connect(socket)
            .with_context(|| format!("connecting to QEMU's monitor {}", socket.display()))?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let mut q = Qmp {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            bail!("{} is not a QMP monitor: {greeting}", socket.display());
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    /// How long to wait for each answer from now on (a memory dump takes a while).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.writer.set_read_timeout(Some(timeout))?;
        Ok(())
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        // A monitor that sends one line longer than this is not QEMU's.
        let n = Read::by_ref(&mut self.reader)
            .take(1 << 20)
            .read_line(&mut line)
            .context("reading from QEMU's monitor")?;
        if n == 0 {
            bail!("QEMU's monitor closed the connection");
        }
        serde_json::from_str(&line).context("QEMU's monitor sent something that is not JSON")
    }

    /// Runs `command` with `arguments` and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if arguments.as_object().is_some_and(|o| !o.is_empty()) {
            msg["arguments"] = arguments;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .context("writing to QEMU's monitor")?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                bail!(
                    "QEMU refused {command}: {}",
                    e.get("desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given")
                );
            }
            // An event ({"event": …}); the answer is still to come.
        }
    }

    /// Presses `keys` together (QEMU's qcode names, e.g. ["alt", "sysrq", "t"]).
    pub fn send_keys(&mut self, keys: &[&str]) -> Result<()> {
        let keys: Vec<Value> = keys
            .iter()
            .map(|k| json!({ "type": "qcode", "data": k }))
            .collect();
        self.execute("send-key", json!({ "keys": keys }))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn long_run_directories_put_the_socket_elsewhere() {
        let short = socket_path(Path::new("/o/x.runs/1"), Path::new("/run/u"), "k");
        assert_eq!(short, Path::new("/o/x.runs/1/qmp.sock"));
        let long = "/o".to_string() + &"/d".repeat(60);
        let p = socket_path(Path::new(&long), Path::new("/run/u"), "k");
        assert_eq!(p, Path::new("/run/u/qmp-k.sock"));
    }

    #[test]
    fn handshakes_skips_events_and_reports_errors() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("q.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut line = String::new();
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("qmp_capabilities"));
            writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            assert!(line.contains(r#""data":"sysrq""#), "{line}");
            writeln!(w, r#"{{"event": "X", "timestamp": {{}}}}"#).unwrap();
            writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            writeln!(
                w,
                r#"{{"error": {{"class": "GenericError", "desc": "no"}}}}"#
            )
            .unwrap();
        });
        let mut q = Qmp::connect(&sock, Duration::from_secs(5)).unwrap();
        q.send_keys(&["alt", "sysrq", "t"]).unwrap();
        let e = q.execute("quit", json!({})).unwrap_err();
        assert!(e.to_string().contains("QEMU refused quit: no"), "{e}");
        server.join().unwrap();
    }
}
