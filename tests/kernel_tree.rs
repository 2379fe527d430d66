//! A kernel from its build tree, and the Memorizer profiles on it, with real QEMU under
//! TCG: a tree laid out as `make O=` leaves one (from Debian's packaged kernel, with the
//! stand-in Memorizer module of tests/memorizer-standin built against its headers) boots,
//! its modules load and modprobe finds them, the Memorizer test brings a kmap back that
//! the host parses and checks against the guest's sha256, and a kernel without Memorizer
//! gives the test's own status and message.

mod common;
use common::*;

use std::io::BufRead;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A profile layered over one of the shipped Memorizer profiles, for a test machine: the
/// stand-in module loaded with `params`, less memory, a shorter timeout.
fn memorizer_profile(dir: &Path, base: &str, name: &str, test: &str) -> PathBuf {
    write(
        dir,
        &format!("{name}.toml"),
        &format!(
            "version = 1\nname = \"{name}\"\ninclude = [\"{}\"]\n[kernel]\nmodules = [\"memorizer\", \"dummy\"]\n{test}\n[qemu]\nmemory = \"1G\"\naccel = \"tcg\"\n",
            repo().join("profiles").join(base).display()
        ),
    )
}

/// `kiln test PROFILE -o OUT --kernel-tree TREE`.
fn test_on_tree(out: &Path, profile: &Path, tree: &Path) -> std::process::Output {
    run(kiln()
        .args(["test", "-o"])
        .arg(out)
        .arg(profile)
        .arg("--kernel-tree")
        .arg(tree))
}

/// Checks a kmap line by line as Memorizer documents it: object lines of 11 fields, each
/// followed by indented access lines of 4. Returns (objects, accesses).
fn parse_kmap(path: &Path) -> (u64, u64) {
    let f = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let (mut objects, mut accesses) = (0, 0);
    for (n, line) in f.lines().enumerate() {
        let line = line.unwrap();
        if let Some(access) = line.strip_prefix("  ") {
            assert!(objects > 0, "line {n}: an access before any object");
            let f: Vec<&str> = access.split(',').collect();
            assert_eq!(f.len(), 4, "line {n}: {line}");
            assert!(u64::from_str_radix(f[0], 16).is_ok(), "line {n}: {line}");
            assert!(
                f[1..].iter().all(|v| v.parse::<u64>().is_ok()),
                "line {n}: {line}"
            );
            accesses += 1;
        } else {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), 11, "line {n}: {line}");
            for i in [0, 2, 6] {
                assert!(u64::from_str_radix(f[i], 16).is_ok(), "line {n}: {line}");
            }
            for i in [1, 3, 4, 5] {
                assert!(f[i].parse::<u64>().is_ok(), "line {n}: {line}");
            }
            objects += 1;
        }
    }
    (objects, accesses)
}

#[test]
fn the_memorizer_initramfs_on_a_kernel_tree_brings_the_kmap_back_and_a_stock_kernel_says_it_has_none(
) {
    let tree = kernel_tree();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    // The module comes up at boot without parameters; modprobe reloads it from
    // modules.dep with a 96 MiB kmap and the older file names.
    let p = memorizer_profile(
        d.path(),
        "memorizer.toml",
        "mem",
        "[test]\ncommand = \"modprobe -r memorizer && modprobe memorizer kmap_mb=96 old_names=1 && grep -q '^dummy ' /proc/modules && /usr/lib/kiln-memorizer/memorizer-test\"\ntimeout = \"600s\"\n",
    );
    let o = test_on_tree(&out, &p, &tree);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let results = out.join("mem.run/results");
    let kmap = results.join("kmap");
    let len = std::fs::metadata(&kmap).unwrap().len();
    assert_eq!(len, (96 << 20) / 160 * 160, "the whole kmap, to the byte");
    let (objects, accesses) = parse_kmap(&kmap);
    assert_eq!(objects, len / 160);
    assert_eq!(accesses, objects);
    // The guest's own sha256 of each result, which kiln checked.
    let sums = std::fs::read_to_string(results.join(".kiln-sha256sums")).unwrap();
    assert!(
        sums.lines()
            .any(|l| l.starts_with(&sha256_file(&kmap)) && l.ends_with("kmap")),
        "{sums}"
    );

    // The tree is a matrix kernel beside a package, named by its path.
    let o = run(kiln()
        .args(["matrix", "list", "--json", "-o"])
        .arg(&out)
        .arg(&p)
        .arg("--kernel")
        .arg(&tree)
        .args(["--kernel", "linux-image-cloud-amd64"]));
    let cells: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        cells[0]["kernel_path"].as_str(),
        Some(tree.join("arch/x86/boot/bzImage").to_str().unwrap()),
        "{cells}"
    );
    assert_eq!(cells[1]["kernel"].as_str(), Some("linux-image-cloud-amd64"));

    // Booted to stay, with gdb: the printed command names the tree's vmlinux, and gdb
    // reads the running kernel's memory through its symbols.
    let o = run(kiln()
        .args([
            "boot",
            "--no-build",
            "--detach",
            "--gdb",
            "--network=none",
            "-o",
        ])
        .arg(&out)
        .arg(&p)
        .arg("--kernel-tree")
        .arg(&tree));
    let err = stderr(&o);
    let printed = printed_gdb_command(&err);
    assert!(
        printed.ends_with(&format!("{}/vmlinux", tree.display())),
        "{printed}"
    );
    let console = err
        .lines()
        .find_map(|l| {
            l.split_once("tail -f ")
                .map(|(_, c)| PathBuf::from(c.trim()))
        })
        .unwrap_or_else(|| panic!("no console in {err}"));
    wait_for_console(&console, "no test on this boot");
    let text = run_gdb(&printed, "-ex 'p init_uts_ns.name.release'");
    assert!(text.contains("\"6.1.0-47-cloud-amd64\""), "{text}");
    assert!(
        run(kiln().args(["stop", "--grace=0", "-o"]).arg(&out).arg(&p))
            .status
            .success()
    );

    // The same image on the same kernel, without the module: no Memorizer.
    let p = memorizer_profile(
        d.path(),
        "memorizer.toml",
        "stock",
        "[test]\ncommand = \"modprobe -r memorizer; /usr/lib/kiln-memorizer/memorizer-test\"\ntimeout = \"300s\"\n",
    );
    let o = test_on_tree(&out, &p, &tree);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let console = std::fs::read_to_string(out.join("stock.run/console.log")).unwrap();
    assert!(
        console.contains("this kernel has no Memorizer (no /sys/kernel/debug/memorizer)"),
        "{console}"
    );
}

/// The project's second variant: a busybox initramfs running a BATS suite that writes
/// TAP, with Debian's bats and bash in the image. A `not ok` fails the run although the
/// suite's command exits 0, and the report names the case, in text and in JUnit.
#[test]
fn a_bats_suite_with_a_not_ok_fails_the_run_and_names_the_case() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    write(
        d.path(),
        "suite/kernel.bats",
        "#!/usr/bin/env bats\n\n@test \"the kernel has a release\" {\n  [ -n \"$(uname -r)\" ]\n}\n\n@test \"debugfs is mounted\" {\n  grep -q ' /sys/kernel/debug ' /proc/mounts\n}\n\n@test \"there is a memorizer\" {\n  [ -d /sys/kernel/debug/memorizer ]\n}\n\n@test \"skipped on purpose\" {\n  skip \"not today\"\n}\n",
    );
    let p = write(
        d.path(),
        "bats.toml",
        "version = 1\nname = \"bats\"\n[distribution]\nsuite = \"trixie\"\npackages = [\"busybox-static\", \"bash\", \"bats\"]\n[kernel]\npackage = \"linux-image-cloud-amd64\"\n[[symlink]]\npath = \"/bin/sh\"\ntarget = \"busybox\"\n[[overlay]]\nsource = \"suite\"\ndestination = \"/usr/lib/suite\"\n[test]\n# As their init does: the suite's status is not the verdict, its TAP is.\ncommand = \"bats --tap /usr/lib/suite > /results/results.tap; true\"\nresults = \"/results\"\ntap = \"results.tap\"\ntimeout = \"300s\"\n[qemu]\nmemory = \"512M\"\naccel = \"tcg\"\n",
    );
    let junit = d.path().join("junit.xml");
    let o = run(kiln()
        .args(["test", "-o"])
        .arg(&out)
        .arg(&p)
        .arg("--junit")
        .arg(&junit));
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(129), "{text}");
    assert!(
        text.contains("cases failed") && text.contains("not ok 3 there is a memorizer"),
        "{text}"
    );
    assert!(text.contains("4 TAP cases, 1 not ok"), "{text}");
    // A third-party JUnit reader sees each case, the failing one failed.
    let script = format!(
        "import junitparser\nx = junitparser.JUnitXml.fromfile({:?})\ncases = [c for s in x for c in s]\nfor c in cases:\n    print(c.name, '|', 'failed' if any(isinstance(r, junitparser.Failure) for r in c.result) else 'skipped' if any(isinstance(r, junitparser.Skipped) for r in c.result) else 'passed')\n",
        junit.display().to_string()
    );
    let py = run(std::process::Command::new("python3").arg("-c").arg(&script));
    let listed = stdout(&py);
    assert!(py.status.success(), "{}", stderr(&py));
    for want in [
        "test: 1 the kernel has a release | passed",
        "test: 2 debugfs is mounted | passed",
        "test: 3 there is a memorizer | failed",
        "test: 4 skipped on purpose | skipped",
        "test | failed",
    ] {
        assert!(listed.contains(want), "{want} not in\n{listed}");
    }
}

/// The disk profile on the same tree: the whole module set goes in with a modules.dep,
/// the first boot indexes it, systemd's modprobe loads the stand-in with options from
/// modprobe.d, kiln-memorizer.service brings the kmap back, and the root file system is
/// GPT partition 2.
#[test]
fn the_memorizer_disk_boots_a_kernel_tree_with_its_modules_and_root_on_partition_2() {
    let tree = kernel_tree();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let p = write(
        d.path(),
        "memdisk.toml",
        &format!(
            "version = 1\nname = \"memdisk\"\ninclude = [\"{}\"]\n[[file]]\npath = \"/etc/modules-load.d/memorizer.conf\"\ncontent = \"memorizer\\n\"\n[[file]]\npath = \"/etc/modprobe.d/memorizer.conf\"\ncontent = \"options memorizer kmap_mb=24\\n\"\n[test]\ntimeout = \"900s\"\n[qemu]\nmemory = \"1G\"\naccel = \"tcg\"\n",
            repo().join("profiles/memorizer-disk.toml").display()
        ),
    );
    let o = test_on_tree(&out, &p, &tree);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let kmap = out.join("memdisk.run/results/kmap");
    let len = std::fs::metadata(&kmap).unwrap().len();
    assert_eq!(len, (24 << 20) / 160 * 160);
    let (objects, accesses) = parse_kmap(&kmap);
    assert_eq!((objects, accesses), (len / 160, len / 160));

    let image = out.join("memdisk.raw");
    let v = run(std::process::Command::new("sgdisk").arg("-v").arg(&image));
    assert!(stdout(&v).contains("No problems found"), "{}", stdout(&v));
    let i = run(std::process::Command::new("sgdisk")
        .args(["-i", "2"])
        .arg(&image));
    assert!(
        stdout(&i).contains("Partition name: 'root'")
            && stdout(&i).contains("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
        "{}",
        stdout(&i)
    );
    // The modules as `make modules_install` lays them out, with kiln's modules.dep.
    let list = run(kiln().arg("ls").arg(&image));
    let listing = stdout(&list);
    let release = "6.1.0-47-cloud-amd64";
    for want in [
        format!("/usr/lib/modules/{release}/kernel/drivers/misc/memorizer.ko"),
        format!("/usr/lib/modules/{release}/kernel/drivers/net/dummy.ko.xz"),
        format!("/usr/lib/modules/{release}/modules.dep"),
        format!("/usr/lib/modules/{release}/modules.builtin"),
    ] {
        assert!(listing.contains(&want), "{want} not in the image");
    }
}
