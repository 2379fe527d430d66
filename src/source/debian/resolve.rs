//! Choosing the packages to install: the requested ones, a base set, and everything
//! they depend on, one version of each name.
//!
//! Deterministic and apt-like: explicit requests and the base set are selected first;
//! then dependencies are followed breadth first. For `a | b`, an alternative that is
//! already selected wins, else the first that can be installed without conflicting with
//! what is selected. Virtual packages go to the real package of that name, else to the
//! providers ordered by priority, then name. Recommends are not followed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use super::deps::{display_alts, Dep};
use super::index::Index;
use crate::profile::Base;

/// The outcome of resolving: what was chosen and why.
#[derive(Debug)]
pub struct Resolution {
    /// Selected packages (index positions), sorted by name.
    pub selected: Vec<usize>,
    /// For each selected name: why it is there ("requested", "base set", or "<pkg> Depends: <clause>").
    pub why: BTreeMap<String, String>,
    /// Conflicts and Breaks among the selection that could not be avoided.
    pub conflicts: Vec<String>,
}

/// Why resolution failed, with the dependencies that led there.
#[derive(Debug)]
pub struct ResolveError {
    /// What could not be satisfied, and why.
    pub message: String,
    /// From the unsatisfiable package up to the request that pulled it in.
    pub chain: Vec<String>,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        for c in &self.chain {
            write!(f, "\n  {c}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ResolveError {}

/// A request from a profile: "name" or "name=version".
pub fn parse_request(s: &str) -> Dep {
    match s.split_once('=') {
        Some((n, v)) => Dep {
            name: n.trim().to_string(),
            constraint: Some((super::version::Relation::Eq, v.trim().to_string())),
        },
        None => Dep {
            name: s.trim().to_string(),
            constraint: None,
        },
    }
}

/// Names in a base set, sorted.
pub fn base_set(index: &Index, base: Base) -> Vec<String> {
    let mut names: Vec<String> = (0..index.len())
        .map(|i| index.summary(i))
        .filter(|&(name, essential, priority)| match base {
            Base::None => false,
            Base::Essential => essential,
            // Ranks: required 0, important 1.
            Base::Minbase => essential || priority == 0 || name == "apt",
            Base::Important => essential || priority <= 1 || name == "apt",
        })
        .map(|(name, _, _)| name.to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

struct State<'a> {
    index: &'a Index,
    selected: HashMap<String, usize>,
    why: BTreeMap<String, String>,
    parent: HashMap<String, String>,
    exclude: &'a [String],
    /// Selected packages by the names their Conflicts and Breaks mention.
    conflicts_on: HashMap<String, Vec<usize>>,
}

impl State<'_> {
    fn conflicts_between(&self, a: usize, b: usize) -> bool {
        if a == b {
            return false;
        }
        let (pa, pb) = (self.index.get(a), self.index.get(b));
        let hits = |p: &super::index::Pkg, other: usize| {
            p.conflicts.iter().chain(p.breaks.iter()).any(|d| {
                // A package may conflict with a virtual name it provides itself.
                self.index.satisfies(other, d) && self.index.get(other).name != p.name
            })
        };
        hits(pa, b) || hits(pb, a)
    }

    fn is_selected(&self, i: usize) -> bool {
        self.selected.get(&self.index.get(i).name) == Some(&i)
    }

    /// Whether `c` conflicts with (or breaks, or is broken by) a selected package. Only
    /// the packages its own Conflicts and Breaks name, and the selected packages that
    /// name it or what it provides, are looked at: near-linear over a whole resolution.
    fn conflicts_with_selection(&self, c: usize) -> bool {
        let p = self.index.get(c);
        let forward = p
            .conflicts
            .iter()
            .chain(p.breaks.iter())
            .flat_map(|d| self.index.candidates(d))
            .any(|s| self.is_selected(s) && self.conflicts_between(c, s));
        forward
            || std::iter::once(&p.name)
                .chain(p.provides.iter().map(|prov| &prov.name))
                .filter_map(|name| self.conflicts_on.get(name))
                .flatten()
                .any(|&s| self.conflicts_between(c, s))
    }

    fn satisfied(&self, dep: &Dep) -> bool {
        self.index
            .candidates(dep)
            .into_iter()
            .any(|c| self.is_selected(c))
    }

    fn chain(&self, mut name: String) -> Vec<String> {
        let mut out = Vec::new();
        let mut seen = 0;
        while let Some(why) = self.why.get(&name) {
            out.push(format!("{name}: {why}"));
            match self.parent.get(&name) {
                Some(p) if seen < 64 => {
                    name = p.clone();
                    seen += 1;
                }
                _ => break,
            }
        }
        out
    }

    fn select(&mut self, i: usize, why: String, parent: Option<&str>) {
        let name = self.index.get(i).name.clone();
        if let Some(p) = parent {
            self.parent.insert(name.clone(), p.to_string());
        }
        self.why.insert(name.clone(), why);
        self.selected.insert(name, i);
        let index = self.index;
        let p = index.get(i);
        for d in p.conflicts.iter().chain(p.breaks.iter()) {
            self.conflicts_on.entry(d.name.clone()).or_default().push(i);
        }
    }
}

/// Selects `requests`, the `base` set and everything they depend on from `index`, never a
/// package named in `exclude`.
pub fn resolve(
    index: &Index,
    requests: &[String],
    base: Base,
    exclude: &[String],
) -> Result<Resolution, ResolveError> {
    let mut st = State {
        index,
        selected: HashMap::new(),
        why: BTreeMap::new(),
        parent: HashMap::new(),
        exclude,
        conflicts_on: HashMap::new(),
    };
    let mut queue: VecDeque<usize> = VecDeque::new();

    for r in requests {
        let dep = parse_request(r);
        if st.exclude.contains(&dep.name) {
            return Err(ResolveError {
                message: format!("`{}` is both requested and excluded", dep.name),
                chain: vec![],
            });
        }
        let cands = index.candidates(&dep);
        let Some(&c) = cands.first() else {
            let have: Vec<String> = index
                .versions(&dep.name)
                .iter()
                .map(|&i| index.get(i).version.clone())
                .collect();
            let message = if have.is_empty() {
                format!("package `{dep}` is not in the index (check the name, the suite and the components)")
            } else {
                format!(
                    "package `{dep}` is not in the index; available: {}",
                    have.join(", ")
                )
            };
            return Err(ResolveError {
                message,
                chain: vec![format!("{}: requested in the profile", dep.name)],
            });
        };
        let name = index.get(c).name.clone();
        if !st.selected.contains_key(&name) {
            st.select(c, "requested in the profile".into(), None);
            queue.push_back(c);
        }
    }
    for name in base_set(index, base) {
        if st.exclude.contains(&name) || st.selected.contains_key(&name) {
            continue;
        }
        if let Some(&c) = index.versions(&name).first() {
            st.select(c, format!("in the {base:?} base set").to_lowercase(), None);
            queue.push_back(c);
        }
    }

    while let Some(i) = queue.pop_front() {
        let p = index.get(i).clone();
        for (field, clauses) in [("Pre-Depends", &p.pre_depends), ("Depends", &p.depends)] {
            for alts in clauses.iter() {
                if alts.iter().any(|d| st.satisfied(d)) {
                    continue;
                }
                let mut chosen = None;
                let mut fallback = None;
                for d in alts {
                    for c in index.candidates(d) {
                        let cname = &index.get(c).name;
                        if st.exclude.contains(cname) || st.selected.contains_key(cname) {
                            // A selected package with this name but the wrong version cannot be replaced.
                            continue;
                        }
                        if st.conflicts_with_selection(c) {
                            fallback.get_or_insert(c);
                            continue;
                        }
                        chosen = Some(c);
                        break;
                    }
                    if chosen.is_some() {
                        break;
                    }
                }
                match chosen.or(fallback) {
                    Some(c) => {
                        st.select(
                            c,
                            format!("{} {field}: {}", p.name, display_alts(alts)),
                            Some(&p.name),
                        );
                        queue.push_back(c);
                    }
                    None => {
                        let mut detail = Vec::new();
                        for d in alts {
                            let have: Vec<String> = index
                                .versions(&d.name)
                                .iter()
                                .map(|&i| index.get(i).version.clone())
                                .collect();
                            let sel = st
                                .selected
                                .get(&d.name)
                                .map(|&s| index.get(s).version.clone());
                            let reason = if st.exclude.contains(&d.name) {
                                "excluded by the profile".to_string()
                            } else if let Some(v) = sel {
                                format!("{v} is selected")
                            } else if have.is_empty() && index.providers(&d.name).is_empty() {
                                "not in the index".to_string()
                            } else if have.is_empty() {
                                "no provider satisfies it".to_string()
                            } else {
                                format!("the index has {}", have.join(", "))
                            };
                            detail.push(format!("{d}: {reason}"));
                        }
                        return Err(ResolveError {
                            message: format!(
                                "cannot satisfy `{}` ({})",
                                display_alts(alts),
                                detail.join("; ")
                            ),
                            chain: st.chain(p.name.clone()),
                        });
                    }
                }
            }
        }
    }

    let mut selected: Vec<usize> = st.selected.values().copied().collect();
    selected.sort_by(|&a, &b| index.get(a).name.cmp(&index.get(b).name));
    // Each pair once, in name order: only the packages a selected package's Conflicts
    // and Breaks name can be its other half.
    let mut pairs = std::collections::BTreeSet::new();
    for &a in &selected {
        let p = index.get(a);
        for d in p.conflicts.iter().chain(p.breaks.iter()) {
            for b in index.candidates(d) {
                if st.is_selected(b) && st.conflicts_between(a, b) {
                    let (x, y) = (index.get(a), index.get(b));
                    pairs.insert(if x.name < y.name { (a, b) } else { (b, a) });
                }
            }
        }
    }
    let mut pairs: Vec<(usize, usize)> = pairs.into_iter().collect();
    pairs.sort_by(|&(a1, b1), &(a2, b2)| {
        (&index.get(a1).name, &index.get(b1).name).cmp(&(&index.get(a2).name, &index.get(b2).name))
    });
    let conflicts = pairs
        .into_iter()
        .map(|(a, b)| format!("{} conflicts with {}", index.get(a).id(), index.get(b).id()))
        .collect();
    Ok(Resolution {
        selected,
        why: st.why,
        conflicts,
    })
}
