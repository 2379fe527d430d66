//! A vhost-vsock device, where the host has /dev/vhost-vsock: the guest is then
//! reachable at its CID without any network (trixie's systemd binds sshd to vsock port
//! 22 by itself). CIDs are host-wide, so one is picked per run and QEMU is started again
//! with another when it collides.

use std::path::Path;

/// The host device a vsock needs.
pub const DEVICE: &str = "/dev/vhost-vsock";

/// Whether this host can give guests a vsock device.
pub fn available() -> bool {
    Path::new(DEVICE).exists()
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(DEVICE)
            .is_ok()
}

/// A guest CID for run `seed`: above the reserved 0-2, spread so concurrent runs rarely
/// pick the same.
pub fn cid(seed: u64, attempt: u32) -> u32 {
    let x = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(attempt).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    3 + (x >> 33) as u32 % 0x00FF_FFFF
}

/// The QEMU arguments of a vsock device with `cid`.
pub fn args(cid: u32) -> Vec<String> {
    vec!["-device".into(), format!("vhost-vsock-pci,guest-cid={cid}")]
}

/// Whether QEMU's standard error says the CID is taken by another VM.
pub fn cid_clash(stderr: &str) -> bool {
    stderr.contains("guest-cid") && stderr.contains("in use")
        || stderr.contains("vhost-vsock") && stderr.contains("Address already in use")
}

/// The ssh ProxyCommand that reaches `cid`'s port 22 through socat.
pub fn proxy_command(cid: u32) -> String {
    format!("socat - VSOCK-CONNECT:{cid}:22")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cids_are_valid_and_vary() {
        let a = cid(1, 0);
        let b = cid(1, 1);
        let c = cid(2, 0);
        assert!(a >= 3 && b >= 3 && c >= 3);
        assert!(a != b && a != c);
        assert_eq!(args(7), ["-device", "vhost-vsock-pci,guest-cid=7"]);
        assert!(cid_clash(
            "qemu-system-x86_64: -device vhost-vsock-pci,guest-cid=7: vhost-vsock: unable to set guest cid: Address already in use"
        ));
        assert_eq!(proxy_command(7), "socat - VSOCK-CONNECT:7:22");
    }
}
