//! The cpio writer's bytes, judged by GNU cpio: every entry's type, mode, owner, device
//! numbers, symlink target and hard-link count as the tree says.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use kiln::output::cpio::{self, CpioOptions};
use kiln::output::options::Compression;
use kiln::tree::{Data, Entry, Kind, Meta, Tree};

fn meta(mode: u32, uid: u32, gid: u32) -> Meta {
    Meta::new(mode, 1_700_000_000).owner(uid, gid)
}

fn sample_tree() -> Tree {
    let mut t = Tree::new(1_700_000_000);
    let file = |s: &str| Kind::File(Data::bytes(s.as_bytes()));
    t.insert("tmp", Entry::new(Kind::Dir, meta(0o1777, 0, 0)))
        .unwrap();
    t.insert(
        "etc/passwd",
        Entry::new(file("root:x:0:0::/root:/bin/sh\n"), meta(0o644, 0, 0)),
    )
    .unwrap();
    t.insert(
        "home/u/secret",
        Entry::new(file("s3cret"), meta(0o600, 1000, 1000)),
    )
    .unwrap();
    t.insert("usr/bin/su", Entry::new(file("ELF"), meta(0o4755, 0, 0)))
        .unwrap();
    t.insert("usr/bin/wall", Entry::new(file("ELF2"), meta(0o2755, 0, 5)))
        .unwrap();
    t.insert(
        "bin/sh",
        Entry::new(Kind::Symlink("busybox".into()), meta(0o777, 0, 0)),
    )
    .unwrap();
    t.insert(
        "dev/console",
        Entry::new(Kind::CharDev { major: 5, minor: 1 }, meta(0o600, 0, 0)),
    )
    .unwrap();
    t.insert(
        "dev/vda",
        Entry::new(
            Kind::BlockDev {
                major: 254,
                minor: 0,
            },
            meta(0o660, 0, 6),
        ),
    )
    .unwrap();
    t.insert("run/fifo", Entry::new(Kind::Fifo, meta(0o644, 0, 0)))
        .unwrap();
    t.insert(
        "a/x",
        Entry::new(file("linked content\n"), meta(0o640, 7, 8)),
    )
    .unwrap();
    t.insert(
        "b/y",
        Entry::new(Kind::HardLink("a/x".into()), meta(0o640, 7, 8)),
    )
    .unwrap();
    t.insert(
        "c/z",
        Entry::new(Kind::HardLink("a/x".into()), meta(0o640, 7, 8)),
    )
    .unwrap();
    t.insert(
        "big/uid",
        Entry::new(file(""), meta(0o644, 100_000, 100_001)),
    )
    .unwrap();
    t
}

struct Listed {
    mode: String,
    nlink: u32,
    uid: u32,
    gid: u32,
    size_or_dev: String,
    target: Option<String>,
}

fn cpio_itv(path: &std::path::Path) -> BTreeMap<String, Listed> {
    let out = Command::new("cpio")
        .args(["-itv", "--numeric-uid-gid", "-F"])
        .arg(path)
        .output()
        .expect("GNU cpio installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut m = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        // mode nlink uid gid size|maj, min month day year name [-> target]
        let (size_or_dev, rest) = if w[4].ends_with(',') {
            (format!("{}{}", w[4], w[5]), &w[6..])
        } else {
            (w[4].to_string(), &w[5..])
        };
        let name_and_target = rest[3..].join(" ");
        let (name, target) = match name_and_target.split_once(" -> ") {
            Some((n, t)) => (n.to_string(), Some(t.to_string())),
            None => (name_and_target, None),
        };
        m.insert(
            name,
            Listed {
                mode: w[0].into(),
                nlink: w[1].parse().unwrap(),
                uid: w[2].parse().unwrap(),
                gid: w[3].parse().unwrap(),
                size_or_dev,
                target,
            },
        );
    }
    m
}

/// Entry names in archive order, as GNU cpio reads them.
fn cpio_order(img: &Path) -> Vec<String> {
    let out = Command::new("cpio")
        .args(["-it", "--quiet", "-F"])
        .arg(img)
        .output()
        .expect("running cpio");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn gnu_cpio_lists_what_the_tree_holds() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("t.cpio");
    let opts = CpioOptions {
        compression: Compression::None,
        ..Default::default()
    };
    let manifest = cpio::write(&sample_tree(), &img, &opts).unwrap();
    let l = cpio_itv(&img);

    let expect = |name: &str, mode: &str, uid: u32, gid: u32| {
        let e = l
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from {:?}", l.keys().collect::<Vec<_>>()));
        assert_eq!((e.mode.as_str(), e.uid, e.gid), (mode, uid, gid), "{name}");
    };
    expect(".", "drwxr-xr-x", 0, 0);
    expect("tmp", "drwxrwxrwt", 0, 0);
    expect("etc/passwd", "-rw-r--r--", 0, 0);
    expect("home/u/secret", "-rw-------", 1000, 1000);
    expect("usr/bin/su", "-rwsr-xr-x", 0, 0);
    expect("usr/bin/wall", "-rwxr-sr-x", 0, 5);
    expect("bin/sh", "lrwxrwxrwx", 0, 0);
    expect("dev/console", "crw-------", 0, 0);
    expect("dev/vda", "brw-rw----", 0, 6);
    expect("run/fifo", "prw-r--r--", 0, 0);
    expect("big/uid", "-rw-r--r--", 100_000, 100_001);
    assert_eq!(l["dev/console"].size_or_dev, "5,1");
    assert_eq!(l["dev/vda"].size_or_dev, "254,0");
    assert_eq!(l["bin/sh"].target.as_deref(), Some("busybox"));
    assert_eq!(l["etc/passwd"].size_or_dev, "26");
    for name in ["a/x", "b/y", "c/z"] {
        assert_eq!(l[name].nlink, 3, "{name} is one of three names");
        expect(name, "-rw-r-----", 7, 8);
    }
    // Parents come before children in the archive, so the kernel can create them in order.
    let order = cpio_order(&img);
    assert_eq!(order.len(), manifest.entries.len());
    assert_eq!(order.len(), l.len());
    for (i, name) in order.iter().enumerate() {
        if let Some((parent, _)) = name.rsplit_once('/') {
            let at = order.iter().position(|n| n == parent);
            assert!(
                at.is_some_and(|p| p < i),
                "{name} (entry {i}) comes before its parent {parent} ({at:?})"
            );
        }
    }
    assert_eq!(
        manifest
            .entries
            .iter()
            .find(|e| e.path == "/b/y")
            .unwrap()
            .target
            .as_deref(),
        Some("/a/x")
    );
}

#[test]
fn hard_links_share_an_inode_and_the_data_when_extracted() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("t.cpio");
    cpio::write(
        &sample_tree(),
        &img,
        &CpioOptions {
            compression: Compression::None,
            ..Default::default()
        },
    )
    .unwrap();
    let root = d.path().join("x");
    std::fs::create_dir(&root).unwrap();
    // Only the linked files: device nodes in the archive need root to create.
    let out = Command::new("cpio")
        .args(["-idm", "--no-absolute-filenames", "-F"])
        .arg(&img)
        .args(["a/*", "b/*", "c/*", "home/*"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(root.join("a/x")).unwrap();
    let b = std::fs::metadata(root.join("b/y")).unwrap();
    let c = std::fs::metadata(root.join("c/z")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.ino(), c.ino());
    assert_eq!(
        std::fs::read_to_string(root.join("c/z")).unwrap(),
        "linked content\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("home/u/secret")).unwrap(),
        "s3cret"
    );
}

#[test]
fn zstd_output_is_the_same_archive_and_reproducible_across_thread_counts() {
    let d = tempfile::tempdir().unwrap();
    let plain = d.path().join("t.cpio");
    cpio::write(
        &sample_tree(),
        &plain,
        &CpioOptions {
            compression: Compression::None,
            ..Default::default()
        },
    )
    .unwrap();
    let mut shas = Vec::new();
    for threads in [1, 2, 4] {
        let z = d.path().join(format!("t{threads}.cpio.zst"));
        let m = cpio::write(
            &sample_tree(),
            &z,
            &CpioOptions {
                compression: Compression::Zstd,
                level: 3,
                threads,
            },
        )
        .unwrap();
        assert_eq!(m.image_sha256, Some(common::sha256_file(&z)));
        let out = Command::new("zstd").args(["-dc"]).arg(&z).output().unwrap();
        assert_eq!(out.stdout, std::fs::read(&plain).unwrap());
        shas.push(m.image_sha256);
    }
    assert!(shas.windows(2).all(|w| w[0] == w[1]), "{shas:?}");
}

#[test]
fn kiln_ls_reads_compressed_archives() {
    let d = tempfile::tempdir().unwrap();
    let z = d.path().join("t.cpio.zst");
    cpio::write(&sample_tree(), &z, &CpioOptions::default()).unwrap();
    let o = common::run(common::kiln().arg("ls").arg(&z));
    assert!(o.status.success());
    let s = common::stdout(&o);
    assert!(
        s.contains("crw-------     0     0        5,1 /dev/console"),
        "{s}"
    );
    assert!(s.contains("/bin/sh -> busybox"), "{s}");
    assert!(s.contains("-rwsr-xr-x"), "{s}");
}
