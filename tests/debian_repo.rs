//! The trust chain and the package pipeline against a repository the tests build and
//! sign themselves: every tampering is refused with its own message, proxies are
//! honoured, the lock pins the build, two builds can share the cache at once, indexes are
//! found in every form a Release may list, a corrupt cache heals itself, and files two
//! packages ship go where `Replaces` says. As a hostile mirror: silent and endless
//! bodies, a control-tar bomb, members that climb out, hard links out of the image,
//! writes through a directory link, a .deb that is not an ar archive and a Release for
//! another suite are each refused (or contained) with their error, in bounded time and
//! memory, and nothing outside the output and the cache is written.

mod common;
#[path = "common/repo.rs"]
mod repo;

use common::*;
use repo::*;

use std::path::{Path, PathBuf};

fn packages() -> Vec<PkgSpec> {
    let mut owned = file("/usr/share/hello/owned-by-1000", "mine\n", 0o640);
    owned.uid = 1000;
    owned.gid = 1001;
    vec![
        pkg(
            "hello",
            "2.10-3",
            "libhello (>= 1.0) | libhello-compat",
            vec![
                file("/usr/bin/hello", "#!/bin/sh\necho hello\n", 0o755),
                owned,
                FileSpec {
                    path: "/usr/bin/hi".into(),
                    content: vec![],
                    mode: 0o777,
                    uid: 0,
                    gid: 0,
                    link: Some("hello".into()),
                },
            ],
        ),
        pkg(
            "libhello",
            "1.2-1",
            "",
            vec![file(
                "/usr/lib/x86_64-linux-gnu/libhello.so.1",
                "ELF",
                0o644,
            )],
        ),
        pkg(
            "unused",
            "1.0",
            "",
            vec![file("/usr/share/unused", "x", 0o644)],
        ),
    ]
}

struct Fixture {
    dir: tempfile::TempDir,
    repo: Repo,
    server: Server,
}

fn fixture(release_extra: &str) -> Fixture {
    fixture_with(&packages(), release_extra)
}

fn fixture_with(pkgs: &[PkgSpec], release_extra: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::create(dir.path(), "kilntest", pkgs, release_extra);
    let server = Server::start(dir.path().join("repo"), "");
    for sub in ["home", "tmp"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    Fixture { dir, repo, server }
}

impl Fixture {
    fn profile(&self, mirror: &str, keyring: &Path, pkgs: &str) -> PathBuf {
        write(
            self.dir.path(),
            "p.toml",
            &format!(
                "version = 1\n[distribution]\nsuite = \"kilntest\"\nmirror = \"{mirror}\"\nkeyring = \"{}\"\npackages = [{pkgs}]\n[[file]]\npath = \"/init\"\ncontent = \"#!/bin/sh\\n\"\nmode = \"0755\"\n",
                keyring.display()
            ),
        )
    }

    fn default_profile(&self) -> PathBuf {
        self.profile(
            &format!("{}/debian", self.server.url()),
            &self.repo.keyring,
            "\"hello\"",
        )
    }

    fn kiln(&self) -> std::process::Command {
        let mut c = kiln();
        c.env("KILN_CACHE_DIR", self.dir.path().join("cache"));
        // Home and temporary directory inside the fixture (made with it), so that
        // `untouched` sees any write kiln makes outside its output and cache.
        c.env("HOME", self.dir.path().join("home"));
        c.env("TMPDIR", self.dir.path().join("tmp"));
        for v in [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
            "no_proxy",
            "NO_PROXY",
        ] {
            c.env_remove(v);
        }
        c
    }

    /// A full build, never a no-op: these tests are about the package pipeline
    /// (incremental.rs is about skipping it).
    fn build(&self, profile: &Path, extra: &[&str]) -> std::process::Output {
        run(self
            .kiln()
            .arg("build")
            .arg(profile)
            .arg("-o")
            .arg(self.dir.path().join("out"))
            .arg("--rebuild")
            .args(extra))
    }

    /// Runs `f` and asserts that it wrote nothing outside the output and the cache.
    fn untouched<T>(&self, f: impl FnOnce() -> T) -> T {
        let before = files_outside(self.dir.path(), &["out", "cache"]);
        let t = f();
        assert_eq!(
            files_outside(self.dir.path(), &["out", "cache"]),
            before,
            "kiln wrote outside its output and cache"
        );
        t
    }

    fn manifest(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.dir.path().join("out/p.manifest.json")).unwrap())
            .unwrap()
    }
}

fn entry<'a>(m: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    m["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == path)
        .unwrap_or_else(|| panic!("{path} not in the image"))
}

#[test]
fn a_signed_repository_installs_with_dependencies_and_tar_ownership() {
    let f = fixture("");
    let o = f.build(&f.default_profile(), &[]);
    assert!(o.status.success());
    let m = f.manifest();
    let hello = entry(&m, "/usr/bin/hello");
    assert_eq!(hello["mode"], "0755");
    assert_eq!(hello["sha256"], sha256(b"#!/bin/sh\necho hello\n"));
    let owned = entry(&m, "/usr/share/hello/owned-by-1000");
    assert_eq!(
        (
            owned["uid"].as_u64(),
            owned["gid"].as_u64(),
            owned["mode"].as_str()
        ),
        (Some(1000), Some(1001), Some("0640"))
    );
    assert_eq!(entry(&m, "/usr/bin/hi")["target"], "hello");
    entry(&m, "/usr/lib/x86_64-linux-gnu/libhello.so.1");
    assert!(m["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["path"] != "/usr/share/unused"));
    // Merged /usr: /bin is a link, not a directory.
    assert_eq!(entry(&m, "/bin")["target"], "usr/bin");
}

#[test]
fn a_tampered_inrelease_is_refused() {
    let f = fixture("");
    let p = f.repo.dists().join("InRelease");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("Origin: kiln-test", "Origin: kiln-evil");
    std::fs::write(&p, text).unwrap();
    let o = f.build(&f.default_profile(), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("InRelease: no valid signature"),
        "{}",
        stderr(&o)
    );
    assert!(!f.dir.path().join("out").exists(), "nothing may be written");
}

#[test]
fn a_repository_signed_by_an_unknown_key_is_refused() {
    let f = fixture("");
    let other = make_key(
        &f.dir.path().join("other-gnupg"),
        "someone else <x@example.org>",
    );
    let o = f.build(
        &f.profile(&format!("{}/debian", f.server.url()), &other, "\"hello\""),
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no key in the keyring makes it verify"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_tampered_packages_index_is_refused() {
    let f = fixture("");
    let idx = f.repo.dists().join("main/binary-amd64/Packages.xz");
    let mut bytes = std::fs::read(&idx).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&idx, bytes).unwrap();
    let o = f.build(&f.default_profile(), &[]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("main/binary-amd64/Packages.xz")
            && e.contains("sha256 is")
            && e.contains("the signed index says"),
        "{e}"
    );
}

#[test]
fn a_tampered_deb_is_refused() {
    let f = fixture("");
    let deb = f
        .repo
        .root
        .join("pool/main/libhello/libhello_1.2-1_amd64.deb");
    let mut bytes = std::fs::read(&deb).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x01;
    std::fs::write(&deb, bytes).unwrap();
    let o = f.build(&f.default_profile(), &[]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("libhello 1.2-1 amd64") && e.contains("sha256 is") && e.contains("refusing it"),
        "{e}"
    );
}

#[test]
fn an_expired_release_is_refused_unless_allowed() {
    let f = fixture("Valid-Until: Sat, 01 Jan 2022 00:00:00 UTC\n");
    let o = f.build(&f.default_profile(), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("expired: Valid-Until is Sat, 01 Jan 2022"),
        "{}",
        stderr(&o)
    );
    let o = f.build(&f.default_profile(), &["--ignore-valid-until"]);
    assert!(o.status.success());
}

#[test]
fn plain_http_goes_through_the_proxy_in_absolute_form() {
    let f = fixture("");
    // The mirror's host does not resolve: only a proxy can reach it.
    let p = f.profile(
        "http://kiln-fixture.invalid/debian",
        &f.repo.keyring,
        "\"hello\"",
    );
    let o = run(f
        .kiln()
        .env("http_proxy", f.server.url())
        .arg("build")
        .arg(&p)
        .arg("-o")
        .arg(f.dir.path().join("out")));
    assert!(o.status.success());
    let lines = f.server.request_lines();
    assert!(
        lines.iter().any(
            |l| l == "GET http://kiln-fixture.invalid/debian/dists/kilntest/InRelease HTTP/1.1"
        ),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("GET http://kiln-fixture.invalid/debian/pool/main/hello/")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.starts_with("CONNECT")), "{lines:?}");
}

#[test]
fn no_proxy_bypasses_the_proxy() {
    let f = fixture("");
    let o = run(f
        .kiln()
        .env("http_proxy", "http://127.0.0.1:9")
        .env("no_proxy", "localhost,127.0.0.1")
        .arg("build")
        .arg(f.default_profile())
        .arg("-o")
        .arg(f.dir.path().join("out")));
    assert!(o.status.success());
    assert!(f
        .server
        .request_lines()
        .iter()
        .any(|l| l.starts_with("GET /debian/dists/kilntest/InRelease")));
}

#[test]
fn the_lock_pins_the_build_and_locked_detects_drift() {
    let f = fixture("");
    let p = f.default_profile();
    let o = run(f.kiln().arg("lock").arg(&p));
    assert!(o.status.success());
    let lock = std::fs::read_to_string(p.with_extension("lock")).unwrap();
    assert!(
        lock.contains("name = \"hello\"")
            && lock.contains("name = \"libhello\"")
            && lock.contains("release_date = \"Sat, 21 Nov 2026 09:15:44 UTC\""),
        "{lock}"
    );
    assert!(
        !lock.contains("127.0.0.1"),
        "the lock must not name the mirror"
    );

    let o = f.build(&p, &["--locked"]);
    assert!(o.status.success());
    let first = sha256_file(&f.dir.path().join("out/p.cpio.zst"));
    // With the lock, the index is not needed any more: the build uses the pinned files.
    std::fs::remove_dir_all(f.repo.root.join("dists")).unwrap();
    std::fs::remove_dir_all(f.dir.path().join("cache")).unwrap();
    let o = f.build(&p, &["--locked"]);
    assert!(o.status.success());
    assert_eq!(sha256_file(&f.dir.path().join("out/p.cpio.zst")), first);

    // Offline, the lock and the cache are enough; without the cache, what is missing is
    // named and nothing is fetched.
    let o = f.build(&p, &["--offline"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(sha256_file(&f.dir.path().join("out/p.cpio.zst")), first);
    std::fs::remove_dir_all(f.dir.path().join("cache")).unwrap();
    let o = f.build(&p, &["--offline"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--offline") && stderr(&o).contains("hello"),
        "{}",
        stderr(&o)
    );
    // A pinned package the mirror dropped: what to do next.
    for e in walkdir::WalkDir::new(f.repo.root.join("pool"))
        .into_iter()
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with("libhello_") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let o = f.build(&p, &["--locked"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("HTTP 404"), "{}", stderr(&o));
    assert!(stderr(&o).contains("kiln lock --update"), "{}", stderr(&o));
    assert!(stderr(&o).contains("snapshot"), "{}", stderr(&o));

    // Changing the package list makes the lock stale.
    let p2 = f.profile(
        &format!("{}/debian", f.server.url()),
        &f.repo.keyring,
        "\"hello\", \"unused\"",
    );
    assert_eq!(p2, p);
    let o = f.build(&p, &["--locked"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no longer matches") && stderr(&o).contains("kiln lock --update"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn two_builds_share_a_cold_cache_at_once() {
    let f = fixture("");
    let p = f.default_profile();
    let spawn = |out: &str| {
        f.kiln()
            .arg("--quiet")
            .arg("build")
            .arg(&p)
            .arg("-o")
            .arg(f.dir.path().join(out))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("out-a"), spawn("out-b"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    assert_eq!(
        sha256_file(&f.dir.path().join("out-a/p.cpio.zst")),
        sha256_file(&f.dir.path().join("out-b/p.cpio.zst"))
    );
}

#[test]
fn an_unsatisfiable_request_explains_why() {
    let f = fixture("");
    let p = f.profile(
        &format!("{}/debian", f.server.url()),
        &f.repo.keyring,
        "\"hello\"",
    );
    // A repository where libhello is too old for hello.
    let dir = tempfile::tempdir().unwrap();
    let mut pk = packages();
    pk[1].version = "0.9-1".into();
    let r = Repo::create(dir.path(), "kilntest", &pk, "");
    let s = Server::start(dir.path().join("repo"), "");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace(&f.server.url(), &s.url())
        .replace(
            &f.repo.keyring.display().to_string(),
            &r.keyring.display().to_string(),
        );
    std::fs::write(&p, text).unwrap();
    let o = f.build(&p, &[]);
    // Located at the profile's `packages`: a profile error.
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("cannot satisfy `libhello (>= 1.0) | libhello-compat`"),
        "{e}"
    );
    assert!(
        e.contains("the index has 0.9-1") && e.contains("libhello-compat: not in the index"),
        "{e}"
    );
    assert!(e.contains("hello: requested in the profile"), "{e}");
}

/// Three pairs of packages shipping the same file under /usr/share/clash: in `one`, the
/// first in name order replaces the second; in `two`, the second replaces the first; in
/// `three`, neither says anything.
fn clashing_packages() -> Vec<PkgSpec> {
    let mut out = Vec::new();
    for (pair, replacer) in [("one", Some("a")), ("two", Some("z")), ("three", None)] {
        for side in ["a", "z"] {
            let name = format!("{pair}-{side}");
            let mut p = pkg(
                &name,
                "1.0",
                "",
                vec![file(
                    &format!("/usr/share/clash/{pair}"),
                    &format!("from {name}\n"),
                    0o644,
                )],
            );
            if replacer == Some(side) {
                let other = if side == "a" { "z" } else { "a" };
                p.extra = format!("Replaces: {pair}-{other} (<< 2)\n");
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn replaces_decides_which_package_owns_a_shared_file() {
    let f = fixture_with(&clashing_packages(), "");
    let names = ["one-a", "one-z", "two-a", "two-z", "three-a", "three-z"]
        .map(|n| format!("\"{n}\""))
        .join(", ");
    let p = f.profile(
        &format!("{}/debian", f.server.url()),
        &f.repo.keyring,
        &names,
    );
    let o = f.build(&p, &[]);
    assert!(o.status.success());
    let m = f.manifest();
    let content = |pair: &str| entry(&m, &format!("/usr/share/clash/{pair}"))["sha256"].clone();
    // The replacing package wins whether it comes first or last in name order.
    assert_eq!(content("one"), sha256(b"from one-a\n"));
    assert_eq!(content("two"), sha256(b"from two-z\n"));
    // Without Replaces, the later package in name order wins, and the log says so.
    assert_eq!(content("three"), sha256(b"from three-z\n"));
    let e = stderr(&o);
    assert!(
        e.contains(
            "file in two packages: /usr/share/clash/three: three-a's copy replaced by three-z's"
        ),
        "{e}"
    );
    // A declared replacement is not an accident worth reporting.
    assert!(
        !e.contains("/usr/share/clash/one") && !e.contains("/usr/share/clash/two"),
        "{e}"
    );
}

#[test]
fn acquire_by_hash_fetches_the_index_by_its_sha256() {
    let f = fixture("");
    f.repo
        .publish_indexes(f.repo.packages.as_bytes(), "", &["Packages.xz"], true);
    let xz = std::fs::read(f.repo.dists().join("main/binary-amd64/Packages.xz")).unwrap();
    let o = f.build(&f.default_profile(), &[]);
    assert!(o.status.success());
    let lines = f.server.request_lines();
    let by_hash = format!(
        "GET /debian/dists/kilntest/main/binary-amd64/by-hash/SHA256/{} HTTP/1.1",
        sha256(&xz)
    );
    assert!(lines.contains(&by_hash), "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains("binary-amd64/Packages")),
        "the index must not be fetched by name: {lines:?}"
    );
    entry(&f.manifest(), "/usr/bin/hello");
}

/// Republishes the fixture's index as `name` only, builds, and checks that exactly that
/// file was fetched and the packages it lists were installed.
fn builds_from_index_form(name: &str) {
    let f = fixture("");
    f.repo
        .publish_indexes(f.repo.packages.as_bytes(), "", &[name], false);
    let o = f.build(&f.default_profile(), &[]);
    assert!(o.status.success());
    let lines = f.server.request_lines();
    let fetched: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("binary-amd64/"))
        .collect();
    assert_eq!(
        fetched,
        [&format!(
            "GET /debian/dists/kilntest/main/binary-amd64/{name} HTTP/1.1"
        )],
        "{lines:?}"
    );
    let m = f.manifest();
    assert_eq!(
        entry(&m, "/usr/bin/hello")["sha256"],
        sha256(b"#!/bin/sh\necho hello\n")
    );
    entry(&m, "/usr/lib/x86_64-linux-gnu/libhello.so.1");
}

#[test]
fn a_release_with_only_packages_gz_is_enough() {
    builds_from_index_form("Packages.gz");
}

#[test]
fn a_release_with_only_uncompressed_packages_is_enough() {
    builds_from_index_form("Packages");
}

#[test]
fn a_corrupt_cached_deb_is_fetched_again() {
    let f = fixture("");
    let p = f.default_profile();
    let o = f.build(&p, &[]);
    assert!(o.status.success());
    let image = f.dir.path().join("out/p.cpio.zst");
    let first = sha256_file(&image);
    let deb_sha =
        sha256(&std::fs::read(f.repo.root.join("pool/main/hello/hello_2.10-3_amd64.deb")).unwrap());
    let blob = f
        .dir
        .path()
        .join("cache/blobs")
        .join(&deb_sha[..2])
        .join(&deb_sha);
    // Same length, one bit off: only re-hashing can tell.
    let mut bytes = std::fs::read(&blob).expect("the .deb is in the cache");
    let n = bytes.len();
    bytes[n / 2] ^= 0x01;
    std::fs::write(&blob, bytes).unwrap();

    let deb_get = "GET /debian/pool/main/hello/hello_2.10-3_amd64.deb HTTP/1.1";
    let gets = |f: &Fixture| {
        f.server
            .request_lines()
            .iter()
            .filter(|l| *l == deb_get)
            .count()
    };
    assert_eq!(gets(&f), 1);
    let o = f.build(&p, &[]);
    assert!(o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(&format!("cache entry {} was corrupt", blob.display()))
            && e.contains("fetching it again"),
        "{e}"
    );
    assert_eq!(gets(&f), 2, "{:?}", f.server.request_lines());
    assert_eq!(
        sha256_file(&blob),
        deb_sha,
        "the cache holds the good copy again"
    );
    assert_eq!(sha256_file(&image), first);
}

#[test]
fn an_https_mirror_is_reached_through_connect() {
    let f = fixture("");
    // The test server is the proxy; it does not tunnel (it answers CONNECT with 404), so
    // the build must fail, promptly and saying what it could not fetch.
    let port = f.server.port;
    let p = f.profile(
        &format!("https://127.0.0.1:{port}/debian"),
        &f.repo.keyring,
        "\"hello\"",
    );
    let mut cmd = f.kiln();
    cmd.env("https_proxy", f.server.url())
        .arg("build")
        .arg(&p)
        .arg("-o")
        .arg(f.dir.path().join("out"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kiln still running after 60s; the proxy saw {:?}",
                f.server.request_lines()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    eprintln!("--- stderr:\n{e}");
    assert_eq!(o.status.code(), Some(1), "{e}");
    let lines = f.server.request_lines();
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("CONNECT 127.0.0.1:{port} HTTP/1.1")),
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|l| l.starts_with("CONNECT ")),
        "only tunnels may be asked for: {lines:?}"
    );
    assert!(
        e.contains(&format!(
            "GET https://127.0.0.1:{port}/debian/dists/kilntest/InRelease"
        )),
        "{e}"
    );
    assert!(!f.dir.path().join("out").exists(), "nothing may be written");
}

#[test]
fn a_control_tar_bomb_is_refused_in_bounded_memory() {
    // 80 MiB of zeros in control.tar: a few KiB compressed.
    let mut pk = packages();
    pk[0]
        .control_members
        .push(("md5sums".into(), vec![0u8; 80 << 20]));
    let f = fixture_with(&pk, "");
    let e = refused(&f, &["control.tar.xz decompresses to more than 64.0 MiB"]);
    assert!(e.contains("hello"), "{e}");
}

#[test]
fn a_cached_package_keeps_its_control_members_as_files() {
    let sums = b"d41d8cd98f00b204e9800998ecf8427e  usr/bin/hello\n".to_vec();
    let mut pk = packages();
    pk[0].control_members.push(("md5sums".into(), sums.clone()));
    let f = fixture_with(&pk, "");
    let o = f.build(&f.default_profile(), &[]);
    assert!(o.status.success());
    let unpacked = f.dir.path().join("cache/unpacked");
    let entries: Vec<_> = std::fs::read_dir(&unpacked).unwrap().flatten().collect();
    assert!(!entries.is_empty());
    let mut found = false;
    for e in entries {
        let index = std::fs::read_to_string(e.path().join("index.json")).unwrap();
        assert!(
            !index.contains("\"info\":{"),
            "no bytes inside the index: {index}"
        );
        assert!(e.path().join("info").is_dir());
        found |= std::fs::read(e.path().join("info/md5sums")).is_ok_and(|b| b == sums);
    }
    assert!(found, "hello's md5sums is a file of its own");
    // A warm build reads them back: the same image.
    let first = sha256_file(&f.dir.path().join("out/p.cpio.zst"));
    let o = f.build(&f.default_profile(), &[]);
    assert!(o.status.success());
    assert_eq!(sha256_file(&f.dir.path().join("out/p.cpio.zst")), first);
}

/// `kiln build` of the fixture's profile under GNU time: the output, the wall time and
/// the peak RSS in KiB.
fn measured_build(
    f: &Fixture,
    env: &[(&str, &str)],
) -> (std::process::Output, std::time::Duration, u64) {
    let scratch = tempfile::tempdir().unwrap();
    let rss = scratch.path().join("rss");
    let profile = f.default_profile();
    let c = f.kiln();
    let program = c.get_program().to_owned();
    let mut timed = std::process::Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss)
        .arg(program)
        .args(["build"])
        .arg(profile)
        .arg("-o")
        .arg(f.dir.path().join("out"));
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    for (k, v) in env {
        timed.env(k, v);
    }
    let start = std::time::Instant::now();
    let o = f.untouched(|| run(&mut timed));
    let took = start.elapsed();
    let kib = std::fs::read_to_string(&rss)
        .unwrap()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap();
    (o, took, kib)
}

/// A build of the fixture's profile that must fail saying one of `says`, in bounded time
/// and memory, writing no image; returns its stderr.
fn refused(f: &Fixture, says: &[&str]) -> String {
    let (o, took, kib) = measured_build(f, &[]);
    let e = stderr(&o);
    assert!(!o.status.success(), "accepted: {e}");
    assert!(says.iter().any(|s| e.contains(s)), "{e}");
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    assert!(kib < 256 << 10, "peak RSS {kib} KiB");
    assert!(!f.dir.path().join("out/p.cpio.zst").exists());
    e
}

#[test]
fn a_mirror_that_never_answers_is_given_up_on_in_bounded_time() {
    let f = fixture("");
    f.server.misbehave("/InRelease", Hostile::Silent);
    let (o, took, _) = measured_build(&f, &[("KILN_HTTP_TIMEOUT", "1")]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("InRelease") && e.contains("timed out"), "{e}");
    // Three attempts of a second each, and the backoff between them.
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    let asked = f
        .server
        .request_lines()
        .iter()
        .filter(|l| l.contains("/InRelease"))
        .count();
    assert_eq!(asked, 3);
}

#[test]
fn endless_bodies_stop_at_their_bound_in_bounded_memory() {
    // An InRelease that never ends: cut at 16 MiB.
    let f = fixture("");
    f.server.misbehave("/InRelease", Hostile::Endless);
    refused(&f, &["at most 16777216 are expected"]);
    // A .deb that never ends: cut at the index's Size, and nothing left in the cache.
    let f = fixture("");
    f.server.misbehave("_amd64.deb", Hostile::Endless);
    refused(&f, &["are expected; refusing it"]);
    let tmp = f.dir.path().join("cache/tmp");
    assert_eq!(std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0), 0);
}

#[test]
fn an_inrelease_of_many_short_lines_is_refused_in_bounded_time() {
    // Just under the 16 MiB an InRelease may be, in two-byte lines, before its real
    // signature: read in one pass (rpgp's reader took a minute over 1 MiB of them).
    let f = fixture("");
    let p = f.repo.dists().join("InRelease");
    let text = std::fs::read_to_string(&p).unwrap();
    let at = text.find("-----BEGIN PGP SIGNATURE-----").unwrap();
    let padded = format!("{}{}{}", &text[..at], "a\n".repeat(8_000_000), &text[at..]);
    std::fs::write(&p, padded).unwrap();
    refused(&f, &["InRelease: no valid signature"]);
}

/// A package whose data.tar holds `files`, beside the fixture's own packages.
fn with_hostile(files: Vec<FileSpec>) -> Fixture {
    let mut pk = packages();
    pk[0].files.extend(files);
    fixture_with(&pk, "")
}

fn link(path: &str, target: &str) -> FileSpec {
    FileSpec {
        link: Some(target.into()),
        ..file(path, "", 0o777)
    }
}

#[test]
fn hostile_archive_members_are_refused_or_contained_in_bounded_time_and_memory() {
    // A member that climbs out of the root.
    refused(
        &with_hostile(vec![file("/../../escaped", "x", 0o644)]),
        &["`./../../escaped` contains `..`; image paths may not climb"],
    );
    // A hard link to a file outside the image.
    refused(
        &with_hostile(vec![link(
            "/usr/bin/passwd-copy",
            "hard:../../../etc/passwd",
        )]),
        &["`../../../etc/passwd` contains `..`; image paths may not climb"],
    );
    // A symlink to /etc, then a file written "through" it: it lands in the image's /etc
    // (dpkg follows a package's directory links the same way), never the host's.
    let f = with_hostile(vec![
        link("/usr/lib/through", "/etc"),
        file("/usr/lib/through/owned", "x", 0o644),
    ]);
    let (o, _, _) = measured_build(&f, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    {
        let m = f.manifest();
        let through = entry(&m, "/usr/lib/through");
        assert_eq!(through["type"], "symlink", "{through}");
        let paths: Vec<&str> = m["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["path"].as_str())
            .filter(|p| p.contains("owned"))
            .collect();
        // As dpkg does: through the image's own link, to the image's /etc.
        assert_eq!(paths, ["/etc/owned", "/usr/share/hello/owned-by-1000"]);
        assert!(std::fs::metadata("/etc/owned").is_err());
    }
}

#[test]
fn a_deb_that_is_not_an_ar_archive_and_a_release_for_another_suite_are_refused() {
    let f = fixture("");
    // The .deb replaced by other bytes of the same length and hash listed: only the
    // reader can tell (the index is re-signed for the new bytes).
    let deb = f.repo.root.join("pool/main/hello/hello_2.10-3_amd64.deb");
    let junk = vec![b'x'; 4096];
    std::fs::write(&deb, &junk).unwrap();
    let index = std::fs::read_to_string(f.repo.dists().join("main/binary-amd64/Packages"))
        .unwrap_or_else(|_| {
            let xz = std::fs::read(f.repo.dists().join("main/binary-amd64/Packages.xz")).unwrap();
            let mut text = String::new();
            use std::io::Read;
            liblzma::read::XzDecoder::new(&xz[..])
                .read_to_string(&mut text)
                .unwrap();
            text
        });
    let mut fixed = String::new();
    let mut in_hello = false;
    for line in index.lines() {
        if let Some(name) = line.strip_prefix("Package: ") {
            in_hello = name == "hello";
        }
        let line = match (in_hello, line.split_once(": ")) {
            (true, Some(("Size", _))) => format!("Size: {}", junk.len()),
            (true, Some(("SHA256", _))) => format!("SHA256: {}", sha256(&junk)),
            _ => line.to_string(),
        };
        fixed.push_str(&line);
        fixed.push('\n');
    }
    f.repo
        .publish_indexes(fixed.as_bytes(), "", &["Packages.xz"], false);
    let (o, took, _) = measured_build(&f, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("as an ar archive"), "{}", stderr(&o));
    assert!(took < std::time::Duration::from_secs(30));
    // A Release signed for another suite, served as this one's.
    let f = fixture("");
    let inrelease = f.repo.dists().join("InRelease");
    let text = std::fs::read_to_string(&inrelease).unwrap();
    assert!(text.contains("Suite: kilntest"));
    let other = tempfile::tempdir().unwrap();
    let r = Repo::create(other.path(), "othersuite", &packages(), "");
    std::fs::copy(r.dists().join("InRelease"), &inrelease).unwrap();
    let p = f.profile(
        &format!("{}/debian", f.server.url()),
        &r.keyring,
        "\"hello\"",
    );
    let o = f.untouched(|| f.build(&p, &[]));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("the signed Release is for othersuite"),
        "{}",
        stderr(&o)
    );
}

/// `--index-max-age`: an InRelease fetched and verified within the window is used from
/// the cache (and verified again); outside it, or damaged, it is fetched again.
#[test]
fn an_index_max_age_reuses_a_recent_verified_inrelease() {
    let f = fixture("");
    let p = f.default_profile();
    let fetches = || {
        f.server
            .request_lines()
            .iter()
            .filter(|l| l.contains("/InRelease"))
            .count()
    };
    // Each build resolves afresh: without a lock, unlocked builds read the index.
    let build = |extra: &[&str]| {
        let _ = std::fs::remove_file(p.with_extension("lock"));
        let o = f.build(&p, extra);
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let window = ["--index-max-age", "1h"];
    build(&window);
    assert_eq!(fetches(), 1);
    let e = build(&window);
    assert!(e.contains("--index-max-age"), "{e}");
    assert_eq!(
        fetches(),
        1,
        "the kept InRelease is reused within the window"
    );
    build(&[]);
    assert_eq!(
        fetches(),
        2,
        "without a window, every unlocked build fetches"
    );

    let kept: Vec<PathBuf> = std::fs::read_dir(f.dir.path().join("cache/release"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    // Older than the window: fetched again.
    let touched = std::process::Command::new("touch")
        .args(["-d", "2 hours ago"])
        .arg(&kept[0])
        .status()
        .unwrap();
    assert!(touched.success());
    build(&window);
    assert_eq!(
        fetches(),
        3,
        "an InRelease older than the window is fetched again"
    );
    // Damaged in the cache: it fails verification, and is fetched again.
    let text = std::fs::read_to_string(&kept[0]).unwrap();
    std::fs::write(&kept[0], text.replacen("Suite:", "Suite: x", 1)).unwrap();
    build(&window);
    assert_eq!(fetches(), 4, "a damaged kept InRelease is fetched again");
    let e = build(&window);
    assert!(e.contains("--index-max-age"), "{e}");
    assert_eq!(fetches(), 4);
}

/// An unlocked build keeps its resolution: the next one with the same request and the
/// same signed Release takes it without reading the index. A new Release, or another
/// request, resolves afresh.
#[test]
fn an_unlocked_build_reuses_its_resolution_until_the_archive_or_the_request_changes() {
    let f = fixture("");
    let p = f.default_profile();
    let build = || {
        let _ = std::fs::remove_file(p.with_extension("lock"));
        let o = f.build(&p, &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        (stderr(&o), f.manifest())
    };
    let reused = "as the last build did";
    let (e, first) = build();
    assert!(
        e.contains("resolved 2 packages") && !e.contains(reused),
        "{e}"
    );
    let (e, again) = build();
    assert!(e.contains(reused), "{e}");
    assert_eq!(again, first);

    // The archive moves on: another signed Release, resolved afresh.
    f.repo
        .write_indexes(f.repo.packages.as_bytes(), "X-Kiln-Test: moved on\n");
    let (e, _) = build();
    assert!(
        e.contains("resolved 2 packages") && !e.contains(reused),
        "{e}"
    );
    assert!(build().0.contains(reused));

    // Another request: resolved afresh, and it installs what it asks for.
    f.profile(
        &format!("{}/debian", f.server.url()),
        &f.repo.keyring,
        "\"hello\", \"unused\"",
    );
    let (e, m) = build();
    assert!(
        e.contains("resolved 3 packages") && !e.contains(reused),
        "{e}"
    );
    entry(&m, "/usr/share/unused");
}
