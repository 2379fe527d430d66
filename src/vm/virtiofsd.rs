//! QEMU's virtiofsd, run without root for one virtiofs share of one VM.
//!
//! The daemon wants to be root: it takes a lock under `/run`, switches its file-system
//! uid and gid to the guest's for each request, and chroots into the shared directory.
//! For an ordinary user kiln gives it a user and mount namespace of its own in which it
//! is root: namespace uid 0 is one of the caller's subordinate ids (`/etc/subuid`, set
//! up by Debian's `uidmap` package, whose setuid `newuidmap` and `newgidmap` write the
//! maps), and the caller's own uid and gid map to themselves. So a file the command
//! (running as the caller in the guest) creates belongs to the caller on the host, and
//! the daemon can do nothing the caller could not. A private tmpfs on `/run` takes its
//! lock; a read-only share is a read-only bind mount of the directory, so the guest
//! cannot write to it even by ignoring its own `ro` mount. When kiln runs as root, the
//! same script runs in a mount namespace alone.
//!
//! The daemon serves one connection and exits when QEMU closes it; [`Daemon`] kills it
//! on drop as well, so none outlives its run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::share::Share;

/// Where Debian's QEMU 7.2 installs the daemon, then other distributions' places.
const DAEMONS: [&str; 3] = [
    "/usr/lib/qemu/virtiofsd",
    "/usr/libexec/virtiofsd",
    "/usr/libexec/qemu/virtiofsd",
];

/// Runs in the daemon's namespace as its root: `$1` directory, `$2` socket, `$3` daemon,
/// `$4` `ro` or `rw`, then the daemon's further options.
const SCRIPT: &str = r#"set -e
mount -t tmpfs -o mode=0755 tmpfs /run
src=$1
if [ "$4" = ro ]; then
    mkdir /run/kiln-src
    mount --rbind "$1" /run/kiln-src
    mount -o remount,bind,ro /run/kiln-src
    src=/run/kiln-src
fi
sock=$2
daemon=$3
shift 4
exec "$daemon" --socket-path="$sock" -o source="$src" -o sandbox=chroot -o cache=auto "$@""#;

/// What running the daemon here takes, found once per run.
#[derive(Debug, Clone)]
pub struct Virtiofsd {
    daemon: PathBuf,
    /// The caller's first subordinate uid and gid; None when kiln runs as root.
    subordinate: Option<(u32, u32)>,
    /// The caller's group, which the socket is given to so QEMU (the caller) may
    /// connect to it: the daemon, root of its namespace, is another user on the host.
    group: Option<String>,
}

/// A running daemon; dropping it stops it.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Keeps the daemon running after this handle is gone (a detached VM's): it exits
    /// when its QEMU does.
    pub fn release(self) {
        std::mem::forget(self);
    }
}

impl Virtiofsd {
    /// Whether a daemon can run here, and if not, what to do about it.
    pub fn find() -> std::result::Result<Virtiofsd, String> {
        let daemon = DAEMONS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or("there is no virtiofsd (Debian: apt install qemu-system-common)")?;
        for tool in ["unshare", "setpriv", "mount"] {
            if crate::source::elf::which(tool).is_none() {
                return Err(format!("virtiofsd needs `{tool}` (util-linux, mount)"));
            }
        }
        // SAFETY: getuid and getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        if uid == 0 {
            return Ok(Virtiofsd {
                daemon,
                subordinate: None,
                group: None,
            });
        }
        for tool in ["newuidmap", "newgidmap"] {
            if crate::source::elf::which(tool).is_none() {
                return Err(format!(
                    "virtiofsd without root needs `{tool}` (Debian: apt install uidmap)"
                ));
            }
        }
        let name = user_name(uid);
        let sub_uid = subordinate("/etc/subuid", uid, name.as_deref());
        let sub_gid = subordinate("/etc/subgid", gid, name.as_deref());
        let Some(group) = name_of("/etc/group", gid) else {
            return Err(format!(
                "virtiofsd without root gives its socket to your group, and gid {gid} has no name in /etc/group"
            ));
        };
        match (sub_uid, sub_gid) {
            (Some(u), Some(g)) => Ok(Virtiofsd {
                daemon,
                subordinate: Some((u, g)),
                group: Some(group),
            }),
            _ => Err(format!(
                "virtiofsd without root needs subordinate ids for {}: add them with `sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {}`",
                name.as_deref().unwrap_or("this user"),
                name.as_deref().unwrap_or("USER"),
            )),
        }
    }

    /// Starts a daemon serving `share` on `socket` (which must not exist), its messages
    /// in `log`, and waits until it listens.
    pub fn start(&self, share: &Share, socket: &Path, log: &Path) -> Result<Daemon> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut c = Command::new("unshare");
        if self.subordinate.is_some() {
            c.args(["--user", "--keep-caps"]);
        }
        c.arg("--mount");
        let mut args = vec![
            share.host.to_string_lossy().into_owned(),
            socket.to_string_lossy().into_owned(),
            self.daemon.to_string_lossy().into_owned(),
            if share.readonly { "ro" } else { "rw" }.to_string(),
        ];
        if let Some(g) = &self.group {
            args.push(format!("--socket-group={g}"));
        }
        if self.subordinate.is_some() {
            // Until both maps are written (the gid map last) the shell is nobody;
            // then it becomes the
            // namespace's root, whose capabilities the daemon needs.
            c.args([
                "sh",
                "-c",
                "until grep -q . /proc/self/gid_map; do sleep 0.01; done; exec setpriv --reuid=0 --regid=0 --clear-groups -- sh -c \"$0\" sh \"$@\"",
                SCRIPT,
            ]);
        } else {
            c.args(["sh", "-c", SCRIPT, "sh"]);
        }
        c.args(&args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = c.spawn().context("starting unshare for virtiofsd")?;
        let mut d = Daemon { child };
        if let Some((sub_uid, sub_gid)) = self.subordinate {
            // SAFETY: getuid and getgid have no preconditions.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            let pid = d.child.id().to_string();
            // The maps can be written once unshare has made the namespace.
            let own = std::fs::read_link("/proc/self/ns/user").ok();
            let start = Instant::now();
            while std::fs::read_link(format!("/proc/{pid}/ns/user")).ok() == own {
                if start.elapsed() > Duration::from_secs(5) || d.child.try_wait()?.is_some() {
                    bail!(
                        "unshare did not make a user namespace for virtiofsd: {}",
                        std::fs::read_to_string(log).unwrap_or_default().trim()
                    );
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            for (tool, sub, own) in [("newuidmap", sub_uid, uid), ("newgidmap", sub_gid, gid)] {
                let out = Command::new(tool)
                    .args([&pid, "0", &sub.to_string(), "1"])
                    .args([&own.to_string(), &own.to_string(), "1"])
                    .output()
                    .with_context(|| format!("running {tool}"))?;
                if !out.status.success() {
                    bail!(
                        "{tool} could not map ids for virtiofsd: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
            }
        }
        let start = Instant::now();
        // SAFETY: getgid has no preconditions.
        let gid = unsafe { libc::getgid() };
        loop {
            use std::os::unix::fs::MetadataExt;
            // Ready once it is there and, without root, given to the caller's group.
            let ready = std::fs::symlink_metadata(socket)
                .is_ok_and(|m| self.group.is_none() || m.gid() == gid);
            if ready {
                return Ok(d);
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                bail!(
                    "virtiofsd for {} exited with {status}: {}",
                    share.host.display(),
                    std::fs::read_to_string(log).unwrap_or_default().trim()
                );
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!(
                    "virtiofsd for {} did not listen on {} within 10 s; see {}",
                    share.host.display(),
                    socket.display(),
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The login name of `uid`, if it has one.
fn user_name(uid: u32) -> Option<String> {
    name_of("/etc/passwd", uid)
}

/// The name `file` (/etc/passwd or /etc/group) gives id `id`.
fn name_of(file: &str, id: u32) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let field = f.nth(1)?;
        (field.parse() == Ok(id)).then(|| name.to_string())
    })
}

/// The first id of the first range `file` gives the user (by name or by number).
fn subordinate(file: &str, id: u32, name: Option<&str>) -> Option<u32> {
    parse_subordinate(&std::fs::read_to_string(file).ok()?, id, name)
}

fn parse_subordinate(text: &str, id: u32, name: Option<&str>) -> Option<u32> {
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let who = f.next()?;
        let start: u32 = f.next()?.parse().ok()?;
        let count: u32 = f.next()?.parse().ok()?;
        let mine = Some(who) == name || who.parse() == Ok(id);
        (mine && count > 0).then_some(start)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_match_by_name_or_number() {
        let t = "root:100000:65536\nkilntest:165536:65536\n1002:300000:0\n1003:400000:10\n";
        assert_eq!(parse_subordinate(t, 1001, Some("kilntest")), Some(165536));
        assert_eq!(parse_subordinate(t, 1002, Some("x")), None, "empty range");
        assert_eq!(parse_subordinate(t, 1003, None), Some(400000));
        assert_eq!(parse_subordinate(t, 1004, Some("y")), None);
    }
}
