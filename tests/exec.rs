//! `kiln exec`: a host command under Debian's generic 6.1 kernel (9p as modules) and its
//! cloud kernel (no 9p: virtiofs, through QEMU's virtiofsd), with real QEMU under TCG:
//! the exit status comes back, the root is read-only, the working directory is written
//! with the caller's ownership, /tmp is a tmpfs that takes heavy use, and a transport
//! the kernel lacks is refused with the options it lacks. Also as an ordinary user, and
//! from a vmtest.toml, with a JUnit report read by a third-party reader.

mod common;
use common::*;

use std::process::Command;

const GENERIC: &str = "linux-image-6.1.0-47-amd64";
const CLOUD: &str = "linux-image-6.1.0-47-cloud-amd64";

fn exec_in(dir: &std::path::Path) -> Command {
    let mut c = kiln();
    c.current_dir(dir).args(["exec", "--kernel", GENERIC]);
    c
}

#[test]
fn a_command_runs_under_the_generic_kernel_with_the_hosts_userspace() {
    let d = tempfile::tempdir().unwrap();
    let o = run(exec_in(d.path()).args([
        "--",
        "sh",
        "-c",
        "uname -r; echo written > out.txt; touch /usr/kiln-exec-test && echo usr-writable; \
         echo modules: $(cut -d' ' -f1 /proc/modules | sort); cat /sys/module/cryptomgr/parameters/notests; exit 3",
    ]));
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(3), "{text}{}", stderr(&o));
    assert!(text.contains("6.1.0-47-amd64"), "{text}");
    // 9p's modules are loaded; the other transport's and the overlay's, unused, are not.
    let modules = text
        .lines()
        .find(|l| l.starts_with("modules:"))
        .unwrap_or("");
    let loaded: Vec<&str> = modules.split_whitespace().skip(1).collect();
    for m in ["9p", "9pnet_virtio", "virtio_pci"] {
        assert!(loaded.contains(&m), "{m} not loaded: {modules}");
    }
    for m in ["fuse", "virtiofs", "overlay"] {
        assert!(!loaded.contains(&m), "{m} loaded: {modules}");
    }
    // The crypto self-tests are skipped, unless the user asks for them (below).
    assert!(text.lines().any(|l| l == "Y"), "{text}");
    assert!(text.contains("Read-only file system"), "{text}");
    assert!(!text.contains("usr-writable"), "{text}");
    assert_eq!(
        std::fs::read_to_string(d.path().join("out.txt")).unwrap(),
        "written\n"
    );

    // The cloud kernel has no 9p: the same over virtiofs.
    let o = run(kiln().current_dir(d.path()).args([
        "exec",
        "--kernel",
        CLOUD,
        "--append",
        "cryptomgr.notests=0",
        "--",
        "sh",
        "-c",
        "uname -r; mount | grep -c ' type virtiofs '; grep -c -E '^(9p|9pnet|overlay) ' /proc/modules; \
         cat /sys/module/cryptomgr/parameters/notests; echo again > out.txt",
    ]));
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}{}", stderr(&o));
    // Nothing but the command's output on stdout: no boot lines, banners or CRs.
    // Three virtiofs shares: the root, the working directory and kiln's own; no module
    // of 9p's or the overlay's; the crypto self-tests ran, as --append asked.
    assert_eq!(text, "6.1.0-47-cloud-amd64\n3\n0\nN\n", "{}", stderr(&o));
    assert!(
        text.lines().any(|l| l.trim() == "3"),
        "three virtiofs mounts: {text}"
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join("out.txt")).unwrap(),
        "again\n"
    );
    // Asked for 9p, it is refused before booting, naming what it lacks.
    let o = run(kiln()
        .current_dir(d.path())
        .args(["exec", "--share", "9p", "--kernel", CLOUD, "--", "true"]));
    assert_ne!(o.status.code(), Some(0));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert!(
        all.contains("over 9p needs CONFIG_NET_9P, CONFIG_NET_9P_VIRTIO, CONFIG_9P_FS"),
        "{all}"
    );
}

/// As an ordinary user: the command runs with the user's ids, its files belong to the
/// user, and a sort through /tmp of a few MB works (a tmpfs, not 9p).
#[test]
fn an_ordinary_user_runs_as_themselves_and_tmp_is_a_tmpfs() {
    let user = "kilntest";
    ensure_user(user);
    // virtiofsd without root maps one of the user's subordinate ids to its root.
    let has_subids = std::fs::read_to_string("/etc/subuid")
        .is_ok_and(|t| t.lines().any(|l| l.starts_with(&format!("{user}:"))));
    if !has_subids {
        let ok = Command::new("usermod")
            .args([
                "--add-subuids",
                "300000-365535",
                "--add-subgids",
                "300000-365535",
                user,
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "this test needs subordinate ids for {user} (usermod --add-subuids)"
        );
    }
    let d = tempdir_for_others();
    let dir = d.path().join("work");
    std::fs::create_dir(&dir).unwrap();
    give_to(user, &dir);
    let script = format!(
        "cd {} && {} -q exec --kernel {GENERIC} -- sh -c 'id -u; id -g; echo mine > f; t=$(mktemp); seq 1 300000 | sort -r > \"$t\" && sort -n \"$t\" | tail -1; mount | grep \" /tmp \"'",
        dir.display(),
        env!("CARGO_BIN_EXE_kiln")
    );
    let o = run(Command::new("su").args([user, "-c", &script]));
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}{}", stderr(&o));
    let uid = String::from_utf8(
        Command::new("id")
            .args(["-u", user])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        text.contains(&format!("\n{}", uid.trim())) || text.starts_with(uid.trim()),
        "{text}"
    );
    assert!(text.contains("300000"), "{text}");
    assert!(text.contains("tmpfs on /tmp"), "{text}");
    use std::os::unix::fs::MetadataExt;
    let f = std::fs::metadata(dir.join("f")).unwrap();
    assert_eq!(f.uid().to_string(), uid.trim());

    // The cloud kernel: virtiofs, its daemon without root in a namespace of its own;
    // what the command writes is still the user's, and the root still read-only.
    let script = format!(
        "cd {} && {} -q exec --kernel {CLOUD} -- sh -c 'id -u; echo cloud > g; touch /usr/x || echo refused'",
        dir.display(),
        env!("CARGO_BIN_EXE_kiln")
    );
    let o = run(Command::new("su").args([user, "-c", &script]));
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}{}", stderr(&o));
    assert!(text.lines().any(|l| l.trim() == uid.trim()), "{text}");
    assert!(text.contains("refused"), "{text}");
    let g = std::fs::metadata(dir.join("g")).unwrap();
    assert_eq!(g.uid().to_string(), uid.trim());
}

/// A vmtest.toml written from vmtest's documentation: three targets over two kernels
/// (unpacked Debian packages, their modules beside them), one failing on purpose, one
/// with a mount and one with its own CPUs and memory, run two at a time.
#[test]
fn a_vmtest_toml_runs_its_targets_in_parallel_with_a_summary() {
    let a = unpacked_kernel("linux-image-6.1.0-47-amd64");
    let b = unpacked_kernel("linux-image-6.1.0-48-amd64");
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "data/in.txt", "shared\n");
    write(
        d.path(),
        "vmtest.toml",
        &format!(
            "[[target]]\nname = \"release on 47\"\nkernel = \"{}\"\nkernel_args = \"loglevel=3\"\ncommand = \"uname -r | grep -q '^6.1.0-47-amd64$' && cat /mnt/data/in.txt > seen.txt\"\n[target.vm.mounts]\n\"/mnt/data\" = {{ host_path = \"data\", writable = false }}\n\n[[target]]\nname = \"fails on purpose\"\nkernel = \"{}\"\ncommand = \"exit 4\"\n[target.vm]\nmemory = \"512M\"\n\n[[target]]\nname = \"two cpus on 48\"\nkernel = \"{}\"\ncommand = \"test $(nproc) = 2 && uname -r | grep -q 6.1.0-48\"\n[target.vm]\nnum_cpus = 2\nmemory = \"1G\"\n",
            a.display(),
            a.display(),
            b.display()
        ),
    );
    let start = std::time::Instant::now();
    let o = run(kiln()
        .current_dir(d.path())
        .args(["exec", "-j", "2", "--junit", "report.xml"]));
    let took = start.elapsed();
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}{}", stderr(&o));
    assert!(text.contains("2 of 3 cells passed"), "{text}");
    assert_eq!(
        std::fs::read_to_string(d.path().join("seen.txt")).unwrap(),
        "shared\n"
    );
    // A third-party JUnit reader sees one case per target, the failing one failed.
    let py = r#"
import sys
from junitparser import JUnitXml, Failure
for s in JUnitXml.fromfile(sys.argv[1]):
    for c in s:
        print(c.name, "failed" if any(isinstance(r, Failure) for r in c.result) else "passed")
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(py)
        .arg(d.path().join("report.xml"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut cases: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(String::from)
        .collect();
    cases.sort();
    assert_eq!(
        cases,
        [
            "fails on purpose failed",
            "release on 47 passed",
            "two cpus on 48 passed"
        ]
    );
    // --filter picks by regular expression; one target exits with its command's status.
    let o = run(kiln()
        .current_dir(d.path())
        .args(["exec", "--filter", "^fails"]));
    assert_eq!(o.status.code(), Some(4), "{}", stdout(&o));
    eprintln!("three targets, two at a time, took {took:?}");
}

/// profiles/host.toml: a [host] profile's test on both kinds of kernel (9p and
/// virtiofs), with the profile's own file laid over the host's root.
#[test]
fn a_host_profile_runs_its_test_on_the_hosts_userspace_under_each_kernel() {
    let d = tempfile::tempdir().unwrap();
    let profile = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/host.toml");
    let o = run(kiln()
        .current_dir(d.path())
        .arg("test")
        .arg(&profile)
        .arg("--matrix"));
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}{}", stderr(&o));
    assert!(text.contains("2 of 2 cells passed"), "{text}");
    let console = |k: &str| {
        std::fs::read_to_string(
            d.path()
                .join(format!("out/host.runs/1/{k}/hello/console.log")),
        )
        .unwrap()
    };
    assert!(
        console("linux-image-6.1.0-47-amd64").contains("hello from 6.1.0-47-amd64 over 9p"),
        "{}",
        console("linux-image-6.1.0-47-amd64")
    );
    assert!(
        console(CLOUD).contains("hello from 6.1.0-47-cloud-amd64 over virtiofs"),
        "{}",
        console(CLOUD)
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join("kiln-hello.txt")).unwrap(),
        "root was here\n"
    );
}

/// With no command, a shell on the console as in vmtest's `-` and vng: what is typed runs
/// on the host's userspace, and the shell's exit status is kiln's.
#[test]
fn no_command_gives_a_shell_on_the_console() {
    use std::io::{BufRead, Write};
    let d = tempfile::tempdir().unwrap();
    let mut child = kiln()
        .current_dir(d.path())
        .args(["exec", "--kernel", GENERIC])
        .env("SHELL", "/bin/sh")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut seen = String::new();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // Typing before the guest's console is up would be lost, as on a real serial line.
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("kiln: running test exec") {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    writeln!(stdin, "echo typed > typed.txt; exit 5").unwrap();
    for line in lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(5), "{seen}");
    assert_eq!(
        std::fs::read_to_string(d.path().join("typed.txt")).unwrap(),
        "typed\n"
    );
}
