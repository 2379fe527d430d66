//! `--json` on build, ls, lock and test: machine-readable stdout, progress on stderr.

mod common;

use std::path::Path;

use common::{kiln, run, sha256_file, stdout};
use serde_json::Value;

fn one_json_object(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}", common::stderr(out));
    let text = stdout(out);
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    serde_json::from_str(&text).unwrap()
}

fn busybox(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("bb.toml");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/busybox.toml"),
        &p,
    )
    .unwrap();
    p
}

#[test]
fn build_json_names_every_output_with_its_size_and_digest() {
    let dir = tempfile::tempdir().unwrap();
    let p = busybox(dir.path());
    let out_dir = dir.path().join("out");
    let first = run(kiln()
        .arg("build")
        .arg(&p)
        .arg("-o")
        .arg(&out_dir)
        .arg("--json"));
    let v = one_json_object(&first);
    // Progress went to stderr.
    assert!(common::stderr(&first).contains("built "));
    assert_eq!(v["name"], "bb");
    assert_eq!(v["format"], "initramfs");
    assert_eq!(v["up_to_date"], false);
    assert!(v["seconds"].as_f64().unwrap() > 0.0);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("bb.manifest.json")).unwrap()).unwrap();
    assert_eq!(
        v["entries"].as_u64().unwrap() as usize,
        manifest["entries"].as_array().unwrap().len()
    );
    let outputs = v["outputs"].as_array().unwrap();
    assert_eq!(outputs[0]["role"], "image");
    let mut roles: Vec<&str> = outputs
        .iter()
        .map(|o| o["role"].as_str().unwrap())
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        ["image", "kernel", "kernel_config", "manifest", "sbom"]
    );
    for o in outputs {
        let path = Path::new(o["path"].as_str().unwrap());
        assert_eq!(
            o["size"].as_u64().unwrap(),
            std::fs::metadata(path).unwrap().len()
        );
        assert_eq!(o["sha256"].as_str().unwrap(), sha256_file(path), "{path:?}");
    }
    assert_eq!(outputs[0]["sha256"], manifest["image_sha256"]);

    let again = one_json_object(&run(kiln()
        .arg("build")
        .arg(&p)
        .arg("-o")
        .arg(&out_dir)
        .arg("--json")));
    assert_eq!(again["up_to_date"], true);
    assert_eq!(again["outputs"], v["outputs"]);
}

#[test]
fn ls_json_has_the_manifests_fields_for_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let p = busybox(dir.path());
    let out_dir = dir.path().join("out");
    assert!(run(kiln().arg("build").arg(&p).arg("-o").arg(&out_dir))
        .status
        .success());
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("bb.manifest.json")).unwrap()).unwrap();
    let ls = run(kiln()
        .arg("ls")
        .arg(out_dir.join("bb.cpio.zst"))
        .arg("--json"));
    assert!(ls.status.success());
    let rows: Vec<Value> = stdout(&ls)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let entries = manifest["entries"].as_array().unwrap();
    assert_eq!(rows.len(), entries.len());
    for (row, entry) in rows.iter().zip(entries) {
        for field in ["path", "type", "mode", "uid", "gid", "size", "target"] {
            assert_eq!(row.get(field), entry.get(field), "{field} of {entry}");
        }
    }
}

#[test]
fn lock_json_is_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let p = busybox(dir.path());
    let out = run(kiln().arg("lock").arg(&p).arg("--json"));
    let v = one_json_object(&out);
    assert_eq!(v["written"], true);
    assert_eq!(v["suite"], "trixie");
    let lock: toml::Table = std::fs::read_to_string(dir.path().join("bb.lock"))
        .unwrap()
        .parse()
        .unwrap();
    let names = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    let locked: Vec<String> = lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names(&v["packages"]), locked);
    assert!(names(&v["packages"]).contains(&"busybox-static".to_string()));
    let again = one_json_object(&run(kiln().arg("lock").arg(&p).arg("--json")));
    assert_eq!(again["written"], false);
    assert_eq!(again["packages"], v["packages"]);
}
