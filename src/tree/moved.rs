//! A tree moved under a prefix: the profile's own entries of a `[host]` image, which the
//! guest lays over the host's root.

use super::{Entry, Kind, Tree};

impl Tree {
    /// This tree with every entry moved under `prefix` (an image path without leading
    /// or trailing `/`), as stored: no symlink is followed, and hard links point at
    /// their moved targets. Symlink targets stay as written.
    pub fn moved_under(self, prefix: &str) -> Tree {
        let mut out = Tree::new(0);
        out.implicit_dir = self.implicit_dir.clone();
        let root = self.entries.get("").cloned();
        let mut parts = String::new();
        for part in prefix.split('/').filter(|p| !p.is_empty()) {
            if !parts.is_empty() {
                parts.push('/');
            }
            parts.push_str(part);
            out.entries.insert(
                parts.clone(),
                Entry::new(Kind::Dir, self.implicit_dir.clone()),
            );
        }
        if let Some(r) = root {
            out.entries.insert(String::new(), r);
        }
        for (path, mut entry) in self.entries {
            if path.is_empty() {
                continue;
            }
            if let Kind::HardLink(target) = &mut entry.kind {
                *target = format!("{parts}/{target}");
            }
            out.entries.insert(format!("{parts}/{path}"), entry);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Data, Meta};

    #[test]
    fn entries_move_as_stored_and_hard_links_follow() {
        let mut t = Tree::new(0);
        t.insert(
            "bin",
            Entry::new(Kind::Symlink("usr/bin".into()), Meta::new(0o777, 0)),
        )
        .unwrap();
        t.insert(
            "usr/bin/a",
            Entry::new(Kind::File(Data::bytes("a")), Meta::new(0o755, 0)),
        )
        .unwrap();
        t.insert(
            "usr/bin/b",
            Entry::new(Kind::HardLink("usr/bin/a".into()), Meta::new(0o755, 0)),
        )
        .unwrap();
        let m = t.moved_under("usr/lib/kiln/layer");
        let paths: Vec<&str> = m.iter().map(|(p, _)| p.as_str()).collect();
        assert!(paths.contains(&"usr/lib/kiln/layer/bin"), "{paths:?}");
        assert!(paths.contains(&"usr/lib/kiln/layer/usr/bin/a"), "{paths:?}");
        assert!(paths.contains(&"usr/lib/kiln"), "{paths:?}");
        match &m.get("usr/lib/kiln/layer/usr/bin/b").unwrap().kind {
            Kind::HardLink(t) => assert_eq!(t, "usr/lib/kiln/layer/usr/bin/a"),
            k => panic!("{k:?}"),
        }
        match &m.get("usr/lib/kiln/layer/bin").unwrap().kind {
            Kind::Symlink(t) => assert_eq!(t, "usr/bin"),
            k => panic!("{k:?}"),
        }
    }
}
