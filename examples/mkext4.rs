//! Writes an ext4 image of a host directory: `cargo run --example mkext4 -- DIR OUT [--64bit]`.
//! A development aid for looking at kiln's ext4 output with e2fsck, debugfs and dumpe2fs.

use kiln::output::ext4::{writer::Prepared, writer::Target, Ext4Options, SizeSpec};
use kiln::output::options::FreeSpace;
use kiln::tree::Tree;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut tree = Tree::new(1_700_000_000);
    kiln::source::overlay::add_overlay(
        &mut tree,
        std::path::Path::new(&args[1]),
        "",
        true,
        1_700_000_000,
        &|_, _| None,
        &mut Vec::new(),
    )?;
    let opts = Ext4Options {
        size: SizeSpec::Auto {
            free: FreeSpace::Percent(10),
            min_bytes: 0,
        },
        uuid: *b"0123456789abcdef",
        hash_seed: *b"fedcba9876543210",
        label: "test".into(),
        time: 1_700_000_000,
        force_64bit: args.iter().any(|a| a == "--64bit"),
    };
    let t0 = std::time::Instant::now();
    let p = Prepared::new(&tree, &opts)?;
    eprintln!("prepare {:?}", t0.elapsed());
    let f = std::fs::File::create(&args[2])?;
    f.set_len(p.bytes())?;
    let r = p.write(&Target {
        file: &f,
        offset: 0,
        watch: None,
    })?;
    eprintln!(
        "{} blocks, {} free, {} inodes used",
        r.blocks, r.free_blocks, r.inodes_used
    );
    Ok(())
}
