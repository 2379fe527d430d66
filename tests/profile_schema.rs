//! The profile's JSON Schema against kiln's own loader: Python's `jsonschema` (a
//! third-party validator) and `kiln check` must agree on every shipped profile and on a
//! set of good and bad ones.

mod common;

use std::path::Path;
use std::process::Command;

use common::{kiln, run, stdout};

/// What the third-party validator says of each profile: true when valid.
fn validator_verdicts(schema: &Path, profiles: &[std::path::PathBuf]) -> Vec<(bool, String)> {
    let script = r#"
import json, sys, tomllib
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
v = Draft202012Validator(schema)
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    errors = sorted(v.iter_errors(doc), key=lambda e: list(e.path))
    print(json.dumps([not errors, "; ".join(e.message for e in errors)]))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(schema)
        .args(profiles)
        .output()
        .expect("python3 with jsonschema (pip install jsonschema)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn kiln_accepts(profile: &Path) -> (bool, String) {
    let out = run(kiln().arg("check").arg(profile));
    let code = out.status.code();
    assert!(matches!(code, Some(0) | Some(2)), "{profile:?}: {code:?}");
    (code == Some(0), common::stderr(&out))
}

fn shipped_schema() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/profile-v1.json")
}

#[test]
fn the_shipped_schema_is_what_kiln_generates() {
    let printed = stdout(&run(kiln().arg("schema")));
    let shipped = std::fs::read_to_string(shipped_schema()).unwrap();
    assert!(
        printed == shipped,
        "schema/profile-v1.json is stale: run `cargo run -- schema > schema/profile-v1.json`"
    );
    // Descriptions come from the doc comments of the loader's types.
    let v: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(v["required"], serde_json::json!(["version"]));
    assert!(v["$defs"]["Output"]["properties"]["format"]["description"]
        .as_str()
        .unwrap()
        .contains("Image format"));
}

#[test]
fn every_shipped_profile_names_the_schema_and_passes_it() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
    let mut profiles: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    profiles.sort();
    assert!(profiles.len() >= 8);
    for p in &profiles {
        let first = std::fs::read_to_string(p).unwrap();
        assert_eq!(
            first.lines().next(),
            Some("#:schema ../schema/profile-v1.json"),
            "{p:?}"
        );
    }
    for (p, (valid, why)) in profiles
        .iter()
        .zip(validator_verdicts(&shipped_schema(), &profiles))
    {
        assert!(valid, "{p:?}: {why}");
        assert!(kiln_accepts(p).0, "{p:?}");
    }
}

const GOOD: &[&str] = &[
    "version = 1",
    "version = 1\nname = \"x\"\n[qemu]\nmemory = 536870912\ncpus = 2",
    "version = 1\n[qemu]\nmemory = \"1GiB\"",
    "version = 1\n[[file]]\npath = \"/etc/x\"\ncontent = \"x\"\nmode = 0o640",
    "version = 1\n[[file]]\npath = \"//etc/./x\"\ncontent = \"x\"\nmode = \"0755\"",
    "version = 1\n[[test]]\nname = \"a\"\ncommand = \"true\"\ntimeout = \"90s\"\n[[test]]\nname = \"b\"\ncommand = \"true\"\ntimeout = 30",
    "version = 1\n[test]\ncommand = \"true\"\ntimeout = \"1.5m\"",
    "version = 1\n[output]\nformat = \"disk\"\nfree_space = \"25%\"\nroot_size = \"auto\"\n[[output.partition]]\ntype = \"0fc63daf-8483-4772-8e79-3d69d8477de4\"\nlabel = \"data\"\nsize = \"64M\"",
    "version = 1\n[matrix]\nkernels = [\"linux-image-cloud-amd64\", { package = \"linux-image-cloud-amd64\", suite = \"bookworm\" }]",
    "version = 1\n[network]\nforward = [\"8888:22\"]",
    "version = 1\n[variables]\nanything = { nested = [1, \"two\"] }",
];

const BAD: &[&str] = &[
    "name = \"no version\"",
    "version = 2",
    "version = 1\nbogus = 1",
    "version = 1\n[output]\nformat = \"iso\"",
    "version = 1\n[qemu]\nmemory = \"12Q\"",
    "version = 1\n[qemu]\nmemory = -1",
    "version = 1\n[qemu]\nbogus = true",
    "version = 1\n[test]\ncommand = \"true\"\ntimeout = \"soon\"",
    "version = 1\n[test]\ncommand = \"true\"\nbogus = 1",
    "version = 1\n[[file]]\npath = \"etc/x\"\ncontent = \"x\"",
    "version = 1\n[[file]]\npath = \"/etc/../x\"\ncontent = \"x\"",
    "version = 1\n[[file]]\npath = \"/etc/x\"\ncontent = \"x\"\nmode = \"0999\"",
    "version = 1\n[[file]]\npath = \"/etc/x\"\ncontent = \"x\"\nmode = 0o17777",
    "version = 1\n[output]\nformat = \"disk\"\n[[output.partition]]\ntype = \"usr-ish\"\nsize = \"64M\"",
    "version = 1\n[output]\nfree_space = \"lots\"",
    "version = 1\n[matrix]\nkernels = [{ package = \"x\", bogus = 1 }]",
    "version = 1\n[matrix]\nkernels = [{ suite = \"bookworm\" }]",
    "version = 1\n[[overlay]]\nsource = 5",
    "version = 1\n[distribution]\nsuite = \"trixie\"\npackages = \"busybox\"",
    "version = 1\n[network]\nforward = [22]",
    "version = 1\ninclude = \"other.toml\"",
];

#[test]
fn the_validator_and_the_loader_agree_on_good_and_bad_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let write_all = |set: &[&str], prefix: &str| -> Vec<std::path::PathBuf> {
        set.iter()
            .enumerate()
            .map(|(i, t)| common::write(dir.path(), &format!("{prefix}{i}.toml"), t))
            .collect()
    };
    let good = write_all(GOOD, "good");
    let bad = write_all(BAD, "bad");
    for (p, (valid, why)) in good
        .iter()
        .zip(validator_verdicts(&shipped_schema(), &good))
    {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(valid, "validator rejects good {text:?}: {why}");
        let (ok, err) = kiln_accepts(p);
        assert!(ok, "kiln rejects good {text:?}: {err}");
    }
    for (p, (valid, _)) in bad.iter().zip(validator_verdicts(&shipped_schema(), &bad)) {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(!valid, "validator accepts bad {text:?}");
        let (ok, err) = kiln_accepts(p);
        assert!(!ok, "kiln accepts bad {text:?}");
        // kiln's own message names the file and line.
        assert!(err.contains(&p.display().to_string()), "{err}");
    }
}
