//! kiln: a rootless, declarative VM image builder and test runner.
//!
//! Data flows one way, and modules import only from the layers before them:
//!
//! 1. [`util`], [`tree`]: generic helpers (among them the content-addressed [`cache`]),
//!    and the in-memory image tree.
//! 2. [`output`], [`template`]: writers (tree → image bytes) and template rendering.
//! 3. [`profile`]: the TOML format, resolved into typed values (including writer options).
//! 4. [`source`], [`configure`]: where entries come from (packages behind a seam,
//!    overlays, host files, kernels), and declarative system set-up.
//! 5. [`plan`], [`build`]: every decision before a byte is written, then the build.
//! 6. [`vm`]: the QEMU command as a pure function of the plan and run configuration.
//! 7. [`run`]: a run as a library: events, outcomes, run directories, reporters.
//! 8. [`commands`]: one function per verb; `main.rs` parses and dispatches.

#![warn(missing_docs)]

pub mod util;
pub use util::cache;
pub mod tree;

pub mod output;
pub mod template;

pub mod import;
pub mod profile;

pub mod configure;
pub mod source;

pub mod build;
pub mod plan;

pub mod vm;

pub mod run;

pub mod commands;
