//! Image paths: absolute in profiles ("/etc/hostname"), stored without the leading slash
//! ("etc/hostname"), so that byte order puts every directory before what it contains.

/// A normalised image path, stored without the leading slash: only [`ImagePath::new`]
/// (which normalises and refuses `..`) builds one, so a path from a package, a unit file
/// or a profile cannot name anything outside the image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImagePath(String);

impl ImagePath {
    /// Normalises `path` (with or without the leading slash): `//a/./b/` is `a/b`, `/`
    /// is the root. `..`, NUL bytes and components over 255 bytes are refused.
    pub fn new(path: &str) -> Result<ImagePath, String> {
        if is_normal(path) {
            return Ok(ImagePath(path.to_string()));
        }
        relative(path).map(ImagePath)
    }

    /// The stored form, without the leading slash ("" for the root).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The stored form, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl ImagePath {
    /// Like [`ImagePath::new`], but the path must start with `/`, as profiles write them.
    pub fn absolute(path: &str) -> Result<ImagePath, String> {
        normalize(path).map(ImagePath)
    }
}

/// Profiles write image paths absolute; they are checked and normalised as they load.
impl<'de> serde::Deserialize<'de> for ImagePath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Checked inside the visitor, so the error is located at the value.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ImagePath;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an absolute image path such as \"/etc/hostname\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ImagePath, E> {
                ImagePath::absolute(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl std::fmt::Display for ImagePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/{}", self.0)
    }
}

/// Whether `path` is already in stored form, so the common case allocates nothing.
/// Whether `path` is already in stored form: no empty, `.` or `..` component, none over
/// 255 bytes, no NUL.
pub(crate) fn is_normal(path: &str) -> bool {
    path.is_empty()
        || path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && c.len() <= 255 && !c.contains('\0'))
}

/// Normalises an absolute image path. `/` becomes "", `//a/./b/` becomes "a/b".
/// `..` is refused: an image path never climbs, which keeps overlays and packages inside the tree.
pub fn normalize(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!(
            "`{path}` is not an absolute image path; write it as `/{path}`"
        ));
    }
    relative(path)
}

/// Like `normalize`, but also accepts paths without the leading slash (as in tar archives: "./usr/bin").
pub fn relative(path: &str) -> Result<String, String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("`{path}` contains `..`; image paths may not climb")),
            c if c.len() > 255 => {
                return Err(format!("`{path}` has a component longer than 255 bytes"))
            }
            c if c.contains('\0') => return Err(format!("`{path}` contains a NUL byte")),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// The parent of a stored path ("" for top-level entries); None for the root itself.
pub fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    Some(path.rfind('/').map(|i| &path[..i]).unwrap_or(""))
}

/// The last component of a stored path.
pub fn file_name(path: &str) -> &str {
    path.rfind('/').map(|i| &path[i + 1..]).unwrap_or(path)
}

/// `dir/name` for stored paths; an empty `dir` (the root) or empty `name` adds no slash.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else if name.is_empty() {
        dir.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Resolves a symlink target found at stored path `link` into a stored path, lexically:
/// absolute targets start at the image root, relative ones at the link's directory, and
/// `..` stops at the root as it does in a real file system.
pub fn resolve_target(link: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        parent(link)
            .unwrap_or("")
            .split('/')
            .filter(|s| !s.is_empty())
            .collect()
    };
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// Display form with the leading slash.
pub fn display(path: &str) -> String {
    format!("/{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize("/").unwrap(), "");
        assert_eq!(normalize("//usr/./bin/").unwrap(), "usr/bin");
        assert!(normalize("usr").is_err());
        assert!(normalize("/usr/../etc").is_err());
        assert_eq!(relative("./usr/bin/ls").unwrap(), "usr/bin/ls");
    }

    #[test]
    fn image_paths_are_normal_or_refused() {
        assert_eq!(ImagePath::new("usr/bin").unwrap().as_str(), "usr/bin");
        assert_eq!(ImagePath::new("//usr/./bin/").unwrap().as_str(), "usr/bin");
        assert_eq!(ImagePath::new("/").unwrap().as_str(), "");
        assert_eq!(ImagePath::new("/etc").unwrap().to_string(), "/etc");
        for bad in ["a/../b", "..", "etc/systemd/system/../../x.wants/u", "a\0b"] {
            assert!(ImagePath::new(bad).is_err(), "{bad:?}");
        }
        assert!(ImagePath::new(&"x".repeat(256)).is_err());
    }

    #[test]
    fn resolves_targets() {
        assert_eq!(resolve_target("bin", "usr/bin"), "usr/bin");
        assert_eq!(
            resolve_target("lib64/ld.so", "/usr/lib/ld.so"),
            "usr/lib/ld.so"
        );
        assert_eq!(resolve_target("a/b/c", "../../../../x"), "x");
        assert_eq!(resolve_target("usr/bin/sh", "dash"), "usr/bin/dash");
    }

    #[test]
    fn parents_sort_first() {
        let mut v = ["a/b", "a.txt", "a", "a/b/c", "a-b"];
        v.sort();
        let pos = |s| v.iter().position(|x| *x == s).unwrap();
        assert!(pos("a") < pos("a/b") && pos("a/b") < pos("a/b/c"));
        assert_eq!(parent("a/b/c"), Some("a/b"));
        assert_eq!(parent("a"), Some(""));
        assert_eq!(file_name("a/b/c"), "c");
    }
}
