//! Booting images: the QEMU command, the KVM probe, and supervising a run.

pub mod kvm;
pub mod launch;
pub mod qemu;
pub mod results;
pub mod runner;
