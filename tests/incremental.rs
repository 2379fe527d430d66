//! No-op builds: a build whose inputs did not change and whose outputs are intact does
//! nothing; every kind of input change, and a damaged or missing output, rebuilds; and
//! nothing else does. (`kiln test` reusing a built image is in runs.rs.) And holes cost
//! nothing: a sparse host file costs what its data costs, in the build and in the check.

mod common;
#[path = "common/repo.rs"]
mod repo;

use common::*;
use repo::*;

use std::path::{Path, PathBuf};
use std::process::Command;

struct Case {
    dir: tempfile::TempDir,
    profile: PathBuf,
}

const BASE: &str = r##"version = 1
description = "one"
include = ["base.toml"]
[[overlay]]
source = "overlay"
destination = "/srv"
[[file]]
path = "/etc/motd"
source = "motd.txt"
[[binary]]
source = "HOST_TOOL"
path = "/bin/tool"
[[file]]
path = "/init"
content = "#!/bin/tool sh\n"
mode = "0755"
[qemu]
memory = "256M"
"##;

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(
            d,
            "base.toml",
            "version = 1\n[[file]]\npath = \"/base\"\ncontent = \"1\"\n",
        );
        write(d, "overlay/a.txt", "a\n");
        write(d, "overlay/sub/b.txt", "b\n");
        std::os::unix::fs::symlink("sub/b.txt", d.join("overlay/link")).unwrap();
        write(d, "motd.txt", "hello\n");
        // A static host executable of the test's own: [[binary]] reads it from here.
        std::fs::copy("/bin/busybox", d.join("host-tool")).unwrap();
        let tool = d.join("host-tool").display().to_string();
        let profile = write(d, "p.toml", &BASE.replace("HOST_TOOL", &tool));
        Case { dir, profile }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn build_with(&self, cmd: &mut Command) -> String {
        let o = run(cmd
            .arg("build")
            .arg(&self.profile)
            .arg("-o")
            .arg(self.path("out")));
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    }

    /// Builds; true when it rebuilt, false when it found the outputs up to date.
    fn rebuilt_with(&self, cmd: &mut Command) -> bool {
        let e = self.build_with(cmd);
        let up = e.contains("is up to date");
        assert_eq!(up, !e.contains("writing "), "{e}");
        !up
    }

    fn rebuilt(&self) -> bool {
        self.rebuilt_with(kiln().env_remove("SOURCE_DATE_EPOCH"))
    }

    fn image(&self) -> Vec<u8> {
        std::fs::read(self.path("out/p.cpio.zst")).unwrap()
    }
}

/// Rewrites a file with the same bytes: a new modification time, the same content.
fn touch(p: &Path) {
    let bytes = std::fs::read(p).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(p, bytes).unwrap();
}

fn edit(p: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(p).unwrap();
    assert!(text.contains(from), "{from} not in {}", p.display());
    std::fs::write(p, text.replacen(from, to, 1)).unwrap();
}

/// An input change: what it is, and how to make it.
type Change<'a> = (&'a str, Box<dyn Fn() + 'a>);

#[test]
fn every_input_change_rebuilds_and_nothing_else_does() {
    let c = Case::new();
    assert!(c.rebuilt(), "the first build");
    assert!(!c.rebuilt(), "nothing changed");
    let first = c.image();

    // Not inputs of the image's bytes: a comment, the description, [qemu], a file
    // rewritten with the same content, an overlay file touched, an overlay directory
    // whose entries came and went, an overlay symlink made again to the same target.
    edit(&c.profile, "version = 1\n", "version = 1\n# a comment\n");
    edit(&c.profile, "\"one\"", "\"two\"");
    edit(&c.profile, "256M", "512M");
    touch(&c.path("motd.txt"));
    touch(&c.path("overlay/sub/b.txt"));
    touch(&c.path("host-tool"));
    std::fs::write(c.path("overlay/sub/gone"), "").unwrap();
    std::fs::remove_file(c.path("overlay/sub/gone")).unwrap();
    std::fs::remove_file(c.path("overlay/link")).unwrap();
    std::os::unix::fs::symlink("sub/b.txt", c.path("overlay/link")).unwrap();
    assert!(!c.rebuilt(), "only what does not reach the image changed");
    assert_eq!(c.image(), first);

    // Each input of the image's bytes, one at a time.
    let changes: Vec<Change> = vec![
        (
            "a profile key",
            Box::new(|| edit(&c.profile, "/etc/motd", "/etc/motd2")),
        ),
        (
            "an included profile",
            Box::new(|| edit(&c.path("base.toml"), "\"1\"", "\"2\"")),
        ),
        (
            "an overlay file's content",
            Box::new(|| std::fs::write(c.path("overlay/sub/b.txt"), "B\n").unwrap()),
        ),
        (
            "a new overlay file",
            Box::new(|| std::fs::write(c.path("overlay/sub/c.txt"), "c\n").unwrap()),
        ),
        (
            "an overlay file's mode",
            Box::new(|| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(
                    c.path("overlay/a.txt"),
                    std::fs::Permissions::from_mode(0o600),
                )
                .unwrap()
            }),
        ),
        (
            "an overlay symlink's target",
            Box::new(|| {
                std::fs::remove_file(c.path("overlay/link")).unwrap();
                std::os::unix::fs::symlink("a.txt", c.path("overlay/link")).unwrap()
            }),
        ),
        (
            "a removed overlay file",
            Box::new(|| std::fs::remove_file(c.path("overlay/sub/c.txt")).unwrap()),
        ),
        (
            "a source file",
            Box::new(|| std::fs::write(c.path("motd.txt"), "changed\n").unwrap()),
        ),
        (
            "a host binary",
            Box::new(|| {
                let mut b = std::fs::read(c.path("host-tool")).unwrap();
                b.extend_from_slice(b"trailing bytes");
                std::fs::write(c.path("host-tool"), b).unwrap()
            }),
        ),
    ];
    for (what, change) in &changes {
        change();
        assert!(c.rebuilt(), "{what} changed: a rebuild");
        assert!(!c.rebuilt(), "{what}: the next build is a no-op");
    }
    assert_ne!(c.image(), first);

    // The environment's SOURCE_DATE_EPOCH.
    assert!(c.rebuilt_with(kiln().env("SOURCE_DATE_EPOCH", "1700000000")));
    assert!(!c.rebuilt_with(kiln().env("SOURCE_DATE_EPOCH", "1700000000")));
    assert!(c.rebuilt(), "back to the profile's epoch");

    // Another kiln: the same version, another executable.
    let other = c.path("kiln-copy");
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &other).unwrap();
    let copy = || {
        let mut k = Command::new(&other);
        k.env_remove("SOURCE_DATE_EPOCH");
        k
    };
    assert!(c.rebuilt_with(&mut copy()));
    assert!(!c.rebuilt_with(&mut copy()));

    // --rebuild forces one.
    let o = run(kiln()
        .arg("build")
        .arg(&c.profile)
        .arg("-o")
        .arg(c.path("out"))
        .arg("--rebuild")
        .env_remove("SOURCE_DATE_EPOCH"));
    assert!(stderr(&o).contains("writing "), "{}", stderr(&o));
}

#[test]
fn a_damaged_or_missing_output_is_rebuilt() {
    let c = Case::new();
    assert!(c.rebuilt());
    let good = c.image();
    // One byte of the image changed in place, keeping its size.
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    std::fs::write(c.path("out/p.cpio.zst"), &bad).unwrap();
    assert!(c.rebuilt(), "a damaged image");
    assert_eq!(c.image(), good);
    std::fs::remove_file(c.path("out/p.manifest.json")).unwrap();
    assert!(c.rebuilt(), "a missing manifest");
    assert!(c.path("out/p.manifest.json").exists());
    std::fs::remove_file(c.path("out/.p.kiln-build")).unwrap();
    assert!(c.rebuilt(), "a missing record");
    assert!(!c.rebuilt());
}

#[test]
fn a_changed_lock_rebuilds_and_a_no_op_fetches_no_package() {
    let d = tempfile::tempdir().unwrap();
    let repo = Repo::create(
        d.path(),
        "kilntest",
        &[pkg(
            "hello",
            "1.0",
            "",
            vec![file("/usr/bin/hello", "#!/bin/sh\necho hello\n", 0o755)],
        )],
        "",
    );
    let server = Server::start(d.path().join("repo"), "");
    let p = write(
        d.path(),
        "p.toml",
        &format!(
            "version = 1\n[distribution]\nsuite = \"kilntest\"\nmirror = \"{}/debian\"\nkeyring = \"{}\"\npackages = [\"hello\"]\n[[file]]\npath = \"/init\"\ncontent = \"#!/bin/sh\\n\"\nmode = \"0755\"\n",
            server.url(),
            repo.keyring.display()
        ),
    );
    let kiln_here = || {
        let mut c = kiln();
        c.env("KILN_CACHE_DIR", d.path().join("cache"));
        c
    };
    let build = |extra: &[&str]| {
        let o = run(kiln_here()
            .arg("build")
            .arg(&p)
            .arg("-o")
            .arg(d.path().join("out"))
            .args(extra));
        assert!(o.status.success(), "{}", stderr(&o));
        !stderr(&o).contains("is up to date")
    };
    assert!(run(kiln_here().arg("lock").arg(&p)).status.success());
    assert!(build(&["--locked"]));
    assert!(!build(&["--locked"]), "a locked no-op build");
    // The lock says something else about the packages.
    edit(
        &d.path().join("p.lock"),
        "release_date = \"",
        "release_date = \"x",
    );
    assert!(build(&["--locked"]), "the lock changed");
    assert!(!build(&["--locked"]));
    // A package source that answers differently: the selection is part of the key.
    std::fs::remove_file(d.path().join("p.lock")).unwrap();
    assert!(build(&[]), "resolved afresh");
    assert!(!build(&[]), "resolved to the same packages");
    // The mirror's requests on a no-op build: only the signed index.
    let before = server.request_lines().len();
    assert!(!build(&[]));
    let asked: Vec<_> = server.request_lines()[before..].to_vec();
    assert!(asked.iter().all(|l| !l.contains(".deb")), "{asked:?}");
}

#[test]
fn a_bare_binary_name_that_path_resolves_elsewhere_rebuilds() {
    let d = tempfile::tempdir().unwrap();
    for (dir, extra) in [("a", &b""[..]), ("b", &b"other bytes"[..])] {
        let mut bytes = std::fs::read("/bin/busybox").unwrap();
        bytes.extend_from_slice(extra);
        let p = d.path().join(dir).join("kiln-test-tool");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let p = write(
        d.path(),
        "p.toml",
        "version = 1\n[[binary]]\nsource = \"kiln-test-tool\"\npath = \"/bin/sh\"\n[[file]]\npath = \"/init\"\ncontent = \"#!/bin/sh\\n\"\nmode = \"0755\"\n",
    );
    let build = |dir: &str| {
        let path = format!(
            "{}:/usr/sbin:/usr/bin:/sbin:/bin",
            d.path().join(dir).display()
        );
        let o = run(kiln()
            .env("PATH", path)
            .env_remove("SOURCE_DATE_EPOCH")
            .arg("build")
            .arg(&p)
            .arg("-o")
            .arg(d.path().join("out")));
        assert!(o.status.success(), "{}", stderr(&o));
        !stderr(&o).contains("is up to date")
    };
    assert!(build("a"));
    assert!(!build("a"));
    assert!(build("b"), "$PATH names another executable");
    assert!(!build("b"));
}

/// Runs kiln under `timeout`: hashing a 2 TiB file's holes would take a quarter of an
/// hour, so a build that reads them fails here instead of stalling the suite.
fn bounded(secs: u32, args: &[&std::ffi::OsStr]) -> std::process::Output {
    let kiln = kiln();
    let o = run(Command::new("timeout")
        .arg(secs.to_string())
        .arg(kiln.get_program())
        .args(args));
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(&o));
    o
}

#[test]
fn sparse_files_cost_what_their_data_costs() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ov = d.join("ov");
    std::fs::create_dir(&ov).unwrap();
    let sparse = |name: &str, len: u64, bytes: &[(u64, u8)]| {
        let f = std::fs::File::create(ov.join(name)).unwrap();
        f.set_len(len).unwrap();
        for &(at, b) in bytes {
            f.write_all_at(&[b], at).unwrap();
        }
    };
    // One byte in the middle of 2 TiB.
    sparse("huge", 2 << 40, &[(1 << 40, b'x')]);
    // 80 MiB with three bytes, once with holes and once with every zero written.
    let three = [(5, 1), (40 << 20, 2), ((80 << 20) - 1, 3)];
    sparse("holes", 80 << 20, &three);
    let mut dense = vec![0u8; 80 << 20];
    for &(at, b) in &three {
        dense[at as usize] = b;
    }
    std::fs::write(ov.join("dense"), &dense).unwrap();
    // Under 64 MiB of zeros: the plain sha256, holes and all.
    sparse("small", 10 << 20, &[(3, b'y')]);
    let profile = write(
        d,
        "p.toml",
        "version = 1\n[output]\nformat = \"disk\"\nroot_size = \"256M\"\nimage_sha256 = true\n\
         [[overlay]]\nsource = \"ov\"\ndestination = \"/srv\"\n",
    );
    let out = d.join("out");
    let build = [profile.as_os_str(), "-o".as_ref(), out.as_os_str()];
    let o = bounded(120, &[&["build".as_ref()][..], &build].concat());
    assert!(!stderr(&o).contains("up to date"), "{}", stderr(&o));

    let img = out.join("p.raw");
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset=1048576", img.display()))
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("p.manifest.json")).unwrap()).unwrap();
    let entry = |name: &str| {
        manifest["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == format!("/srv/{name}"))
            .unwrap()
            .clone()
    };
    // The README's script gives the same digests, from the host files and the image.
    for name in ["huge", "holes", "dense"] {
        let e = entry(name);
        assert!(e.get("sha256").is_none(), "{e}");
        let want = sparse_sha256_by_script(&ov.join(name));
        assert_eq!(e["sparse_sha256"], want.as_str(), "{name}");
    }
    // The profile asks for the image's plain sha256 beside its sparse digest.
    assert_eq!(manifest["image_sha256"], sha256_file(&img).as_str());
    let image_sparse = sparse_sha256_by_script(&img);
    assert_eq!(manifest["image_sparse_sha256"], image_sparse.as_str());
    assert_eq!(entry("huge")["size"], 2u64 << 40);
    // The digest is of the content, not of how the host stored it.
    assert_eq!(
        entry("holes")["sparse_sha256"],
        entry("dense")["sparse_sha256"]
    );
    let small = entry("small");
    assert!(small.get("sparse_sha256").is_none(), "{small}");
    assert_eq!(small["sha256"], sha256_file(&ov.join("small")).as_str());

    // A touched sparse file is confirmed unchanged by its data, not its holes.
    std::fs::File::options()
        .write(true)
        .open(ov.join("huge"))
        .unwrap()
        .write_all_at(b"x", 1 << 40)
        .unwrap();
    let o = bounded(120, &[&["build".as_ref()][..], &build].concat());
    assert!(stderr(&o).contains("is up to date"), "{}", stderr(&o));
}

#[test]
fn late_layers_reuse_the_package_layers_and_make_the_same_bytes() {
    let d = tempfile::tempdir().unwrap();
    let repo = Repo::create(
        d.path(),
        "kilntest",
        &[
            pkg(
                "hello",
                "1.0",
                "",
                vec![
                    file("/usr/bin/hello", "#!/bin/sh\necho hello\n", 0o755),
                    file("/usr/share/doc/hello/README", "read me\n", 0o644),
                ],
            ),
            pkg(
                "extra",
                "2.0",
                "",
                vec![file("/usr/bin/extra", "#!/bin/sh\n", 0o755)],
            ),
        ],
        "",
    );
    let server = Server::start(d.path().join("repo"), "");
    write(d.path(), "overlay/etc/motd", "one\n");
    let p = write(
        d.path(),
        "p.toml",
        &format!(
            "version = 1\nremove = [\"/usr/share/doc\"]\n[distribution]\nsuite = \"kilntest\"\nmirror = \"{}/debian\"\nkeyring = \"{}\"\npackages = [\"hello\"]\n[[overlay]]\nsource = \"overlay\"\ndestination = \"/\"\n[[file]]\npath = \"/init\"\ncontent = \"#!/bin/sh\\n\"\nmode = \"0755\"\n",
            server.url(),
            repo.keyring.display()
        ),
    );
    let layers = d.path().join("cache/layers");
    let build = |epoch: &str, extra: &[&str]| {
        let o = run(kiln()
            .env("KILN_CACHE_DIR", d.path().join("cache"))
            .env("SOURCE_DATE_EPOCH", epoch)
            .arg("build")
            .arg(&p)
            .arg("-o")
            .arg(d.path().join("out"))
            .args(extra));
        assert!(o.status.success(), "{}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("writing "), "{e}");
        let image = std::fs::read(d.path().join("out/p.cpio.zst")).unwrap();
        (e.contains("package layers from the layer cache"), image, e)
    };
    let (hit, _, _) = build("1000", &[]);
    assert!(!hit, "a first build makes its package layers");
    // One overlay file changed: the package layers come back from the cache, and the
    // image is the one a build from scratch makes.
    write(d.path(), "overlay/etc/motd", "two\n");
    let (hit, cached, e) = build("1000", &[]);
    assert!(hit, "only a late layer changed");
    assert!(e.contains("entries matching `remove`"), "told again: {e}");
    let (hit, afresh, _) = build("1000", &["--rebuild"]);
    assert!(!hit, "--rebuild makes the package layers again");
    assert_eq!(cached, afresh);
    // Each input of the package layers makes them again: the epoch, the removals, the
    // packages.
    write(d.path(), "overlay/etc/motd", "three\n");
    assert!(!build("2000", &[]).0, "another SOURCE_DATE_EPOCH");
    edit(&p, "\"/usr/share/doc\"", "\"/usr/share/doc/hello\"");
    assert!(!build("2000", &[]).0, "other removals");
    edit(&p, "[\"hello\"]", "[\"hello\", \"extra\"]");
    assert!(!build("2000", &[]).0, "other packages");
    write(d.path(), "overlay/etc/motd", "four\n");
    let (hit, image, _) = build("2000", &[]);
    assert!(hit);
    // A damaged entry is said so, and made again, to the same bytes.
    for e in std::fs::read_dir(&layers).unwrap() {
        let path = e.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
    }
    write(d.path(), "overlay/etc/motd", "five\n");
    let (hit, _, e) = build("2000", &[]);
    assert!(!hit);
    assert!(e.contains("is damaged"), "{e}");
    write(d.path(), "overlay/etc/motd", "four\n");
    let (hit, again, _) = build("2000", &[]);
    assert!(hit, "kept again after the damaged entry");
    assert_eq!(image, again);
}

#[test]
fn unchanged_overlay_files_keep_their_digests_and_changed_ones_are_hashed() {
    let c = Case::new();
    assert!(c.rebuilt(), "the first build");
    let record = c.path("out/.p.kiln-build");
    let manifest = c.path("out/p.manifest.json");
    let digest_of = |image_path: &str| -> String {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
        m["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["path"] == image_path)
            .and_then(|e| e["sha256"].as_str())
            .unwrap()
            .to_string()
    };
    let real = digest_of("/srv/a.txt");
    // The record says what the last build hashed; a different word there shows which
    // digests the next build took from it without reading the files. `settled` moves
    // the build's start into the future, as if the files had been written long before.
    let forged = "ab".repeat(32);
    let forge = |settled: bool| {
        let mut r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
        if settled {
            let began = r["began_ns"].as_i64().unwrap();
            r["began_ns"] = (began + 60_000_000_000).into();
        }
        let text = r.to_string();
        assert!(text.contains(&format!("sha256:{real}")), "{text}");
        std::fs::write(&record, text.replace(&real, &forged)).unwrap();
    };
    forge(true);
    edit(&c.path("motd.txt"), "hello", "hello again");
    let e = c.build_with(kiln().env_remove("SOURCE_DATE_EPOCH"));
    assert!(
        e.contains("2 host files unchanged since the last build, not hashed again"),
        "{e}"
    );
    assert_eq!(digest_of("/srv/a.txt"), forged, "taken from the record");
    // --rebuild trusts no record: every file is hashed.
    let o = run(kiln()
        .env_remove("SOURCE_DATE_EPOCH")
        .arg("build")
        .arg(&c.profile)
        .arg("-o")
        .arg(c.path("out"))
        .arg("--rebuild"));
    assert!(o.status.success());
    assert!(!stderr(&o).contains("not hashed again"), "{}", stderr(&o));
    assert_eq!(digest_of("/srv/a.txt"), real);
    // A file written again (the same bytes, a new change time) is hashed again.
    forge(true);
    touch(&c.path("overlay/a.txt"));
    edit(&c.path("motd.txt"), "again", "once more");
    let e = c.build_with(kiln().env_remove("SOURCE_DATE_EPOCH"));
    assert!(e.contains("1 host files unchanged"), "{e}");
    assert_eq!(digest_of("/srv/a.txt"), real);
    // Its stamp is now as recorded, but it changed just before that build began (a
    // write in the same clock tick would not show): hashed again.
    forge(false);
    edit(&c.path("motd.txt"), "once more", "and more");
    c.build_with(kiln().env_remove("SOURCE_DATE_EPOCH"));
    assert_eq!(digest_of("/srv/a.txt"), real);
    // Another format's build of the same name gives no digests.
    forge(true);
    let text = std::fs::read_to_string(&c.profile).unwrap();
    std::fs::write(&c.profile, format!("{text}[output]\nformat = \"tar\"\n")).unwrap();
    let e = c.build_with(kiln().env_remove("SOURCE_DATE_EPOCH"));
    assert!(!e.contains("not hashed again"), "{e}");
}
