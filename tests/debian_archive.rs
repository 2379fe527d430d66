//! Against Debian's real archive (trixie), from the mirror in the host's apt
//! configuration: the resolver agrees with apt, packages unpack with their ownership and
//! modes, the shipped profiles boot with Debian's kernel, and a lock gives the same bytes.

mod common;
use common::*;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn manifest(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// What apt-get would install for the same request, in a throwaway apt root (no chroot,
/// no root, the host's mirror, Recommends off as kiln does).
fn apt_selection(dir: &Path, suite: &str, minbase_plus: &[&str]) -> BTreeSet<String> {
    let mirror = kiln::source::debian::mirror::default_mirror(Path::new("/etc/apt"))
        .expect("a Debian mirror in /etc/apt");
    let root = dir.join("aptroot");
    for d in [
        "etc/apt/sources.list.d",
        "etc/apt/preferences.d",
        "var/lib/apt/lists/partial",
        "var/lib/dpkg",
        "var/cache/apt/archives/partial",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(
        root.join("etc/apt/sources.list"),
        format!("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {mirror} {suite} main\n"),
    )
    .unwrap();
    let opts: Vec<String> = [
        format!("Dir={}", root.display()),
        format!("Dir::State::status={}/var/lib/dpkg/status", root.display()),
        "APT::Architecture=amd64".into(),
        "APT::Architectures::=amd64".into(),
        "Debug::NoLocking=1".into(),
        "APT::Install-Recommends=false".into(),
    ]
    .iter()
    .flat_map(|o| ["-o".to_string(), o.clone()])
    .collect();
    let st = Command::new("apt-get")
        .args(&opts)
        .arg("update")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let dump = Command::new("apt-cache")
        .args(&opts)
        .arg("dumpavail")
        .output()
        .unwrap();
    let mut want: BTreeSet<String> = BTreeSet::new();
    let mut name = String::new();
    for line in String::from_utf8_lossy(&dump.stdout).lines() {
        if let Some(n) = line.strip_prefix("Package: ") {
            name = n.to_string();
        } else if line == "Priority: required" || line == "Essential: yes" {
            want.insert(name.clone());
        }
    }
    want.insert("apt".into());
    want.extend(minbase_plus.iter().map(|s| s.to_string()));
    let out = Command::new("apt-get")
        .args(&opts)
        .args(["install", "--simulate"])
        .args(&want)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

fn locked_names(lock: &str) -> BTreeSet<String> {
    let v: toml::Value = toml::from_str(lock).unwrap();
    v["package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn trixie_minbase_with_systemd_and_openssh_matches_apt_and_unpacks_faithfully() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "sys.toml",
        "version = 1\n[distribution]\nsuite = \"trixie\"\nbase = \"minbase\"\npackages = [\"systemd\", \"openssh-server\"]\n[[file]]\npath = \"/init\"\ncontent = \"#!/bin/sh\\n\"\nmode = \"0755\"\n[output]\ncompression_level = 1\n",
    );
    let o = run(kiln().arg("lock").arg(&p));
    assert!(o.status.success());
    let kiln_set = locked_names(&std::fs::read_to_string(p.with_extension("lock")).unwrap());
    let apt_set = apt_selection(d.path(), "trixie", &["systemd", "openssh-server"]);
    // Every difference must be explained here; today there are none.
    let explained: BTreeSet<String> = BTreeSet::new();
    let only_kiln: BTreeSet<_> = kiln_set.difference(&apt_set).cloned().collect();
    let only_apt: BTreeSet<_> = apt_set.difference(&kiln_set).cloned().collect();
    assert!(
        only_kiln.is_subset(&explained) && only_apt.is_subset(&explained),
        "kiln only: {only_kiln:?}\napt only: {only_apt:?}"
    );
    assert!(kiln_set.len() > 80, "{}", kiln_set.len());

    let o = run(kiln()
        .arg("build")
        .arg(&p)
        .arg("-o")
        .arg(d.path().join("out"))
        .arg("--locked"));
    assert!(o.status.success());
    let m = manifest(&d.path().join("out/sys.manifest.json"));
    let entries = m["entries"].as_array().unwrap();
    let find = |path: &str| {
        entries
            .iter()
            .find(|e| e["path"] == path)
            .unwrap_or_else(|| panic!("{path} missing"))
    };
    let systemd = find("/usr/lib/systemd/systemd");
    assert_eq!(
        (systemd["uid"].as_u64(), systemd["gid"].as_u64()),
        (Some(0), Some(0))
    );

    // The mode is the package's: compare with dpkg-deb's listing of the same .deb.
    let lock: toml::Value =
        toml::from_str(&std::fs::read_to_string(p.with_extension("lock")).unwrap()).unwrap();
    let sha = lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"].as_str() == Some("systemd"))
        .unwrap()["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let deb = kiln::cache::Cache::open().unwrap().blob_path(&sha);
    let listing = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .find(|l| l.ends_with(" ./usr/lib/systemd/systemd"))
        .unwrap()
        .to_string();
    assert!(line.starts_with("-rwxr-xr-x root/root"), "{line}");
    assert_eq!(systemd["mode"], "0755");
    // Set-uid bits survive too.
    assert_eq!(find("/usr/bin/passwd")["mode"], "4755");
    // The dpkg database lists every package.
    assert!(find("/var/lib/dpkg/status")["size"].as_u64().unwrap() > 10_000);
    assert!(entries
        .iter()
        .any(|e| e["path"] == "/var/lib/dpkg/info/openssh-server.list"));
    // Accounts from base-passwd plus sysusers (sshd's privilege separation user).
    let sh = format!(
        "zstd -dc {} | cpio -i --quiet --to-stdout etc/passwd etc/group",
        d.path().join("out/sys.cpio.zst").display()
    );
    let out = Command::new("sh").arg("-c").arg(&sh).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("root:x:0:0:")), "{text}");
    let sshd = text
        .lines()
        .find(|l| l.starts_with("sshd:"))
        .unwrap_or_else(|| panic!("no sshd account from sysusers.d:\n{text}"));
    let f: Vec<&str> = sshd.split(':').collect();
    assert_eq!(f.len(), 7, "{sshd}");
    let uid: u32 = f[2].parse().unwrap();
    assert!((100..1000).contains(&uid), "sshd is a system user: {sshd}");
    assert!(f[6].ends_with("nologin"), "{sshd}");
}

#[test]
fn the_busybox_profile_boots_with_the_packaged_kernel_and_passes() {
    let d = tempfile::tempdir().unwrap();
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/busybox.toml");
    let o = run(kiln()
        .arg("test")
        .arg(&profile)
        .arg("-o")
        .arg(d.path())
        .args(["--accel", "tcg"]));
    assert_eq!(o.status.code(), Some(0));
    let s = stdout(&o);
    assert!(
        s.contains("PASSED") && s.contains("+deb13-cloud-amd64"),
        "{s}"
    );
}

#[test]
fn the_debian_minimal_profile_boots_and_verifies_its_packages() {
    let d = tempfile::tempdir().unwrap();
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/debian-minimal.toml");
    let o = run(kiln()
        .arg("test")
        .arg(&profile)
        .arg("-o")
        .arg(d.path())
        .args(["--accel", "tcg"]));
    assert_eq!(o.status.code(), Some(0));
    let s = stdout(&o);
    assert!(s.contains("dpkg --verify: all package files intact"), "{s}");
    assert!(s.contains("awk works"), "{s}");
}

#[test]
fn a_locked_profile_builds_to_the_same_bytes_twice() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "pinned.toml",
        "version = 1\n[distribution]\nsuite = \"trixie\"\nbase = \"essential\"\npackages = [\"busybox-static\"]\n[kernel]\npackage = \"linux-image-cloud-amd64\"\n[test]\ncommand = \"true\"\n",
    );
    let o = run(kiln().arg("lock").arg(&p));
    assert!(o.status.success());
    let mut shas = Vec::new();
    for i in 0..2 {
        let out = d.path().join(format!("out{i}"));
        let o = run(kiln()
            .arg("build")
            .arg(&p)
            .arg("-o")
            .arg(&out)
            .arg("--locked"));
        assert!(o.status.success());
        shas.push((
            sha256_file(&out.join("pinned.cpio.zst")),
            sha256_file(&out.join("pinned.vmlinuz")),
        ));
    }
    assert_eq!(shas[0], shas[1]);
}

#[test]
fn the_disk_profile_boots_systemd_from_kiln_ext4_and_brings_results_back() {
    let d = tempfile::tempdir().unwrap();
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/debian-minimal-disk.toml");
    // Built twice, in two directories: the second build takes the package layers and the
    // boot initramfs the first kept in the layer cache, and it is the one booted.
    let first = tempfile::tempdir().unwrap();
    let o = run(kiln()
        .arg("build")
        .arg(&profile)
        .arg("-o")
        .arg(first.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(kiln().arg("build").arg(&profile).arg("-o").arg(d.path()));
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("package layers from the layer cache"), "{e}");
    assert!(
        e.contains("debian-minimal-disk.initrd.cpio.zst from the layer cache"),
        "{e}"
    );
    let img = d.path().join("debian-minimal-disk.raw");
    for out in ["raw", "initrd.cpio.zst"] {
        let name = format!("debian-minimal-disk.{out}");
        assert_eq!(
            sha256_file(&first.path().join(&name)),
            sha256_file(&d.path().join(&name))
        );
    }
    let v = Command::new("sgdisk").arg("-v").arg(&img).output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).contains("No problems found"));
    let f = Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset=1048576", img.display()))
        .output()
        .unwrap();
    assert_eq!(
        f.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&f.stdout)
    );
    let before = sha256_file(&img);
    let o = run(kiln()
        .arg("test")
        .arg(&profile)
        .arg("-o")
        .arg(d.path())
        .args(["--no-build", "--accel", "tcg"]));
    let s = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{s}");
    assert!(
        s.contains("PID 1 is systemd") && s.contains("root: /dev/vda1 ext4"),
        "{s}"
    );
    assert!(s.contains("dpkg --verify: all package files intact"), "{s}");
    let uname = std::fs::read_to_string(d.path().join("debian-minimal-disk.run/results/uname.txt"))
        .unwrap();
    assert!(
        uname.contains("minimal-disk") && uname.contains("cloud-amd64"),
        "{uname}"
    );
    // Test runs write to a throwaway overlay: the image is as built.
    assert_eq!(sha256_file(&img), before);
    // kiln reads its own disk back.
    let ls = run(kiln().arg("ls").arg(&img));
    assert!(stdout(&ls).contains("/usr/lib/systemd/systemd"));
    let ex = run(kiln()
        .arg("extract")
        .arg(&img)
        .arg("/etc/os-release")
        .arg(d.path().join("x")));
    assert!(ex.status.success());
    assert!(std::fs::read_to_string(d.path().join("x/os-release"))
        .unwrap()
        .contains("trixie"));
}
