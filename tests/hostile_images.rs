//! What comes back from a guest is untrusted: results disks crafted with the real
//! mke2fs and debugfs (set-id files, foreign owners, names that are not UTF-8, directory
//! cycles, sparse files far larger than the disk, unreadable symlinks) are copied in
//! bounded time and space, contained, and reported one entry at a time.

mod common;
use common::*;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// An 8 MiB ext4 image made by mke2fs from `tree`, then changed by `debugfs` commands.
fn image(dir: &Path, name: &str, tree: &Path, debugfs: &[&str]) -> PathBuf {
    let img = dir.join(name);
    let o = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(tree)
        .arg(&img)
        .arg("8M")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for cmd in debugfs {
        let o = Command::new("debugfs")
            .args(["-w", "-R", cmd])
            .arg(&img)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    img
}

fn results_tree(dir: &Path) -> PathBuf {
    let t = dir.join("tree");
    std::fs::create_dir_all(t.join("sub")).unwrap();
    std::fs::write(t.join("sub/result.txt"), "42\n").unwrap();
    let suid = t.join("sub/suid-shell");
    std::fs::write(&suid, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(
        t.join(std::ffi::OsStr::from_bytes(b"caf\xe9.log")),
        "latin-1\n",
    )
    .unwrap();
    t
}

#[test]
fn a_guests_files_lose_set_id_bits_and_owners_and_odd_names_still_arrive() {
    let d = tempfile::tempdir().unwrap();
    let tree = results_tree(d.path());
    // The guest's files belong to uid 4242 and to root with the set-uid bit.
    let img = image(
        d.path(),
        "results.img",
        &tree,
        &[
            "set_inode_field /sub/result.txt uid 4242",
            "set_inode_field /sub/suid-shell uid 0",
        ],
    );
    let dest = d.path().join("out");
    let r = kiln::run::results::collect(&img, &dest).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.files, 3);
    let me = unsafe { libc::geteuid() };
    let suid = std::fs::metadata(dest.join("sub/suid-shell")).unwrap();
    assert_eq!(suid.mode() & 0o7777, 0o755, "no set-uid bit on the host");
    assert_eq!(suid.uid(), me);
    assert_eq!(
        std::fs::metadata(dest.join("sub/result.txt"))
            .unwrap()
            .uid(),
        me
    );
    let odd = dest.join(std::ffi::OsStr::from_bytes(b"caf\xe9.log"));
    assert_eq!(std::fs::read_to_string(odd).unwrap(), "latin-1\n");
    // Copied once: the odd name did not turn into "" and copy the root again.
    let top: Vec<_> = std::fs::read_dir(&dest).unwrap().collect();
    assert_eq!(top.len(), 2, "{top:?}");
    // `kiln extract` of one's own image keeps the bits (as root, the owners too).
    let own = d.path().join("own");
    let o = run(kiln().arg("extract").arg(&img).arg("/sub").arg(&own));
    assert!(o.status.success());
    let kept = std::fs::metadata(own.join("sub/suid-shell")).unwrap();
    if me == 0 {
        assert_eq!(kept.mode() & 0o7777, 0o4755);
    }
}

#[test]
fn a_directory_cycle_stops_the_walk_in_bounded_time() {
    let d = tempfile::tempdir().unwrap();
    let tree = results_tree(d.path());
    // Two names in /sub for /sub itself: an exponential tree without a bound.
    let img = image(
        d.path(),
        "cycle.img",
        &tree,
        &["link /sub /sub/again", "link /sub /sub/more"],
    );
    let before = files_outside(d.path(), &["out"]);
    let start = Instant::now();
    let e = kiln::run::results::collect(&img, &d.path().join("out")).unwrap_err();
    assert!(format!("{e:#}").contains("cycle"), "{e:#}");
    let o = run(kiln().arg("ls").arg(&img));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cycle"), "{}", stderr(&o));
    assert_eq!(files_outside(d.path(), &["out"]), before);
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_sparse_file_larger_than_the_disk_is_not_copied_out_whole() {
    let d = tempfile::tempdir().unwrap();
    let tree = results_tree(d.path());
    let f = std::fs::File::create(tree.join("huge.bin")).unwrap();
    f.set_len(1 << 40).unwrap();
    drop(f);
    let img = image(d.path(), "sparse.img", &tree, &[]);
    let before = files_outside(d.path(), &["out"]);
    let start = Instant::now();
    let dest = d.path().join("out");
    let e = kiln::run::results::collect(&img, &dest).unwrap_err();
    assert!(
        format!("{e:#}").contains("more than the image's own"),
        "{e:#}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    let written: u64 = walkdir::WalkDir::new(&dest)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum();
    assert!(written <= 16 << 20, "{written} bytes written");
    assert_eq!(files_outside(d.path(), &["out"]), before);
}

#[test]
fn an_unreadable_symlink_is_reported_and_the_rest_listed_and_copied() {
    // One component of 4095 bytes: valid ext4 (e2fsck is clean) that kiln writes and
    // mke2fs will not, but no valid path for ext4-view.
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "link.toml",
        &format!(
            "version = 1\n[output]\nformat = \"disk\"\n[[directory]]\npath = \"/sub\"\n[[file]]\npath = \"/sub/result.txt\"\ncontent = \"42\\n\"\n[[symlink]]\npath = \"/long-link\"\ntarget = \"{}\"\n",
            "x".repeat(4095)
        ),
    );
    let out = d.path().join("out");
    let o = run(kiln().arg("build").arg(&p).arg("-o").arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let img = out.join("link.raw");
    let o = run(kiln().arg("ls").arg(&img));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("/sub/result.txt"), "{}", stdout(&o));
    assert!(stderr(&o).contains("/long-link"), "{}", stderr(&o));
    let dest = d.path().join("results");
    let r = kiln::run::results::collect(&img, &dest).unwrap();
    assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
    assert!(r.problems[0].contains("/long-link"), "{:?}", r.problems);
    assert_eq!(
        std::fs::read_to_string(dest.join("sub/result.txt")).unwrap(),
        "42\n"
    );
}

#[test]
fn more_hard_links_than_ext4_allows_are_refused_not_written_corrupt() {
    let d = tempfile::tempdir().unwrap();
    let links: String = (0..65_001)
        .map(|i| format!("[[hardlink]]\npath = \"/l/{i}\"\ntarget = \"/f\"\n"))
        .collect();
    let p = write(
        d.path(),
        "links.toml",
        &format!(
            "version = 1\n[output]\nformat = \"disk\"\n[[directory]]\npath = \"/l\"\n[[file]]\npath = \"/f\"\ncontent = \"x\"\n{links}"
        ),
    );
    let out = d.path().join("out");
    let o = run(kiln().arg("build").arg(&p).arg("-o").arg(&out));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("/f has 65002 names"), "{e}");
    assert!(e.contains("at most 65000"), "{e}");
    assert!(!out.join("links.raw").exists());
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe {
        libc::setxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {name}: {}", std::io::Error::last_os_error());
}

#[test]
fn overlay_xattrs_reach_a_disk_and_an_initramfs_says_it_drops_them() {
    let d = tempfile::tempdir().unwrap();
    let overlay = d.path().join("overlay");
    std::fs::create_dir_all(overlay.join("usr/bin")).unwrap();
    let ping = overlay.join("usr/bin/ping");
    std::fs::write(&ping, "#!/bin/sh\n").unwrap();
    set_xattr(&ping, "user.kiln", b"hello");
    // cap_net_raw+ep, as setcap writes it (VFS_CAP_REVISION_2).
    let cap: [u8; 20] = [
        0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    if unsafe { libc::geteuid() } == 0 {
        set_xattr(&ping, "security.capability", &cap);
    }
    let body = format!("[[overlay]]\nsource = \"{}\"\n", overlay.display());
    let disk = write(
        d.path(),
        "xa.toml",
        &format!("version = 1\n[output]\nformat = \"disk\"\n{body}"),
    );
    let out = d.path().join("out");
    let o = run(kiln().arg("build").arg(&disk).arg("-o").arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let raw = out.join("xa.raw");
    // The root partition starts at 1 MiB; debugfs reads it through its offset.
    let o = Command::new("debugfs")
        .args(["-R", "ea_list /usr/bin/ping"])
        .arg(format!("{}?offset=1048576", raw.display()))
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&o.stdout);
    assert!(
        listed.contains("user.kiln") && listed.contains("hello"),
        "{listed}"
    );
    if unsafe { libc::geteuid() } == 0 {
        assert!(listed.contains("security.capability"), "{listed}");
    }
    let initramfs = busybox_profile(d.path(), "xi", &body);
    let o = run(kiln().arg("build").arg(&initramfs).arg("-o").arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot hold extended attributes"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("/usr/bin/ping (") && stderr(&o).contains("user.kiln)"),
        "{}",
        stderr(&o)
    );
}
