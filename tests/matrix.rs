//! The matrix as its users run it: a profile's kernels × its tests, with Debian kernel
//! packages fetched per cell, in parallel, with per-cell run directories, a summary,
//! JUnit read by a third-party parser, named tests, required results, and the
//! reproducer line of a failed cell.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

/// profiles/kernel-matrix.toml, copied where its kernels lock may be written.
fn kernel_matrix(dir: &Path) -> PathBuf {
    let p = dir.join("kernel-matrix.toml");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/kernel-matrix.toml"),
        &p,
    )
    .unwrap();
    p
}

/// The summary row of a cell, split on whitespace.
fn row(s: &str, kernel: &str, test: &str) -> Vec<String> {
    s.lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|w| w.len() > 3 && w[0] == kernel && w[1] == test)
        .unwrap_or_else(|| panic!("no row for {kernel} {test}:\n{s}"))
}

#[test]
fn the_kernel_matrix_profile_runs_every_test_on_every_kernel() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let p = kernel_matrix(d.path());
    let junit = d.path().join("junit.xml");
    let o = run(kiln()
        .arg("test")
        .arg(&p)
        .arg("-o")
        .arg(&out)
        .args(["--matrix", "-j", "2", "--accel", "tcg", "--junit"])
        .arg(&junit));
    let s = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "two cells fail on purpose:\n{s}");
    let bookworm = "linux-image-cloud-amd64/bookworm";
    let trixie = "linux-image-cloud-amd64/trixie";
    let old = "linux-image-6.1.0-47-cloud-amd64";
    for k in [bookworm, trixie, old] {
        assert_eq!(row(&s, k, "uname")[2..4], ["passed", "0"], "{s}");
    }
    assert_eq!(row(&s, bookworm, "new-enough")[2..4], ["failed", "1"]);
    assert_eq!(row(&s, old, "new-enough")[2..4], ["failed", "1"]);
    assert_eq!(row(&s, trixie, "new-enough")[2], "passed");
    // `btf` is restricted to trixie's kernel: one cell, not three.
    assert_eq!(s.lines().filter(|l| l.contains(" btf ")).count(), 1, "{s}");
    assert!(s.contains("kiln: 5 of 7 cells passed"), "{s}");
    // Each cell has its own directory under the latest run: console, QEMU command and
    // results; each kernel's results came back through its own virtio_blk module.
    let cell = |k: &str, t: &str| {
        out.join("kernel-matrix.run")
            .join(k.replace('/', "@"))
            .join(t)
    };
    for (k, release) in [(bookworm, "6.1.0-"), (trixie, "6.12."), (old, "6.1.0-47-")] {
        let dir = cell(k, "uname");
        let got = std::fs::read_to_string(dir.join("results/release")).unwrap();
        assert!(got.starts_with(release), "{k}: {got}");
        assert!(dir.join("console.log").exists() && dir.join("qemu.sh").exists());
        let qemu = std::fs::read_to_string(dir.join("qemu.sh")).unwrap();
        assert!(qemu.contains("kiln.test=uname"), "{qemu}");
    }
    // The packaged kernels are pinned beside the profile.
    let lock = std::fs::read_to_string(d.path().join("kernel-matrix.kernels.lock")).unwrap();
    assert!(
        lock.contains("request = \"linux-image-cloud-amd64/bookworm\"")
            && lock.contains("name = \"linux-image-6.1.0-47-cloud-amd64\""),
        "{lock}"
    );
    // A third-party JUnit reader: one suite per kernel, one case per test.
    let py = r#"
import sys
from junitparser import JUnitXml
x = JUnitXml.fromfile(sys.argv[1])
for s in x:
    print(s.name, s.tests, " ".join(c.name + ("" if c.is_passed else ":" + type(c.result[0]).__name__) for c in s))
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(py)
        .arg(&junit)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!(
            "{bookworm} 2 uname new-enough:Failure\n{trixie} 3 uname new-enough btf\n{old} 2 uname new-enough:Failure\n"
        )
    );
    // The reproducer of a failed cell runs just that cell, with the same settings.
    let rerun = s
        .lines()
        .find_map(|l| l.strip_prefix(&format!("kiln: rerun [{old} new-enough]: kiln ")))
        .unwrap_or_else(|| panic!("no rerun line:\n{s}"))
        .to_string();
    assert!(rerun.contains("--accel=tcg"), "{rerun}");
    let again = Command::new("sh")
        .arg("-c")
        .arg(format!("{} {rerun}", env!("CARGO_BIN_EXE_kiln")))
        .current_dir(d.path())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1), "{rerun}");
    assert!(String::from_utf8_lossy(&again.stdout).contains("kernel 6.1"));
    // A named test on a kernel its `kernels` exclude is skipped, as meson reads 77;
    // a selection with no cell at all is an error, not a green run.
    let one = |extra: &[&str]| {
        run(kiln()
            .arg("test")
            .arg(&p)
            .arg("-o")
            .arg(&out)
            .args(["--no-build", "--kernel", old, "--test", "btf"])
            .args(extra))
    };
    let o = one(&[]);
    assert_eq!(o.status.code(), Some(77), "{}", stdout(&o));
    assert!(stdout(&o).contains("SKIPPED"), "{}", stdout(&o));
    let o = one(&["--json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no cell to run"), "{}", stderr(&o));
    // The cells for a CI job matrix: kernels × tests, each with the shard that runs it.
    let o = run(kiln()
        .args(["matrix", "list", "--json", "--shards", "4"])
        .arg(&p));
    let cells: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let cells: Vec<(String, String)> = cells
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["test"].as_str().unwrap().to_string(),
                c["shard"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(cells.len(), 7);
    assert_eq!(cells[4], ("btf".to_string(), "1/4".to_string()));
}

#[test]
fn tests_are_picked_by_name_and_must_leave_the_results_they_require() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let p = write(
        d.path(),
        "named.toml",
        r#"version = 1
[distribution]
suite = "trixie"
packages = ["busybox-static"]
[kernel]
package = "linux-image-cloud-amd64"
[[symlink]]
path = "/bin/sh"
target = "busybox"
[qemu]
memory = "512M"
accel = "tcg"
[[test]]
name = "writes"
command = "echo ok > /r/out"
results = "/r"
require = ["out"]
[[test]]
name = "forgets"
command = "echo nothing"
results = "/r"
require = ["out", "log"]
[[test]]
name = "skips"
command = "exit 77"
"#,
    );
    assert!(run(kiln().arg("build").arg(&p).arg("-o").arg(&out))
        .status
        .success());
    let t = |names: &[&str]| {
        let mut c = kiln();
        c.arg("test").arg(&p).arg("-o").arg(&out).arg("--no-build");
        for n in names {
            c.args(["--test", n]);
        }
        run(&mut c)
    };
    let o = t(&["writes"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(
        std::fs::read_to_string(out.join("named.run/results/out")).unwrap(),
        "ok\n"
    );
    let o = t(&["forgets"]);
    assert_eq!(o.status.code(), Some(128), "{}", stdout(&o));
    assert!(stdout(&o).contains("MISSING RESULTS"), "{}", stdout(&o));
    assert!(stdout(&o).contains("out, log"), "{}", stdout(&o));
    let o = t(&["skips"]);
    assert_eq!(o.status.code(), Some(77));
    // A name the profile does not have is the user's mistake: exit 2, with the names.
    let o = t(&["nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--test nope") && stderr(&o).contains("writes, forgets, skips"),
        "{}",
        stderr(&o)
    );
    // Without --test: every test, one cell each.
    let o = run(kiln()
        .arg("test")
        .arg(&p)
        .arg("-o")
        .arg(&out)
        .args(["--no-build", "--json"]));
    assert_eq!(o.status.code(), Some(1));
    let outcomes: Vec<String> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "cell")
        .map(|v| {
            format!(
                "{} {}",
                v["test"].as_str().unwrap(),
                v["outcome"].as_str().unwrap()
            )
        })
        .collect();
    // Lines come as cells finish.
    let mut outcomes = outcomes;
    outcomes.sort();
    assert_eq!(
        outcomes,
        ["forgets missing results", "skips failed", "writes passed"]
    );
}

#[test]
fn a_list_of_tests_is_checked_before_anything_is_built() {
    let d = tempfile::tempdir().unwrap();
    for (body, want) in [
        (
            "[[test]]\ncommand = \"true\"\n[[test]]\ncommand = \"false\"\n",
            "each needs a `name`",
        ),
        (
            "[[test]]\nname = \"a\"\ncommand = \"true\"\n[[test]]\nname = \"a\"\ncommand = \"false\"\n",
            "two tests are named `a`",
        ),
        (
            "[[test]]\nname = \"a b\"\ncommand = \"true\"\n",
            "is not a test name",
        ),
        (
            "[test]\nunit = \"x.service\"\n",
            "a test unit needs systemd",
        ),
        (
            "[test]\ncommand = \"true\"\nrequire = [\"x\"]\n",
            "set `results` too",
        ),
        (
            "[test]\ncommand = \"true\"\nunit = \"x.service\"\n",
            "one of `command`, `script` or `unit`",
        ),
    ] {
        let p = busybox_profile(d.path(), "bad", body);
        let o = run(kiln().arg("build").arg(&p).arg("-o").arg(d.path().join("out")));
        assert_eq!(o.status.code(), Some(2), "{body}");
        assert!(stderr(&o).contains(want), "{body}\n{}", stderr(&o));
        assert!(stderr(&o).contains("bad.toml:"), "names the file and line");
    }
}

#[test]
fn a_disk_runs_its_tests_as_units_each_in_its_own_boot_on_each_kernel() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // The shipped profile, with one more unit test that fails with status 3, on
    // trixie's kernel only.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/systemd-tests.toml");
    let p = write(
        d.path(),
        "units.toml",
        &format!(
            "version = 1\ninclude = [{:?}]\n[qemu]\naccel = \"tcg\"\n[[file]]\npath = \"/usr/lib/systemd/system/TEST-02-FAILS.service\"\ncontent = \"[Service]\\nType=oneshot\\nExecStart=/bin/sh -c 'exit 3'\\n\"\n[[test]]\nname = \"TEST-02-FAILS\"\nunit = \"TEST-02-FAILS.service\"\ntimeout = \"600s\"\nkernels = [\"*/trixie\"]\n[[file]]\npath = \"/usr/lib/systemd/system/TEST-03-SKIPS.service\"\ncontent = \"[Unit]\\nConditionPathExists=/no/such/file\\n[Service]\\nType=oneshot\\nExecStart=/bin/false\\n\"\n[[test]]\nname = \"TEST-03-SKIPS\"\nunit = \"TEST-03-SKIPS.service\"\ntimeout = \"600s\"\nkernels = [\"*/trixie\"]\n",
            shipped.display().to_string()
        ),
    );
    // bookworm's 6.1 kernel boots trixie's disk with its own modules, which its boot
    // initramfs copies into the root; TEST-01-BASIC sees no failed unit there either.
    let trixie = "linux-image-cloud-amd64/trixie";
    let old = "linux-image-6.1.0-47-cloud-amd64";
    let o = run(kiln()
        .arg("test")
        .arg(&p)
        .arg("-o")
        .arg(&out)
        .args(["--kernel", trixie, "--kernel", old])
        .args([
            "--test",
            "TEST-01-BASIC",
            "--test",
            "TEST-02-FAILS",
            "--test",
            "TEST-03-SKIPS",
            "-j",
            "2",
        ]));
    let s = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{s}\n{}", stderr(&o));
    assert_eq!(
        row(&s, trixie, "TEST-01-BASIC")[2..4],
        ["passed", "0"],
        "{s}"
    );
    assert_eq!(
        row(&s, trixie, "TEST-02-FAILS")[2..4],
        ["failed", "3"],
        "{s}"
    );
    assert_eq!(row(&s, old, "TEST-01-BASIC")[2..4], ["passed", "0"], "{s}");
    assert!(s.contains("kiln: 2 of 4 cells passed"), "{s}");
    let console = |k: &str, t: &str| {
        std::fs::read_to_string(
            out.join("units.run")
                .join(k.replace('/', "@"))
                .join(t)
                .join("console.log"),
        )
        .unwrap()
    };
    // The test ran from the image's unit, not a script.
    assert!(console(trixie, "TEST-02-FAILS").contains("kiln: running test TEST-02-FAILS"));
    let c = console(old, "TEST-01-BASIC");
    assert!(c.contains("Linux version 6.1.0-47-cloud-amd64"), "{c}");
    assert!(
        c.lines()
            .any(|l| l.contains("Finished") && l.contains("kiln-depmod.service")),
        "the image indexed the modules of the kernel it booted:\n{c}"
    );
}

#[test]
fn sigterm_stops_every_cell_and_the_reports_are_still_written() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let p = busybox_profile(
        d.path(),
        "term",
        "[[test]]\nname = \"a\"\ncommand = \"sleep 1000\"\n[[test]]\nname = \"b\"\ncommand = \"sleep 1000\"\n[[test]]\nname = \"c\"\ncommand = \"true\"\n",
    );
    let junit = d.path().join("junit.xml");
    let child = test_cmd(&p, &out)
        .args(["-j", "2", "--junit"])
        .arg(&junit)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until both running cells' tests have started in their guests.
    let start = std::time::Instant::now();
    let running = |t: &str| {
        std::fs::read_dir(out.join("term.run"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|k| {
                std::fs::read_to_string(k.path().join(t).join("console.log"))
                    .is_ok_and(|c| c.contains("kiln: running test"))
            })
    };
    while !(running("a") && running("b")) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "the guests never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    let s = stdout(&o);
    assert_eq!(o.status.code(), Some(130), "{s}");
    let kernel = debian_kernel()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(row(&s, &kernel, "a")[2], "cancelled", "{s}");
    assert_eq!(row(&s, &kernel, "b")[2], "cancelled", "{s}");
    assert_eq!(row(&s, &kernel, "c")[2], "error", "{s}");
    assert!(s.contains("kiln: 0 of 3 cells passed"), "{s}");
    assert!(std::fs::read_to_string(&junit)
        .unwrap()
        .contains("<error type=\"cancelled\""));
    let marker = out.join("term.runs").to_string_lossy().into_owned();
    assert!(
        processes_mentioning(&marker).is_empty(),
        "QEMU outlived kiln"
    );
}
