//! `kill -9` at any moment of a disk build leaves the outputs as one build's set: the
//! previous one, or (once the commit record is down) the new one, finished by the next
//! kiln command. The next build succeeds, equals a clean build, and leaves no temporary
//! files behind.

mod common;
use common::*;

use std::path::Path;
use std::time::Duration;

fn profile(dir: &Path, content: &str) -> std::path::PathBuf {
    write(
        dir,
        "crash.toml",
        &format!(
            "version = 1\n[output]\nformat = \"disk\"\n[[file]]\npath = \"/big\"\nsource = \"big.bin\"\n[[file]]\npath = \"/which\"\ncontent = \"{content}\"\n"
        ),
    )
}

fn build(p: &Path, out: &Path) -> std::process::Output {
    run(kiln()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("-q")
        .arg("build")
        .arg(p)
        .arg("-o")
        .arg(out))
}

/// The sha256 of the image and of the manifest in `out`.
fn set(out: &Path) -> (String, String) {
    (
        sha256_file(&out.join("crash.raw")),
        sha256_file(&out.join("crash.manifest.json")),
    )
}

fn leftovers(out: &Path) -> Vec<String> {
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        // The build record says what the outputs were built from; it is not a leftover.
        .filter(|n| n.starts_with('.') && !n.ends_with(".kiln-build"))
        .collect()
}

#[test]
fn a_killed_disk_build_leaves_one_builds_outputs() {
    let d = tempfile::tempdir().unwrap();
    // 96 MiB that does not compress or sparsify: the build takes a while to write it.
    let mut state = 0x2545_f491_u32;
    let big: Vec<u8> = (0..96 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    std::fs::write(d.path().join("big.bin"), big).unwrap();
    let p = profile(d.path(), "new");
    let clean = d.path().join("clean");
    assert!(build(&p, &clean).status.success());
    let new = set(&clean);
    let start = std::time::Instant::now();
    let o = build(&p, &d.path().join("timing"));
    assert!(o.status.success());
    let took = start.elapsed();
    let out = d.path().join("out");
    let mut killed_before_commit = 0;
    for step in 1..=6 {
        // The previous build's outputs.
        let p = profile(d.path(), "old");
        assert!(build(&p, &out).status.success());
        let old = set(&out);
        assert_ne!(old, new);
        let p = profile(d.path(), "new");
        let mut child = kiln()
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .arg("-q")
            .arg("build")
            .arg(&p)
            .arg("-o")
            .arg(&out)
            .spawn()
            .unwrap();
        std::thread::sleep(took.mul_f64(step as f64 / 6.0) + Duration::from_millis(5));
        let _ = child.kill();
        let _ = child.wait();
        // What another kiln command sees: it finishes a commit that was under way.
        kiln::output::staging::recover(&out, "crash").unwrap();
        let now = set(&out);
        assert!(now == old || now == new, "step {step}: a mixed set");
        killed_before_commit += usize::from(now == old);
        // The next build cleans up and equals a clean one.
        assert!(build(&p, &out).status.success());
        assert_eq!(set(&out), new, "step {step}");
        assert!(
            leftovers(&out).is_empty(),
            "step {step}: {:?}",
            leftovers(&out)
        );
    }
    assert!(
        killed_before_commit > 0,
        "no kill landed while the image was being written"
    );
}
