//! A virtio-blk disk: its configuration and the QEMU arguments it produces.

use std::path::PathBuf;

/// A disk attached to the VM.
#[derive(Debug, Clone, PartialEq)]
pub struct Disk {
    /// The image file.
    pub path: PathBuf,
    /// QEMU's name for its format ("raw", "qcow2").
    pub format: String,
    /// virtio-blk serial; the guest finds a disk by it in /sys/block/*/serial.
    pub serial: String,
    /// The guest cannot write it.
    pub read_only: bool,
    /// Writes go to a temporary overlay QEMU discards; the image stays as built.
    pub snapshot: bool,
}

impl Disk {
    /// A raw image the guest may write, found in the guest by `serial`.
    pub fn raw(path: PathBuf, serial: &str) -> Disk {
        Disk {
            path,
            format: "raw".into(),
            serial: serial.into(),
            read_only: false,
            snapshot: false,
        }
    }

    /// The `-drive` and `-device` arguments of the disk with index `i`.
    pub fn args(&self, i: usize) -> Vec<String> {
        let mut drive = format!(
            "file={},format={},if=none,id=disk{i}",
            super::qemu::option_path(&self.path),
            self.format
        );
        if self.read_only {
            drive.push_str(",readonly=on");
        }
        if self.snapshot {
            drive.push_str(",snapshot=on");
        }
        vec![
            "-drive".into(),
            drive,
            "-device".into(),
            format!("virtio-blk-pci,drive=disk{i},serial={}", self.serial),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_follow_flags() {
        let mut d = Disk::raw("/o/x.raw".into(), "kiln-root");
        d.snapshot = true;
        d.read_only = true;
        assert_eq!(
            d.args(3),
            [
                "-drive",
                "file=/o/x.raw,format=raw,if=none,id=disk3,readonly=on,snapshot=on",
                "-device",
                "virtio-blk-pci,drive=disk3,serial=kiln-root"
            ]
        );
    }
}
