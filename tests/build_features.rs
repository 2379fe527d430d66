//! Build features a profile asks for, checked in the image kiln writes: tar output and
//! `kiln ls` of it, `remove` globs, `[variables]` in templates, `root_password`, SSH
//! keys, and the packaged kernel's modules in a disk.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

/// `kiln ls IMAGE` lines.
fn ls(image: &Path) -> Vec<String> {
    let o = run(kiln().arg("ls").arg(image));
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).lines().map(String::from).collect()
}

/// One file's bytes from an uncompressed cpio, by GNU cpio.
fn cpio_file(image: &Path, path: &str) -> String {
    let o = Command::new("cpio")
        .args(["-i", "--quiet", "--to-stdout", "-F"])
        .arg(image)
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn build(p: &Path, out: &Path) {
    let o = run(kiln().arg("build").arg(p).arg("-o").arg(out));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_tar_holds_the_tree_and_kiln_ls_reads_it_like_gnu_tar() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "t.toml",
        r##"version = 1
source_date_epoch = 1700000000
[output]
format = "tar"
[[file]]
path = "/etc/motd"
content = "hello\n"
mode = "0640"
uid = 1000
gid = 100
[[file]]
path = "/usr/bin/tool"
content = "#!/bin/sh\n"
mode = "4755"
[[symlink]]
path = "/bin"
target = "usr/bin"
[[hardlink]]
path = "/usr/bin/tool2"
target = "/usr/bin/tool"
[[device]]
path = "/dev/null"
type = "char"
major = 1
minor = 3
mode = "0666"
[[device]]
path = "/run/fifo"
type = "fifo"
"##,
    );
    let out = d.path().join("out");
    build(&p, &out);
    let img = out.join("t.tar");
    let lines = ls(&img);
    let find = |path: &str| {
        lines
            .iter()
            .find(|l| l.split_whitespace().nth(4) == Some(path))
            .unwrap_or_else(|| panic!("{path} not in:\n{}", lines.join("\n")))
            .clone()
    };
    let w = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert_eq!(
        w(&find("/etc/motd"))[..4],
        ["-rw-r-----", "1000", "100", "6"]
    );
    assert_eq!(w(&find("/usr/bin/tool"))[0], "-rwsr-xr-x");
    assert!(
        find("/bin").ends_with("/bin -> usr/bin"),
        "{}",
        find("/bin")
    );
    assert!(find("/usr/bin/tool2").ends_with("link to /usr/bin/tool"));
    assert_eq!(w(&find("/dev/null"))[..4], ["crw-rw-rw-", "0", "0", "1,3"]);
    assert!(find("/run/fifo").starts_with("prw-r--r--"));
    // GNU tar agrees on every name, type and owner.
    let o = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(&img)
        .output()
        .unwrap();
    let gnu = String::from_utf8_lossy(&o.stdout);
    assert!(
        gnu.lines()
            .any(|l| l.starts_with("-rw-r----- 1000/100") && l.ends_with(" etc/motd")),
        "{gnu}"
    );
    assert!(
        gnu.lines()
            .any(|l| l.starts_with("crw-rw-rw- 0/0") && l.contains("1,3")),
        "{gnu}"
    );
    assert_eq!(gnu.lines().count(), lines.len(), "{gnu}");
    // And extracts the content.
    let o = Command::new("tar")
        .args(["-xOf"])
        .arg(&img)
        .arg("etc/motd")
        .output()
        .unwrap();
    assert_eq!(o.stdout, b"hello\n");
}

#[test]
fn remove_globs_take_package_paths_and_what_is_below_them() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "r.toml",
        r##"version = 1
remove = ["/usr/share/man/*", "/usr/share/**/changelog.Debian.gz"]
[distribution]
suite = "trixie"
packages = ["busybox-static"]
[output]
format = "tar"
# Later layers are not subject to `remove`.
[[file]]
path = "/usr/share/man/man1/mine.1"
content = "x"
"##,
    );
    let out = d.path().join("out");
    build(&p, &out);
    let paths: Vec<String> = ls(&out.join("r.tar"))
        .iter()
        .filter_map(|l| l.split_whitespace().nth(4).map(String::from))
        .collect();
    let has = |p: &str| paths.iter().any(|x| x == p);
    assert!(has("/usr/bin/busybox"), "{paths:?}");
    assert!(
        has("/usr/share/man"),
        "the directory itself stays: {paths:?}"
    );
    assert!(!has("/usr/share/man/man1/busybox.1.gz"), "{paths:?}");
    assert!(has("/usr/share/man/man1/mine.1"), "{paths:?}");
    assert!(has("/usr/share/doc/busybox-static/copyright"), "{paths:?}");
    assert!(
        !paths.iter().any(|p| p.ends_with("/changelog.Debian.gz")),
        "`**` crosses directories: {paths:?}"
    );
}

#[test]
fn variables_fill_templates_and_an_undefined_one_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let body = r##"version = 1
[variables]
greeting = "hello"
count = 3
[output]
compression = "none"
[[file]]
path = "/init"
content = "#!/bin/sh\n"
mode = "0755"
[[file]]
path = "/etc/greeting"
template = true
content = "{{greeting}} x{{count}} from {{kiln.name}} at {{kiln.source_date_epoch}}\n"
"##;
    let p = write(d.path(), "v.toml", body);
    let out = d.path().join("out");
    build(&p, &out);
    assert_eq!(
        cpio_file(&out.join("v.cpio"), "etc/greeting"),
        "hello x3 from v at 0\n"
    );
    let p = write(
        d.path(),
        "bad.toml",
        &body.replace("{{count}}", "{{cuont}}"),
    );
    let o = run(kiln().arg("build").arg(&p).arg("-o").arg(&out));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cuont"), "{}", stderr(&o));
}

#[test]
fn root_password_and_ssh_keys_land_where_login_looks() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "id.pub",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKiln test@kiln\n",
    );
    let p = write(
        d.path(),
        "a.toml",
        r##"version = 1
[system]
root_password = "s3cret"
ssh_authorized_keys = ["id.pub"]
[distribution]
suite = "trixie"
packages = ["base-passwd", "busybox-static"]
[output]
compression = "none"
[[file]]
path = "/init"
content = "#!/bin/sh\n"
mode = "0755"
"##,
    );
    let out = d.path().join("out");
    build(&p, &out);
    let img = out.join("a.cpio");
    let shadow = cpio_file(&img, "etc/shadow");
    let hash = shadow
        .lines()
        .find_map(|l| l.strip_prefix("root:"))
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("no root line: {shadow}"))
        .to_string();
    assert!(hash.starts_with("$6$"), "{hash}");
    // The hash verifies with the system's crypt(3), as login would check it.
    let check = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; sys.exit(0 if crypt.crypt(sys.argv[1], sys.argv[2]) == sys.argv[2] else 1)",
            "s3cret",
        ])
        .arg(&hash)
        .status()
        .unwrap();
    assert!(check.success(), "crypt(3) rejects {hash}");
    assert_eq!(
        cpio_file(&img, "root/.ssh/authorized_keys"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKiln test@kiln\n"
    );
    let lines = ls(&img);
    let mode = |path: &str| {
        lines
            .iter()
            .find(|l| l.split_whitespace().nth(4) == Some(path))
            .and_then(|l| l.split_whitespace().next().map(String::from))
            .unwrap_or_default()
    };
    assert_eq!(mode("/root/.ssh"), "drwx------");
    assert_eq!(mode("/root/.ssh/authorized_keys"), "-rw-------");
    assert!(
        mode("/etc/shadow").starts_with("-rw-r-----"),
        "{}",
        mode("/etc/shadow")
    );
}

#[test]
fn a_disk_with_a_packaged_kernel_gets_its_modules_and_a_depmod_unit_unless_told_not_to() {
    let d = tempfile::tempdir().unwrap();
    let text = |install: &str| {
        format!(
            "version = 1\n[distribution]\nsuite = \"trixie\"\nbase = \"minbase\"\npackages = [\"systemd\", \"kmod\"]\n[kernel]\npackage = \"linux-image-cloud-amd64\"\n{install}\n[output]\nformat = \"disk\"\n"
        )
    };
    let out = d.path().join("out");
    for (name, install, want) in [
        ("with", "", true),
        ("without", "install_modules = false", false),
    ] {
        let p = write(d.path(), &format!("{name}.toml"), &text(install));
        build(&p, &out);
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join(format!("{name}.manifest.json"))).unwrap(),
        )
        .unwrap();
        let paths: Vec<&str> = m["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap())
            .collect();
        let has_virtio = paths
            .iter()
            .any(|p| p.starts_with("/usr/lib/modules/") && p.contains("/virtio_blk.ko"));
        let has_unit =
            paths.contains(&"/etc/systemd/system/sysinit.target.wants/kiln-depmod.service");
        assert_eq!((has_virtio, has_unit), (want, want), "{name}");
    }
}
