//! The SBOM each build writes (SPDX 2.3 JSON), checked by a real SPDX validator
//! (`pyspdxtools` from Python's spdx-tools) and against the lock and the host files.

mod common;

use std::path::Path;
use std::process::Command;

use common::{kiln, run, sha256_file, stderr, write};
use serde_json::Value;

fn spdx_valid(path: &Path) {
    let out = Command::new("pyspdxtools")
        .arg("-i")
        .arg(path)
        .output()
        .expect("pyspdxtools (pip install spdx-tools)");
    assert!(
        out.status.success(),
        "{path:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_disk_build_writes_a_valid_reproducible_sbom_of_its_packages_and_host_files() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    write(dir.path(), "hello.txt", "hello from the host\n");
    let p = write(
        dir.path(),
        "img.toml",
        &format!(
            "version = 1\ninclude = [\"{}\"]\n\n[output]\nimage_sha256 = true\n\n\
             [[file]]\npath = \"/etc/hello.txt\"\nsource = \"hello.txt\"\n",
            profiles.join("debian-minimal-disk.toml").display()
        ),
    );
    assert!(run(kiln().arg("lock").arg(&p)).status.success());
    let out_a = dir.path().join("a");
    assert!(run(kiln().arg("build").arg(&p).arg("-o").arg(&out_a))
        .status
        .success());
    let sbom_path = out_a.join("img.spdx.json");
    spdx_valid(&sbom_path);
    let sbom: Value = serde_json::from_slice(&std::fs::read(&sbom_path).unwrap()).unwrap();

    // The image, by its sha256, is what the document describes.
    let image = &sbom["packages"][0];
    assert_eq!(image["SPDXID"], "SPDXRef-Image");
    assert_eq!(
        image["checksums"][0]["checksumValue"].as_str().unwrap(),
        sha256_file(&out_a.join("img.raw"))
    );
    assert!(sbom["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .any(
            |r| r["relationshipType"] == "DESCRIBES" && r["relatedSpdxElement"] == "SPDXRef-Image"
        ));

    // One package per locked package, with the .deb's sha256.
    let lock: toml::Table = std::fs::read_to_string(dir.path().join("img.lock"))
        .unwrap()
        .parse()
        .unwrap();
    let mut locked: Vec<(String, String, String)> = lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["version"].as_str().unwrap().to_string(),
                p["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    locked.sort();
    let mut listed: Vec<(String, String, String)> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["SPDXID"]
                .as_str()
                .unwrap()
                .starts_with("SPDXRef-Package-deb-")
        })
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["versionInfo"].as_str().unwrap().to_string(),
                p["checksums"][0]["checksumValue"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(listed, locked);
    let systemd = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "systemd")
        .unwrap();
    assert!(systemd["supplier"]
        .as_str()
        .unwrap()
        .starts_with("Organization: Debian systemd Maintainers"));
    // From systemd's machine-readable copyright file.
    assert!(systemd["licenseDeclared"]
        .as_str()
        .unwrap()
        .contains("LGPL-2.1-or-later"));
    assert!(systemd["externalRefs"][0]["referenceLocator"]
        .as_str()
        .unwrap()
        .starts_with("pkg:deb/debian/systemd@"));

    // The file from the host, with its sha256.
    let hello = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "/etc/hello.txt")
        .expect("the host file is listed");
    assert_eq!(
        hello["checksums"][0]["checksumValue"].as_str().unwrap(),
        sha256_file(&dir.path().join("hello.txt"))
    );

    // `kiln sbom` gives the same bytes from the manifest; another build elsewhere too.
    let printed = run(kiln().arg("sbom").arg(out_a.join("img.manifest.json")));
    assert!(printed.status.success());
    assert_eq!(printed.stdout, std::fs::read(&sbom_path).unwrap());
    let out_b = dir.path().join("b");
    assert!(run(kiln().arg("build").arg(&p).arg("-o").arg(&out_b))
        .status
        .success());
    assert_eq!(
        std::fs::read(out_b.join("img.spdx.json")).unwrap(),
        std::fs::read(&sbom_path).unwrap()
    );
}

#[test]
fn an_initramfs_sbom_is_valid_and_sbom_refuses_what_is_not_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bb.toml");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/busybox.toml"),
        &p,
    )
    .unwrap();
    let out = dir.path().join("out");
    assert!(run(kiln().arg("build").arg(&p).arg("-o").arg(&out))
        .status
        .success());
    spdx_valid(&out.join("bb.spdx.json"));

    for (name, text) in [
        ("profile.toml", "version = 1\n"),
        ("other.json", "{\"name\": \"x\", \"entries\": 3}"),
        (
            "odd.json",
            "{\"image\": \"x\", \"format\": \"iso\", \"entries\": []}",
        ),
    ] {
        let f = write(dir.path(), name, text);
        let r = run(kiln().arg("sbom").arg(&f));
        assert_eq!(r.status.code(), Some(2), "{name}");
        assert!(
            stderr(&r).contains("is not a kiln manifest"),
            "{}",
            stderr(&r)
        );
        assert!(r.stdout.is_empty());
    }
}
