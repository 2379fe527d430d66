//! `remove = [...]`: glob patterns of image paths to drop after packages are unpacked
//! (documentation, locales, caches). `*` stays within one path component, `**` spans any.

use anyhow::Result;
use glob::{MatchOptions, Pattern};

use crate::profile::Located;
use crate::tree::Tree;

/// Removes every entry whose path (with a leading `/`) matches one of `patterns`, with
/// everything below it. Returns how many entries went.
pub fn remove(tree: &mut Tree, patterns: &[Located<String>]) -> Result<usize> {
    let opts = MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut removed = 0;
    for p in patterns {
        let pat = Pattern::new(&p.value).map_err(|e| p.error(format!("bad pattern: {e}")))?;
        let doomed: Vec<String> = tree
            .iter()
            .filter(|(k, _)| !k.is_empty() && pat.matches_with(&format!("/{k}"), opts))
            .map(|(k, _)| k.clone())
            .collect();
        for d in doomed {
            removed += tree.remove_tree(&d);
        }
    }
    Ok(removed)
}
