//! The CI templates kiln ships, run here: both CI files parse, and the kiln commands in
//! them work with their variables set; the meson project runs kiln tests under real
//! meson, which reads pass, skip and fail from kiln's exit statuses.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A busybox initramfs on the Debian test kernel with three tests: one passes, one is
/// skipped (77) and one fails, and a `[matrix]` of the same kernel twice.
fn three_tests(dir: &Path, name: &str) -> PathBuf {
    let k = debian_kernel().display().to_string();
    busybox_profile(
        dir,
        name,
        &format!(
            "[kernel]\npath = {k:?}\n[matrix]\nkernels = [{k:?}, {k:?}]\n\
             [[test]]\nname = \"pass\"\ncommand = \"true\"\ntimeout = \"120s\"\n\
             [[test]]\nname = \"skip\"\ncommand = \"exit 77\"\ntimeout = \"120s\"\n\
             [[test]]\nname = \"fail\"\ncommand = \"exit 3\"\ntimeout = \"120s\"\n"
        ),
    )
}

/// Every shell line of a CI file that runs kiln, from a YAML reader kiln does not own.
fn kiln_lines(file: &Path) -> Vec<String> {
    let py = r#"
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
def walk(v):
    if isinstance(v, dict):
        for k, x in v.items():
            if k in ("run", "script") and isinstance(x, (str, list)):
                for block in (x if isinstance(x, list) else [x]):
                    for line in str(block).splitlines():
                        if line.strip().startswith("kiln "):
                            print(line.strip())
            else:
                walk(x)
    elif isinstance(v, list):
        for x in v:
            walk(x)
walk(doc)
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(py)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{} does not parse: {}",
        file.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn the_ci_files_parse_and_their_kiln_commands_run_here() {
    let d = tempfile::tempdir().unwrap();
    let p = three_tests(d.path(), "ci");
    let bin = Path::new(env!("CARGO_BIN_EXE_kiln"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for file in ["ci/github-actions.yml", "ci/gitlab-ci.yml"] {
        let lines = kiln_lines(&repo(file));
        for verb in ["kiln build ", "kiln matrix list ", "kiln test "] {
            assert!(
                lines.iter().any(|l| l.starts_with(verb)),
                "{file} has no `{verb}`: {lines:?}"
            );
        }
        let out = d.path().join(file.replace(['/', '.'], "-"));
        // Shard 1 of 3 is cells 1 and 4 of six: `pass` on both kernels.
        for line in &lines {
            let line = line.replace("${{ matrix.shard }}", "$SHARD");
            let o = Command::new("sh")
                .arg("-c")
                .arg(&line)
                .env("PATH", &path)
                .env("PROFILE", &p)
                .env("OUT", &out)
                .env("SHARDS", "3")
                .env("SHARD", "1")
                // The exec job's: Debian's generic kernel, whose 9p the runner's shares use.
                .env("KERNEL", "linux-image-6.1.0-47-amd64")
                .env("EXEC_COMMAND", "uname -r && test -w .")
                .current_dir(d.path())
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{file}: `{line}` failed:\n{}\n{}",
                stdout(&o),
                stderr(&o)
            );
        }
        if file == "ci/github-actions.yml" {
            assert!(
                lines.iter().any(|l| l.starts_with("kiln exec ")),
                "{file} has no `kiln exec`: {lines:?}"
            );
            let junit = d.path().join("exec-linux-image-6.1.0-47-amd64.xml");
            let report = std::fs::read_to_string(&junit).unwrap();
            assert!(report.contains("failures=\"0\""), "{report}");
        }
        let runs = out.join("ci.run");
        for k in ["vmlinuz-", "#2"] {
            let found = std::fs::read_dir(&runs).unwrap().flatten().any(|e| {
                e.file_name().to_string_lossy().contains(k)
                    && e.path().join("pass/console.log").exists()
            });
            assert!(found, "{file}: shard 1 ran `pass` on each kernel");
        }
    }
}

#[test]
fn meson_test_runs_each_kiln_test_and_reads_pass_skip_and_fail() {
    let d = tempfile::tempdir().unwrap();
    let project = d.path().join("project");
    std::fs::create_dir(&project).unwrap();
    for f in ["meson.build", "meson_options.txt"] {
        std::fs::copy(repo(&format!("ci/meson/{f}")), project.join(f)).unwrap();
    }
    three_tests(&project, "vm");
    let setup = Command::new("meson")
        .arg("setup")
        .arg(d.path().join("build"))
        .arg(&project)
        .arg(format!("-Dkiln={}", env!("CARGO_BIN_EXE_kiln")))
        .args(["-Dprofile=vm.toml", "-Dtests=pass,skip,fail"])
        .output()
        .unwrap();
    assert!(setup.status.success(), "{}", stdout(&setup));
    let t = Command::new("meson")
        .args(["test", "--num-processes", "2", "-C"])
        .arg(d.path().join("build"))
        .output()
        .unwrap();
    assert!(!t.status.success(), "one test fails:\n{}", stdout(&t));
    // meson's own record of each test.
    let log = std::fs::read_to_string(d.path().join("build/meson-logs/testlog.json")).unwrap();
    let mut got: Vec<String> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| {
            format!(
                "{} {}",
                v["name"].as_str().unwrap(),
                v["result"].as_str().unwrap()
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, ["fail FAIL", "pass OK", "skip SKIP"], "{}", stdout(&t));
}

#[test]
fn a_kernel_without_a_configuration_beside_it_is_booted_with_a_note() {
    // Debian builds without CONFIG_IKCONFIG, so the image carries none either: kiln
    // looks inside it (decompressing the payload), finds nothing, and boots.
    let d = tempfile::tempdir().unwrap();
    let lone = d.path().join("lone");
    std::fs::create_dir(&lone).unwrap();
    std::fs::copy(debian_kernel(), lone.join("bzImage")).unwrap();
    let p = busybox_profile(d.path(), "lone", "[test]\ncommand = \"true\"\n");
    let o = run(kiln()
        .arg("test")
        .arg(&p)
        .arg("-o")
        .arg(d.path().join("out"))
        .arg("--kernel")
        .arg(lone.join("bzImage")));
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("or inside it (CONFIG_IKCONFIG); booting without a preflight"),
        "{}",
        stderr(&o)
    );
}
