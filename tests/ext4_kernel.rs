//! The kernel is the final judge of kiln's ext4 and GPT: a Debian kernel mounts a disk
//! kiln wrote and checks every file's sha256, every symlink target, every mode, owner
//! and device number against kiln's manifest; then writes to it, and e2fsck must still
//! find the file system clean. Also: `sgdisk -v`, the partition table, `kiln ls` and
//! `kiln extract`, and reproducible disk images.

mod common;
use common::*;

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A host directory with the awkward cases, for an [[overlay]].
fn make_overlay(dir: &Path) {
    let w = |p: &str, b: &[u8]| {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b).unwrap();
    };
    for n in [0usize, 1, 4095, 4096, 4097, (1 << 20) + 1] {
        w(
            &format!("sizes/f{n}"),
            &(0..n).map(|i| (i * 7 % 255) as u8 + 1).collect::<Vec<_>>(),
        );
    }
    for i in 0..3000 {
        w(&format!("big/entry-{i:05}"), format!("{i}\n").as_bytes());
    }
    w("deep/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/leaf", b"deep");
    w(&format!("names/{}", "n".repeat(255)), b"long name");
    w("names/ünïcødé ☃", b"utf8");
    w("hard/a", b"shared by three names");
    std::fs::create_dir_all(dir.join("hard/other")).unwrap();
    std::fs::hard_link(dir.join("hard/a"), dir.join("hard/other/b")).unwrap();
    std::fs::create_dir_all(dir.join("elsewhere")).unwrap();
    std::fs::hard_link(dir.join("hard/a"), dir.join("elsewhere/c")).unwrap();
    w("bits/setuid", b"su");
    std::fs::set_permissions(
        dir.join("bits/setuid"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let sparse = std::fs::File::create(dir.join("sparse/file").as_path()).or_else(|_| {
        std::fs::create_dir_all(dir.join("sparse")).unwrap();
        std::fs::File::create(dir.join("sparse/file"))
    });
    let sparse = sparse.unwrap();
    sparse.set_len(64 << 20).unwrap();
    sparse.write_all_at(b"start", 0).unwrap();
    sparse.write_all_at(&[9u8; 5000], 40 << 20).unwrap();
    sparse.write_all_at(b"end", (64 << 20) - 3).unwrap();
    std::os::unix::fs::symlink("sizes/f4096", dir.join("fast-link")).unwrap();
    std::os::unix::fs::symlink("../".repeat(150) + "target", dir.join("slow-link")).unwrap();
}

fn disk_profile(dir: &Path) -> PathBuf {
    make_overlay(&dir.join("tree"));
    write(
        dir,
        "judged.toml",
        r#"version = 1
[output]
format = "disk"
free_space = "64M"

[[output.partition]]
label = "results"
size = "32M"

[[overlay]]
source = "tree"

[[directory]]
path = "/tmp"
mode = "1777"

[[file]]
path = "/owners/uid100000"
content = "high ids\n"
uid = 100000
gid = 100001

[[file]]
path = "/bin/ping"
content = "pretend\n"
mode = "0755"
xattrs = { "security.capability" = "0x0100000200200000000000000000000000000000" }

[[device]]
path = "/dev/console"
type = "char"
major = 5
minor = 1

[[device]]
path = "/dev/vda"
type = "block"
major = 254
minor = 0
mode = "0660"
gid = 6

[[device]]
path = "/dev/big-numbers"
type = "char"
major = 300
minor = 70000

[[device]]
path = "/run/fifo"
type = "fifo"
"#,
    )
}

const CHECK: &str = r#"#!/bin/sh
# Mounts the disk under test read-only, compares it with kiln's manifest, then writes to it.
set -u
dev=""
for d in /sys/block/*; do
    [ "$(cat "$d/serial" 2>/dev/null)" = under-test ] && dev="/dev/${d##*/}"
done
[ -n "$dev" ] || { echo "no disk with serial under-test"; exit 90; }
i=0
while [ ! -b "${dev}1" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /mnt
mount -t ext4 -o ro "${dev}1" /mnt || { echo "the kernel refused to mount ${dev}1"; exit 91; }
bad=0
checked=0
tab=$(printf '\t')
while IFS="$tab" read -r path type mode uid gid extra; do
    p="/mnt$path"
    checked=$((checked + 1))
    if [ "$type" = symlink ]; then
        if [ ! -L "$p" ]; then echo "not a symlink: $path"; bad=$((bad + 1)); continue; fi
        t=$(readlink "$p")
        [ "$t" = "$extra" ] || { echo "symlink $path -> $t, expected $extra"; bad=$((bad + 1)); }
        continue
    fi
    set -- $(stat -c '%f %u %g %t %T %i' "$p")
    got_mode=$(printf '%04o' $(( 0x$1 & 07777 )))
    got_type=$(( 0x$1 & 0170000 ))
    case "$type" in
        directory) want_type=16384 ;; file|hardlink) want_type=32768 ;; char) want_type=8192 ;;
        block) want_type=24576 ;; fifo) want_type=4096 ;; socket) want_type=49152 ;; *) want_type=0 ;;
    esac
    [ "$got_type" = "$want_type" ] || { echo "type of $path: $got_type, expected $type"; bad=$((bad + 1)); }
    [ "$got_mode" = "$mode" ] || { echo "mode of $path: $got_mode, expected $mode"; bad=$((bad + 1)); }
    [ "$2" = "$uid" ] && [ "$3" = "$gid" ] || { echo "owner of $path: $2:$3, expected $uid:$gid"; bad=$((bad + 1)); }
    case "$type" in
        file)
            s=$(sha256sum "$p" | cut -d ' ' -f 1)
            [ "$s" = "$extra" ] || { echo "content of $path differs"; bad=$((bad + 1)); } ;;
        hardlink)
            [ "$6" = "$(stat -c %i "/mnt$extra")" ] || { echo "$path is not a hard link to $extra"; bad=$((bad + 1)); } ;;
        char|block)
            [ "$(( 0x$4 )):$(( 0x$5 ))" = "$extra" ] || { echo "device $path: $(( 0x$4 )):$(( 0x$5 )), expected $extra"; bad=$((bad + 1)); } ;;
    esac
done < /expected
echo "checked $checked entries, $bad mismatches"

# Now write: new files, a big one, deletions and renames in the hashed directory.
mount -o remount,rw /mnt || exit 92
mkdir -p /mnt/written-by-guest
dd if=/dev/urandom of=/mnt/written-by-guest/blob bs=1M count=8 2>/dev/null
n=0
while [ $n -lt 300 ]; do echo $n > /mnt/written-by-guest/f$n; n=$((n + 1)); done
rm -f /mnt/big/entry-0000* /mnt/sizes/f4097
mv /mnt/big/entry-01000 /mnt/big/renamed
echo appended >> /mnt/sizes/f4096
ln -s /written-by-guest/blob /mnt/new-link
sync
umount /mnt || exit 93
[ $bad -gt 100 ] && bad=100
exit $bad
"#;

fn expected_list(manifest: &serde_json::Value) -> String {
    let mut out = String::new();
    for e in manifest["entries"].as_array().unwrap() {
        let kind = e["type"].as_str().unwrap();
        let extra = match kind {
            "file" => e["sha256"].as_str().unwrap().to_string(),
            "symlink" | "hardlink" => e["target"].as_str().unwrap().to_string(),
            "char" | "block" => format!("{}:{}", e["major"], e["minor"]),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\n",
            e["path"].as_str().unwrap(),
            kind,
            e["mode"].as_str().unwrap(),
            e["uid"],
            e["gid"],
            extra
        ));
    }
    out
}

fn fsck_partition(img: &Path, start_lba: u64) -> Result<(), String> {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset={}", img.display(), start_lba * 512))
        .output()
        .unwrap();
    if out.status.code() == Some(0) {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn the_kernel_reads_back_every_file_and_e2fsck_is_clean_after_the_guest_writes() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let p = disk_profile(d.path());
    let o = run(kiln().arg("build").arg(&p).arg("-o").arg(&out));
    assert!(o.status.success());
    let img = out.join("judged.raw");

    // The partition table, as specified and as sgdisk checks it.
    let v = Command::new("sgdisk").arg("-v").arg(&img).output().unwrap();
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("No problems found"),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    let dump = String::from_utf8(
        Command::new("sfdisk")
            .arg("-d")
            .arg(&img)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let parts: Vec<&str> = dump.lines().filter(|l| l.contains(" : start=")).collect();
    assert_eq!(parts.len(), 2, "{dump}");
    assert!(
        parts[0].contains("start=        2048")
            && parts[0].contains("type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709")
            && parts[0].contains("name=\"root\""),
        "{dump}"
    );
    let root_uuid = kiln::output::disk::root_partuuid("judged")
        .to_string()
        .to_uppercase();
    assert!(parts[0].contains(&format!("uuid={root_uuid}")), "{dump}");
    assert!(
        parts[1].contains("type=0FC63DAF-8483-4772-8E79-3D69D8477DE4")
            && parts[1].contains("name=\"results\""),
        "{dump}"
    );
    let start2: u64 = parts[1]
        .split("start=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(start2 % 2048, 0, "1 MiB alignment");
    fsck_partition(&img, 2048).unwrap();
    fsck_partition(&img, start2).unwrap();

    // The checker: a busybox initramfs with the manifest, booted on Debian's kernel.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("judged.manifest.json")).unwrap()).unwrap();
    write(d.path(), "expected.txt", &expected_list(&manifest));
    write(d.path(), "check.sh", CHECK);
    let checker = write(
        d.path(),
        "checker.toml",
        "version = 1\n[distribution]\nsuite = \"trixie\"\npackages = [\"busybox-static\"]\n[kernel]\npackage = \"linux-image-cloud-amd64\"\nmodules = [\"virtio_blk\"]\n[[symlink]]\npath = \"/bin/sh\"\ntarget = \"busybox\"\n[[file]]\npath = \"/expected\"\nsource = \"expected.txt\"\n[test]\nscript = \"check.sh\"\ntimeout = \"400s\"\n[qemu]\nmemory = \"1G\"\naccel = \"tcg\"\n",
    );
    let drive = format!("file={},format=raw,if=none,id=ut", img.display());
    let o = run(kiln().arg("test").arg(&checker).arg("-o").arg(&out).args([
        "--qemu-arg=-drive",
        &format!("--qemu-arg={drive}"),
        "--qemu-arg=-device",
        "--qemu-arg=virtio-blk-pci,drive=ut,serial=under-test",
    ]));
    let s = stdout(&o);
    assert!(
        s.contains(&format!(
            "checked {} entries, 0 mismatches",
            manifest["entries"].as_array().unwrap().len()
        )),
        "{s}"
    );
    assert_eq!(o.status.code(), Some(0), "{s}");

    // The kernel wrote to the file system; e2fsck must still find nothing wrong.
    fsck_partition(&img, 2048).unwrap();
    let ls = run(kiln().arg("ls").arg(&img));
    assert!(
        stdout(&ls).contains("/written-by-guest/f299"),
        "kiln's reader sees the guest's writes"
    );
}

#[test]
fn extract_round_trips_the_manifest() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let p = disk_profile(d.path());
    let o = run(kiln().arg("build").arg(&p).arg("-o").arg(&out));
    assert!(o.status.success());
    let img = out.join("judged.raw");
    let dest = d.path().join("extracted");
    let o = run(kiln().arg("extract").arg(&img).arg("/").arg(&dest));
    assert!(o.status.success());
    assert!(
        stderr(&o).contains("device nodes, FIFOs or sockets not copied"),
        "{}",
        stderr(&o)
    );
    let root = dest.join("root");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("judged.manifest.json")).unwrap()).unwrap();
    let mut files = 0;
    for e in manifest["entries"].as_array().unwrap() {
        let rel = e["path"].as_str().unwrap().trim_start_matches('/');
        let local = root.join(rel);
        match e["type"].as_str().unwrap() {
            "file" | "hardlink" => {
                assert_eq!(sha256_file(&local), e["sha256"].as_str().unwrap(), "{rel}");
                let md = std::fs::metadata(&local).unwrap();
                assert_eq!(
                    format!("{:04o}", md.permissions().mode() & 0o7777),
                    e["mode"].as_str().unwrap(),
                    "{rel}"
                );
                use std::os::unix::fs::MetadataExt;
                // Only root may give files away; anyone else gets their own files.
                // SAFETY: geteuid/getegid have no preconditions.
                let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
                let want = if euid == 0 {
                    (
                        e["uid"].as_u64().unwrap() as u32,
                        e["gid"].as_u64().unwrap() as u32,
                    )
                } else {
                    (euid, egid)
                };
                assert_eq!((md.uid(), md.gid()), want, "{rel}");
                files += 1;
            }
            "symlink" => assert_eq!(
                std::fs::read_link(&local).unwrap().to_str().unwrap(),
                e["target"].as_str().unwrap(),
                "{rel}"
            ),
            "directory" => {
                let md = std::fs::symlink_metadata(&local).unwrap();
                assert!(md.is_dir(), "{rel}");
                assert_eq!(
                    format!("{:04o}", md.permissions().mode() & 0o7777),
                    e["mode"].as_str().unwrap(),
                    "{rel}"
                );
            }
            _ => {}
        }
    }
    assert!(files > 3000);
    // A single path is followed inside the image when it is a symlink.
    let one = d.path().join("one");
    let o = run(kiln().arg("extract").arg(&img).arg("/fast-link").arg(&one));
    assert!(o.status.success());
    assert_eq!(std::fs::read(one.join("fast-link")).unwrap().len(), 4096);
}

#[test]
fn hostile_symlinks_cannot_make_extract_write_outside_the_destination() {
    let d = tempfile::tempdir().unwrap();
    let outside = d.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    // Image A: "big" is a symlink to a host directory outside the destination, plus links to / and upwards.
    let a = d.path().join("a");
    std::fs::create_dir(a.join("tree").as_path())
        .or_else(|_| std::fs::create_dir_all(a.join("tree")))
        .unwrap();
    std::os::unix::fs::symlink(&outside, a.join("tree/big")).unwrap();
    std::os::unix::fs::symlink("/", a.join("tree/to-root")).unwrap();
    std::os::unix::fs::symlink("../../../../../..", a.join("tree/climb")).unwrap();
    let pa = write(&a, "a.toml", "version = 1\nname = \"judged\"\n[output]\nformat = \"disk\"\nfree_space = \"16M\"\n[[overlay]]\nsource = \"tree\"\n");
    let o = run(kiln().arg("build").arg(&pa).arg("-o").arg(a.join("out")));
    assert!(o.status.success());
    // Image B: "big" is a real directory full of files.
    let b = d.path().join("b");
    let pb = disk_profile(&b);
    let o = run(kiln().arg("build").arg(&pb).arg("-o").arg(b.join("out")));
    assert!(o.status.success());

    let dest = d.path().join("dest");
    let o = run(kiln()
        .arg("extract")
        .arg(a.join("out/judged.raw"))
        .arg("/")
        .arg(&dest));
    assert!(o.status.success());
    assert_eq!(std::fs::read_link(dest.join("root/big")).unwrap(), outside);
    assert_eq!(
        std::fs::read_link(dest.join("root/to-root")).unwrap(),
        Path::new("/")
    );
    // Extracting B over A: root/big must not be followed out of the destination; the
    // symlink is replaced by the directory B holds.
    let o = run(kiln()
        .arg("extract")
        .arg(b.join("out/judged.raw"))
        .arg("/")
        .arg(&dest));
    assert!(o.status.success());
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing may be written outside the destination"
    );
    assert!(std::fs::symlink_metadata(dest.join("root/big"))
        .unwrap()
        .is_dir());
    assert!(dest.join("root/big/entry-02999").is_file());
    // A destination whose parent directories include a symlink is refused outright.
    std::fs::create_dir_all(d.path().join("dest2/root")).unwrap();
    std::fs::remove_dir(d.path().join("dest2/root")).unwrap();
    std::os::unix::fs::symlink(&outside, d.path().join("dest2/root")).unwrap();
    let o = run(kiln()
        .arg("extract")
        .arg(b.join("out/judged.raw"))
        .arg("/big")
        .arg(d.path().join("dest2/root")));
    assert!(
        o.status.success(),
        "a destination named by the user may itself be a symlink"
    );
    let o = run(kiln()
        .arg("extract")
        .arg(b.join("out/judged.raw"))
        .arg("/sizes")
        .arg(d.path().join("dest3")));
    assert!(o.status.success());
    // A symlink given as the path is resolved inside the image, never on the host.
    let o = run(kiln()
        .arg("extract")
        .arg(a.join("out/judged.raw"))
        .arg("/climb")
        .arg(d.path().join("climb")));
    assert!(o.status.success());
    assert!(
        d.path().join("climb/climb/lost+found").exists(),
        "climbing stops at the image's root"
    );
}

#[test]
fn the_same_disk_profile_builds_to_the_same_bytes() {
    let d = tempfile::tempdir().unwrap();
    let p = disk_profile(d.path());
    let mut shas = Vec::new();
    for i in 0..2 {
        let out = d.path().join(format!("out{i}"));
        let o = run(kiln().arg("build").arg(&p).arg("-o").arg(&out));
        assert!(o.status.success());
        shas.push(sha256_file(&out.join("judged.raw")));
    }
    assert_eq!(shas[0], shas[1]);
}

#[test]
fn kiln_reads_file_systems_mke2fs_made() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/os-release"), "ID=made-by-mke2fs\n").unwrap();
    std::os::unix::fs::symlink("etc/os-release", src.join("link")).unwrap();
    for i in 0..2000 {
        std::fs::write(src.join(format!("f{i}")), format!("{i}")).unwrap();
    }
    let img = d.path().join("mk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let st = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&src)
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    let o = run(kiln().arg("ls").arg(&img));
    let s = stdout(&o);
    assert!(
        s.contains("/etc/os-release")
            && s.contains("/link -> etc/os-release")
            && s.contains("/f1999"),
        "{s}"
    );
    let o = run(kiln()
        .arg("extract")
        .arg(&img)
        .arg("/link")
        .arg(d.path().join("x")));
    assert!(o.status.success());
    assert_eq!(
        std::fs::read_to_string(d.path().join("x/link")).unwrap(),
        "ID=made-by-mke2fs\n"
    );
}

#[test]
fn a_qcow2_copy_holds_the_same_disk() {
    let d = tempfile::tempdir().unwrap();
    let p = write(
        d.path(),
        "q.toml",
        "version = 1\n[output]\nformat = \"disk\"\nqcow2 = true\nfree_space = \"8M\"\n[[file]]\npath = \"/hello\"\ncontent = \"hi\\n\"\n",
    );
    let o = run(kiln()
        .arg("build")
        .arg(&p)
        .arg("-o")
        .arg(d.path().join("out")));
    assert!(o.status.success());
    let raw = d.path().join("out/q.raw");
    let qcow = d.path().join("out/q.qcow2");
    let info = Command::new("qemu-img")
        .arg("info")
        .arg(&qcow)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&info.stdout).contains("file format: qcow2"));
    let cmp = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(&raw)
        .arg(&qcow)
        .output()
        .unwrap();
    assert!(
        cmp.status.success(),
        "{}",
        String::from_utf8_lossy(&cmp.stdout)
    );
}
