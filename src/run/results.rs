//! The results disk: an empty ext4 file system kiln creates before a test run, the
//! guest mounts at the profile's results directory and fills, and kiln reads back
//! afterwards with its own reader. Large outputs (a Memorizer kmap can be gigabytes)
//! cost only the space they use: the image is sparse.

use std::path::Path;

use anyhow::{Context, Result};

use super::dir::RunDir;
use super::outcome::Outcome;
use super::tap::{Case, Tap};
use super::{Event, Sink};
use crate::output::disk::derive_uuid;
use crate::output::ext4::writer::write_empty;
use crate::output::ext4::{reader, Ext4Options, SizeSpec};
use crate::plan::RunConfig;

/// The virtio serial of the results disk; the guest finds it by this.
pub const SERIAL: &str = "kiln-results";

/// Creates a fresh, empty, sparse results file system at `img`, its UUID derived from
/// the image `name`.
pub fn prepare(img: &Path, name: &str, size: u64, time: i64) -> Result<()> {
    let _ = std::fs::remove_file(img);
    let opts = Ext4Options {
        size: SizeSpec::Fixed(size),
        uuid: *derive_uuid(name, "fs-results").as_bytes(),
        hash_seed: *derive_uuid(name, "hash-seed-results").as_bytes(),
        label: SERIAL.into(),
        time,
        force_64bit: false,
    };
    let f = std::fs::File::create(img).with_context(|| format!("creating {}", img.display()))?;
    write_empty(&f, 0, &opts).with_context(|| format!("writing {}", img.display()))?;
    Ok(())
}

/// Copies everything the guest left on the results disk into `dest` (emptied first).
pub fn collect(img: &Path, dest: &Path) -> Result<reader::Extracted> {
    if dest.exists() {
        std::fs::remove_dir_all(dest).with_context(|| format!("clearing {}", dest.display()))?;
    }
    std::fs::create_dir_all(dest)?;
    let img = reader::open(img)?;
    let mut total = reader::Extracted::default();
    let top = reader::list_dir(&img, b"/")?;
    total.problems.extend(top.1);
    for name in top.0 {
        if name == b"lost+found" {
            continue;
        }
        // What the guest wrote is not trusted: no owners, no set-id bits, bounded.
        let r = match reader::extract(
            &img,
            &[b"/", &name[..]].concat(),
            dest,
            reader::Trust::Guest,
        ) {
            Ok(r) => r,
            Err(e) if e.is::<reader::Stop>() => return Err(e),
            Err(e) => {
                let shown = String::from_utf8_lossy(&name).into_owned();
                total.problems.push(format!("/{shown}: {e:#}"));
                continue;
            }
        };
        total.files += r.files;
        total.dirs += r.dirs;
        total.symlinks += r.symlinks;
        total.bytes += r.bytes;
        total.skipped.extend(r.skipped);
        total.problems.extend(r.problems);
    }
    Ok(total)
}

/// Where the guest lists the sha256 of every result it leaves (`sha256sum` lines).
pub const SUMS: &str = ".kiln-sha256sums";

/// Checks the collected results in `dest` against the guest's own sha256 of each
/// ([`SUMS`]): the bytes arrived as the guest wrote them. Returns how many files were
/// checked, `None` when the guest listed none (an image without `sha256sum`).
pub fn verify(dest: &Path) -> Result<Option<usize>> {
    let Ok(text) = std::fs::read_to_string(dest.join(SUMS)) else {
        return Ok(None);
    };
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Some((want, name)) = line.split_once("  ") else {
            anyhow::bail!("{SUMS}: `{line}` is not a sha256sum line");
        };
        let name = name.trim_start_matches("./");
        let path = crate::tree::path::relative(name)
            .ok()
            .filter(|p| !p.is_empty())
            .map(|p| dest.join(p))
            .with_context(|| format!("{SUMS}: `{name}` is not a path inside the results"))?;
        let (got, _) = crate::util::cache::sha256_file(&path)
            .with_context(|| format!("result {name}, which the guest listed, did not arrive"))?;
        if got != want {
            anyhow::bail!(
                "result {name} arrived damaged: the guest's sha256 is {want}, the host read {got}"
            );
        }
        n += 1;
    }
    Ok(Some(n))
}

/// What the results change about a finished run: they are collected and checked against
/// the guest's sha256, the test's TAP is read, its required files are looked for. A
/// passed run that fails any of these takes that failure's outcome.
pub fn settle(
    config: &RunConfig,
    files: &RunDir,
    mut outcome: Outcome,
    sink: &mut dyn Sink,
) -> (Outcome, Vec<Case>) {
    if config.results.is_some() && files.results_img.exists() {
        match collect(&files.results_img, &files.results) {
            Ok(r) => {
                // The guest's list of sha256 sums is kiln's, not one of the test's results.
                let own = u64::from(files.results.join(SUMS).is_file());
                sink.event(Event::Results {
                    files: (r.files as u64).saturating_sub(own),
                    dir: &files.results,
                });
                if !r.problems.is_empty() {
                    sink.event(Event::ResultsFailed(&format!(
                        "{} entries of the results disk were not copied: {}",
                        r.problems.len(),
                        r.problems.join("; ")
                    )));
                }
                if let Err(e) = verify(&files.results) {
                    let e = format!("{e:#}");
                    sink.event(Event::ResultsFailed(&e));
                    if outcome == Outcome::Passed {
                        outcome = Outcome::Infrastructure(e);
                    }
                }
            }
            Err(e) => sink.event(Event::ResultsFailed(&format!("{e:#}"))),
        }
    }
    let mut cases = Vec::new();
    if let Some(name) = &config.tap {
        match std::fs::read(files.results.join(name)) {
            Ok(bytes) => {
                let t = Tap::parse(&String::from_utf8_lossy(&bytes));
                let problems = t.problems();
                if outcome == Outcome::Passed && !problems.is_empty() {
                    outcome = Outcome::CasesFailed(problems.join("; "));
                }
                cases = t.cases;
            }
            Err(_) if outcome == Outcome::Passed => {
                outcome = Outcome::MissingResults(format!("{name} (its TAP)"));
            }
            Err(_) => {}
        }
    }
    if outcome == Outcome::Passed {
        let missing: Vec<&str> = config
            .require
            .iter()
            .filter(|r| std::fs::symlink_metadata(files.results.join(r)).is_err())
            .map(|r| r.as_str())
            .collect();
        if !missing.is_empty() {
            outcome = Outcome::MissingResults(missing.join(", "));
        }
    }
    (outcome, cases)
}
