//! `kiln exec`: a command from the host, with the host's own userspace, under a chosen
//! kernel, and no image to build. The guest mounts the host's `/` read-only and the
//! current directory read-write over 9p, and runs the command as the caller, in the
//! caller's directory, with the caller's environment; its exit status is kiln's.
//!
//! The boot image is a small initramfs (the host's busybox and kiln's init), made from a
//! profile kiln keeps in its cache, so each kernel is one cell of the ordinary test
//! machinery: packaged kernels get their 9p modules appended, several kernels run in
//! parallel, and reports are the matrix's.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::test::{test, TestArgs};
use super::{ExitStatus, Printer, ProfileArgs};
use crate::plan::{BuildOptions, RunOverrides};
use crate::run::Cancel;
use crate::source::PackageOptions;
use crate::util::shell::shell_quote;
use crate::vm::share::{Share, Transport};

/// What `kiln exec` takes.
#[derive(Debug, Clone, Default)]
pub struct ExecArgs {
    /// Kernels to run the command under: images, build trees or Debian packages.
    pub kernels: Vec<PathBuf>,
    /// The command and its arguments.
    pub command: Vec<String>,
    /// The directory the command runs in, shared read-write.
    pub cwd: PathBuf,
    /// Environment variables not passed to the command (exact names).
    pub env_exclude: Vec<String>,
    /// Run settings from the command line.
    pub overrides: RunOverrides,
    /// How many VMs run at once with several kernels.
    pub jobs: Option<usize>,
    /// Package handling for packaged kernels.
    pub packages: PackageOptions,
    /// The host directory the guest sees as `/` (default: the host's root).
    pub root: Option<PathBuf>,
    /// More host directories: (guest path, host directory, writable).
    pub mounts: Vec<(String, PathBuf, bool)>,
    /// Stream the console (default: with one kernel).
    pub quiet_console: bool,
}

/// The profile of exec's boot image: the host's busybox, kiln's init, and the modules a
/// packaged kernel needs for 9p and the status port.
const PROFILE: &str = r#"# Written by kiln: the boot image of `kiln exec` (kiln rewrites it).
version = 1
name = "exec"
description = "kiln exec: the host's userspace under a chosen kernel"

[kernel]
modules = ["virtio_pci", "virtio_console", "9pnet_virtio", "9p"]

[[binary]]
source = "busybox"
path = "/bin/busybox"

[[symlink]]
path = "/bin/sh"
target = "busybox"

[[file]]
path = "/usr/lib/kiln/exec-init"
source = "exec-init.sh"
mode = "0755"

[test]
name = "exec"
command = "/usr/lib/kiln/exec-init"
timeout = "30m"
"#;

/// Environment variables that describe the host session and mean nothing in the guest.
const HOST_ONLY: [&str; 6] = [
    "SSH_AUTH_SOCK",
    "DBUS_SESSION_BUS_ADDRESS",
    "XDG_RUNTIME_DIR",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "OLDPWD",
];

/// Runs the command under each kernel; the exit status of one run is the command's.
pub fn exec(e: &ExecArgs, cancel: &Cancel, printer: &Printer) -> Result<ExitStatus> {
    if e.command.is_empty() {
        anyhow::bail!("give the command after --, e.g. `kiln exec --kernel KERNEL -- uname -r`");
    }
    if e.kernels.is_empty() {
        anyhow::bail!("--kernel is required: an image, a build tree or a Debian kernel package");
    }
    let home = crate::cache::cache_dir().join("exec");
    let profile = write_profile(&home)?;
    let run = tempfile::Builder::new()
        .prefix("kiln-exec-")
        .tempdir()
        .context("creating the command's share")?;
    write_command(run.path(), e)?;
    let root = e.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    let mut shares = vec![
        share(&root, "kiln_root", true),
        share(&e.cwd, "kiln_cwd", false),
        share(run.path(), "kiln_run", true),
    ];
    for (i, (_, host, writable)) in e.mounts.iter().enumerate() {
        shares.push(share(host, &format!("kiln_m{i}"), !writable));
    }
    let mut overrides = e.overrides.clone();
    for s in &shares {
        overrides.qemu_args.extend(s.args(None));
    }
    overrides.append.push("quiet".into());
    let a = ProfileArgs {
        profile,
        build: BuildOptions {
            out_dir: home.join("out"),
            packages: e.packages.clone(),
            ..Default::default()
        },
    };
    let t = TestArgs {
        overrides,
        kernels: e.kernels.clone(),
        jobs: e.jobs,
        verbose: e.kernels.len() == 1 && !e.quiet_console,
        host_modules: true,
        ..Default::default()
    };
    test(&a, &t, cancel, printer).map_err(|e| {
        let lacks_9p = e
            .chain()
            .any(|c| c.to_string().contains("has no module `9p"));
        if lacks_9p {
            e.context("kiln exec shares the host over 9p, which needs CONFIG_NET_9P, CONFIG_NET_9P_VIRTIO and CONFIG_9P_FS; Debian's cloud kernels have none of them: use a generic one (linux-image-6.1.0-NN-amd64) or a kernel built with them")
        } else {
            e
        }
    })
}

/// The targets of a vmtest.toml, each a `kiln exec` of its command (by bash, as vmtest
/// runs it, in the file's directory) under its kernel with its VM settings, `jobs` at
/// a time; `filter` (a regular expression) picks targets by name. One target exits with
/// its command's status; several with the number that failed (at most 255, so a large
/// count never wraps to success).
pub fn exec_config(
    config: &Path,
    filter: Option<&str>,
    base: &ExecArgs,
    cancel: &Cancel,
    printer: &Printer,
) -> Result<ExitStatus> {
    let config = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
    let targets = crate::profile::vmtest::load(&config)
        .map_err(|e| anyhow::Error::new(e).context(super::BadInput))?;
    let re = filter
        .map(regex::Regex::new)
        .transpose()
        .context("--filter is not a regular expression")?;
    let targets: Vec<_> = targets
        .into_iter()
        .filter(|t| re.as_ref().is_none_or(|r| r.is_match(&t.name)))
        .collect();
    if targets.is_empty() {
        anyhow::bail!("no target of {} matches the filter", config.display());
    }
    let dir = config.parent().unwrap_or(Path::new("/")).to_path_buf();
    let several = targets.len() > 1;
    let jobs = base.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let results = crate::util::download::parallel(&targets, jobs, |t| {
        let mut e = base.clone();
        e.kernels = vec![t.kernel.clone()];
        e.command = vec!["bash".into(), "-c".into(), t.command.clone()];
        e.cwd = dir.clone();
        e.root = Some(t.rootfs.clone());
        e.mounts = t
            .mounts
            .iter()
            .map(|m| (m.guest.clone(), m.host.clone(), m.writable))
            .collect();
        e.overrides.memory = e.overrides.memory.or(Some(t.memory));
        e.overrides.cpus = e.overrides.cpus.or(Some(t.cpus));
        if t.qemu.is_some() {
            e.overrides.qemu = t.qemu.clone();
        }
        e.overrides.append.extend(t.kernel_args.iter().cloned());
        e.overrides.qemu_args.extend(t.extra_args.iter().cloned());
        e.quiet_console = several;
        if several {
            printer.step(format!("=> {}", t.name));
        }
        Ok(exec(&e, cancel, printer).map_err(|err| format!("{err:#}")))
    })?;
    let mut failed = 0usize;
    for (t, r) in targets.iter().zip(&results) {
        let line = match r {
            Ok(s) if *s == ExitStatus::SUCCESS => format!("PASS    {}", t.name),
            Ok(s) => {
                failed += 1;
                format!("FAILED  {} (exit {})", t.name, s.0)
            }
            Err(err) => {
                failed += 1;
                format!("ERROR   {}: {err}", t.name)
            }
        };
        printer.out(format!("kiln: {line}"));
    }
    printer.out(format!(
        "kiln: {} of {} targets passed",
        targets.len() - failed,
        targets.len()
    ));
    Ok(match (several, results.first()) {
        (false, Some(Ok(s))) => *s,
        (false, _) => ExitStatus::FAILURE,
        (true, _) => ExitStatus(failed.min(255) as u8),
    })
}

fn share(host: impl AsRef<Path>, tag: &str, readonly: bool) -> Share {
    Share {
        host: host.as_ref().to_path_buf(),
        tag: tag.into(),
        readonly,
        transport: Transport::NineP,
    }
}

/// Writes exec's profile and init into `home` (when they changed), so the image is
/// built from the same bytes every time.
fn write_profile(home: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(home).with_context(|| format!("creating {}", home.display()))?;
    for (name, text) in [
        ("exec.toml", PROFILE),
        ("exec-init.sh", crate::template::EXEC_INIT),
    ] {
        let path = home.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
            crate::util::atomic::write(&path, text.as_bytes())?;
        }
    }
    Ok(home.join("exec.toml"))
}

/// The per-run share: `settings` (who runs the command, and where) for kiln's init, and
/// `cmd`, the script the caller's shell would have run.
fn write_command(dir: &Path, e: &ExecArgs) -> Result<()> {
    // SAFETY: these calls only read the process's own credentials.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let groups = supplementary_groups();
    let groups = if groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        format!(
            "--groups={}",
            groups
                .iter()
                .map(|g| g.to_string())
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    let cwd = e.cwd.to_string_lossy();
    let mut settings = format!(
        "KILN_UID={uid}\nKILN_GID={gid}\nKILN_GROUPS={}\nKILN_CWD={}\n",
        shell_quote(&groups),
        shell_quote(&cwd)
    );
    // More shares: tag, guest path and mode, one a line, for the init to mount.
    let mounts: Vec<String> = e
        .mounts
        .iter()
        .enumerate()
        .map(|(i, (guest, _, writable))| {
            format!(
                "kiln_m{i} {} {}",
                if *writable { "rw" } else { "ro" },
                guest
            )
        })
        .collect();
    settings.push_str(&format!(
        "KILN_MOUNTS={}\n",
        shell_quote(&mounts.join("\n"))
    ));
    let mut cmd = String::from("# Written by kiln exec.\n");
    for (k, v) in std::env::vars() {
        let valid = !k.is_empty()
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !k.starts_with(|c: char| c.is_ascii_digit());
        if valid && !HOST_ONLY.contains(&k.as_str()) && !e.env_exclude.contains(&k) {
            cmd.push_str(&format!("export {k}={}\n", shell_quote(&v)));
        }
    }
    cmd.push_str(&format!("cd {} || exit 1\n", shell_quote(&cwd)));
    let words: Vec<String> = e.command.iter().map(|w| shell_quote(w)).collect();
    cmd.push_str(&format!("exec {}\n", words.join(" ")));
    std::fs::write(dir.join("settings"), settings)?;
    std::fs::write(dir.join("cmd"), cmd)?;
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
    fn the_command_script_quotes_words_and_drops_excluded_variables() {
        let d = tempfile::tempdir().unwrap();
        let e = ExecArgs {
            command: vec!["sh".into(), "-c".into(), "echo 'a b' $HOME".into()],
            cwd: PathBuf::from("/src/my tree"),
            env_exclude: vec!["PATH".into()],
            ..Default::default()
        };
        write_command(d.path(), &e).unwrap();
        let cmd = std::fs::read_to_string(d.path().join("cmd")).unwrap();
        assert!(cmd.contains("cd '/src/my tree' || exit 1\n"), "{cmd}");
        assert!(
            cmd.ends_with("exec sh -c 'echo '\\''a b'\\'' $HOME'\n"),
            "{cmd}"
        );
        assert!(!cmd.contains("export PATH="), "{cmd}");
        let settings = std::fs::read_to_string(d.path().join("settings")).unwrap();
        assert!(settings.contains("KILN_CWD='/src/my tree'"), "{settings}");
    }
}
