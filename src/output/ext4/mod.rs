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
mod prepare;
pub mod reader;
pub mod writer;
pub mod xattr;

pub use writer::{write, Ext4Options, Ext4Report, SizeSpec};

/// File system block size in bytes.
pub const BLOCK: u64 = 4096;
/// On-disk inode size in bytes (s_inode_size).
pub const INODE_SIZE: usize = 256;
/// Bytes of each inode's extra fields beyond the first 128 (i_extra_isize).
pub const EXTRA_ISIZE: u16 = 32;
/// Inode number of the root directory.
pub const ROOT_INO: u32 = 2;
/// Inode number of the journal.
pub const JOURNAL_INO: u32 = 8;
/// First inode number not reserved by ext4 (s_first_ino); lost+found gets it.
pub const FIRST_INO: u32 = 11;

/// Stores `v` little-endian at byte `off` of `b`.
pub fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

/// Stores `v` little-endian at byte `off` of `b`.
pub fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Reads a little-endian u16 at byte `off` of `b`.
pub fn get16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

/// Reads a little-endian u32 at byte `off` of `b`.
pub fn get32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
