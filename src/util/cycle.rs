//! Include chains (profiles' `include`, mkosi's `Include=`): the cycle a new file would
//! close, spelled for an error message.

use std::path::{Path, PathBuf};

/// When `next` is already on `stack` (the files being read, outermost first), the cycle
/// from its first appearance back to itself: `a → b → a`.
pub fn include_cycle(stack: &[PathBuf], next: &Path) -> Option<String> {
    let pos = stack.iter().position(|p| p == next)?;
    let chain: Vec<String> = stack[pos..]
        .iter()
        .map(|p| p.as_path())
        .chain(std::iter::once(next))
        .map(|p| p.display().to_string())
        .collect();
    Some(chain.join(" → "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cycle_starts_where_the_file_first_appears() {
        let stack: Vec<PathBuf> = ["/p/top", "/p/a", "/p/b"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(
            include_cycle(&stack, Path::new("/p/a")).as_deref(),
            Some("/p/a → /p/b → /p/a")
        );
        assert_eq!(include_cycle(&stack, Path::new("/p/c")), None);
    }
}
