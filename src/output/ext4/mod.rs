//! ext4, written by kiln from the tree in one pass, and read back for `ls`/`extract`.
//!
//! Features: 4 KiB blocks, extents, filetype, sparse_super, large_file, huge_file,
//! flex_bg, dir_nlink, extra_isize, ext_attr, dir_index, metadata_csum (crc32c), a clean
//! jbd2 journal, and 64bit when the block count needs it.

mod content;
pub mod csum;
pub mod dir;
pub mod inode;
mod io;
pub mod journal;
pub mod layout;
mod meta;
pub mod reader;
pub mod writer;
pub mod xattr;

pub use writer::{write, Ext4Options, Ext4Report, SizeSpec};

pub const BLOCK: u64 = 4096;
pub const INODE_SIZE: usize = 256;
pub const EXTRA_ISIZE: u16 = 32;
pub const ROOT_INO: u32 = 2;
pub const JOURNAL_INO: u32 = 8;
pub const FIRST_INO: u32 = 11;

pub fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

pub fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn get16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

pub fn get32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
