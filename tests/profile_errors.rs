//! Profile diagnostics: every error names the file, line, column and key, and a bad
//! profile writes nothing.

mod common;
use common::*;

fn load_err(dir: &std::path::Path, name: &str) -> String {
    let e = kiln::profile::load(&dir.join(name)).expect_err("profile should be rejected");
    e.to_string()
}

#[test]
fn unknown_key_suggests_the_nearest_valid_key() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "p.toml",
        "version = 1\n\n[qemu]\nmemroy = \"1G\"\n",
    );
    let e = load_err(d.path(), "p.toml");
    assert!(e.contains("p.toml:4:1"), "{e}");
    assert!(e.contains("qemu.memroy"), "{e}");
    assert!(e.contains("did you mean `memory`?"), "{e}");
    assert!(e.contains("4 | memroy = \"1G\""), "quotes the line: {e}");
}

#[test]
fn unknown_key_in_array_of_tables() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "p.toml", "version = 1\n[[file]]\npath = \"/a\"\ncontent = \"x\"\n[[file]]\npath = \"/b\"\ncontnet = \"y\"\n");
    let e = load_err(d.path(), "p.toml");
    assert!(e.contains("p.toml:7:1"), "{e}");
    assert!(e.contains("file[1].contnet"), "{e}");
    assert!(e.contains("did you mean `content`?"), "{e}");
}

#[test]
fn wrong_type_points_at_the_value() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "p.toml", "version = 1\n[qemu]\ncpus = \"two\"\n");
    let e = load_err(d.path(), "p.toml");
    assert!(e.contains("p.toml:3:8"), "{e}");
    assert!(e.contains("qemu.cpus"), "{e}");
    assert!(e.contains("invalid type"), "{e}");
}

#[test]
fn bad_size_value_is_located() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "p.toml",
        "version = 1\n[qemu]\nmemory = \"12 parsecs\"\n",
    );
    let e = load_err(d.path(), "p.toml");
    assert!(e.contains("p.toml:3:10"), "{e}");
    assert!(e.contains("size"), "{e}");
}

#[test]
fn unknown_enum_value_suggests() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "p.toml",
        "version = 1\n[output]\nformat = \"initramf\"\n",
    );
    let e = load_err(d.path(), "p.toml");
    assert!(e.contains("p.toml:3:10"), "{e}");
    assert!(e.contains("did you mean `initramfs`?"), "{e}");
}

#[test]
fn missing_include_points_at_the_include() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "p.toml",
        "version = 1\ninclude = [\"base.toml\", \"nope.toml\"]\n",
    );
    write(d.path(), "base.toml", "[qemu]\ncpus = 1\n");
    let e = load_err(d.path(), "p.toml");
    assert!(e.contains("p.toml:2:25"), "{e}");
    assert!(e.contains("include[1]") && e.contains("nope.toml"), "{e}");
}

#[test]
fn include_cycle_is_reported_with_the_chain() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "p.toml", "version = 1\ninclude = [\"a.toml\"]\n");
    write(d.path(), "a.toml", "include = [\"sub/b.toml\"]\n");
    write(d.path(), "sub/b.toml", "# b\ninclude = [\"../a.toml\"]\n");
    let e = load_err(d.path(), "p.toml");
    assert!(e.contains("b.toml:2:12"), "{e}");
    assert!(e.contains("include cycle"), "{e}");
    assert!(e.contains("a.toml → ") && e.contains("b.toml → "), "{e}");
}

#[test]
fn errors_inside_included_files_name_that_file() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "p.toml",
        "version = 1\ninclude = [\"inc/base.toml\"]\n",
    );
    write(d.path(), "inc/base.toml", "[test]\ncomand = \"true\"\n");
    let e = load_err(d.path(), "p.toml");
    assert!(e.contains("inc/base.toml:2:1"), "{e}");
    assert!(e.contains("did you mean `command`?"), "{e}");
}

#[test]
fn toml_syntax_errors_are_located() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "p.toml", "version = 1\n[qemu\n");
    let e = load_err(d.path(), "p.toml");
    assert!(e.contains("p.toml:2:"), "{e}");
    assert!(e.contains("invalid TOML"), "{e}");
}

#[test]
fn missing_version_and_unsupported_version() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "p.toml", "[qemu]\ncpus = 1\n");
    let e = load_err(d.path(), "p.toml");
    assert!(
        e.contains("missing required key `version`") && e.contains("version = 1"),
        "{e}"
    );
    write(d.path(), "q.toml", "version = 2\n");
    let e = load_err(d.path(), "q.toml");
    assert!(
        e.contains("q.toml:1:11") && e.contains("version 2 is newer than this kiln reads"),
        "{e}"
    );
}

#[test]
fn semantic_errors_point_at_the_table() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "p.toml",
        "version = 1\n\n[[file]]\npath = \"/etc/x\"\n",
    );
    let e = load_err(d.path(), "p.toml");
    assert!(e.contains("p.toml:3:1"), "{e}");
    assert!(e.contains("needs `source`"), "{e}");
    write(
        d.path(),
        "q.toml",
        "version = 1\n[[file]]\npath = \"etc/x\"\ncontent = \"\"\n",
    );
    let e = load_err(d.path(), "q.toml");
    assert!(e.contains("file[0].path") && e.contains("`/etc/x`"), "{e}");
    write(
        d.path(),
        "r.toml",
        "version = 1\n[[overlay]]\nsource = \"missing-dir\"\n",
    );
    let e = load_err(d.path(), "r.toml");
    assert!(
        e.contains("r.toml:2:1") && e.contains("missing-dir") && e.contains("overlay[0].source"),
        "{e}"
    );
    write(
        d.path(),
        "s.toml",
        "version = 1\n[kernel]\npath = \"bzImage\"\ndebug_symbols = true\n",
    );
    let e = load_err(d.path(), "s.toml");
    assert!(
        e.contains("s.toml:4:") && e.contains("[kernel] vmlinux") && e.contains("-dbg"),
        "{e}"
    );
}

#[test]
fn merge_rules_scalars_override_lists_append_tables_merge() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "base.toml",
        "[qemu]\nmemory = \"512M\"\ncpus = 1\nargs = [\"-a\"]\n[kernel]\ncmdline = [\"quiet\"]\n[[file]]\npath = \"/base\"\ncontent = \"b\"\n",
    );
    write(
        d.path(),
        "mid.toml",
        "include = [\"base.toml\"]\n[qemu]\ncpus = 2\nargs = [\"-b\"]\n",
    );
    write(
        d.path(),
        "p.toml",
        "version = 1\ninclude = [\"mid.toml\", \"base.toml\"]\n[qemu]\nmemory = \"2G\"\n[kernel]\ncmdline = [\"loglevel=8\"]\n[[file]]\npath = \"/top\"\ncontent = \"t\"\n",
    );
    let lp = kiln::profile::load(&d.path().join("p.toml")).unwrap();
    let p = &lp.profile;
    assert_eq!(
        p.qemu.memory.unwrap().0,
        2 << 30,
        "the including file overrides scalars"
    );
    assert_eq!(p.qemu.cpus, Some(2), "later include overrides earlier");
    assert_eq!(
        p.qemu.args,
        vec!["-a", "-b"],
        "lists append, includes first; base.toml layered once"
    );
    assert_eq!(p.kernel.cmdline, vec!["quiet", "loglevel=8"]);
    let paths: Vec<_> = p.file.iter().map(|f| f.path.to_string()).collect();
    assert_eq!(paths, vec!["/base", "/top"]);
    assert_eq!(lp.name, "p");
}

#[test]
fn paths_resolve_relative_to_the_file_that_names_them() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "inc/data/motd", "hi\n");
    write(
        d.path(),
        "inc/base.toml",
        "[[file]]\npath = \"/etc/motd\"\nsource = \"data/motd\"\n",
    );
    write(
        d.path(),
        "p.toml",
        "version = 1\ninclude = [\"inc/base.toml\"]\n",
    );
    let lp = kiln::profile::load(&d.path().join("p.toml")).unwrap();
    let src = lp.profile.file[0].source.as_ref().unwrap();
    assert_eq!(std::fs::read_to_string(&src.0).unwrap(), "hi\n");
}

#[test]
fn a_bad_profile_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    write(
        d.path(),
        "p.toml",
        "version = 1\n[test]\ncommand = \"true\"\ntimeout = \"forever\"\n",
    );
    let o = run(kiln()
        .arg("build")
        .arg(d.path().join("p.toml"))
        .arg("--out-dir")
        .arg(&out));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("p.toml:4:11"), "{}", stderr(&o));
    assert!(!out.exists(), "nothing may be written for a bad profile");
}

#[test]
fn a_failing_build_leaves_the_previous_image_alone() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let p = write(
        d.path(),
        "p.toml",
        "version = 1\n[[file]]\npath = \"/init\"\ncontent = \"#!/bin/sh\\n\"\nmode = \"0755\"\n",
    );
    let o = run(kiln().arg("build").arg(&p).arg("-o").arg(&out));
    assert!(o.status.success());
    let before = sha256_file(&out.join("p.cpio.zst"));
    // A template error appears only while the tree is assembled, after the profile loaded.
    write(
        d.path(),
        "p.toml",
        "version = 1\n[[file]]\npath = \"/init\"\ncontent = \"{{nope}}\"\ntemplate = true\n",
    );
    let o = run(kiln().arg("build").arg(&p).arg("-o").arg(&out));
    assert_eq!(
        o.status.code(),
        Some(2),
        "a profile's mistake, found late, still exits 2"
    );
    assert!(stderr(&o).contains("nope"), "{}", stderr(&o));
    assert!(stderr(&o).contains("p.toml:2"), "{}", stderr(&o));
    assert_eq!(sha256_file(&out.join("p.cpio.zst")), before);
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn writer_options_are_parsed_once_at_load_and_located() {
    let d = tempfile::tempdir().unwrap();
    let base = "version = 1\n[output]\nformat = \"disk\"\n";
    write(d.path(), "a.toml", &format!("{base}root_size = \"huge\"\n"));
    let e = load_err(d.path(), "a.toml");
    assert!(
        e.contains("a.toml:4:13") && e.contains("output.root_size"),
        "{e}"
    );
    assert!(e.contains("`huge` is not a size"), "{e}");
    write(d.path(), "b.toml", &format!("{base}free_space = \"x%\"\n"));
    let e = load_err(d.path(), "b.toml");
    assert!(
        e.contains("b.toml:4:14") && e.contains("output.free_space"),
        "{e}"
    );
    write(
        d.path(),
        "c.toml",
        &format!(
            "{base}[[output.partition]]\nlabel = \"data\"\nsize = \"8M\"\ntype = \"usr-ish\"\n"
        ),
    );
    let e = load_err(d.path(), "c.toml");
    assert!(
        e.contains("c.toml:7:8") && e.contains("output.partition[0].type"),
        "{e}"
    );
    assert!(e.contains("use root, esp, linux-generic"), "{e}");
    write(
        d.path(),
        "e.toml",
        &format!(
            "{base}[[output.partition]]\nlabel = \"data\"\nsize = \"8M\"\nfilesystem = \"btrfs\"\n"
        ),
    );
    let e = load_err(d.path(), "e.toml");
    assert!(e.contains("output.partition[0].filesystem"), "{e}");
    assert!(e.contains("one of: ext4, none"), "{e}");
    // And valid values load into their typed form.
    write(
        d.path(),
        "ok.toml",
        &format!("{base}root_size = \"2G\"\nfree_space = \"25%\"\n[[output.partition]]\nlabel = \"var\"\nsize = \"8M\"\ntype = \"var\"\nfilesystem = \"none\"\n"),
    );
    let lp = kiln::profile::load(&d.path().join("ok.toml")).unwrap();
    use kiln::output::options::{FreeSpace, PartitionFs, PartitionType, RootSize};
    assert_eq!(lp.profile.output.root_size, Some(RootSize::Fixed(2 << 30)));
    assert_eq!(lp.profile.output.free_space, Some(FreeSpace::Percent(25)));
    assert_eq!(
        lp.profile.output.partition[0].kind,
        Some(PartitionType::Var)
    );
    assert_eq!(
        lp.profile.output.partition[0].filesystem,
        Some(PartitionFs::None)
    );
}

#[test]
fn a_host_profile_is_an_initramfs_whose_tests_are_commands() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "disk.toml",
        "version = 1\n[output]\nformat = \"disk\"\n\n[host]\nshare = \"virtiofs\"\n",
    );
    let e = load_err(d.path(), "disk.toml");
    assert!(e.contains("disk.toml:5"), "{e}");
    assert!(
        e.contains("[host] boots the host's userspace from an initramfs"),
        "{e}"
    );
    write(d.path(), "s.sh", "true\n");
    write(
        d.path(),
        "script.toml",
        "version = 1\n[host]\n[[test]]\nname = \"a\"\nscript = \"s.sh\"\n",
    );
    let e = load_err(d.path(), "script.toml");
    assert!(e.contains("script.toml:3"), "{e}");
    assert!(e.contains("is a `command`"), "{e}");
    write(
        d.path(),
        "bad.toml",
        "version = 1\n[host]\nshare = \"nfs\"\n",
    );
    let e = load_err(d.path(), "bad.toml");
    assert!(e.contains("bad.toml:3") && e.contains("host.share"), "{e}");
}

#[test]
fn a_chain_of_ten_thousand_includes_stops_at_the_depth_limit() {
    let d = tempfile::tempdir().unwrap();
    let n = 10_000;
    for i in 0..n {
        let next = if i + 1 < n {
            format!("include = [\"p{}.toml\"]\n", i + 1)
        } else {
            String::new()
        };
        write(
            d.path(),
            &format!("p{i}.toml"),
            &format!("version = 1\n{next}"),
        );
    }
    let start = std::time::Instant::now();
    let o = run(kiln()
        .arg("build")
        .arg(d.path().join("p0.toml"))
        .arg("-o")
        .arg(d.path().join("out")));
    assert_eq!(
        o.status.code(),
        Some(2),
        "a clear error, not a stack overflow"
    );
    let e = stderr(&o);
    assert!(
        e.contains(&format!("p{}.toml", kiln::profile::MAX_INCLUDE_DEPTH - 1)),
        "{e}"
    );
    assert!(e.contains("include[0]"), "{e}");
    assert!(e.contains("at most 32"), "{e}");
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    assert!(!d.path().join("out").exists());
}

#[test]
fn partitions_may_not_share_a_label_or_take_roots() {
    let d = tempfile::tempdir().unwrap();
    let part = |label: &str| format!("[[output.partition]]\nlabel = \"{label}\"\nsize = \"16M\"\n");
    let head = "version = 1\n[output]\nformat = \"disk\"\n";
    write(
        d.path(),
        "twice.toml",
        &format!("{head}{}{}", part("data"), part("data")),
    );
    let e = load_err(d.path(), "twice.toml");
    assert!(e.contains("twice.toml:7"), "{e}");
    assert!(e.contains("already labelled \"data\""), "{e}");
    write(d.path(), "root.toml", &format!("{head}{}", part("root")));
    let e = load_err(d.path(), "root.toml");
    assert!(e.contains("root.toml:4"), "{e}");
    assert!(e.contains("root partition's"), "{e}");
}

#[test]
fn an_undefined_template_variable_is_a_located_profile_error() {
    let d = tempfile::tempdir().unwrap();
    let p = busybox_profile(
        d.path(),
        "tpl",
        "[[file]]\npath = \"/etc/motd\"\ntemplate = true\ncontent = \"hello {{nobody}}\"\n",
    );
    let o = run(kiln()
        .arg("build")
        .arg(&p)
        .arg("-o")
        .arg(d.path().join("out")));
    assert_eq!(o.status.code(), Some(2), "a bad profile exits 2");
    let e = stderr(&o);
    assert!(e.contains("tpl.toml:"), "{e}");
    assert!(e.contains("nobody"), "{e}");
    assert!(e.contains("[variables]"), "{e}");
}

#[test]
fn a_file_system_too_small_is_a_located_error_at_load_time() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "part.toml",
        "version = 1\n[output]\nformat = \"disk\"\n[[output.partition]]\nlabel = \"data\"\nsize = \"100K\"\n",
    );
    let e = load_err(d.path(), "part.toml");
    assert!(e.contains("part.toml:4"), "{e}");
    assert!(
        e.contains("at least 16 MiB") && e.contains("100.0 KiB"),
        "{e}"
    );
    // A blank partition may be small.
    write(
        d.path(),
        "blank.toml",
        "version = 1\n[output]\nformat = \"disk\"\n[[output.partition]]\nlabel = \"data\"\nsize = \"100K\"\nfilesystem = \"none\"\n",
    );
    assert!(kiln::profile::load(&d.path().join("blank.toml")).is_ok());
    write(
        d.path(),
        "results.toml",
        "version = 1\n[test]\ncommand = \"true\"\nresults = \"/r\"\nresults_size = \"1M\"\n",
    );
    let e = load_err(d.path(), "results.toml");
    assert!(
        e.contains("results_size") && e.contains("at least 16 MiB"),
        "{e}"
    );
}
