//! No privilege needed, proven: `kiln build` and `kiln test` of a disk profile as an
//! ordinary user with no capabilities, under a seccomp filter that denies mount,
//! umount2, unshare, setns, pivot_root, chroot, the new mount API and the loop-device
//! ioctls, as an unprivileged CI container would.

mod common;
use common::*;

use std::os::unix::process::CommandExt;
use std::process::Command;

const USER: &str = "kilntest";

/// One BPF instruction of a seccomp filter.
#[repr(C)]
#[derive(Clone, Copy)]
struct SockFilter {
    code: u16,
    jt: u8,
    jf: u8,
    k: u32,
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_AND_K: u16 = 0x54;
const BPF_RET_K: u16 = 0x06;
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_EPERM: u32 = 0x0005_0000 | 1;

/// mount, umount2, pivot_root, chroot, unshare, setns, and open_tree … mount_setattr.
const DENIED: [u32; 13] = [
    165, 166, 155, 161, 272, 308, 428, 429, 430, 431, 432, 433, 442,
];
const IOCTL: u32 = 16;
/// The loop devices' ioctls are 0x4Cxx.
const LOOP_IOCTL: u32 = 0x4C00;

fn filter() -> Vec<SockFilter> {
    let op = |code, jt, jf, k| SockFilter { code, jt, jf, k };
    let mut f = vec![
        op(BPF_LD_W_ABS, 0, 0, 4), // arch
        op(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        op(BPF_RET_K, 0, 0, RET_EPERM),
        op(BPF_LD_W_ABS, 0, 0, 0), // syscall number
    ];
    for nr in DENIED {
        f.push(op(BPF_JEQ_K, 0, 1, nr));
        f.push(op(BPF_RET_K, 0, 0, RET_EPERM));
    }
    f.push(op(BPF_JEQ_K, 0, 4, IOCTL));
    f.push(op(BPF_LD_W_ABS, 0, 0, 24)); // the ioctl's request, low half
    f.push(op(BPF_AND_K, 0, 0, 0xFF00));
    f.push(op(BPF_JEQ_K, 0, 1, LOOP_IOCTL));
    f.push(op(BPF_RET_K, 0, 0, RET_EPERM));
    f.push(op(BPF_RET_K, 0, 0, RET_ALLOW));
    f
}

/// `cmd`, run as USER with no capabilities, under the filter.
fn confined(cmd: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={USER}"),
        &format!("--regid={USER}"),
        "--init-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--reset-env",
        "sh",
        "-c",
        cmd,
    ]);
    let prog = filter();
    // SAFETY: only async-signal-safe calls between fork and exec; `prog` outlives them.
    unsafe {
        c.pre_exec(move || {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fprog = SockFprog {
                len: prog.len() as u16,
                filter: prog.as_ptr(),
            };
            if libc::prctl(libc::PR_SET_SECCOMP, 2, &fprog as *const SockFprog, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

#[test]
fn the_filter_denies_what_it_should() {
    ensure_user(USER);
    let o = run(&mut confined(
        "unshare -U true && echo unshare-worked; id -u; grep -E '^(CapEff|Seccomp):' /proc/self/status",
    ));
    let out = stdout(&o);
    assert!(!out.contains("unshare-worked"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
}

#[test]
fn a_disk_builds_and_boots_with_no_privilege_at_all() {
    ensure_user(USER);
    let d = tempdir_for_others();
    let work = d.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let p = write(
        &work,
        "plain.toml",
        r##"version = 1
[distribution]
suite = "trixie"
packages = ["busybox-static"]
[kernel]
package = "linux-image-cloud-amd64"
install_modules = false
[output]
format = "disk"
free_space = "16M"
[[directory]]
path = "/dev"
[[directory]]
path = "/proc"
[[symlink]]
path = "/bin/sh"
target = "busybox"
[[file]]
path = "/sbin/init"
mode = "0755"
content = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo KILN_EXIT_STATUS=0 > /dev/ttyS1
/bin/busybox poweroff -f
"""
[qemu]
memory = "512M"
accel = "tcg"
[test]
timeout = "300s"
command = "true"
"##,
    );
    give_to(USER, &work);
    let kiln = env!("CARGO_BIN_EXE_kiln");
    // The user's own cache: nothing of root's is borrowed.
    let cache = work.join("cache");
    let script = format!(
        "export HOME={w} KILN_CACHE_DIR={c} PATH=/usr/sbin:/usr/bin:/sbin:/bin; cd {w} && {kiln} build {p} -o out && {kiln} test {p} -o out --no-build",
        w = work.display(),
        c = cache.display(),
        p = p.display(),
    );
    let o = run(&mut confined(&script));
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let raw = work.join("out/plain.raw");
    let md = std::fs::metadata(&raw).unwrap();
    use std::os::unix::fs::MetadataExt;
    let uid = Command::new("id").args(["-u", USER]).output().unwrap();
    assert_eq!(
        md.uid().to_string(),
        String::from_utf8_lossy(&uid.stdout).trim()
    );
    let v = Command::new("sgdisk").arg("-v").arg(&raw).output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).contains("No problems found"));
}

/// The shipped disk profile, built as root with umask 022 and as an ordinary user with
/// umask 077, each in its own directory with its own cache: the same bytes, and the
/// manifest's image digest is the one `tools/sparse-sha256` gives the file. Each build
/// starts with an empty cache (resolving, downloading and unpacking everything) and
/// still peaks under 100 MB, GNU time says.
#[test]
fn the_shipped_disk_profile_is_the_same_bytes_for_any_user_umask_and_directory() {
    ensure_user(USER);
    let d = tempdir_for_others();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let mut images = Vec::new();
    for (who, umask) in [("root", "022"), (USER, "077")] {
        let work = d.path().join(format!("{who}-checkout"));
        let copied = Command::new("cp")
            .arg("-r")
            .arg(&shipped)
            .arg(&work)
            .status()
            .unwrap();
        assert!(copied.success());
        let script = format!(
            "umask {umask}; export HOME={w} KILN_CACHE_DIR={w}/cache PATH=/usr/sbin:/usr/bin:/sbin:/bin; cd {w} && /usr/bin/time -f %M -o peak-kib {kiln} build debian-minimal-disk.toml -o out",
            w = work.display(),
        );
        let o = if who == "root" {
            run(Command::new("sh")
                .args(["-c", &script])
                .env_remove("SOURCE_DATE_EPOCH"))
        } else {
            give_to(USER, &work);
            run(&mut confined(&script))
        };
        assert_eq!(o.status.code(), Some(0), "{who}: {}", stderr(&o));
        let kib: u64 = std::fs::read_to_string(work.join("peak-kib"))
            .unwrap()
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap();
        assert!(kib * 1024 <= 100_000_000, "{who}: peak RSS {kib} KiB");
        let raw = work.join("out/debian-minimal-disk.raw");
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(work.join("out/debian-minimal-disk.manifest.json")).unwrap(),
        )
        .unwrap();
        let sparse = sparse_sha256_by_script(&raw);
        assert_eq!(manifest["image_sparse_sha256"], sparse.as_str(), "{who}");
        images.push(sha256_file(&raw));
    }
    assert_eq!(images[0], images[1]);
}
