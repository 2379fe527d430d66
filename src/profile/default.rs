//! Which profile a command reads when none is named: `./kiln.toml`, else the busybox test
//! built into kiln, so that `kiln test` works in an empty directory after `cargo install`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The profile read when a command names none and `./kiln.toml` does not exist: the
/// shipped `profiles/busybox.toml`.
pub const BUILT_IN: &str = include_str!("../../profiles/busybox.toml");

/// `text` with its first line, when that is a `#:schema` line (shipped profiles name the
/// repository's schema, relative to them), replaced by `#:schema REFERENCE`, or dropped
/// when `reference` is None.
pub fn with_schema_line(text: &str, reference: Option<&str>) -> String {
    let rest = match text.strip_prefix("#:schema ") {
        Some(r) => r.split_once('\n').map_or("", |(_, rest)| rest),
        None => text,
    };
    match reference {
        Some(r) => format!("#:schema {r}\n{rest}"),
        None => rest.to_string(),
    }
}

/// The file name looked for in the current directory.
pub const LOCAL: &str = "kiln.toml";

/// The profile to read: `named`, else `./kiln.toml`, else the built-in one, written to
/// `OUT/.kiln-default/busybox.toml` (rewritten only when it differs, so that builds of it
/// stay up to date) so that it loads, locks and reports like any other.
pub fn locate(named: Option<&Path>, out_dir: &Path) -> Result<PathBuf> {
    if let Some(p) = named {
        return Ok(p.to_path_buf());
    }
    let local = PathBuf::from(LOCAL);
    if local.exists() {
        crate::util::progress::step(format!("no profile named: reading ./{LOCAL}"));
        return Ok(local);
    }
    crate::util::progress::step(format!(
        "no profile named and no ./{LOCAL}: using the built-in busybox test \
         (`kiln init {LOCAL}` writes it here to edit)"
    ));
    let dir = out_dir.join(".kiln-default");
    let path = dir.join("busybox.toml");
    let text = with_schema_line(BUILT_IN, None);
    if std::fs::read(&path).ok().as_deref() != Some(text.as_bytes()) {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        crate::util::atomic::write(&path, text.as_bytes())?;
    }
    Ok(path)
}
