//! Tests of `Data` and its readers.

use super::*;

fn slice(file: &Arc<PathBuf>) -> String {
    let d = Data::Slice {
        file: file.clone(),
        offset: 1,
        len: 3,
        digest: None,
    };
    let mut s = String::new();
    d.open().unwrap().read_to_string(&mut s).unwrap();
    s
}

#[test]
fn read_all_gives_the_contents_and_fails_on_a_file_cut_short() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("data.tar");
    let big: Vec<u8> = (0..(1 << 20) + 77).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &big).unwrap();
    let range = Data::Slice {
        file: Arc::new(path.clone()),
        offset: 9,
        len: 1000,
        digest: None,
    };
    assert_eq!(range.open().unwrap().read_all().unwrap(), &big[9..1009]);
    let host = Data::host(&path, big.len() as u64);
    let reader = host.open().unwrap();
    assert_eq!(reader.read_all().unwrap(), big);
    assert_eq!(
        Data::bytes(b"abc").open().unwrap().read_all().unwrap(),
        b"abc"
    );
    // Cut short after it was opened: an error, not a buffer with a stale tail.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100)
        .unwrap();
    let e = reader.read_all().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn a_range_and_bytes_are_copied_whole() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("data.tar");
    let big: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &big).unwrap();
    let range = Data::Slice {
        file: Arc::new(path),
        offset: 7,
        len: (2 << 20) + 5,
        digest: None,
    };
    for (data, want) in [
        (range, &big[7..(2 << 20) + 12]),
        (Data::bytes(b"inline".to_vec()), &b"inline"[..]),
    ] {
        let out = d.path().join("out");
        let mut f = File::create(&out).unwrap();
        let n = data.open().unwrap().copy_to(&mut f).unwrap();
        assert_eq!(n, want.len() as u64);
        assert_eq!(std::fs::read(&out).unwrap(), want);
    }
}

#[test]
fn a_tree_made_after_its_file_was_replaced_reads_the_new_one() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("data.tar");
    std::fs::write(&path, "xoldx").unwrap();
    let first = Arc::new(path.clone());
    assert_eq!(slice(&first), "old");
    // Unpacked again under the same name, as a damaged cache entry is.
    std::fs::write(d.path().join("new"), "xnewx").unwrap();
    std::fs::rename(d.path().join("new"), &path).unwrap();
    // The tree that opened it reads what it opened; a new tree opens afresh.
    assert_eq!(slice(&first), "old");
    assert_eq!(slice(&Arc::new(path)), "new");
}
