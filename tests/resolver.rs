//! The resolver on small Packages fixtures: alternatives, virtual packages, versions,
//! conflicts, base sets, and the why-chain of an unsatisfiable request.

use kiln::profile::Base;
use kiln::source::debian::index::Index;
use kiln::source::debian::resolve::resolve;

fn stanza(name: &str, version: &str, fields: &str) -> String {
    format!("Package: {name}\nVersion: {version}\nArchitecture: amd64\n{fields}Filename: pool/{name}_{version}.deb\nSize: 1\nSHA256: {}\n\n", "0".repeat(64))
}

fn index(stanzas: &[String]) -> Index {
    Index::parse(&stanzas.concat(), "amd64").unwrap()
}

fn names(idx: &Index, sel: &[usize]) -> Vec<String> {
    sel.iter().map(|&i| idx.get(i).name.clone()).collect()
}

fn req(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn dependencies_are_followed_transitively() {
    let idx = index(&[
        stanza("app", "1", "Depends: liba (>= 2), libb\n"),
        stanza("liba", "2.1", "Pre-Depends: libc\n"),
        stanza("libb", "1", "Depends: libc\n"),
        stanza("libc", "9", ""),
        stanza("other", "1", ""),
    ]);
    let r = resolve(&idx, &req(&["app"]), Base::None, &[]).unwrap();
    assert_eq!(names(&idx, &r.selected), ["app", "liba", "libb", "libc"]);
    assert_eq!(r.why["liba"], "app Depends: liba (>= 2)");
    assert_eq!(r.why["libc"], "liba Pre-Depends: libc");
}

#[test]
fn an_alternative_already_selected_wins() {
    let idx = index(&[
        stanza("app", "1", "Depends: mta-a | mta-b\n"),
        stanza("mta-a", "1", ""),
        stanza("mta-b", "1", ""),
    ]);
    let r = resolve(&idx, &req(&["app", "mta-b"]), Base::None, &[]).unwrap();
    assert_eq!(names(&idx, &r.selected), ["app", "mta-b"]);
    let r = resolve(&idx, &req(&["app"]), Base::None, &[]).unwrap();
    assert_eq!(
        names(&idx, &r.selected),
        ["app", "mta-a"],
        "else the first satisfiable"
    );
}

#[test]
fn unsatisfiable_alternatives_are_skipped() {
    let idx = index(&[
        stanza("app", "1", "Depends: gone | old (>= 2) | new\n"),
        stanza("old", "1", ""),
        stanza("new", "1", ""),
    ]);
    let r = resolve(&idx, &req(&["app"]), Base::None, &[]).unwrap();
    assert_eq!(names(&idx, &r.selected), ["app", "new"]);
}

#[test]
fn excluded_packages_are_never_chosen() {
    let idx = index(&[
        stanza("app", "1", "Depends: a | b\n"),
        stanza("a", "1", ""),
        stanza("b", "1", ""),
    ]);
    let r = resolve(&idx, &req(&["app"]), Base::None, &["a".to_string()]).unwrap();
    assert_eq!(names(&idx, &r.selected), ["app", "b"]);
}

#[test]
fn virtual_packages_go_to_the_best_provider() {
    let idx = index(&[
        stanza("app", "1", "Depends: awk\n"),
        stanza("gawk", "1", "Priority: optional\nProvides: awk\n"),
        stanza("mawk", "1", "Priority: required\nProvides: awk\n"),
    ]);
    let r = resolve(&idx, &req(&["app"]), Base::None, &[]).unwrap();
    assert_eq!(
        names(&idx, &r.selected),
        ["app", "mawk"],
        "priority decides"
    );
    let r = resolve(&idx, &req(&["app", "gawk"]), Base::None, &[]).unwrap();
    assert_eq!(
        names(&idx, &r.selected),
        ["app", "gawk"],
        "a selected provider satisfies"
    );
}

#[test]
fn versioned_dependencies_need_versioned_provides() {
    let idx = index(&[
        stanza("app", "1", "Depends: libfoo-abi (>= 3)\n"),
        stanza("old-provider", "1", "Provides: libfoo-abi\n"),
        stanza("new-provider", "1", "Provides: libfoo-abi (= 3)\n"),
    ]);
    let r = resolve(&idx, &req(&["app"]), Base::None, &[]).unwrap();
    assert_eq!(names(&idx, &r.selected), ["app", "new-provider"]);
}

#[test]
fn the_newest_satisfying_version_is_chosen() {
    let idx = index(&[
        stanza("app", "1", "Depends: lib (<< 3)\n"),
        stanza("lib", "2.5", ""),
        stanza("lib", "3.0", ""),
        stanza("lib", "1:0.1", ""),
    ]);
    let r = resolve(&idx, &req(&["lib"]), Base::None, &[]).unwrap();
    assert_eq!(
        idx.get(r.selected[0]).version,
        "1:0.1",
        "the epoch makes it newest"
    );
    let r = resolve(&idx, &req(&["app"]), Base::None, &[]).unwrap();
    assert_eq!(idx.get(r.selected[1]).version, "2.5");
    let r = resolve(&idx, &req(&["lib=3.0"]), Base::None, &[]).unwrap();
    assert_eq!(idx.get(r.selected[0]).version, "3.0");
}

#[test]
fn multi_arch_qualifiers_resolve_to_the_package() {
    let idx = index(&[
        stanza("app", "1", "Depends: python3:any (>= 3.11), perl:native\n"),
        stanza("python3", "3.13", "Multi-Arch: allowed\n"),
        stanza("perl", "5.40", ""),
    ]);
    let r = resolve(&idx, &req(&["app"]), Base::None, &[]).unwrap();
    assert_eq!(names(&idx, &r.selected), ["app", "perl", "python3"]);
}

#[test]
fn conflicting_alternatives_are_avoided_and_unavoidable_conflicts_reported() {
    let idx = index(&[
        stanza("app", "1", "Depends: mta-a | mta-b\n"),
        stanza("mta-a", "1", "Conflicts: tool\n"),
        stanza("mta-b", "1", ""),
        stanza("tool", "1", ""),
        stanza("x", "1", "Breaks: y (<< 2)\n"),
        stanza("y", "1", ""),
    ]);
    let r = resolve(&idx, &req(&["tool", "app"]), Base::None, &[]).unwrap();
    assert_eq!(names(&idx, &r.selected), ["app", "mta-b", "tool"]);
    assert!(r.conflicts.is_empty());
    let r = resolve(&idx, &req(&["x", "y"]), Base::None, &[]).unwrap();
    assert_eq!(r.conflicts, ["x 1 amd64 conflicts with y 1 amd64"]);
}

#[test]
fn self_conflicts_through_provides_are_not_conflicts() {
    let idx = index(&[stanza(
        "postfix",
        "1",
        "Provides: mail-transport-agent\nConflicts: mail-transport-agent\n",
    )]);
    let r = resolve(&idx, &req(&["postfix"]), Base::None, &[]).unwrap();
    assert!(r.conflicts.is_empty());
}

#[test]
fn base_sets() {
    let idx = index(&[
        stanza("base-files", "1", "Essential: yes\nPriority: required\n"),
        stanza("mawk", "1", "Priority: required\n"),
        stanza("apt", "1", "Priority: important\n"),
        stanza("less", "1", "Priority: important\n"),
        stanza("vim", "1", "Priority: optional\n"),
    ]);
    let sel = |b| names(&idx, &resolve(&idx, &[], b, &[]).unwrap().selected);
    assert_eq!(sel(Base::Essential), ["base-files"]);
    assert_eq!(sel(Base::Minbase), ["apt", "base-files", "mawk"]);
    assert_eq!(sel(Base::Important), ["apt", "base-files", "less", "mawk"]);
}

#[test]
fn unsatisfiable_shows_the_chain_of_why() {
    let idx = index(&[
        stanza("top", "1", "Depends: middle\n"),
        stanza("middle", "1", "Depends: bottom (>= 2) | alt\n"),
        stanza("bottom", "1.5", ""),
    ]);
    let e = resolve(&idx, &req(&["top"]), Base::None, &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot satisfy `bottom (>= 2) | alt`"), "{e}");
    assert!(e.contains("bottom (>= 2): the index has 1.5"), "{e}");
    assert!(e.contains("alt: not in the index"), "{e}");
    let chain: Vec<&str> = e.lines().skip(1).map(str::trim).collect();
    assert_eq!(
        chain,
        [
            "middle: top Depends: middle",
            "top: requested in the profile"
        ]
    );
    let e = resolve(&idx, &req(&["nothere"]), Base::None, &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`nothere` is not in the index"), "{e}");
}

#[test]
fn resolution_is_deterministic() {
    let mut st = Vec::new();
    for i in 0..40 {
        st.push(stanza(
            &format!("p{i}"),
            "1",
            &format!(
                "Depends: v{} | p{}\nProvides: v{}\n",
                i % 7,
                (i + 1) % 40,
                i % 5
            ),
        ));
    }
    let idx = index(&st);
    let a = resolve(&idx, &req(&["p0", "p13"]), Base::None, &[]).unwrap();
    for _ in 0..5 {
        let b = resolve(&idx, &req(&["p0", "p13"]), Base::None, &[]).unwrap();
        assert_eq!(names(&idx, &a.selected), names(&idx, &b.selected));
        assert_eq!(a.why, b.why);
    }
}

// Shapes a hostile or merely enormous index takes. Resolution looks only at the
// packages a dependency or a conflict names, so each of these is near-linear.

#[test]
fn a_depends_chain_of_a_hundred_thousand_packages() {
    let n = 100_000;
    let stanzas: Vec<String> = (0..n)
        .map(|i| {
            let dep = if i + 1 < n {
                format!("Depends: p{}\nConflicts: q{i}\n", i + 1)
            } else {
                String::new()
            };
            stanza(&format!("p{i}"), "1", &dep)
        })
        .collect();
    let idx = index(&stanzas);
    let r = resolve(&idx, &req(&["p0"]), Base::None, &[]).unwrap();
    assert_eq!(r.selected.len(), n);
    assert!(r.conflicts.is_empty());
    assert_eq!(r.why["p99999"], "p99998 Depends: p99999");
}

#[test]
fn a_wide_fan_out_and_deep_alternatives() {
    let n = 20_000;
    let mut stanzas = vec![stanza(
        "root",
        "1",
        &format!(
            "Depends: {}\n",
            (0..n)
                .map(|i| format!("leaf{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )];
    stanzas.extend((0..n).map(|i| {
        // Every leaf may take any of 50 alternatives, all but the last missing.
        let alts: Vec<String> = (0..50).map(|a| format!("gone{i}x{a}")).collect();
        stanza(
            &format!("leaf{i}"),
            "1",
            &format!("Depends: {} | impl\n", alts.join(" | ")),
        )
    }));
    stanzas.push(stanza("impl", "1", "Conflicts: leaf7\n"));
    let idx = index(&stanzas);
    let r = resolve(&idx, &req(&["root"]), Base::None, &[]).unwrap();
    assert_eq!(r.selected.len(), n + 2);
    assert_eq!(r.conflicts, ["impl 1 amd64 conflicts with leaf7 1 amd64"]);
}

#[test]
fn a_dependency_cycle_resolves_once() {
    let idx = index(&[
        stanza("a", "1", "Depends: b\n"),
        stanza("b", "1", "Pre-Depends: c\n"),
        stanza("c", "1", "Depends: a\n"),
    ]);
    let r = resolve(&idx, &req(&["a"]), Base::None, &[]).unwrap();
    assert_eq!(names(&idx, &r.selected), ["a", "b", "c"]);
}

#[test]
fn an_unreadable_size_is_a_parse_error_naming_the_package() {
    let text = stanza("p", "1", "").replace("Size: 1", "Size: twelve");
    let e = match Index::parse(&text, "amd64") {
        Err(e) => e,
        Ok(_) => panic!("an index with Size: twelve was accepted"),
    };
    assert!(e.contains("package p 1: Size `twelve`"), "{e}");
}
