//! Reading a profile: includes, merging, deserializing and checking it.
//!
//! Merge rules: a profile's includes are layered first, in the order listed, then the
//! profile itself on top. Tables merge key by key, arrays (including `[[file]]` and other
//! arrays of tables) append, and any other value set later replaces the earlier one.
//! A file reached twice through includes is layered once, the first time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::de::{from_node, take_host_paths};
use super::diag::{Loc, ProfileError, SourceFile};
use super::node::{Node, Value};
use super::schema::Profile;
use super::validate::validate;

/// The profile format version this kiln reads.
pub const FORMAT_VERSION: i64 = 1;

/// A profile ready for planning: merged, typed and checked.
#[derive(Debug)]
pub struct LoadedProfile {
    /// The merged, typed profile.
    pub profile: Profile,
    /// Image name used for output files.
    pub name: String,
    /// The top-level profile file.
    pub path: PathBuf,
    /// Every file that contributed, top-level first.
    pub files: Vec<PathBuf>,
    /// Every host path the profile names (overlays, sources, keyrings, kernels...),
    /// resolved against the file that names it: the host inputs of its build.
    pub host_paths: Vec<PathBuf>,
}

/// Loads the profile at `path` with its includes, then deserializes and validates it.
pub fn load(path: &Path) -> Result<LoadedProfile, ProfileError> {
    let mut loader = Loader {
        stack: Vec::new(),
        seen: Vec::new(),
    };
    let top = read_source(path, None)?;
    let top_loc = Loc {
        file: top.clone(),
        span: 0..0,
    };
    let node = loader.load_file(top)?;
    if node.get("version").is_none() {
        return Err(ProfileError::new("missing required key `version`")
            .at(&top_loc)
            .help(format!(
                "add `version = {FORMAT_VERSION}` at the top of the profile"
            )));
    }
    take_host_paths();
    let profile: Profile = from_node(&node)?;
    let mut host_paths = take_host_paths();
    let name = match &profile.name {
        Some(n) => n.clone(),
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".to_string()),
    };
    validate(&profile, &name, &node)?;
    let mut files = loader.seen;
    if let Some(i) = files.iter().position(|f| f == &canonical(path)) {
        let top = files.remove(i);
        files.insert(0, top);
    }
    // The profiles themselves are read already; what they say is in `profile`.
    host_paths.retain(|p| !files.contains(&canonical(p)));
    host_paths.sort();
    host_paths.dedup();
    Ok(LoadedProfile {
        profile,
        name,
        path: path.to_path_buf(),
        files,
        host_paths,
    })
}

/// How deep includes may nest: real profiles use two or three levels, and each level is
/// a frame of recursion.
pub const MAX_INCLUDE_DEPTH: usize = 32;

struct Loader {
    /// Files being loaded, outermost first, to detect cycles.
    stack: Vec<PathBuf>,
    /// Files already layered.
    seen: Vec<PathBuf>,
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn read_source(
    path: &Path,
    named_at: Option<(&Loc, String)>,
) -> Result<Arc<SourceFile>, ProfileError> {
    match std::fs::read_to_string(path) {
        // An older format is read through the migrations; anything they refuse (a newer
        // version, broken TOML) is reported, located, by the parser and `check_version`.
        Ok(text) => Ok(Arc::new(SourceFile {
            path: path.to_path_buf(),
            text: match super::migrate::upgrade(&text, super::migrate::MIGRATIONS, FORMAT_VERSION) {
                Ok(Some(upgraded)) => upgraded.text,
                _ => text,
            },
        })),
        Err(e) => {
            let err = ProfileError::new(format!("cannot read profile `{}`: {e}", path.display()));
            Err(match named_at {
                Some((loc, key)) => err
                    .at(loc)
                    .key(&key)
                    .help("include paths are relative to the file that names them"),
                None => err,
            })
        }
    }
}

impl Loader {
    fn load_file(&mut self, file: Arc<SourceFile>) -> Result<Node, ProfileError> {
        let id = canonical(&file.path);
        self.stack.push(id.clone());
        self.seen.push(id);
        let mut node = Node::parse(file.clone())?;
        check_version(&node)?;
        let mut merged = Node {
            value: Value::Table(Vec::new()),
            loc: node.loc.clone(),
        };
        if let Some(include) = node.remove("include") {
            let items = match include.node.value {
                Value::Array(items) => items,
                other => {
                    return Err(ProfileError::new(format!(
                        "expected an array of file names, found {}",
                        other.type_name()
                    ))
                    .at(&include.node.loc)
                    .key("include"))
                }
            };
            for (i, item) in items.into_iter().enumerate() {
                let rel = match &item.value {
                    Value::Str(s) => s.clone(),
                    other => {
                        return Err(ProfileError::new(format!(
                            "expected a file name, found {}",
                            other.type_name()
                        ))
                        .at(&item.loc)
                        .key(&format!("include[{i}]")))
                    }
                };
                let path = item.loc.dir().join(&rel);
                let id = canonical(&path);
                if let Some(chain) = crate::util::cycle::include_cycle(&self.stack, &id) {
                    return Err(ProfileError::new(format!("include cycle: {chain}"))
                        .at(&item.loc)
                        .key(&format!("include[{i}]"))
                        .help("remove one of the includes that form the cycle"));
                }
                if self.seen.contains(&id) {
                    continue;
                }
                if self.stack.len() >= MAX_INCLUDE_DEPTH {
                    return Err(ProfileError::new(format!(
                        "includes nest {} files deep here, and kiln reads at most {MAX_INCLUDE_DEPTH}",
                        self.stack.len() + 1
                    ))
                    .at(&item.loc)
                    .key(&format!("include[{i}]"))
                    .help("include the shared files side by side from one profile instead of each from the last"));
                }
                let sub = read_source(&path, Some((&item.loc, format!("include[{i}]"))))?;
                let sub_node = self.load_file(sub)?;
                merged.merge(sub_node);
            }
        }
        merged.merge(node);
        self.stack.pop();
        Ok(merged)
    }
}

/// The versions this kiln reads, for messages.
fn readable() -> String {
    if FORMAT_VERSION == 1 {
        "version 1".to_string()
    } else {
        format!("versions 1 to {FORMAT_VERSION}")
    }
}

fn check_version(node: &Node) -> Result<(), ProfileError> {
    if let Some(entry) = node.get("version") {
        match entry.node.value {
            Value::Int(FORMAT_VERSION) => {}
            Value::Int(v) if v > FORMAT_VERSION => {
                return Err(ProfileError::new(format!(
                    "profile format version {v} is newer than this kiln reads"
                ))
                .at(&entry.node.loc)
                .key("version")
                .help(format!(
                    "this kiln reads {}; upgrade kiln to read it",
                    readable()
                )))
            }
            Value::Int(v) => {
                return Err(
                    ProfileError::new(format!("profile format version {v} does not exist"))
                        .at(&entry.node.loc)
                        .key("version")
                        .help(format!(
                            "the first format is 1; this kiln reads {}",
                            readable()
                        )),
                )
            }
            ref other => {
                return Err(ProfileError::new(format!(
                    "expected an integer, found {}",
                    other.type_name()
                ))
                .at(&entry.node.loc)
                .key("version"))
            }
        }
    }
    Ok(())
}
