//! The first minutes: `kiln test` in an empty directory, and `kiln init`'s templates.

mod common;

use common::{kiln, run, stderr};

#[test]
fn kiln_test_in_an_empty_directory_runs_the_built_in_busybox_test() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(kiln().arg("test").current_dir(dir.path()));
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.contains("using the built-in busybox test"), "{err}");
    // The built-in profile is written under the output directory, so it is locked, recorded
    // and reused like any other: the second build is up to date.
    let again = run(kiln().arg("build").current_dir(dir.path()));
    assert!(again.status.success());
    assert!(stderr(&again).contains("up to date"), "{}", stderr(&again));
}

#[test]
fn a_local_kiln_toml_is_read_when_no_profile_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let init = run(kiln().args(["init", "kiln.toml"]).current_dir(dir.path()));
    assert!(init.status.success());
    // An edit that breaks it shows that this file, not the built-in one, is read.
    let p = dir.path().join("kiln.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replace("version = 1", "version = 1\nbogus = 1")).unwrap();
    let out = run(kiln().arg("build").current_dir(dir.path()));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("kiln.toml") && err.contains("bogus"), "{err}");
}

#[test]
fn every_template_is_the_shipped_profile_and_builds() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    let dir = tempfile::tempdir().unwrap();
    for (template, shipped, companion) in [
        ("busybox", "busybox.toml", None),
        (
            "debian-disk",
            "debian-minimal-disk.toml",
            Some("tests/debian-disk.sh"),
        ),
        (
            "memorizer",
            "memorizer.toml",
            Some("memorizer/memorizer-test.sh"),
        ),
        ("kernel-matrix", "kernel-matrix.toml", None),
    ] {
        let out = run(kiln()
            .args(["init", template, "--template", template])
            .current_dir(dir.path()));
        assert!(out.status.success(), "{template}");
        let written = dir.path().join(format!("{template}.toml"));
        // The shipped profile, its `#:schema` line pointing at the schema written beside it.
        let shipped = std::fs::read_to_string(repo.join(shipped)).unwrap();
        let expected = shipped.replacen(
            "#:schema ../schema/profile-v1.json\n",
            "#:schema kiln.schema.json\n",
            1,
        );
        assert_ne!(shipped, expected);
        assert_eq!(std::fs::read_to_string(&written).unwrap(), expected);
        if let Some(c) = companion {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(dir.path().join(c)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o111, 0o111, "{c} executable");
            assert_eq!(
                std::fs::read(dir.path().join(c)).unwrap(),
                std::fs::read(repo.join(c)).unwrap()
            );
        }
        let schema = run(kiln().arg("schema"));
        assert_eq!(
            std::fs::read(dir.path().join("kiln.schema.json")).unwrap(),
            schema.stdout
        );
        let build = run(kiln().arg("build").arg(&written).current_dir(dir.path()));
        assert!(build.status.success(), "{template} builds");
    }
}

#[test]
fn the_busybox_template_passes_its_test_and_init_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(kiln().args(["init", "mine"]).current_dir(dir.path()));
    assert!(out.status.success());
    let p = dir.path().join("mine.toml");
    let test = run(kiln().arg("test").arg(&p).current_dir(dir.path()));
    assert_eq!(test.status.code(), Some(0));

    std::fs::write(&p, "# mine\n").unwrap();
    let again = run(kiln().args(["init", "mine.toml"]).current_dir(dir.path()));
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("does not overwrite"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read_to_string(&p).unwrap(), "# mine\n");

    // A companion that exists stops the whole template: nothing is written.
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(dir.path().join("tests/debian-disk.sh"), "mine").unwrap();
    let disk = run(kiln()
        .args(["init", "disk", "--template", "debian-disk"])
        .current_dir(dir.path()));
    assert!(!disk.status.success());
    assert!(!dir.path().join("disk.toml").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("tests/debian-disk.sh")).unwrap(),
        "mine"
    );
}
