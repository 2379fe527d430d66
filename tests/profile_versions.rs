//! Profile format versions: `kiln fmt --upgrade` and the loader at the edges of what this
//! kiln reads. (The rewriting itself is unit-tested on a synthetic format 2 in
//! `profile::migrate`, since format 1 is the only one yet.)

mod common;

use common::{kiln, run, stderr, stdout, write};

#[test]
fn a_current_profile_is_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let text = "# mine\nversion = 1   # pinned\n\n[qemu]\nmemory = \"1G\"\n";
    let p = write(dir.path(), "p.toml", text);
    let out = run(kiln().args(["fmt", "--upgrade"]).arg(&p));
    assert!(out.status.success());
    assert!(stdout(&out).contains("format v1 already, unchanged"));
    assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
    let check = run(kiln().args(["fmt", "--upgrade", "--check"]).arg(&p));
    assert_eq!(check.status.code(), Some(0));
}

#[test]
fn a_newer_or_impossible_version_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let current = write(dir.path(), "a.toml", "version = 1\n");
    let newer = write(dir.path(), "b.toml", "version = 9 # from the future\n");
    let out = run(kiln().args(["fmt", "--upgrade"]).arg(&current).arg(&newer));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("b.toml"), "{}", stderr(&out));
    assert!(stderr(&out).contains("newer than this kiln"));
    assert_eq!(
        std::fs::read_to_string(&newer).unwrap(),
        "version = 9 # from the future\n"
    );

    let check = run(kiln().arg("check").arg(&newer));
    assert_eq!(check.status.code(), Some(2));
    let err = stderr(&check);
    assert!(
        err.contains("b.toml:1:11") && err.contains("upgrade kiln"),
        "{err}"
    );

    let zero = write(dir.path(), "c.toml", "version = 0\n");
    let check = run(kiln().arg("check").arg(&zero));
    assert_eq!(check.status.code(), Some(2));
    assert!(stderr(&check).contains("does not exist"));
}
