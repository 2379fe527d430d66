//! e2fsck judges kiln's ext4: an edge-case corpus, both descriptor sizes, fixed sizes,
//! and property-based random trees. Every image must pass `e2fsck -fn` untouched.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use kiln::output::ext4::writer::{Prepared, Target};
use kiln::output::ext4::{Ext4Options, SizeSpec};
use kiln::output::options::FreeSpace;
use kiln::tree::{Data, Entry, Kind, Meta, Tree};

fn opts(force_64bit: bool) -> Ext4Options {
    Ext4Options {
        size: SizeSpec::Auto {
            free: FreeSpace::Percent(10),
            min_bytes: 0,
        },
        uuid: *b"kiln-test-uuid-1",
        hash_seed: *b"kiln-hash-seed-1",
        label: "corpus".into(),
        time: 1_700_000_000,
        force_64bit,
    }
}

fn image(
    tree: &Tree,
    o: &Ext4Options,
    path: &std::path::Path,
) -> anyhow::Result<kiln::output::ext4::Ext4Report> {
    let p = Prepared::new(tree, o)?;
    let f = std::fs::File::create(path)?;
    f.set_len(p.bytes())?;
    p.write(&Target {
        file: &f,
        offset: 0,
        watch: None,
    })
}

/// e2fsck's verdict: Ok when it found nothing to fix.
pub fn fsck(path: &std::path::Path) -> Result<(), String> {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(path)
        .output()
        .expect("e2fsck installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.code() == Some(0) {
        Ok(())
    } else {
        Err(text)
    }
}

fn debugfs(path: &std::path::Path, cmd: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(cmd)
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn m(mode: u32) -> Meta {
    Meta::new(mode, 1_700_000_000)
}

fn file(bytes: Vec<u8>) -> Kind {
    Kind::File(Data::bytes(bytes))
}

fn corpus(dir: &std::path::Path) -> Tree {
    let mut t = Tree::new(1_700_000_000);
    let big = t.insert("big", Entry::new(Kind::Dir, m(0o755)));
    big.unwrap();
    for i in 0..10_000 {
        t.insert(
            &format!("big/entry-{i:05}-with-a-longer-name"),
            Entry::new(file(format!("{i}\n").into_bytes()), m(0o644)),
        )
        .unwrap();
    }
    for n in [0usize, 1, 4095, 4096, 4097, 65536, 1 << 20] {
        let bytes: Vec<u8> = (0..n).map(|i| (i % 251) as u8 | 1).collect();
        t.insert(&format!("sizes/f{n}"), Entry::new(file(bytes), m(0o644)))
            .unwrap();
    }
    // A 4 GiB sparse file from the host: data at the start, the middle and the end.
    let sparse = dir.join("sparse");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&sparse).unwrap();
        f.set_len(4 << 30).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(&[7u8; 10000], 2 << 30).unwrap();
        f.write_all_at(b"end", (4 << 30) - 3).unwrap();
    }
    t.insert(
        "sparse/4g",
        Entry::new(Kind::File(Data::host(sparse, 4 << 30)), m(0o600)),
    )
    .unwrap();
    // A file of alternating data and zero blocks: many extents, an extent tree.
    let mut frag = vec![0u8; 4096 * 3000];
    for b in (0..3000).step_by(2) {
        frag[b * 4096] = 1;
    }
    t.insert("sparse/fragmented", Entry::new(file(frag), m(0o644)))
        .unwrap();
    t.insert(
        "links/short",
        Entry::new(Kind::Symlink("x".repeat(59)), m(0o777)),
    )
    .unwrap();
    t.insert(
        "links/sixty",
        Entry::new(Kind::Symlink("y".repeat(60)), m(0o777)),
    )
    .unwrap();
    t.insert(
        "links/long",
        Entry::new(Kind::Symlink("z/".repeat(2000)), m(0o777)),
    )
    .unwrap();
    let deep = (0..40)
        .map(|i| format!("level{i}"))
        .collect::<Vec<_>>()
        .join("/");
    t.insert(
        &format!("deep/{deep}/leaf"),
        Entry::new(file(b"deep".to_vec()), m(0o644)),
    )
    .unwrap();
    t.insert(
        &format!("names/{}", "n".repeat(255)),
        Entry::new(file(b"long name".to_vec()), m(0o644)),
    )
    .unwrap();
    t.insert(
        "names/ünïcødé ☃",
        Entry::new(file(b"utf8".to_vec()), m(0o644)),
    )
    .unwrap();
    t.insert(
        "dev/console",
        Entry::new(Kind::CharDev { major: 5, minor: 1 }, m(0o600)),
    )
    .unwrap();
    t.insert(
        "dev/vda",
        Entry::new(
            Kind::BlockDev {
                major: 254,
                minor: 0,
            },
            m(0o660).owner(0, 6),
        ),
    )
    .unwrap();
    t.insert(
        "dev/bignum",
        Entry::new(
            Kind::CharDev {
                major: 511,
                minor: 300_000,
            },
            m(0o600),
        ),
    )
    .unwrap();
    t.insert("dev/fifo", Entry::new(Kind::Fifo, m(0o644)))
        .unwrap();
    t.insert("dev/socket", Entry::new(Kind::Socket, m(0o755)))
        .unwrap();
    t.insert(
        "hard/a",
        Entry::new(file(b"shared".to_vec()), m(0o640).owner(3, 4)),
    )
    .unwrap();
    t.insert(
        "hard/other/b",
        Entry::new(Kind::HardLink("hard/a".into()), m(0o640)),
    )
    .unwrap();
    t.insert(
        "elsewhere/c",
        Entry::new(Kind::HardLink("hard/a".into()), m(0o640)),
    )
    .unwrap();
    t.insert("bits/setuid", Entry::new(file(b"su".to_vec()), m(0o4755)))
        .unwrap();
    t.insert(
        "bits/setgid",
        Entry::new(file(b"sg".to_vec()), m(0o2755).owner(0, 5)),
    )
    .unwrap();
    t.insert("bits/sticky", Entry::new(Kind::Dir, m(0o1777)))
        .unwrap();
    t.insert(
        "owners/uid100000",
        Entry::new(file(b"u".to_vec()), m(0o644).owner(100_000, 100_001)),
    )
    .unwrap();
    let mut cap = m(0o755);
    cap.xattrs.insert(
        "security.capability".into(),
        vec![
            0x01, 0, 0, 0x02, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    );
    t.insert("xattr/ping", Entry::new(file(b"ping".to_vec()), cap))
        .unwrap();
    let mut many = m(0o644);
    for i in 0..8 {
        many.xattrs
            .insert(format!("user.attribute-number-{i}"), vec![b'v'; 100 + i]);
    }
    t.insert("xattr/spilled", Entry::new(file(b"x".to_vec()), many))
        .unwrap();
    t
}

#[test]
fn the_edge_case_corpus_passes_e2fsck_with_both_descriptor_sizes() {
    let d = tempfile::tempdir().unwrap();
    let tree = corpus(d.path());
    for force64 in [false, true] {
        let img = d.path().join(format!("corpus-{force64}.img"));
        let r = image(&tree, &opts(force64), &img).unwrap();
        if let Err(e) = fsck(&img) {
            panic!("e2fsck (64bit={force64}):\n{e}");
        }
        assert_eq!(
            r.inodes_used as usize,
            11 + (tree.len() - 1) - 2,
            "inodes: root, lost+found, entries minus hard links"
        );
        let features = debugfs(&img, "features");
        assert!(
            features.contains("metadata_csum")
                && features.contains("has_journal")
                && features.contains("dir_index"),
            "{features}"
        );
        assert_eq!(features.contains("64bit"), force64, "{features}");
    }
    let img = d.path().join("corpus-false.img");
    let s = debugfs(&img, "stat /dev/bignum");
    assert!(
        s.contains("Device major/minor number: 511:300000") || s.contains("511:300000"),
        "{s}"
    );
    let s = debugfs(&img, "stat /owners/uid100000");
    assert!(
        s.contains("User: 100000") && s.contains("Group: 100001"),
        "{s}"
    );
    let s = debugfs(&img, "stat /hard/a");
    assert!(s.contains("Links: 3"), "{s}");
    let s = debugfs(&img, "ea_list /xattr/ping");
    assert!(s.contains("security.capability"), "{s}");
    let s = debugfs(&img, "ea_list /xattr/spilled");
    assert!(s.contains("user.attribute-number-7"), "{s}");
    let s = debugfs(&img, "htree_dump /big");
    assert!(
        s.contains("Root node dump"),
        "the 10 000-entry directory is hashed: {}",
        &s[..s.len().min(500)]
    );
    // Holes stay holes: the 4 GiB file occupies a handful of blocks.
    let s = debugfs(&img, "stat /sparse/4g");
    assert!(s.contains("Size: 4294967296"), "{s}");
    let blocks: u64 = s
        .lines()
        .find(|l| l.contains("Blockcount:"))
        .and_then(|l| l.split("Blockcount:").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(blocks <= 8 * 8, "a sparse file took {blocks} sectors");
    // And reads back byte for byte, streamed: 4 GiB never sits in memory.
    let mut child = Command::new("debugfs")
        .arg("-R")
        .arg("cat /sparse/4g")
        .arg(&img)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut got = std::io::BufReader::with_capacity(1 << 20, child.stdout.take().unwrap());
    let mut want = std::io::BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(d.path().join("sparse")).unwrap(),
    );
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut total = 0u64;
    loop {
        use std::io::Read;
        let n = want.read(&mut a).unwrap();
        if n == 0 {
            break;
        }
        got.read_exact(&mut b[..n])
            .unwrap_or_else(|e| panic!("debugfs output ended at {total}: {e}"));
        assert!(a[..n] == b[..n], "/sparse/4g differs near byte {total}");
        total += n as u64;
    }
    assert_eq!(total, 4 << 30);
    assert!(child.wait().unwrap().success());
    let s = debugfs(&img, "stat /links/long");
    assert!(s.contains("Size: 4000"), "{s}");
}

/// The manifest's digest of every kind of file is the digest of its bytes: one read
/// ahead whole, large ones hashed beside the writing (plain, and sparse once their
/// written zeros pass the limit, which reads their start again), a sparse host file.
#[test]
fn the_manifest_digests_are_those_of_the_files_bytes() {
    use kiln::tree::digest::FileDigest;
    use sha2::{Digest, Sha256};
    let d = tempfile::tempdir().unwrap();
    let mut t = Tree::new(1_700_000_000);
    let pattern = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 7 % 253) as u8).collect() };
    let mut expected = BTreeMap::new();
    for (name, n) in [("small", 1usize << 20), ("large", (5 << 20) + 123)] {
        let bytes = pattern(n);
        expected.insert(format!("/{name}"), hex::encode(Sha256::digest(&bytes)));
        t.insert(name, Entry::new(file(bytes), m(0o644))).unwrap();
    }
    // Written zeros (not holes) past the plain digest's limit, between data.
    let zeros = d.path().join("zeros");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&zeros).unwrap();
        f.write_all_at(&vec![0u8; 70 << 20], 4096).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", (70 << 20) + 4096).unwrap();
    }
    let sparse = d.path().join("sparse");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&sparse).unwrap();
        f.set_len(1 << 30).unwrap();
        f.write_all_at(b"middle", 1 << 29).unwrap();
    }
    for (name, path) in [("zeros", &zeros), ("sparse", &sparse)] {
        let size = std::fs::metadata(path).unwrap().len();
        let f = std::fs::File::open(path).unwrap();
        let FileDigest::Sparse(h) = FileDigest::of_file(&f, size).unwrap() else {
            panic!("{name}: not the sparse digest");
        };
        expected.insert(format!("/{name}"), format!("sparse:{h}"));
        t.insert(
            name,
            Entry::new(Kind::File(Data::host(path.clone(), size)), m(0o644)),
        )
        .unwrap();
    }
    let img = d.path().join("digests.img");
    let r = image(&t, &opts(false), &img).unwrap();
    fsck(&img).unwrap();
    let got: BTreeMap<String, String> = r
        .manifest
        .iter()
        .filter_map(|e| match (&e.sha256, &e.sparse_sha256) {
            (Some(h), _) => Some((e.path.clone(), h.clone())),
            (None, Some(h)) => Some((e.path.clone(), format!("sparse:{h}"))),
            _ => None,
        })
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn a_fixed_size_that_is_too_small_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let mut t = Tree::new(0);
    t.insert("blob", Entry::new(file(vec![1u8; 30 << 20]), m(0o644)))
        .unwrap();
    let mut o = opts(false);
    o.size = SizeSpec::Fixed(20 << 20);
    let e = image(&t, &o, &d.path().join("x.img"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the tree needs about") && e.contains("20 MiB"),
        "{e}"
    );
    o.size = SizeSpec::Fixed(64 << 20);
    let img = d.path().join("y.img");
    let r = image(&t, &o, &img).unwrap();
    assert_eq!(r.bytes, 64 << 20);
    fsck(&img).unwrap();
}

#[test]
fn the_same_tree_gives_the_same_bytes() {
    let d = tempfile::tempdir().unwrap();
    let tree = corpus(d.path());
    let a = d.path().join("a.img");
    let b = d.path().join("b.img");
    image(&tree, &opts(false), &a).unwrap();
    image(&tree, &opts(false), &b).unwrap();
    assert_eq!(common::sha256_file(&a), common::sha256_file(&b));
}

mod random {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Node {
        File(Vec<u8>, bool),
        Dir,
        Link(String),
        Dev(u32, u32),
        Fifo,
        Hard,
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]{1,12}",
            "[A-Za-z0-9._-]{1,40}",
            "[\\PC&&[^/\\x00]]{1,20}",
            Just("x".repeat(255)),
        ]
        .prop_filter("no . or ..", |s| {
            s != "." && s != ".." && s.len() <= 255 && !s.contains('/')
        })
    }

    fn node() -> impl Strategy<Value = Node> {
        prop_oneof![
            4 => (prop::collection::vec(any::<u8>(), 0..9000), any::<bool>()).prop_map(|(b, z)| Node::File(b, z)),
            2 => Just(Node::Dir),
            1 => "[a-z/.]{1,100}".prop_map(Node::Link),
            1 => (0u32..4096, 0u32..(1 << 20)).prop_map(|(a, b)| Node::Dev(a, b)),
            1 => Just(Node::Fifo),
            1 => Just(Node::Hard),
        ]
    }

    fn build(spec: &[(Vec<String>, Node, u32, u32, u32)]) -> Tree {
        let mut t = Tree::new(1_600_000_000);
        let mut files: Vec<String> = Vec::new();
        for (names, node, mode, uid, gid) in spec {
            let path = names.join("/");
            if t.get(&path).is_some() {
                continue;
            }
            let meta = Meta::new(*mode, 1_600_000_000).owner(*uid, *gid);
            let kind = match node {
                Node::File(b, zero_pad) => {
                    let mut b = b.clone();
                    if *zero_pad {
                        b.extend(std::iter::repeat_n(0u8, 8192));
                        b.push(1);
                    }
                    Kind::File(Data::bytes(b))
                }
                Node::Dir => Kind::Dir,
                Node::Link(tg) => Kind::Symlink(tg.clone()),
                Node::Dev(a, b) => Kind::CharDev {
                    major: *a,
                    minor: *b,
                },
                Node::Fifo => Kind::Fifo,
                Node::Hard => match files.first() {
                    Some(f) if t.get(f).is_some_and(|e| matches!(e.kind, Kind::File(_))) => {
                        Kind::HardLink(f.clone())
                    }
                    _ => Kind::Fifo,
                },
            };
            let is_file = matches!(kind, Kind::File(_));
            if let Ok((landed, _)) = t.insert(&path, Entry::new(kind, meta)) {
                if is_file {
                    files.push(landed);
                }
            }
        }
        // Later inserts may have replaced a hard link's target with a directory.
        let broken: Vec<String> = t
            .iter()
            .filter(|(_, e)| matches!(&e.kind, Kind::HardLink(tg) if !matches!(t.get(tg).map(|x| &x.kind), Some(Kind::File(_)))))
            .map(|(k, _)| k.clone())
            .collect();
        for b in broken {
            t.remove_tree(&b);
        }
        t
    }

    fn cases() -> u32 {
        std::env::var("KILN_PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, .. ProptestConfig::default() })]
        #[test]
        fn random_trees_pass_e2fsck(spec in prop::collection::vec(
            (prop::collection::vec(name(), 1..4), node(), 0u32..0o7777, 0u32..200_000, 0u32..200_000), 1..120)) {
            let t = build(&spec);
            let d = tempfile::tempdir().unwrap();
            let img = d.path().join("r.img");
            image(&t, &opts(false), &img).unwrap();
            if let Err(e) = fsck(&img) {
                prop_assert!(false, "e2fsck:\n{}", e);
            }
        }
    }

    #[test]
    fn many_siblings_in_one_directory() {
        let mut t = Tree::new(0);
        let mut names = BTreeMap::new();
        for i in 0..30_000u32 {
            let n = format!("{:x}-{}", i.wrapping_mul(2_654_435_761), i);
            names.insert(n, i);
        }
        for (n, i) in &names {
            t.insert(
                &format!("d/{n}"),
                Entry::new(file(i.to_le_bytes().to_vec()), m(0o644)),
            )
            .unwrap();
        }
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("s.img");
        image(&t, &opts(false), &img).unwrap();
        fsck(&img).unwrap();
    }
}
