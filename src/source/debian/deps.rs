//! Dependency fields: `a (>= 1.0) | b:any, c`. Architecture restrictions and build
//! profiles (which appear only in source packages) are accepted and dropped.

use std::fmt;

use super::version::Relation;

/// One package named in a dependency field, with its version constraint if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    /// Package or virtual package name, without any Multi-Arch qualifier (`:any`).
    pub name: String,
    /// The relation and version of `(>= 1.0)`; `None` when unversioned.
    pub constraint: Option<(Relation, String)>,
}

impl fmt::Display for Dep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.constraint {
            Some((r, v)) => write!(f, "{} ({} {})", self.name, r.as_str(), v),
            None => write!(f, "{}", self.name),
        }
    }
}

/// One comma-separated clause: any of the alternatives satisfies it.
pub type Alternatives = Vec<Dep>;

/// A clause as control files write it: `a (>= 1) | b`.
pub fn display_alts(a: &[Dep]) -> String {
    a.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Removes `[arch]` and `<profile>` restrictions, which sit outside the version parentheses.
fn strip_restrictions(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_paren = false;
    let mut skip_until: Option<char> = None;
    for c in s.chars() {
        if let Some(end) = skip_until {
            if c == end {
                skip_until = None;
            }
            continue;
        }
        match c {
            '(' => in_paren = true,
            ')' => in_paren = false,
            '[' if !in_paren => {
                skip_until = Some(']');
                continue;
            }
            '<' if !in_paren => {
                skip_until = Some('>');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

fn parse_one(s: &str) -> Option<Dep> {
    let stripped = strip_restrictions(s);
    let s = stripped.trim();
    let (name, constraint) = match s.split_once('(') {
        Some((n, rest)) => {
            let rest = rest.split(')').next().unwrap_or("").trim();
            let op_len = rest
                .find(|c: char| !"<=>".contains(c))
                .unwrap_or(rest.len());
            let (op, ver) = rest.split_at(op_len);
            let rel = Relation::parse(op.trim())?;
            (n.trim(), Some((rel, ver.trim().to_string())))
        }
        None => (s, None),
    };
    // Multi-Arch qualifiers: with one architecture, :any/:native/:<arch> all mean the package itself.
    let name = name.split(':').next().unwrap_or(name).trim();
    if name.is_empty() {
        return None;
    }
    Some(Dep {
        name: name.to_string(),
        constraint,
    })
}

/// Parses a Depends-style field into clauses of alternatives.
pub fn parse(field: &str) -> Vec<Alternatives> {
    field
        .split(',')
        .filter(|c| !c.trim().is_empty())
        .map(|clause| clause.split('|').filter_map(parse_one).collect::<Vec<_>>())
        .filter(|a| !a.is_empty())
        .collect()
}

/// Parses a field without alternatives (Provides, Conflicts, Breaks, Replaces).
pub fn parse_flat(field: &str) -> Vec<Dep> {
    field.split(',').filter_map(parse_one).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_alternatives_versions_and_qualifiers() {
        let d = parse(
            "libc6 (>= 2.36), debconf (>= 0.5) | debconf-2.0, python3:any, perl:native (<< 5.40~)",
        );
        assert_eq!(d.len(), 4);
        assert_eq!(d[0][0].name, "libc6");
        assert_eq!(d[0][0].constraint, Some((Relation::Ge, "2.36".into())));
        assert_eq!(d[1].len(), 2);
        assert_eq!(d[1][1].name, "debconf-2.0");
        assert_eq!(d[2][0].name, "python3");
        assert_eq!(d[3][0].name, "perl");
        assert_eq!(d[3][0].constraint, Some((Relation::Lt, "5.40~".into())));
    }

    #[test]
    fn drops_restrictions() {
        let d = parse("foo [amd64] <!nocheck>, bar (>= 1) [!i386]");
        assert_eq!(
            d[0][0],
            Dep {
                name: "foo".into(),
                constraint: None
            }
        );
        assert_eq!(d[1][0].constraint, Some((Relation::Ge, "1".into())));
        assert_eq!(display_alts(&parse("a (= 1) | b")[0]), "a (= 1) | b");
    }
}
