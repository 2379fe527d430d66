//! Generic helpers every layer may use: progress lines, human sizes, atomic files, shell
//! quoting, decompression by file name, HTTP and parallel downloads. Nothing here knows
//! about profiles, images or VMs.

pub mod arenas;
pub mod atomic;
pub mod background;
pub mod cache;
pub mod cycle;
pub mod decompress;
pub mod download;
pub mod http;
pub mod options;
pub mod printer;
pub mod progress;
pub mod shell;
pub mod size;
