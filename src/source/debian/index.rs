//! A suite's Packages index, parsed into what the resolver and the fetcher need.

use std::collections::HashMap;

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
        match self.priority.as_str() {
            "required" => 0,
            "important" => 1,
            "standard" => 2,
            "optional" => 3,
            _ => 4,
        }
    }

    /// "name version arch", for messages.
    pub fn id(&self) -> String {
        format!("{} {} {}", self.name, self.version, self.arch)
    }
}

/// Packages from one or more Packages files, looked up by name and by provided name.
#[derive(Debug, Default)]
pub struct Index {
    /// Every package, in the order given; the other methods name packages by position here.
    pub pkgs: Vec<Pkg>,
    by_name: HashMap<String, Vec<usize>>,
    /// Virtual name → (providing package, provided version if versioned).
    providers: HashMap<String, Vec<(usize, Option<String>)>>,
}

impl Index {
    /// Parses a Packages file, keeping packages for `arch` and `all`.
    pub fn parse(text: &str, arch: &str) -> Result<Index, String> {
        let mut pkgs = Vec::new();
        let mut err = None;
        for_each_paragraph(text, |fields, _raw| {
            let get = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| *v)
            };
            let (Some(name), Some(version), Some(a)) =
                (get("Package"), get("Version"), get("Architecture"))
            else {
                return;
            };
            if a != arch && a != "all" {
                return;
            }
            let (Some(filename), Some(size), Some(sha256)) =
                (get("Filename"), get("Size"), get("SHA256"))
            else {
                if err.is_none() {
                    err = Some(format!(
                        "package {name} {version} has no Filename, Size or SHA256 in the index"
                    ));
                }
                return;
            };
            let Ok(size) = size.trim().parse::<u64>() else {
                if err.is_none() {
                    err = Some(format!(
                        "package {name} {version}: Size `{size}` in the index is not a number of bytes"
                    ));
                }
                return;
            };
            pkgs.push(Pkg {
                name: name.to_string(),
                version: version.to_string(),
                arch: a.to_string(),
                multi_arch: get("Multi-Arch").unwrap_or("no").to_string(),
                essential: get("Essential") == Some("yes"),
                priority: get("Priority").unwrap_or("optional").to_string(),
                depends: get("Depends").map(deps::parse).unwrap_or_default(),
                pre_depends: get("Pre-Depends").map(deps::parse).unwrap_or_default(),
                provides: get("Provides").map(deps::parse_flat).unwrap_or_default(),
                conflicts: get("Conflicts").map(deps::parse_flat).unwrap_or_default(),
                breaks: get("Breaks").map(deps::parse_flat).unwrap_or_default(),
                filename: filename.to_string(),
                size,
                sha256: sha256.to_ascii_lowercase(),
            });
        });
        if let Some(e) = err {
            return Err(e);
        }
        Ok(Index::from_pkgs(pkgs))
    }

    /// Indexes `pkgs` by name (newest version first) and by the names they provide.
    pub fn from_pkgs(pkgs: Vec<Pkg>) -> Index {
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        let mut providers: HashMap<String, Vec<(usize, Option<String>)>> = HashMap::new();
        for (i, p) in pkgs.iter().enumerate() {
            by_name.entry(p.name.clone()).or_default().push(i);
            for prov in &p.provides {
                let v = prov.constraint.as_ref().map(|(_, v)| v.clone());
                providers.entry(prov.name.clone()).or_default().push((i, v));
            }
        }
        // Highest version first, so the first match is the newest.
        for ids in by_name.values_mut() {
            ids.sort_by(|a, b| super::version::compare(&pkgs[*b].version, &pkgs[*a].version));
        }
        Index {
            pkgs,
            by_name,
            providers,
        }
    }

    /// Positions of the packages called `name`, newest version first.
    pub fn versions(&self, name: &str) -> &[usize] {
        self.by_name.get(name).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// Positions of the packages that provide `name`, each with the provided version if versioned.
    pub fn providers(&self, name: &str) -> &[(usize, Option<String>)] {
        self.providers
            .get(name)
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }

    /// The package at position `i`; panics if there is none.
    pub fn get(&self, i: usize) -> &Pkg {
        &self.pkgs[i]
    }

    /// Number of packages.
    pub fn len(&self) -> usize {
        self.pkgs.len()
    }

    /// Whether there are no packages.
    pub fn is_empty(&self) -> bool {
        self.pkgs.is_empty()
    }

    /// Whether package `i` satisfies `dep`, by name or through Provides.
    pub fn satisfies(&self, i: usize, dep: &Dep) -> bool {
        let p = &self.pkgs[i];
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
        provs.sort_by(|&a, &b| {
            let (pa, pb) = (&self.pkgs[a], &self.pkgs[b]);
            pa.priority_rank()
                .cmp(&pb.priority_rank())
                .then_with(|| pa.name.cmp(&pb.name))
        });
        provs.dedup();
        out.extend(provs);
        out
    }
}
