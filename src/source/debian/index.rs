//! A suite's Packages index, parsed into what the resolver and the fetcher need.

use super::control::for_each_paragraph;
use super::deps::{self, Alternatives, Dep};

/// One binary package of a Packages index, for the build's architecture or `all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkg {
    /// Package: the package's name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture: the build's or `all`.
    pub arch: String,
    /// Multi-Arch (`no` when absent).
    pub multi_arch: String,
    /// Whether Essential is `yes`.
    pub essential: bool,
    /// Priority (`optional` when absent).
    pub priority: String,
    /// Depends, as clauses of alternatives.
    pub depends: Vec<Alternatives>,
    /// Pre-Depends, as clauses of alternatives.
    pub pre_depends: Vec<Alternatives>,
    /// Provides: virtual names, possibly versioned.
    pub provides: Vec<Dep>,
    /// Conflicts.
    pub conflicts: Vec<Dep>,
    /// Breaks.
    pub breaks: Vec<Dep>,
    /// Filename: the .deb's path relative to the mirror's root.
    pub filename: String,
    /// Size: the .deb's length in bytes.
    pub size: u64,
    /// The .deb's sha256, as the signed index gives it (lowercased).
    pub sha256: String,
}

impl Pkg {
    /// Priority as a sort key: required 0, important 1, standard 2, optional 3, anything else 4.
    pub fn priority_rank(&self) -> u8 {
        priority_rank(&self.priority)
    }

    /// "name version arch", for messages.
    pub fn id(&self) -> String {
        format!("{} {} {}", self.name, self.version, self.arch)
    }
}

/// What the resolver needs of every package before it looks closer: enough to find,
/// order and filter candidates. The rest of a package is parsed on first use.
#[derive(Debug)]
struct Light {
    /// The package's paragraph in the index text.
    range: std::ops::Range<usize>,
    name: String,
    version: String,
    provides: Vec<Dep>,
    essential: bool,
    /// [`priority_rank`] of its Priority.
    priority: u8,
}

/// Packages from one or more Packages files, looked up by name and by provided name.
///
/// A suite has some 60 000 packages and a build looks at a few thousand: the index keeps
/// the text and parses a package's dependency fields only when it is first asked for
/// ([`Index::get`]), which keeps an unlocked build's time and memory small.
#[derive(Debug, Default)]
pub struct Index {
    text: String,
    light: Vec<Light>,
    full: Vec<std::sync::OnceLock<Box<Pkg>>>,
    /// Positions of `light`, by name and then newest version first. Sorted vectors rather
    /// than maps: a suite's maps cost tens of megabytes more than the index itself.
    by_name: Vec<usize>,
    /// Provided (virtual) names, sorted; `providers[i]` provides `provided[i]`.
    provided: Vec<String>,
    /// (Providing package, provided version if versioned), beside `provided`.
    providers: Vec<(usize, Option<String>)>,
}

fn field<'a>(fields: &[(&'a str, &'a str)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// The whole package from its paragraph's fields; None when it lacks a required field
/// (which [`Index::parse`] reports).
fn pkg_from(fields: &[(&str, &str)]) -> Option<Pkg> {
    let get = |name: &str| field(fields, name);
    Some(Pkg {
        name: get("Package")?.to_string(),
        version: get("Version")?.to_string(),
        arch: get("Architecture")?.to_string(),
        multi_arch: get("Multi-Arch").unwrap_or("no").to_string(),
        essential: get("Essential") == Some("yes"),
        priority: get("Priority").unwrap_or("optional").to_string(),
        depends: get("Depends").map(deps::parse).unwrap_or_default(),
        pre_depends: get("Pre-Depends").map(deps::parse).unwrap_or_default(),
        provides: get("Provides").map(deps::parse_flat).unwrap_or_default(),
        conflicts: get("Conflicts").map(deps::parse_flat).unwrap_or_default(),
        breaks: get("Breaks").map(deps::parse_flat).unwrap_or_default(),
        filename: get("Filename")?.to_string(),
        size: get("Size")?.trim().parse().ok()?,
        sha256: get("SHA256")?.to_ascii_lowercase(),
    })
}

impl Index {
    /// Parses a Packages file, keeping packages for `arch` and `all`.
    pub fn parse(text: &str, arch: &str) -> Result<Index, String> {
        Index::parse_owned(text.to_string(), arch)
    }

    /// [`Index::parse`] of text the index keeps.
    pub fn parse_owned(text: String, arch: &str) -> Result<Index, String> {
        // Sized once: an index has tens of thousands of packages, and a doubling vector
        // would hold twice that for a moment.
        let paragraphs = text.matches("\nPackage:").count() + 1;
        let mut light = Vec::with_capacity(paragraphs);
        let mut err = None;
        let base = text.as_ptr() as usize;
        for_each_paragraph(&text, |fields, raw| {
            let get = |name: &str| field(fields, name);
            let (Some(name), Some(version), Some(a)) =
                (get("Package"), get("Version"), get("Architecture"))
            else {
                return;
            };
            if a != arch && a != "all" {
                return;
            }
            let (Some(_), Some(size), Some(_)) = (get("Filename"), get("Size"), get("SHA256"))
            else {
                if err.is_none() {
                    err = Some(format!(
                        "package {name} {version} has no Filename, Size or SHA256 in the index"
                    ));
                }
                return;
            };
            if size.trim().parse::<u64>().is_err() {
                if err.is_none() {
                    err = Some(format!(
                        "package {name} {version}: Size `{size}` in the index is not a number of bytes"
                    ));
                }
                return;
            }
            let start = raw.as_ptr() as usize - base;
            light.push(Light {
                range: start..start + raw.len(),
                name: name.to_string(),
                version: version.to_string(),
                provides: get("Provides").map(deps::parse_flat).unwrap_or_default(),
                essential: get("Essential") == Some("yes"),
                priority: priority_rank(get("Priority").unwrap_or("optional")),
            });
        });
        if let Some(e) = err {
            return Err(e);
        }
        light.shrink_to_fit();
        let mut by_name: Vec<usize> = (0..light.len()).collect();
        // Highest version first within a name, so the first match is the newest.
        by_name.sort_by(|&a, &b| {
            light[a]
                .name
                .cmp(&light[b].name)
                .then_with(|| super::version::compare(&light[b].version, &light[a].version))
        });
        let mut provides: Vec<(&str, usize, Option<String>)> = light
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                p.provides.iter().map(move |prov| {
                    let v = prov.constraint.as_ref().map(|(_, v)| v.clone());
                    (prov.name.as_str(), i, v)
                })
            })
            .collect();
        provides.sort_by(|a, b| a.0.cmp(b.0).then(a.1.cmp(&b.1)));
        let provided = provides.iter().map(|(n, _, _)| n.to_string()).collect();
        let providers = provides.into_iter().map(|(_, i, v)| (i, v)).collect();
        let full = light.iter().map(|_| std::sync::OnceLock::new()).collect();
        Ok(Index {
            text,
            light,
            full,
            by_name,
            provided,
            providers,
        })
    }

    /// Positions of the packages called `name`, newest version first.
    pub fn versions(&self, name: &str) -> &[usize] {
        let at = |i: &usize| self.light[*i].name.as_str();
        let lo = self.by_name.partition_point(|i| at(i) < name);
        let hi = lo + self.by_name[lo..].partition_point(|i| at(i) == name);
        &self.by_name[lo..hi]
    }

    /// Positions of the packages that provide `name`, each with the provided version if versioned.
    pub fn providers(&self, name: &str) -> &[(usize, Option<String>)] {
        let lo = self.provided.partition_point(|n| n.as_str() < name);
        let hi = lo + self.provided[lo..].partition_point(|n| n == name);
        &self.providers[lo..hi]
    }

    /// The package at position `i`, parsed on first use; panics if there is none.
    pub fn get(&self, i: usize) -> &Pkg {
        self.full[i].get_or_init(|| {
            let l = &self.light[i];
            let mut p = None;
            for_each_paragraph(&self.text[l.range.clone()], |fields, _| {
                p = pkg_from(fields);
            });
            // `parse` checked every field this needs.
            Box::new(p.unwrap_or_else(|| Pkg {
                name: l.name.clone(),
                version: l.version.clone(),
                arch: String::new(),
                multi_arch: "no".to_string(),
                essential: l.essential,
                priority: String::new(),
                depends: Vec::new(),
                pre_depends: Vec::new(),
                provides: l.provides.clone(),
                conflicts: Vec::new(),
                breaks: Vec::new(),
                filename: String::new(),
                size: 0,
                sha256: String::new(),
            }))
        })
    }

    /// Name, Essential and the rank of its Priority ([`Pkg::priority_rank`]) of package
    /// `i`, without parsing the rest.
    pub fn summary(&self, i: usize) -> (&str, bool, u8) {
        let l = &self.light[i];
        (&l.name, l.essential, l.priority)
    }

    /// Number of packages.
    pub fn len(&self) -> usize {
        self.light.len()
    }

    /// Whether there are no packages.
    pub fn is_empty(&self) -> bool {
        self.light.is_empty()
    }

    /// Whether package `i` satisfies `dep`, by name or through Provides.
    pub fn satisfies(&self, i: usize, dep: &Dep) -> bool {
        let p = &self.light[i];
        if p.name == dep.name {
            return match &dep.constraint {
                None => true,
                Some((rel, v)) => rel.holds(&p.version, v),
            };
        }
        p.provides.iter().any(|prov| {
            prov.name == dep.name
                && match (&dep.constraint, &prov.constraint) {
                    (None, _) => true,
                    (Some((rel, want)), Some((_, have))) => rel.holds(have, want),
                    // An unversioned Provides never satisfies a versioned dependency.
                    (Some(_), None) => false,
                }
        })
    }

    /// Packages that satisfy `dep`: real packages of that name (newest first), then
    /// providers ordered by priority and name.
    pub fn candidates(&self, dep: &Dep) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .versions(&dep.name)
            .iter()
            .copied()
            .filter(|&i| self.satisfies(i, dep))
            .collect();
        let mut provs: Vec<usize> = self
            .providers(&dep.name)
            .iter()
            .map(|(i, _)| *i)
            .filter(|&i| self.satisfies(i, dep) && !out.contains(&i))
            .collect();
        let rank = |i: usize| self.light[i].priority;
        provs.sort_by(|&a, &b| {
            rank(a)
                .cmp(&rank(b))
                .then_with(|| self.light[a].name.cmp(&self.light[b].name))
        });
        provs.dedup();
        out.extend(provs);
        out
    }
}

/// Priority as a sort key: required 0, important 1, standard 2, optional 3, anything else 4.
fn priority_rank(priority: &str) -> u8 {
    match priority {
        "required" => 0,
        "important" => 1,
        "standard" => 2,
        "optional" => 3,
        _ => 4,
    }
}
