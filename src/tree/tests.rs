//! Tests of the tree: implicit parents, inserts through symlinks, replaced subtrees.

use super::*;

fn file(b: &str) -> Entry {
    Entry::new(Kind::File(Data::bytes(b.as_bytes())), Meta::new(0o644, 0))
}

#[test]
fn implicit_parents_and_override() {
    let mut t = Tree::new(0);
    t.insert("etc/ssh/sshd_config", file("a")).unwrap();
    assert!(t.get("etc").unwrap().is_dir());
    assert!(t.get("etc/ssh").unwrap().is_dir());
    let (_, rep) = t.insert("etc/ssh/sshd_config", file("b")).unwrap();
    assert_eq!(rep.len(), 1);
    match &t.get("etc/ssh/sshd_config").unwrap().kind {
        Kind::File(Data::Bytes(b)) => assert_eq!(&b[..], b"b"),
        _ => panic!(),
    }
}

/// Inserts one after another, as a walk makes them, where what the last insert went
/// into has since been replaced, removed or reached through a symlink.
#[test]
fn inserts_after_the_last_directory_changed_land_where_they_should() {
    let dir = || Entry::new(Kind::Dir, Meta::new(0o755, 0));
    let mut t = Tree::new(0);
    t.insert("a", dir()).unwrap();
    t.insert("a/x", file("1")).unwrap();
    t.insert("a", file("2")).unwrap();
    let (landed, rep) = t.insert("a/y", file("3")).unwrap();
    assert_eq!(landed, "a/y");
    assert!(t.get("a").unwrap().is_dir());
    assert!(!t.contains("a/x"));
    assert_eq!((rep[0].old, rep[0].new), ("file", "directory"));

    t.insert("usr/lib", dir()).unwrap();
    let link = Entry::new(Kind::Symlink("usr/lib".into()), Meta::new(0o777, 0));
    t.insert("lib", link).unwrap();
    assert_eq!(t.insert("lib/z", file("4")).unwrap().0, "usr/lib/z");
    assert_eq!(t.insert("lib/w", file("5")).unwrap().0, "usr/lib/w");
    assert_eq!(t.insert("lib", dir()).unwrap().0, "usr/lib");
    assert_eq!(t.insert("lib/v", file("6")).unwrap().0, "usr/lib/v");

    t.remove_tree("usr");
    assert_eq!(t.insert("usr/lib/r", file("7")).unwrap().0, "usr/lib/r");
    assert!(t.get("usr").unwrap().is_dir());
    assert!(t.get("usr/lib").unwrap().is_dir());
    assert!(!t.contains("usr/lib/z"));
}

#[test]
fn merged_usr_lands_through_symlink() {
    let mut t = Tree::new(0);
    t.insert("usr/bin", Entry::new(Kind::Dir, Meta::new(0o755, 0)))
        .unwrap();
    t.insert(
        "bin",
        Entry::new(Kind::Symlink("usr/bin".into()), Meta::new(0o777, 0)),
    )
    .unwrap();
    let (landed, _) = t.insert("bin/ls", file("ls")).unwrap();
    assert_eq!(landed, "usr/bin/ls");
    let (landed, _) = t
        .insert("bin", Entry::new(Kind::Dir, Meta::new(0o755, 0)))
        .unwrap();
    assert_eq!(landed, "usr/bin");
    assert!(matches!(t.get("bin").unwrap().kind, Kind::Symlink(_)));
}

#[test]
fn file_replaces_directory_subtree() {
    let mut t = Tree::new(0);
    t.insert("a/b/c", file("x")).unwrap();
    t.insert("a", file("y")).unwrap();
    assert!(!t.contains("a/b"));
    assert!(!t.contains("a/b/c"));
}
