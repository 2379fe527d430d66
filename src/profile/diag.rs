//! Diagnostics for profile errors: where (file:line:col), which key, what is wrong and what to do.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A profile file's text, kept so errors can quote the offending line.
#[derive(Debug)]
pub struct SourceFile {
    /// Path the file was read from (an include's joined to the including file's directory).
    pub path: PathBuf,
    /// The file's contents.
    pub text: String,
}

impl SourceFile {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = self.text[line_start..offset].chars().count() + 1;
        (line, col)
    }

    fn line_text(&self, line: usize) -> &str {
        self.text.lines().nth(line.saturating_sub(1)).unwrap_or("")
    }
}

/// A place in a profile file.
#[derive(Debug, Clone)]
pub struct Loc {
    /// The file the span is in.
    pub file: Arc<SourceFile>,
    /// Byte range in the file's text.
    pub span: Range<usize>,
}

impl Loc {
    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Directory of the file, against which relative paths in it are resolved.
    pub fn dir(&self) -> &Path {
        self.file.path.parent().unwrap_or(Path::new("."))
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, col) = self.file.line_col(self.span.start);
        write!(f, "{}:{}:{}", self.file.path.display(), line, col)
    }
}

/// An error in a profile, with enough context to fix it without reading kiln's source.
#[derive(Debug, Clone)]
pub struct ProfileError {
    /// Where the error is; `None` when it is not tied to a place in a file.
    pub loc: Option<Loc>,
    /// Dotted key path, e.g. `distribution.packages[2]`.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it, shown on a `help:` line.
    pub help: Option<String>,
}

impl ProfileError {
    /// An error with only a message; the builder methods add place, key and help.
    pub fn new(message: impl Into<String>) -> Self {
        ProfileError {
            loc: None,
            key: String::new(),
            message: message.into(),
            help: None,
        }
    }

    /// Sets the location, unless one is set already.
    pub fn at(mut self, loc: &Loc) -> Self {
        if self.loc.is_none() {
            self.loc = Some(loc.clone());
        }
        self
    }

    /// Sets the key path, unless one is set already.
    pub fn key(mut self, key: &str) -> Self {
        if self.key.is_empty() {
            self.key = key.to_string();
        }
        self
    }

    /// Sets the help line.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.loc {
            write!(f, "{loc}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "key `{}`: ", self.key)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(loc) = &self.loc {
            let (line, col) = loc.file.line_col(loc.span.start);
            let text = loc.file.line_text(line);
            let width = loc.file.text[loc.span.clone()]
                .lines()
                .next()
                .map(|l| l.chars().count())
                .unwrap_or(1)
                .max(1);
            let gutter = line.to_string().len();
            write!(
                f,
                "\n {:gutter$} |\n {line} | {text}\n {:gutter$} | {}{}",
                "",
                "",
                " ".repeat(col - 1),
                "^".repeat(width.min(text.chars().count().saturating_sub(col - 1).max(1)))
            )?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProfileError {}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        let keys = ["packages", "suite", "mirror"];
        assert_eq!(suggest("pakages", keys), Some("packages"));
        assert_eq!(suggest("suit", keys), Some("suite"));
        assert_eq!(suggest("zzzzzz", keys), None);
    }

    #[test]
    fn line_col_counts_characters() {
        let f = SourceFile {
            path: "x.toml".into(),
            text: "a = 1\nbé = 2\n".into(),
        };
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(6), (2, 1));
        assert_eq!(f.line_col(9), (2, 3));
    }
}
