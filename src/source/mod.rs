//! Where tree entries come from: overlay directories, host binaries with their
//! libraries, profile-declared files, and Debian packages.

pub mod debian;
pub mod declared;
pub mod elf;
pub mod overlay;
pub mod remove;
