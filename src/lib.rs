//! kiln: a rootless, declarative VM image builder and test runner.
//!
//! Data flows one way: profile → plan → tree → writer → image → runner.

pub mod boot_initrd;
pub mod build;
pub mod cache;
pub mod configure;
pub mod output;
pub mod profile;
pub mod progress;
pub mod source;
pub mod template;
pub mod tree;
pub mod vm;
