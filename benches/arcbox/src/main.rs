//! usage: arcbox-harness DIR IMAGE SIZE_BYTES — writes DIR as ext4 with arcbox-ext4.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (src, img, size) = (Path::new(&args[1]), Path::new(&args[2]), args[3].parse::<u64>().expect("size"));
    let mut f = arcbox_ext4::formatter::Formatter::new(img, 4096, size).expect("formatter");
    for e in walkdir::WalkDir::new(src).sort_by_file_name().min_depth(1) {
        let e = e.expect("walk");
        let rel = format!("/{}", e.path().strip_prefix(src).unwrap().display());
        let md = e.path().symlink_metadata().expect("metadata");
        let perm = (md.permissions().mode() & 0o7777) as u16;
        let ft = md.file_type();
        let (uid, gid) = (Some(md.uid()), Some(md.gid()));
        if ft.is_dir() {
            f.create(&rel, 0o040000 | perm, None, None, None, uid, gid, None).expect("dir");
        } else if ft.is_symlink() {
            let t = std::fs::read_link(e.path()).unwrap();
            f.create(&rel, 0o120000 | 0o777, Some(t.to_str().unwrap()), None, None, uid, gid, None).expect("symlink");
        } else if ft.is_file() {
            let mut file = std::fs::File::open(e.path()).expect("open");
            f.create(&rel, 0o100000 | perm, None, None, Some(&mut file), uid, gid, None).expect("file");
        }
    }
    f.close().expect("close");
}
