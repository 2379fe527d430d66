//! Real boots: a Debian kernel in QEMU (TCG here) with initramfs images kiln built.
//! Each outcome the runner distinguishes is produced for real and checked.

mod common;
use common::*;

use std::time::{Duration, Instant};

#[test]
fn a_passing_test_passes_and_shows_its_output() {
    let d = tempfile::tempdir().unwrap();
    let p = busybox_profile(
        d.path(),
        "pass",
        "[test]\ncommand = \"echo hello-from-guest; uname -r\"\ntimeout = \"120s\"\n",
    );
    let o = run(&mut test_cmd(&p, &d.path().join("out")));
    assert_eq!(o.status.code(), Some(0));
    let s = stdout(&o);
    assert!(s.contains("hello-from-guest"), "{s}");
    assert!(
        s.contains("-cloud-amd64"),
        "uname -r of the Debian kernel: {s}"
    );
    assert!(s.contains("PASSED"), "{s}");
}

#[test]
fn a_failing_test_exits_with_its_status() {
    let d = tempfile::tempdir().unwrap();
    let p = busybox_profile(
        d.path(),
        "fail",
        "[test]\ncommand = \"echo about to fail; exit 3\"\ntimeout = \"120s\"\n",
    );
    let o = run(&mut test_cmd(&p, &d.path().join("out")));
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stdout(&o).contains("FAILED: the test exited with status 3"),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("last lines of the serial console"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_hanging_test_times_out_and_leaves_no_qemu_behind() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let p = busybox_profile(d.path(), "hang", "[test]\ncommand = \"sleep 1000\"\n");
    let start = Instant::now();
    let o = run(test_cmd(&p, &out).args(["--timeout", "20s"]));
    assert_eq!(o.status.code(), Some(124));
    assert!(stdout(&o).contains("TIMED OUT"), "{}", stdout(&o));
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
    // The run directory is unique to this test; no process may still mention it.
    let marker = out.join("hang.runs").to_string_lossy().into_owned();
    let left = processes_mentioning(&marker);
    assert!(left.is_empty(), "QEMU still running: {left:?}");
}

#[test]
fn an_init_that_exits_is_a_kernel_panic() {
    let d = tempfile::tempdir().unwrap();
    let p = busybox_profile(
        d.path(),
        "panic",
        "[[file]]\npath = \"/init\"\ncontent = \"#!/bin/sh\\necho init exits now\\nexit 1\\n\"\nmode = \"0755\"\n",
    );
    let o = run(&mut test_cmd(&p, &d.path().join("out")));
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stdout(&o).contains("KERNEL PANIC: Kernel panic - not syncing: Attempted to kill init!"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn qemu_that_cannot_start_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let p = busybox_profile(d.path(), "badqemu", "[test]\ncommand = \"true\"\n");
    let o = run(test_cmd(&p, &d.path().join("out")).arg("--qemu-arg=-no-such-option"));
    assert_eq!(o.status.code(), Some(126));
    assert!(
        stdout(&o).contains("QEMU FAILED") && stdout(&o).contains("no-such-option"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn the_same_profile_builds_to_the_same_bytes() {
    let d = tempfile::tempdir().unwrap();
    let p = busybox_profile(d.path(), "repro", "[test]\ncommand = \"true\"\n");
    let mut shas = Vec::new();
    for i in 0..2 {
        let out = d.path().join(format!("out{i}"));
        let o = run(kiln().arg("build").arg(&p).arg("-o").arg(&out));
        assert!(o.status.success());
        shas.push(sha256_file(&out.join("repro.cpio.zst")));
    }
    assert_eq!(shas[0], shas[1]);
    // A different SOURCE_DATE_EPOCH is a different image.
    let out = d.path().join("out-epoch");
    let o = run(kiln()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("build")
        .arg(&p)
        .arg("-o")
        .arg(&out));
    assert!(o.status.success());
    assert_ne!(sha256_file(&out.join("repro.cpio.zst")), shas[0]);
}

#[test]
fn the_kvm_probe_answers_quickly() {
    let start = Instant::now();
    let r = kiln::vm::kvm::probe("qemu-system-x86_64", kiln::vm::kvm::PROBE_TIMEOUT);
    eprintln!("probe: {r:?}");
    assert!(
        start.elapsed() < kiln::vm::kvm::PROBE_TIMEOUT + Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn accel_auto_falls_back_with_one_warning_line_when_kvm_hangs() {
    let d = tempfile::tempdir().unwrap();
    let p = busybox_profile(d.path(), "auto", "[test]\ncommand = \"true\"\n");
    std::fs::write(
        &p,
        std::fs::read_to_string(&p)
            .unwrap()
            .replace("accel = \"tcg\"", "accel = \"auto\""),
    )
    .unwrap();
    let o = run(test_cmd(&p, &d.path().join("out")).env("KILN_CACHE_DIR", d.path().join("cache")));
    assert_eq!(o.status.code(), Some(0));
    // Whether KVM really runs guests, learnt without the probe under test: the same
    // image booted with KVM forced. Under TCG it takes about 3 s; a hang hits the limit.
    let forced = run(test_cmd(&p, &d.path().join("out")).args([
        "--accel",
        "kvm",
        "--timeout",
        "20s",
        "--no-build",
    ]));
    let kvm_works = forced.status.code() == Some(0);
    let warnings: Vec<String> = stderr(&o)
        .lines()
        .filter(|l| l.contains("falling back to TCG"))
        .map(String::from)
        .collect();
    if kvm_works {
        assert!(warnings.is_empty());
        assert!(stderr(&o).contains("under KVM"));
    } else {
        assert_eq!(warnings.len(), 1, "{}", stderr(&o));
        assert!(stderr(&o).contains("under TCG"));
    }
}
