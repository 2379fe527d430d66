//! The default mirror: the first Debian source in the host's apt configuration, so
//! kiln downloads from wherever apt on this machine does.

use std::path::Path;

use super::control;

/// A `deb` source from apt's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    /// The archive's base URI, as written.
    pub uri: String,
    /// The suites listed for it (at most one for a one-line entry).
    pub suites: Vec<String>,
    /// The Signed-By (one-line: `signed-by=`) option, if given.
    pub signed_by: Option<String>,
}

/// Reads `sources.list`, `sources.list.d/*.list` and `sources.list.d/*.sources` under `etc_apt`.
pub fn apt_sources(etc_apt: &Path) -> Vec<AptSource> {
    let mut out = Vec::new();
    let mut files = vec![etc_apt.join("sources.list")];
    let mut d: Vec<_> = std::fs::read_dir(etc_apt.join("sources.list.d"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    d.sort();
    files.extend(d);
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => {
                for p in control::parse(&text) {
                    if p.get("Enabled")
                        .is_some_and(|e| e.eq_ignore_ascii_case("no"))
                    {
                        continue;
                    }
                    if !p
                        .get("Types")
                        .unwrap_or("")
                        .split_whitespace()
                        .any(|t| t == "deb")
                    {
                        continue;
                    }
                    let suites: Vec<String> = p
                        .get("Suites")
                        .unwrap_or("")
                        .split_whitespace()
                        .map(String::from)
                        .collect();
                    for uri in p.get("URIs").unwrap_or("").split_whitespace() {
                        out.push(AptSource {
                            uri: uri.to_string(),
                            suites: suites.clone(),
                            signed_by: p.get("Signed-By").map(String::from),
                        });
                    }
                }
            }
            Some("list") => {
                for line in text.lines() {
                    let line = line.split('#').next().unwrap_or("").trim();
                    let mut words = line.split_whitespace().peekable();
                    if words.next() != Some("deb") {
                        continue;
                    }
                    let mut signed_by = None;
                    if words.peek().is_some_and(|w| w.starts_with('[')) {
                        let mut opts = String::new();
                        for w in words.by_ref() {
                            opts.push_str(w);
                            opts.push(' ');
                            if w.ends_with(']') {
                                break;
                            }
                        }
                        for o in opts
                            .trim_matches(|c| c == '[' || c == ']' || c == ' ')
                            .split_whitespace()
                        {
                            if let Some(v) = o.strip_prefix("signed-by=") {
                                signed_by = Some(v.to_string());
                            }
                        }
                    }
                    let Some(uri) = words.next() else { continue };
                    let suites: Vec<String> = words
                        .next()
                        .map(|s| vec![s.to_string()])
                        .unwrap_or_default();
                    out.push(AptSource {
                        uri: uri.to_string(),
                        suites,
                        signed_by,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// The main Debian archive among the sources: a URI ending in /debian, not the security archive.
pub fn default_mirror(etc_apt: &Path) -> Option<String> {
    apt_sources(etc_apt)
        .into_iter()
        .find(|s| {
            let u = s.uri.trim_end_matches('/');
            u.ends_with("/debian") && !s.suites.iter().all(|x| x.ends_with("-security"))
        })
        .map(|s| s.uri.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_deb822_and_one_line_sources() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sources.list.d")).unwrap();
        std::fs::write(
            d.path().join("sources.list.d/a.sources"),
            "Types: deb-src\nURIs: http://src.example/debian\nSuites: x\n\nTypes: deb\nURIs: http://sec.example/debian\nSuites: bookworm-security\n\nTypes: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nSigned-By: /k.gpg\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("sources.list"),
            "# c\ndeb [arch=amd64 signed-by=/x.gpg] http://old.example/other stable main\n",
        )
        .unwrap();
        let s = apt_sources(d.path());
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].signed_by.as_deref(), Some("/x.gpg"));
        assert_eq!(
            default_mirror(d.path()).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn no_debian_source_means_none() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(default_mirror(d.path()), None);
    }
}
