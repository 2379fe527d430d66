//! Booting images: the QEMU command as a pure function of the plan, the run
//! configuration and the run's files (one file per device), and the KVM probe.

pub mod disk;
pub mod gdb;
pub mod ikconfig;
pub mod kernel_payload;
pub mod kvm;
pub mod launch;
pub mod network;
pub mod preflight;
pub mod pvh;
pub mod qemu;
pub mod qmp;
pub mod serial;
pub mod share;
pub mod virtiofsd;
pub mod vsock;
