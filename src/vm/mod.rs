//! Booting images: the QEMU command as a pure function of the plan, the run
//! configuration and the run's files (one file per device), and the KVM probe.

pub mod disk;
pub mod ikconfig;
pub mod kvm;
pub mod launch;
pub mod preflight;
pub mod qemu;
pub mod serial;
