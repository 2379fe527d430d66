//! Runs as users meet them: every exit status kiln promises, produced by a real guest;
//! concurrent runs of one profile; Ctrl-C; `kiln boot`; `kiln qemu --print` and the
//! command it prints; the results disk; `--persist` on a real disk.

mod common;
use common::*;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn status_of(cmd: &str, extra: &str) -> (Option<i32>, String, String) {
    let d = tempfile::tempdir().unwrap();
    let p = busybox_profile(
        d.path(),
        "st",
        &format!("[test]\ncommand = \"{cmd}\"\ntimeout = \"120s\"\n{extra}"),
    );
    let o = run(&mut test_cmd(&p, &d.path().join("out")));
    (o.status.code(), stdout(&o), stderr(&o))
}

#[test]
fn a_test_status_up_to_119_passes_through_and_a_higher_one_is_123() {
    let (code, out, _) = status_of("exit 77", "");
    assert_eq!(code, Some(77), "{out}");
    let (code, out, _) = status_of("exit 124", "");
    assert_eq!(
        code,
        Some(123),
        "a test's 124 must not look like kiln's timeout: {out}"
    );
    assert!(out.contains("exited with status 124"), "{out}");
}

#[test]
fn a_results_disk_that_cannot_mount_is_infrastructure_not_a_panic() {
    // The cloud kernel builds virtio_blk as a module, and a profile with a host kernel
    // path loads no modules: the preflight knows the guest could not see the disk.
    let (code, out, _) = status_of("echo hi > /results/x", "results = \"/results\"\n");
    assert_eq!(code, Some(122), "{out}");
    assert!(
        out.contains("CONFIG_VIRTIO_BLK=m, but it must be built in (=y) for the results disk"),
        "{out}"
    );
    // With the modules loaded, a results directory that cannot be a mount point (in
    // procfs) fails kiln's own step in the guest, not the test.
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "infra.toml",
        "version = 1\n[distribution]\nsuite = \"trixie\"\npackages = [\"busybox-static\"]\n[kernel]\npackage = \"linux-image-cloud-amd64\"\n[[symlink]]\npath = \"/bin/sh\"\ntarget = \"busybox\"\n[test]\ncommand = \"true\"\nresults = \"/proc/kiln-results\"\ntimeout = \"120s\"\n[qemu]\nmemory = \"512M\"\naccel = \"tcg\"\n",
    );
    let o = run(kiln()
        .arg("test")
        .arg(&p)
        .arg("-o")
        .arg(d.path().join("out")));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(120), "{out}");
    assert!(
        out.contains("INFRASTRUCTURE") && out.contains("cannot mount the results disk"),
        "{out}"
    );
}

#[test]
fn a_guest_that_powers_off_without_a_status_is_127() {
    let d = tempfile::tempdir().unwrap();
    let p = busybox_profile(
        d.path(),
        "quiet",
        "[[file]]\npath = \"/init\"\ncontent = \"#!/bin/sh\\n/bin/busybox poweroff -f\\n\"\nmode = \"0755\"\n",
    );
    let o = run(&mut test_cmd(&p, &d.path().join("out")));
    assert_eq!(o.status.code(), Some(127), "{}", stdout(&o));
    assert!(stdout(&o).contains("NO STATUS"), "{}", stdout(&o));
}

#[test]
fn a_qemu_binary_that_does_not_exist_is_126() {
    let d = tempfile::tempdir().unwrap();
    let p = busybox_profile(d.path(), "noqemu", "[test]\ncommand = \"true\"\n");
    let o = run(test_cmd(&p, &d.path().join("out")).args(["--qemu", "/nonexistent/qemu"]));
    assert_eq!(o.status.code(), Some(126));
    assert!(
        stdout(&o).contains("QEMU FAILED") && stdout(&o).contains("/nonexistent/qemu"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn two_runs_of_one_profile_at_once_both_pass_with_their_own_results() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let p = write(
        d.path(),
        "pair.toml",
        "version = 1\n[distribution]\nsuite = \"trixie\"\npackages = [\"busybox-static\"]\n[kernel]\npackage = \"linux-image-cloud-amd64\"\n[[symlink]]\npath = \"/bin/sh\"\ntarget = \"busybox\"\n[test]\ncommand = \"cat /proc/sys/kernel/random/uuid > /results/id\"\nresults = \"/results\"\ntimeout = \"240s\"\n[qemu]\nmemory = \"512M\"\naccel = \"tcg\"\n",
    );
    assert!(run(kiln().arg("build").arg(&p).arg("-o").arg(&out))
        .status
        .success());
    // One with --no-build, one that finds the image up to date and reuses it.
    let spawn = |extra: &[&str]| {
        kiln()
            .arg("test")
            .arg(&p)
            .arg("-o")
            .arg(&out)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(&["--no-build"]), spawn(&[]));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let e = String::from_utf8_lossy(&b.stderr);
    assert!(e.contains("pair.cpio.zst is up to date"), "{e}");
    for o in [&a, &b] {
        let s = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{s}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            s.contains("PASSED") && s.contains("kiln: results: 1 files"),
            "{s}"
        );
    }
    let runs: Vec<_> = std::fs::read_dir(out.join("pair.runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let ids: Vec<String> = runs
        .iter()
        .map(|r| std::fs::read_to_string(r.join("results/id")).unwrap())
        .collect();
    assert_ne!(ids[0], ids[1], "each run brought back its own results");
    let latest = std::fs::canonicalize(out.join("pair.run")).unwrap();
    assert!(runs
        .iter()
        .any(|r| std::fs::canonicalize(r).unwrap() == latest));
}

#[test]
fn ctrl_c_cancels_the_run_and_kills_qemu() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let p = busybox_profile(d.path(), "intr", "[test]\ncommand = \"sleep 1000\"\n");
    assert!(run(kiln().arg("build").arg(&p).arg("-o").arg(&out))
        .status
        .success());
    let child = test_cmd(&p, &out)
        .arg("--no-build")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the test is running in the guest.
    let console = out.join("intr.run/console.log");
    let start = Instant::now();
    while !std::fs::read_to_string(&console).is_ok_and(|c| c.contains("kiln: running test")) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the guest never started"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("CANCELLED"));
    let marker = out.join("intr.runs").to_string_lossy().into_owned();
    assert!(
        processes_mentioning(&marker).is_empty(),
        "QEMU outlived kiln"
    );
}

#[test]
fn kiln_boot_puts_the_console_on_stdio_and_exits_with_the_guest_status() {
    let d = tempfile::tempdir().unwrap();
    let p = busybox_profile(
        d.path(),
        "boot",
        "[test]\ncommand = \"echo from-the-guest; exit 5\"\n",
    );
    let o = run(kiln()
        .arg("boot")
        .arg(&p)
        .arg("-o")
        .arg(d.path().join("out"))
        .arg("--kernel")
        .arg(debian_kernel())
        .arg("--test")
        .stdin(Stdio::null()));
    assert_eq!(o.status.code(), Some(5));
    assert!(stdout(&o).contains("from-the-guest"), "{}", stdout(&o));
    assert!(stderr(&o).contains("the guest reported exit status 5"));
    // Without --test the same image bytes boot to a shell on the console, which runs
    // what the terminal types; the test does not run.
    let image = d.path().join("out/boot.cpio.zst");
    let before = std::fs::read(&image).unwrap();
    let mut child = kiln()
        .arg("boot")
        .arg(&p)
        .arg("-o")
        .arg(d.path().join("out"))
        .arg("--kernel")
        .arg(debian_kernel())
        .arg("--no-build")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Type only once the shell is there: the UART drops what arrives before anything
    // opens the console.
    let mut stdin = child.stdin.take().unwrap();
    let reader = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !seen.contains("kiln: no test on this boot") {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => {
                seen.push_str(&l);
                seen.push('\n');
            }
            Err(_) => {
                let _ = child.kill();
                panic!("no shell on the console:\n{seen}");
            }
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    {
        use std::io::Write;
        stdin.write_all(b"echo typed-$((6*7))\nexit\n").unwrap();
    }
    let status = child.wait().unwrap();
    drop(stdin);
    seen.extend(rx.iter().map(|l| l + "\n"));
    let o = std::process::Output {
        status,
        stdout: seen.into_bytes(),
        stderr: Vec::new(),
    };
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("kiln: no test on this boot"), "{out}");
    assert!(out.contains("typed-42"), "{out}");
    assert!(!out.contains("from-the-guest"), "{out}");
    assert_eq!(std::fs::read(&image).unwrap(), before, "the same image");
}

#[test]
fn the_printed_test_command_runs_the_test_in_a_shell() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let p = busybox_profile(d.path(), "printed", "[test]\ncommand = \"exit 9\"\n");
    // A first run makes the run directory the printed command writes into.
    let o = run(&mut test_cmd(&p, &out));
    assert_eq!(o.status.code(), Some(9));
    // The run kept the command it ran; the printed one differs only in where the
    // console goes (the latest-run link rather than the run's own directory).
    let kept = std::fs::read_to_string(out.join("printed.run/qemu.sh")).unwrap();
    assert!(kept.starts_with("#!/bin/sh\n"), "{kept}");
    assert!(kept.contains("printed.runs/1/console.log"), "{kept}");
    let o = run(kiln()
        .args(["qemu", "--print", "--test"])
        .arg(&p)
        .arg("-o")
        .arg(&out)
        .arg("--kernel")
        .arg(debian_kernel()));
    assert!(o.status.success());
    let cmd = stdout(&o);
    assert!(cmd.contains("-accel tcg"), "{cmd}");
    // Debian's kernel has a PVH entry: QEMU loads its vmlinux, decompressed into the
    // cache, and the guest skips the decompressor.
    let entered = cmd
        .lines()
        .find_map(|l| l.trim().strip_prefix("-kernel "))
        .unwrap()
        .trim_end_matches(" \\")
        .to_string();
    assert!(
        entered.contains("/pvh/") && entered.ends_with(".vmlinux"),
        "{cmd}"
    );
    let elf = std::fs::read(&entered).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF", "{entered}");
    assert!(elf.len() > 3 * std::fs::metadata(debian_kernel()).unwrap().len() as usize);
    // Asked to, it boots the bzImage as it is.
    let o = run(kiln()
        .args(["qemu", "--print", "--test", "--kernel-entry", "image"])
        .arg(&p)
        .arg("-o")
        .arg(&out)
        .arg("--kernel")
        .arg(debian_kernel()));
    let image_cmd = stdout(&o);
    assert!(
        image_cmd.contains(&format!("-kernel {}", debian_kernel().display())),
        "{image_cmd}"
    );
    // And that way in still boots and runs the test.
    let o = run(test_cmd(&p, &out).args(["--kernel-entry", "image"]));
    assert_eq!(o.status.code(), Some(9));
    let kept = std::fs::read_to_string(out.join("printed.run/qemu.sh")).unwrap();
    assert!(
        kept.contains(&format!("-kernel {}", debian_kernel().display())),
        "{kept}"
    );
    // Insisting on PVH with a kernel that has none stops before QEMU, and says why.
    let not_a_kernel = write(d.path(), "vmlinuz-fake", "not a kernel");
    let o = run(kiln()
        .args(["qemu", "--print", "--test", "--kernel-entry", "pvh"])
        .arg(&p)
        .arg("-o")
        .arg(&out)
        .arg("--kernel")
        .arg(&not_a_kernel));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot be entered through PVH"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("not a bzImage"), "{}", stderr(&o));
    assert!(cmd.contains("printed.run/console.log"), "{cmd}");
    let status = out.join("printed.run/status-uart");
    std::fs::write(&status, "").unwrap();
    let sh = Command::new("timeout")
        .args(["120", "sh", "-c"])
        .arg(&cmd)
        .output()
        .unwrap();
    assert!(
        sh.status.success(),
        "{}",
        String::from_utf8_lossy(&sh.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&status).unwrap().trim(),
        "KILN_EXIT_STATUS=9"
    );
    // Without --test: the console on stdio, the guest's writes kept.
    let o = run(kiln()
        .args(["qemu", "--print"])
        .arg(&p)
        .arg("-o")
        .arg(&out)
        .arg("--kernel")
        .arg(debian_kernel()));
    assert!(stdout(&o).contains("-serial mon:stdio"), "{}", stdout(&o));
}

/// A disk whose own /sbin/init records a marker file and reports whether it was there.
fn persist_profile(dir: &Path) -> std::path::PathBuf {
    write(
        dir,
        "persist.toml",
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
if [ -e /persisted ]; then s=0; else s=1; /bin/busybox touch /persisted; fi
/bin/busybox sync
echo KILN_EXIT_STATUS=$s > /dev/ttyS1
/bin/busybox poweroff -f
"""
[qemu]
memory = "512M"
accel = "tcg"
[test]
timeout = "300s"
command = "true"
"##,
    )
}

#[test]
fn a_disk_keeps_the_guests_writes_only_with_persist() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let p = persist_profile(d.path());
    let t = |extra: &[&str]| {
        let o = run(kiln()
            .arg("test")
            .arg(&p)
            .arg("-o")
            .arg(&out)
            .arg("--no-build")
            .args(extra));
        // Each run is the guest's verdict, not an error of kiln's.
        assert!(stdout(&o).contains("kiln: "), "{}", stderr(&o));
        assert!(!stderr(&o).contains("kiln: error"), "{}", stderr(&o));
        o.status.code()
    };
    assert!(run(kiln().arg("build").arg(&p).arg("-o").arg(&out))
        .status
        .success());
    assert_eq!(t(&[]), Some(1), "first boot: no marker");
    assert_eq!(t(&[]), Some(1), "a throwaway overlay: still no marker");
    assert_eq!(
        t(&["--persist"]),
        Some(1),
        "writes the marker into the image"
    );
    assert_eq!(t(&[]), Some(0), "the marker persisted");
}

#[test]
fn several_kernels_run_as_a_matrix_in_parallel_with_a_summary() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // Fails on purpose on 6.1 kernels only.
    let p = write(
        d.path(),
        "mx.toml",
        "version = 1\n[distribution]\nsuite = \"trixie\"\npackages = [\"busybox-static\"]\n[kernel]\npackage = \"linux-image-cloud-amd64\"\n[[symlink]]\npath = \"/bin/sh\"\ntarget = \"busybox\"\n[test]\ncommand = \"uname -r; case $(uname -r) in 6.1.*) exit 3;; esac\"\ntimeout = \"120s\"\n[qemu]\nmemory = \"512M\"\naccel = \"tcg\"\n",
    );
    assert!(run(kiln().arg("build").arg(&p).arg("-o").arg(&out))
        .status
        .success());
    let trixie = out.join("mx.vmlinuz");
    let missing = d.path().join("no-such-bzImage");
    let start = Instant::now();
    let o = run(kiln()
        .arg("test")
        .arg(&p)
        .arg("-o")
        .arg(&out)
        .arg("--no-build")
        .arg("--kernel")
        .arg(&trixie)
        .arg("--kernel")
        .arg(debian_kernel())
        .arg("--kernel")
        .arg(&missing)
        .arg("--kernel")
        .arg(&trixie)
        .args(["-j", "2", "--junit"])
        .arg(d.path().join("junit.xml")));
    let wall = start.elapsed();
    assert_eq!(
        o.status.code(),
        Some(1),
        "one cell failed, one could not start"
    );
    let s = stdout(&o);
    let row = |label: &str| {
        s.lines()
            .find(|l| l.split_whitespace().next() == Some(label))
            .unwrap_or_else(|| panic!("no row for {label}:\n{s}"))
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let bookworm = debian_kernel()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(row("mx.vmlinuz")[1..4], ["test", "passed", "0"], "{s}");
    assert_eq!(row("mx.vmlinuz#2")[1..4], ["test", "passed", "0"], "{s}");
    assert_eq!(row(&bookworm)[1..4], ["test", "failed", "3"], "{s}");
    assert_eq!(row("no-such-bzImage")[2], "error", "{s}");
    assert!(s.contains("kiln: 2 of 4 cells passed"), "{s}");
    // Each cell that did not pass says how to re-run just it; that command works.
    let rerun = s
        .lines()
        .find_map(|l| l.strip_prefix(&format!("kiln: rerun [{bookworm} test]: kiln ")))
        .unwrap_or_else(|| panic!("no rerun line:\n{s}"))
        .to_string();
    let again = Command::new("sh")
        .arg("-c")
        .arg(format!("{} {rerun}", env!("CARGO_BIN_EXE_kiln")))
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(3), "{rerun}");
    // Each booted cell has its own run directory with its own console.
    let dirs: Vec<String> = ["mx.vmlinuz", "mx.vmlinuz#2", &bookworm]
        .iter()
        .map(|l| row(l).last().unwrap().clone())
        .collect();
    assert_ne!(dirs[0], dirs[1]);
    let console = std::fs::read_to_string(Path::new(&dirs[2]).join("console.log")).unwrap();
    assert!(
        console.contains("6.1.0-"),
        "the failing cell ran the bookworm kernel"
    );
    eprintln!("matrix of 3 boots with -j 2: {wall:?}");
    // A third-party JUnit reader agrees: one suite per kernel, the failure's type is the
    // outcome, the cell that could not start is an error.
    let py = r#"
import sys
from junitparser import JUnitXml, Failure, Error
x = JUnitXml.fromfile(sys.argv[1])
for s in x:
    for c in s:
        kinds = [type(r).__name__ + ":" + (r.type or "") for r in c.result]
        print(s.name, c.name, "passed" if c.is_passed else " ".join(kinds))
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(py)
        .arg(d.path().join("junit.xml"))
        .output()
        .unwrap();
    let got = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = format!(
        "mx.vmlinuz test passed\n{bookworm} test Failure:failed\nno-such-bzImage test Error:error\nmx.vmlinuz#2 test passed\n"
    );
    assert_eq!(got, want);
}

#[test]
fn json_lines_and_tap_describe_each_cell() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let p = busybox_profile(
        d.path(),
        "fmt",
        "[test]\ncommand = \"exit 77\"\ntimeout = \"120s\"\n",
    );
    assert!(run(kiln().arg("build").arg(&p).arg("-o").arg(&out))
        .status
        .success());
    let o = run(test_cmd(&p, &out).args(["--no-build", "--json"]));
    assert_eq!(
        o.status.code(),
        Some(77),
        "one cell keeps the single-run status"
    );
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["type"], "cell");
    assert_eq!(lines[0]["outcome"], "failed");
    assert_eq!(lines[0]["guest_status"], 77);
    assert_eq!(lines[0]["exit_code"], 77);
    assert!(Path::new(lines[0]["console_log"].as_str().unwrap()).exists());
    assert_eq!(lines[1]["type"], "summary");
    assert_eq!(lines[1]["passed"], 0);
    // A shard runs its share of the kernels: every second one from the first.
    let o = run(kiln()
        .arg("test")
        .arg(&p)
        .arg("-o")
        .arg(&out)
        .args(["--no-build", "--json", "--shard", "2/2"])
        .arg("--kernel")
        .arg(d.path().join("never-booted"))
        .arg("--kernel")
        .arg(debian_kernel()));
    let cells: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "cell")
        .collect();
    assert_eq!(cells.len(), 1, "{}", stdout(&o));
    assert_eq!(
        cells[0]["kernel_path"].as_str().unwrap(),
        debian_kernel().to_str().unwrap()
    );
    // TAP, read by prove: status 77 is a skip, so the run is a pass.
    let o = run(test_cmd(&p, &out).args(["--no-build", "--tap"]));
    let tap = d.path().join("cells.tap");
    std::fs::write(&tap, stdout(&o)).unwrap();
    let prove = Command::new("prove")
        .args(["--exec", "cat", "-v"])
        .arg(&tap)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&prove.stdout);
    assert!(prove.status.success(), "{text}");
    assert!(
        text.contains("# SKIP status 77") && text.contains("Result: PASS"),
        "{text}"
    );
}

#[test]
fn a_kernel_that_lacks_what_the_run_needs_is_not_booted() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // The Debian kernel, beside a configuration without zstd initramfs support.
    let kernel = debian_kernel();
    let release = kernel
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_string();
    let config = std::fs::read_to_string(kernel.with_file_name(format!("config-{release}")))
        .expect("Debian ships the configuration beside the kernel");
    assert!(config.contains("CONFIG_RD_ZSTD=y"));
    let boot = d.path().join("boot");
    std::fs::create_dir(&boot).unwrap();
    std::fs::copy(&kernel, boot.join("vmlinuz-9.9.9-test")).unwrap();
    std::fs::write(
        boot.join("config-9.9.9-test"),
        config.replace("CONFIG_RD_ZSTD=y", "# CONFIG_RD_ZSTD is not set"),
    )
    .unwrap();
    let p = busybox_profile(d.path(), "pre", "[test]\ncommand = \"true\"\n");
    let start = Instant::now();
    let o = run(kiln()
        .arg("test")
        .arg(&p)
        .arg("-o")
        .arg(&out)
        .arg("--kernel")
        .arg(boot.join("vmlinuz-9.9.9-test")));
    assert_eq!(o.status.code(), Some(122), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("PREFLIGHT") && stdout(&o).contains("CONFIG_RD_ZSTD is not set"),
        "{}",
        stdout(&o)
    );
    assert!(start.elapsed() < Duration::from_secs(30), "it did not boot");
    let console = std::fs::read(out.join("pre.run/console.log")).unwrap();
    assert!(console.is_empty(), "nothing was booted");
    // A disk on a host kernel needs its disk drivers built in; Debian's are modules.
    let disk = write(
        d.path(),
        "disk.toml",
        "version = 1\n[output]\nformat = \"disk\"\nfree_space = \"8M\"\n[[file]]\npath = \"/sbin/init\"\ncontent = \"#!/bin/sh\\n\"\nmode = \"0755\"\n[qemu]\naccel = \"tcg\"\n",
    );
    let o = run(kiln()
        .arg("test")
        .arg(&disk)
        .arg("-o")
        .arg(&out)
        .arg("--kernel")
        .arg(&kernel));
    assert_eq!(o.status.code(), Some(122), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("CONFIG_VIRTIO_BLK=m, but it must be built in"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_kernel_splat_fails_a_passing_test_unless_the_profile_says_warn() {
    // The guest's kernel logs a WARNING splat (through /dev/kmsg), then the test passes.
    let cmd = "echo '<4>WARNING: CPU: 0 PID: 1 at kiln/splat.c:1 kiln_splat+0x0/0x10' > /dev/kmsg; sleep 1; true";
    let (code, out, _) = status_of(cmd, "");
    assert_eq!(code, Some(121), "{out}");
    assert!(
        out.contains("KERNEL SPLAT") && out.contains("WARNING: CPU: 0 PID: 1 at kiln/splat.c:1"),
        "{out}"
    );
    let (code, out, err) = status_of(cmd, "splats = \"warn\"\n");
    assert_eq!(code, Some(0), "{out}");
    assert!(err.contains("the kernel reported a splat"), "{err}");
    // Words a test prints are not kernel lines.
    let (code, out, _) = status_of("echo 'BUG: this is the test talking'", "");
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn the_profiles_matrix_lists_its_cells_and_a_shard_runs_its_share() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let k = debian_kernel();
    let extra = format!(
        "[test]\ncommand = \"true\"\n[matrix]\nkernels = [{:?}, {:?}, {:?}]\n",
        k.display().to_string(),
        d.path().join("b/bzImage").display().to_string(),
        d.path().join("c/bzImage").display().to_string()
    );
    let p = busybox_profile(d.path(), "m", &extra);
    let o = run(kiln()
        .args(["matrix", "list", "--json", "--shards", "2"])
        .arg(&p));
    assert!(o.status.success(), "{}", stderr(&o));
    let cells: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let cells = cells.as_array().unwrap();
    let shards: Vec<&str> = cells.iter().map(|c| c["shard"].as_str().unwrap()).collect();
    assert_eq!(shards, ["1/2", "2/2", "1/2"]);
    assert_eq!(cells[1]["kernel"], "bzImage");
    assert_eq!(cells[2]["kernel"], "bzImage#2");
    // Shard 1/2 runs cells 1 and 3: the Debian kernel boots, the missing one is an error.
    let o = run(kiln()
        .arg("test")
        .arg(&p)
        .arg("-o")
        .arg(&out)
        .args(["--matrix", "--shard", "1/2", "--json"]));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ran: Vec<(&str, &str)> = lines
        .iter()
        .filter(|v| v["type"] == "cell")
        .map(|v| {
            (
                v["kernel"].as_str().unwrap(),
                v["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ran,
        [
            (k.file_name().unwrap().to_str().unwrap(), "passed"),
            ("bzImage#2", "error")
        ],
        "{}",
        stdout(&o)
    );
    let summary = lines.last().unwrap();
    assert_eq!(
        (summary["cells"].as_u64(), summary["passed"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(o.status.code(), Some(1));
}
