//! The jbd2 journal superblock of an empty, clean internal journal.

use super::BLOCK;

/// The journal's first block: a v2 jbd2 superblock for a clean journal of `journal_blocks`
/// blocks, used by the file system `fs_uuid`.
pub fn superblock(journal_blocks: u32, fs_uuid: &[u8; 16]) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK as usize];
    let be32 = |b: &mut [u8], off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_be_bytes());
    be32(&mut b, 0x00, 0xC03B_3998); // magic
    be32(&mut b, 0x04, 4); // superblock v2
    be32(&mut b, 0x08, 0);
    be32(&mut b, 0x0C, BLOCK as u32);
    be32(&mut b, 0x10, journal_blocks);
    be32(&mut b, 0x14, 1); // first log block
    be32(&mut b, 0x18, 1); // first expected commit id
    be32(&mut b, 0x1C, 0); // s_start 0: nothing to replay
    b[0x30..0x40].copy_from_slice(fs_uuid);
    be32(&mut b, 0x40, 1); // one user: this file system
    b[0x100..0x110].copy_from_slice(fs_uuid);
    b
}
