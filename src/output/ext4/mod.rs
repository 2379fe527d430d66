//! ext4 writer and reader.
