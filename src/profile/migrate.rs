//! Profile format versions. A profile says which format it is written in (`version`);
//! every format kiln ever read stays readable, through a chain of migrations that
//! rewrite a document of version N into N+1, keeping its comments and layout. The loader
//! reads an old profile through the chain; `kiln fmt --upgrade` writes the result back.
//!
//! Format 1 is the first, so the chain is empty today; a change to the format adds its
//! step to [`MIGRATIONS`] along with the new [`FORMAT_VERSION`](super::load::FORMAT_VERSION).

use toml_edit::DocumentMut;

/// One step: rewrites a document of version `from` into `from + 1`.
pub struct Migration {
    /// The version this step reads.
    pub from: i64,
    /// Rewrites the document in place and says what it changed, one line per change.
    pub apply: fn(&mut DocumentMut) -> Vec<String>,
}

/// The chain kiln applies, oldest first.
pub const MIGRATIONS: &[Migration] = &[];

/// A document brought to the current format.
#[derive(Debug, PartialEq, Eq)]
pub struct Upgraded {
    /// The version it was written in.
    pub from: i64,
    /// The rewritten text.
    pub text: String,
    /// What each step changed.
    pub changes: Vec<String>,
}

/// Brings `text` to format `current` through `chain`: `Ok(None)` when it is current
/// already (or says no version, as included files may not), an error when it is newer
/// than `current` or no step reads its version.
pub fn upgrade(text: &str, chain: &[Migration], current: i64) -> Result<Option<Upgraded>, String> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| format!("invalid TOML: {}", e.message().trim()))?;
    let Some(from) = doc.get("version").and_then(|v| v.as_integer()) else {
        return Ok(None);
    };
    if from == current {
        return Ok(None);
    }
    if from > current {
        return Err(format!(
            "profile format version {from} is newer than this kiln reads ({current}); \
             upgrade kiln to read it"
        ));
    }
    let mut changes = Vec::new();
    for v in from..current {
        let step = chain.iter().find(|m| m.from == v).ok_or_else(|| {
            format!("profile format version {v} is not one kiln has read (the first is 1)")
        })?;
        changes.extend((step.apply)(&mut doc));
    }
    // Only the value changes, so a comment after it stays where it was.
    if let Some(version) = doc.get_mut("version").and_then(|i| i.as_value_mut()) {
        let decor = version.decor().clone();
        *version = toml_edit::Value::from(current);
        *version.decor_mut() = decor;
    }
    changes.push(format!("version = {from} → version = {current}"));
    Ok(Some(Upgraded {
        from,
        text: doc.to_string(),
        changes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic format 2 that renamed `[qemu] mem` to `memory` and dropped `[old]`.
    fn rename_mem(doc: &mut DocumentMut) -> Vec<String> {
        let mut changes = Vec::new();
        if let Some(qemu) = doc.get_mut("qemu").and_then(|q| q.as_table_mut()) {
            if let Some((key, item)) = qemu.remove_entry("mem") {
                // The key's comment goes with it (to the end of the table).
                let mut renamed = toml_edit::Key::new("memory");
                *renamed.leaf_decor_mut() = key.leaf_decor().clone();
                let key = renamed;
                qemu.insert_formatted(&key, item);
                changes.push("qemu.mem → qemu.memory".to_string());
            }
        }
        if doc.remove("old").is_some() {
            changes.push("removed [old]".to_string());
        }
        changes
    }

    const CHAIN: &[Migration] = &[Migration {
        from: 1,
        apply: rename_mem,
    }];

    #[test]
    fn an_old_profile_is_rewritten_step_by_step_keeping_its_comments() {
        let v1 = "# my VM\nversion = 1 # the format\n\n[qemu]\n# enough for systemd\nmem = \"1G\"\ncpus = 2\n\n[old]\nx = 1\n";
        let up = upgrade(v1, CHAIN, 2).unwrap().unwrap();
        assert_eq!(up.from, 1);
        assert_eq!(
            up.text,
            "# my VM\nversion = 2 # the format\n\n[qemu]\ncpus = 2\n# enough for systemd\nmemory = \"1G\"\n"
        );
        assert_eq!(
            up.changes,
            [
                "qemu.mem → qemu.memory",
                "removed [old]",
                "version = 1 → version = 2"
            ]
        );
        // Upgrading the result changes nothing.
        assert_eq!(upgrade(&up.text, CHAIN, 2), Ok(None));
    }

    #[test]
    fn current_newer_and_unknown_versions() {
        assert_eq!(upgrade("version = 1\n", MIGRATIONS, 1), Ok(None));
        assert_eq!(upgrade("name = \"part\"\n", MIGRATIONS, 1), Ok(None));
        let newer = upgrade("version = 3\n", CHAIN, 2).unwrap_err();
        assert!(newer.contains("newer than this kiln"), "{newer}");
        let unknown = upgrade("version = 0\n", CHAIN, 2).unwrap_err();
        assert!(unknown.contains("version 0"), "{unknown}");
    }
}
