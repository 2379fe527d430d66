//! The run side of an image that boots into the host's userspace (`[host]`, `kiln exec`):
//! the directories it shares (the host's root read-only, the working directory
//! read-write, the run's own files read-only, any more), and the run's files that kiln's
//! host init reads: who runs the command, where, with which environment, and the
//! command itself when the run gives one.

use std::path::Path;

use anyhow::{Context, Result};

use crate::plan::HostRun;
use crate::util::shell::shell_quote;
use crate::vm::share::{Share, Transport};

/// Environment variables that describe the host session and mean nothing in the guest.
const HOST_ONLY: [&str; 6] = [
    "SSH_AUTH_SOCK",
    "DBUS_SESSION_BUS_ADDRESS",
    "XDG_RUNTIME_DIR",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "OLDPWD",
];

/// The shares of a run whose own files are in `files` (its transport chosen later).
pub fn shares(h: &HostRun, files: &Path) -> Vec<Share> {
    let share = |host: &Path, tag: String, readonly| Share {
        host: host.to_path_buf(),
        tag,
        readonly,
        transport: Transport::NineP,
    };
    let mut v = vec![
        share(&h.root, "kiln_root".into(), true),
        share(&h.cwd, "kiln_cwd".into(), false),
        share(files, "kiln_run".into(), true),
    ];
    for (i, (_, host, writable)) in h.mounts.iter().enumerate() {
        v.push(share(host, format!("kiln_m{i}"), !writable));
    }
    v
}

/// Writes the run's files into `dir`: `settings` (for kiln's init: the caller's ids, the
/// directory, more mounts), `env` (the caller's environment and directory, for the
/// command's shell) and, when the run gives a command, `cmd`.
pub fn write_files(dir: &Path, h: &HostRun) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // SAFETY: these calls only read the process's own credentials.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let groups = supplementary_groups();
    let groups = if groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        let list: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        format!("--groups={}", list.join(","))
    };
    let cwd = h.cwd.to_string_lossy();
    // More shares: tag, mode and guest path, one a line, for the init to mount.
    let mounts: Vec<String> = h
        .mounts
        .iter()
        .enumerate()
        .map(|(i, (guest, _, writable))| {
            format!("kiln_m{i} {} {guest}", if *writable { "rw" } else { "ro" })
        })
        .collect();
    let settings = format!(
        "KILN_UID={uid}\nKILN_GID={gid}\nKILN_GROUPS={}\nKILN_CWD={}\nKILN_MOUNTS={}\nKILN_TERMINAL={}\n",
        shell_quote(&groups),
        shell_quote(&cwd),
        shell_quote(&mounts.join("\n")),
        u8::from(h.terminal),
    );
    let mut env = String::from("# Written by kiln: the caller's environment.\n");
    for (k, v) in std::env::vars() {
        let valid = !k.is_empty()
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !k.starts_with(|c: char| c.is_ascii_digit());
        if valid && !HOST_ONLY.contains(&k.as_str()) && !h.env_exclude.contains(&k) {
            env.push_str(&format!("export {k}={}\n", shell_quote(&v)));
        }
    }
    env.push_str(&format!("cd {} || exit 1\n", shell_quote(&cwd)));
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("settings", &settings)?;
    write("env", &env)?;
    if let Some(command) = &h.command {
        let words: Vec<String> = command.iter().map(|w| shell_quote(w)).collect();
        write(
            "cmd",
            &format!(
                "# Written by kiln: the run's command.\n. /run/kiln/env\nexec {}\n",
                words.join(" ")
            ),
        )?;
    }
    Ok(())
}

/// The caller's supplementary groups.
fn supplementary_groups() -> Vec<libc::gid_t> {
    // SAFETY: the first call asks for the count; the second fills a buffer of that size.
    unsafe {
        let n = libc::getgroups(0, std::ptr::null_mut());
        if n <= 0 {
            return Vec::new();
        }
        let mut v = vec![0 as libc::gid_t; n as usize];
        let got = libc::getgroups(n, v.as_mut_ptr());
        v.truncate(got.max(0) as usize);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_files_quote_words_and_drop_excluded_variables() {
        let d = tempfile::tempdir().unwrap();
        let h = HostRun {
            root: "/".into(),
            command: Some(vec!["sh".into(), "-c".into(), "echo 'a b' $HOME".into()]),
            cwd: "/src/my tree".into(),
            env_exclude: vec!["PATH".into()],
            mounts: vec![("/mnt/data".into(), "/srv/data".into(), false)],
            terminal: false,
        };
        write_files(d.path(), &h).unwrap();
        let read = |n: &str| std::fs::read_to_string(d.path().join(n)).unwrap();
        let env = read("env");
        assert!(env.ends_with("cd '/src/my tree' || exit 1\n"), "{env}");
        assert!(!env.contains("export PATH="), "{env}");
        let cmd = read("cmd");
        assert!(
            cmd.ends_with(". /run/kiln/env\nexec sh -c 'echo '\\''a b'\\'' $HOME'\n"),
            "{cmd}"
        );
        let settings = read("settings");
        assert!(settings.contains("KILN_CWD='/src/my tree'"), "{settings}");
        assert!(
            settings.contains("KILN_MOUNTS='kiln_m0 ro /mnt/data'"),
            "{settings}"
        );
        let tags: Vec<_> = shares(&h, d.path()).into_iter().map(|s| s.tag).collect();
        assert_eq!(tags, ["kiln_root", "kiln_cwd", "kiln_run", "kiln_m0"]);
    }
}
