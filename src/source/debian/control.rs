//! deb822 paragraphs: the `Field: value` format of Packages indexes, Release files,
//! control files and dpkg's status database.

/// One paragraph, fields in file order. Field names compare case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paragraph {
    /// (name, value) pairs; a multi-line value keeps its lines, joined with '\n'.
    pub fields: Vec<(String, String)>,
}

impl Paragraph {
    /// The value of the first field called `name`, compared case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Writes the paragraph back in deb822 form (no trailing blank line).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.fields {
            s.push_str(k);
            s.push(':');
            if !v.starts_with('\n') && !v.is_empty() {
                s.push(' ');
            }
            // Continuation lines keep their leading space; empty ones are written as " .".
            let mut lines = v.split('\n');
            if let Some(first) = lines.next() {
                s.push_str(first);
            }
            for l in lines {
                s.push('\n');
                if l.is_empty() {
                    s.push_str(" .");
                } else {
                    s.push(' ');
                    s.push_str(l);
                }
            }
            s.push('\n');
        }
        s
    }
}

/// Parses every paragraph in `text`. Continuation lines are joined with '\n' and
/// stripped of their first space, so multi-line values (Description, SHA256) keep their lines.
pub fn parse(text: &str) -> Vec<Paragraph> {
    let mut out = Vec::new();
    let mut cur = Paragraph::default();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.fields.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some((_, v)) = cur.fields.last_mut() {
                v.push('\n');
                let l = &line[1..];
                v.push_str(if l == "." { "" } else { l });
            }
            continue;
        }
        match line.split_once(':') {
            Some((k, v)) => cur
                .fields
                .push((k.trim().to_string(), v.trim().to_string())),
            None => continue,
        }
    }
    if !cur.fields.is_empty() {
        out.push(cur);
    }
    out
}

/// Calls `f` for every paragraph without building them all first; for large indexes.
/// The callback gets (field name, value) pairs of single-line fields and the first line of multi-line ones.
pub fn for_each_paragraph<'a>(text: &'a str, mut f: impl FnMut(&[(&'a str, &'a str)], &'a str)) {
    let mut fields: Vec<(&str, &str)> = Vec::with_capacity(32);
    let mut start = 0usize;
    let mut pos = 0usize;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        if body.trim().is_empty() {
            if !fields.is_empty() {
                f(&fields, &text[start..pos]);
                fields.clear();
            }
            pos += line.len();
            start = pos;
            continue;
        }
        if !body.starts_with(' ') && !body.starts_with('\t') {
            if let Some((k, v)) = body.split_once(':') {
                fields.push((k.trim(), v.trim()));
            }
        }
        pos += line.len();
    }
    if !fields.is_empty() {
        f(&fields, &text[start..pos]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multiline_and_multiple_paragraphs() {
        let t = "Package: a\nDescription: short\n more\n .\n last\n\nPackage: b\nVersion: 1\n";
        let p = parse(t);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].get("description"), Some("short\nmore\n\nlast"));
        assert_eq!(p[1].get("Version"), Some("1"));
        assert_eq!(
            p[0].to_text(),
            "Package: a\nDescription: short\n more\n .\n last\n"
        );
    }

    #[test]
    fn streams_paragraphs() {
        let mut names = Vec::new();
        for_each_paragraph("Package: a\nX: 1\n\n\nPackage: b\n", |f, raw| {
            names.push((f[0].1.to_string(), raw.len()));
        });
        assert_eq!(names, vec![("a".to_string(), 16), ("b".to_string(), 11)]);
    }
}
