//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn kiln() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.env_remove("SOURCE_DATE_EPOCH");
    c
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("running kiln");
    eprintln!(
        "--- {:?} exited {:?}\n--- stdout:\n{}--- stderr:\n{}",
        cmd,
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

/// A file's sparse digest as `tools/sparse-sha256` (the README's script) prints it.
pub fn sparse_sha256_by_script(p: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/sparse-sha256");
    let o = run(Command::new(script).arg(p));
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).split_whitespace().next().unwrap().to_string()
}

pub fn which(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The vmlinuz of a kernel package unpacked into `dir/x`.
fn unpacked_vmlinuz(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir.join("x/boot"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
}

/// A real Debian kernel (bookworm's linux-image-cloud-amd64 by default) for boot tests:
/// `KILN_TEST_KERNEL` if set, else downloaded once with apt-get into the cache and reused.
pub fn debian_kernel() -> PathBuf {
    static K: OnceLock<PathBuf> = OnceLock::new();
    K.get_or_init(|| {
        if let Some(k) = std::env::var_os("KILN_TEST_KERNEL") {
            return PathBuf::from(k);
        }
        let dir = kiln::cache::cache_dir().join("test-kernel");
        std::fs::create_dir_all(&dir).unwrap();
        let lock = std::fs::File::create(dir.join(".lock")).unwrap();
        lock.lock().unwrap();
        if let Some(k) = unpacked_vmlinuz(&dir) {
            return k;
        }
        let sh = format!(
            "set -e; cd {d}; rm -rf x *.deb; apt-get download linux-image-cloud-amd64 2>&1; \
             dep=$(dpkg-deb -f linux-image-cloud-amd64_*.deb Depends | sed 's/ .*//'); \
             apt-get download \"$dep\" 2>&1; dpkg-deb -x linux-image-[0-9]*.deb x",
            d = dir.display()
        );
        let out = Command::new("sh").arg("-c").arg(&sh).output().unwrap();
        assert!(
            out.status.success(),
            "fetching a Debian kernel failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        unpacked_vmlinuz(&dir).expect("kernel unpacked")
    })
    .clone()
}

/// A profile of a busybox initramfs (the host's static busybox) with `extra` TOML added.
pub fn busybox_profile(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let text = format!(
        "version = 1\n\n[[binary]]\nsource = \"busybox\"\npath = \"/bin/busybox\"\n\n[[symlink]]\npath = \"/bin/sh\"\ntarget = \"busybox\"\n\n[qemu]\nmemory = \"512M\"\naccel = \"tcg\"\n\n{extra}"
    );
    write(dir, &format!("{name}.toml"), &text)
}

/// `kiln test PROFILE --out-dir OUT --kernel <a Debian kernel>`.
pub fn test_cmd(profile: &Path, out: &Path) -> Command {
    let mut c = kiln();
    c.arg("test")
        .arg(profile)
        .arg("--out-dir")
        .arg(out)
        .arg("--kernel")
        .arg(debian_kernel());
    c
}

/// Command lines of running processes that mention `marker`.
pub fn processes_mentioning(marker: &str) -> Vec<String> {
    let ps = Command::new("ps")
        .args(["-eo", "pid,args"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&ps.stdout)
        .lines()
        .filter(|l| l.contains(marker) && !l.contains(" ps -eo"))
        .map(String::from)
        .collect()
}

/// A small kernel build tree made by `tests/fixtures/kernel-tree.sh` from a Debian
/// kernel, with the stand-in Memorizer module, made once per version of the script and
/// module source and kept in the cache.
pub fn kernel_tree() -> PathBuf {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut inputs = Vec::new();
        for f in [
            "tests/fixtures/kernel-tree.sh",
            "tests/memorizer-standin/memorizer.c",
            "tests/memorizer-standin/Kbuild",
        ] {
            inputs.extend(std::fs::read(repo.join(f)).unwrap());
        }
        let key = {
            use sha2::Digest;
            hex::encode(&sha2::Sha256::digest(&inputs)[..8])
        };
        let base = kiln::cache::cache_dir().join("test-kernel-tree");
        std::fs::create_dir_all(&base).unwrap();
        let lock = std::fs::File::create(base.join(".lock")).unwrap();
        lock.lock().unwrap();
        let dir = base.join(&key);
        if dir.join(".done").exists() {
            return dir;
        }
        let out = Command::new("sh")
            .arg(repo.join("tests/fixtures/kernel-tree.sh"))
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "making the kernel tree fixture failed (it needs linux-headers-6.1.0-47-cloud-amd64, gcc-12 and make):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(dir.join(".done"), "").unwrap();
        dir
    })
    .clone()
}

/// The gdb command `kiln boot --gdb` printed on stderr.
pub fn printed_gdb_command(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| {
            l.split_once(": gdb -ex ")
                .map(|(_, c)| format!("gdb -ex {c}"))
        })
        .unwrap_or_else(|| panic!("no gdb command in {stderr}"))
}

/// Runs the printed gdb command in batch mode with `commands`; its stdout and stderr.
pub fn run_gdb(printed: &str, commands: &str) -> String {
    let g = run(Command::new("sh")
        .arg("-c")
        .arg(format!("timeout 120 {printed} -batch -nx {commands}")));
    format!("{}{}", stdout(&g), stderr(&g))
}

/// Waits (up to two minutes) until the console log at `path` says `marker`.
pub fn wait_for_console(path: &Path, marker: &str) {
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(path).is_ok_and(|c| c.contains(marker)) {
        assert!(
            start.elapsed().as_secs() < 120,
            "the console never said {marker:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Debian's kernel package `package` (e.g. linux-image-6.1.0-47-amd64), unpacked once
/// into the cache as the package lays it out (`boot/vmlinuz-RELEASE` beside
/// `lib/modules/RELEASE`); returns the vmlinuz.
pub fn unpacked_kernel(package: &str) -> PathBuf {
    let dir = kiln::cache::cache_dir().join("test-kernels").join(package);
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join(".lock")).unwrap();
    lock.lock().unwrap();
    if let Some(k) = unpacked_vmlinuz(&dir) {
        return k;
    }
    let sh = format!(
        "set -e; cd {d}; rm -rf x *.deb; apt-get download {package} 2>&1; dpkg-deb -x {package}_*.deb x; rm -f *.deb",
        d = dir.display()
    );
    let out = Command::new("sh").arg("-c").arg(&sh).output().unwrap();
    assert!(
        out.status.success(),
        "fetching {package} failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    unpacked_vmlinuz(&dir).expect("kernel unpacked")
}

/// Makes sure the ordinary user `user` exists (the tests that run kiln unprivileged).
pub fn ensure_user(user: &str) {
    if !Command::new("id").arg(user).status().unwrap().success() {
        let ok = Command::new("useradd")
            .args(["-m", user])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "this test needs a user {user}: useradd -m {user}");
    }
}

/// Every file and directory under `root` except the top-level entries named in `skip`,
/// with its size and modification time: compared before and after a run, it shows
/// whether kiln wrote anywhere it should not.
pub fn files_outside(root: &Path, skip: &[&str]) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut all = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if d == root && e.file_name().to_str().is_some_and(|n| skip.contains(&n)) {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            all.push((p.clone(), m.len(), m.modified().unwrap()));
            if m.is_dir() {
                todo.push(p);
            }
        }
    }
    all.sort();
    all
}

/// A temporary directory other users may enter (a tempdir's own mode keeps them out),
/// for tests that run kiln as another user.
pub fn tempdir_for_others() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Gives `path` and everything below it to `user`.
pub fn give_to(user: &str, path: &Path) {
    let ok = Command::new("chown")
        .arg("-R")
        .arg(user)
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "chown -R {user} {}", path.display());
}
