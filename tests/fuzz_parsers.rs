//! Property tests over every parser that takes outside bytes: Debian control paragraphs,
//! Packages indexes, dependency fields and versions, InRelease framing and Release files,
//! the cpio and ext4 readers on mutated images, and the profile loader on mutated TOML.
//! Each must answer (Ok or an error) without panicking or looping. CI runs a bounded
//! number of cases; `KILN_PROPTEST_CASES=10000 cargo test --release --test
//! fuzz_parsers` runs more.

use std::cmp::Ordering;
use std::process::Command;

use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("KILN_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

/// Text that looks enough like a control file to reach the parsers' deeper paths.
fn controlish() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        "[A-Za-z-]{1,12}: [ -~]{0,40}",
        " [ -~]{0,30}",
        Just(String::new()),
        "(Package|Version|Depends|Provides|Size|SHA256|Filename): [a-z0-9.:~+|,()<>= -]{0,40}",
        "[\\PC]{0,20}",
    ];
    prop::collection::vec(line, 0..30).prop_map(|l| l.join("\n"))
}

/// A valid image of some kind, with `flips` bytes replaced at chosen offsets.
fn mutate(mut bytes: Vec<u8>, flips: &[(usize, u8)]) -> Vec<u8> {
    let n = bytes.len();
    for &(at, b) in flips {
        bytes[at % n] = b;
    }
    bytes
}

fn small_ext4() -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("t");
    std::fs::create_dir_all(tree.join("a/b")).unwrap();
    std::fs::write(tree.join("a/b/f"), "content\n").unwrap();
    std::os::unix::fs::symlink("a/b/f", tree.join("l")).unwrap();
    let img = d.path().join("x.img");
    let ok = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&tree)
        .arg(&img)
        .arg("2M")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    std::fs::read(img).unwrap()
}

fn small_cpio() -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("f"), "content\n").unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("printf 'f\\n' | cpio -o -H newc 2>/dev/null")
        .current_dir(d.path())
        .output()
        .unwrap();
    out.stdout
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn control_and_packages_parsers_never_panic(text in controlish()) {
        let _ = kiln::source::debian::control::parse(&text);
        let _ = kiln::source::debian::index::Index::parse(&text, "amd64");
        let _ = kiln::source::debian::release::parse_release(&text);
        for line in text.lines() {
            let _ = kiln::source::debian::deps::parse(line);
            let _ = kiln::source::debian::release::parse_date(line);
        }
    }

    #[test]
    fn version_comparison_is_an_order(a in "[0-9a-z.+~:-]{0,12}", b in "[0-9a-z.+~:-]{0,12}") {
        use kiln::source::debian::version::compare;
        prop_assert_eq!(compare(&a, &a), Ordering::Equal);
        prop_assert_eq!(compare(&a, &b), compare(&b, &a).reverse());
    }

    #[test]
    fn inrelease_framing_is_refused_not_panicked_on(text in controlish(), armor in any::<bool>()) {
        let text = if armor {
            format!("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n{text}\n-----BEGIN PGP SIGNATURE-----\n\n{text}\n-----END PGP SIGNATURE-----\n")
        } else {
            text
        };
        let keyring = kiln::source::debian::release::Keyring { path: "none".into(), keys: Vec::new() };
        prop_assert!(kiln::source::debian::release::verify_inrelease(
            &text, &keyring, "InRelease", std::time::SystemTime::now()).is_err());
    }

    #[test]
    fn the_profile_loader_answers_every_mutation(
        cut in 0usize..400,
        insert in "[\\[\\]{}=\"'#.a-z0-9\\n ]{0,12}",
    ) {
        let base = "version = 1\nname = \"x\"\ninclude = []\n[qemu]\nmemory = \"1G\"\ncpus = 2\n[[file]]\npath = \"/a\"\ncontent = \"x\"\n[test]\ncommand = \"true\"\n[variables]\nk = \"v\"\n";
        let at = base.char_indices().map(|(i, _)| i).nth(cut % base.len()).unwrap_or(0);
        let text = format!("{}{insert}{}", &base[..at], &base[at..]);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("p.toml");
        std::fs::write(&p, text).unwrap();
        let _ = kiln::profile::load(&p);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases() / 4 + 1, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn the_ext4_reader_errs_on_mutated_images(flips in prop::collection::vec((0usize..1 << 20, any::<u8>()), 1..64)) {
        static IMAGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let image = mutate(IMAGE.get_or_init(small_ext4).clone(), &flips);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.img");
        std::fs::write(&p, image).unwrap();
        if let Ok(img) = kiln::output::ext4::reader::open(&p) {
            let _ = kiln::output::ext4::reader::list(&img);
            let _ = kiln::output::ext4::reader::extract(&img, b"/", &d.path().join("x"), kiln::output::ext4::reader::Trust::Guest);
        }
    }

    #[test]
    fn the_cpio_reader_errs_on_mutated_archives(flips in prop::collection::vec((0usize..4096, any::<u8>()), 1..16)) {
        static ARCHIVE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let archive = mutate(ARCHIVE.get_or_init(small_cpio).clone(), &flips);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.cpio");
        std::fs::write(&p, archive).unwrap();
        let _ = kiln::output::cpio::list(&p);
    }
}
