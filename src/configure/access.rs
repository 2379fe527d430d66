//! The guest's side of getting in: a DHCP client for QEMU's user-mode network, and an
//! sshd that accepts the key kiln gives each boot. Nothing here holds a key: the image
//! carries only the means to pick one up from the kernel command line, so the same image
//! bytes serve every user and every run.

use anyhow::Result;

use crate::profile::NetworkMode;
use crate::tree::{Data, Entry, Kind, Meta, Tree};
use crate::util::progress;

/// Where the guest's sshd finds the key of this boot.
pub const BOOT_KEYS: &str = "/run/kiln/ssh/authorized_keys";

/// The kernel command-line word that carries the key: `kiln.ssh_key=TYPE:BASE64`.
pub const KEY_WORD: &str = "kiln.ssh_key";

/// Whether the image has an OpenSSH server.
pub fn has_sshd(tree: &Tree) -> bool {
    ["usr/sbin/sshd", "sbin/sshd"]
        .iter()
        .any(|p| tree.resolve(p).is_ok_and(|r| tree.contains(&r)))
}

/// Whether runs of the image get a network: as the profile says, else when it has sshd.
pub fn network_on(mode: Option<NetworkMode>, has_sshd: bool) -> bool {
    match mode {
        Some(NetworkMode::User) => true,
        Some(NetworkMode::None) => false,
        None => has_sshd,
    }
}

const NETWORK_FILE: &str = "\
# Written by kiln: QEMU's user-mode network hands out an address by DHCP.
[Match]
Type=ether

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
";

const SSHD_CONFIG: &str = "\
# Written by kiln: sshd also accepts the key kiln gives each boot on the kernel command
# line (kiln ssh); the image holds no key of its own.
AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys2 /run/kiln/ssh/authorized_keys
";

const KEY_UNIT: &str = "\
# Written by kiln: installs the SSH key this boot was given (kiln.ssh_key= on the kernel
# command line) where sshd looks for it.
[Unit]
Description=kiln: the SSH key of this boot
DefaultDependencies=no
ConditionKernelCommandLine=kiln.ssh_key
Before=ssh.service sshd.service ssh.socket sshd.socket multi-user.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh /usr/lib/kiln/ssh-key

[Install]
WantedBy=multi-user.target
";

/// The host keys openssh-server's postinst would make (an image holds no private key,
/// so each machine makes its own at first boot; newer sshd units make them themselves,
/// older ones, as bookworm's, exit with "no hostkeys available").
const HOST_KEYS_UNIT: &str = "\
# Written by kiln: the SSH host keys openssh-server's postinst would have made, made at
# first boot so that no image carries a private key.
[Unit]
Description=kiln: SSH host keys
DefaultDependencies=no
After=local-fs.target
Before=ssh.service sshd.service ssh.socket sshd.socket multi-user.target
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
";

const KEY_SCRIPT: &str = r#"#!/bin/sh
# Written by kiln: the public key on the kernel command line, kiln.ssh_key=TYPE:BASE64,
# into /run/kiln/ssh/authorized_keys.
key=""
for w in $(cat /proc/cmdline); do
    case "$w" in
        kiln.ssh_key=*) key="${w#kiln.ssh_key=}" ;;
    esac
done
[ -n "$key" ] || exit 0
umask 077
mkdir -p /run/kiln/ssh
printf '%s %s kiln\n' "${key%%:*}" "${key#*:}" > /run/kiln/ssh/authorized_keys
"#;

const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
# Written by kiln: busybox udhcpc's hook, applying the lease QEMU's DHCP server gives.
case "$1" in
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        for r in $router; do ip route add default via "$r" dev "$interface"; break; done
        mkdir -p /etc
        : > /etc/resolv.conf
        for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
        ;;
esac
exit 0
"#;

/// The virtio-serial port the guest's journal streams to.
pub const JOURNAL_PORT: &str = "org.kiln.journal";

/// The kernel command-line word that says the port is attached.
pub const JOURNAL_WORD: &str = "kiln.journal";

const JOURNAL_UNIT: &str = "\
# Written by kiln: the journal of this boot streams to the host (export format) on a
# virtio-serial port while the guest runs, so it survives a failed or hung run.
[Unit]
Description=kiln: the journal of this boot, to the host
DefaultDependencies=no
ConditionKernelCommandLine=kiln.journal
Requires=dev-virtio\\x2dports-org.kiln.journal.device
After=dev-virtio\\x2dports-org.kiln.journal.device systemd-journald.socket

[Service]
ExecStart=/bin/sh -c 'exec journalctl --boot --follow --no-tail --output=export > /dev/virtio-ports/org.kiln.journal'

[Install]
WantedBy=sysinit.target
";

/// Adds the unit that streams a systemd image's journal to the host; returns it to enable.
pub fn journal_unit(tree: &mut Tree, epoch: i64) -> Result<Vec<String>> {
    let has = |p: &str| tree.resolve(p).is_ok_and(|r| tree.contains(&r));
    if !has("usr/bin/journalctl") && !has("bin/journalctl") {
        return Ok(Vec::new());
    }
    put(
        tree,
        "usr/lib/systemd/system/kiln-journal.service",
        JOURNAL_UNIT,
        0o644,
        epoch,
    )?;
    Ok(vec!["kiln-journal.service".to_string()])
}

/// The udhcpc hook an initramfs's init uses.
pub const UDHCPC_PATH: &str = "usr/lib/kiln/udhcpc.script";

fn put(tree: &mut Tree, path: &str, text: &str, mode: u32, epoch: i64) -> Result<()> {
    tree.insert(
        path,
        Entry::new(Kind::File(Data::bytes(text)), Meta::new(mode, epoch)),
    )?;
    Ok(())
}

/// Adds the guest's side of networking and SSH to a tree; returns the units to enable.
/// `systemd` images get a systemd-networkd configuration and the SSH key unit; others
/// (a busybox initramfs) the udhcpc hook their init runs.
pub fn guest_side(
    tree: &mut Tree,
    network: bool,
    systemd: bool,
    epoch: i64,
) -> Result<Vec<String>> {
    let mut units = Vec::new();
    if !network {
        return Ok(units);
    }
    if !systemd {
        put(tree, UDHCPC_PATH, UDHCPC_SCRIPT, 0o755, epoch)?;
        return Ok(units);
    }
    if tree.contains("usr/lib/systemd/system/systemd-networkd.service") {
        put(
            tree,
            "etc/systemd/network/80-kiln-user.network",
            NETWORK_FILE,
            0o644,
            epoch,
        )?;
        units.push("systemd-networkd.service".to_string());
    } else {
        progress::warn(
            "[network] is on but the image has no systemd-networkd to take an address; add a DHCP client (e.g. the \"systemd-networkd\" or \"isc-dhcp-client\" package)",
        );
    }
    if !tree.contains("etc/resolv.conf") {
        // QEMU's user-mode network answers DNS here.
        put(
            tree,
            "etc/resolv.conf",
            "nameserver 10.0.2.3\n",
            0o644,
            epoch,
        )?;
    }
    if has_sshd(tree) {
        put(
            tree,
            "etc/ssh/sshd_config.d/50-kiln.conf",
            SSHD_CONFIG,
            0o644,
            epoch,
        )?;
        put(tree, "usr/lib/kiln/ssh-key", KEY_SCRIPT, 0o755, epoch)?;
        put(
            tree,
            "usr/lib/systemd/system/kiln-ssh-key.service",
            KEY_UNIT,
            0o644,
            epoch,
        )?;
        units.push("kiln-ssh-key.service".to_string());
        put(
            tree,
            "usr/lib/systemd/system/kiln-ssh-host-keys.service",
            HOST_KEYS_UNIT,
            0o644,
            epoch,
        )?;
        units.push("kiln-ssh-host-keys.service".to_string());
    }
    Ok(units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_side_follows_the_image() {
        let mut t = Tree::new(0);
        assert!(guest_side(&mut t, false, true, 0).unwrap().is_empty());
        assert!(guest_side(&mut t, true, false, 0).unwrap().is_empty());
        assert!(t.contains(UDHCPC_PATH));
        let mut t = Tree::new(0);
        let f = Entry::new(Kind::File(Data::bytes("x")), Meta::new(0o755, 0));
        t.insert("usr/sbin/sshd", f.clone()).unwrap();
        t.insert("usr/lib/systemd/system/systemd-networkd.service", f)
            .unwrap();
        let units = guest_side(&mut t, true, true, 0).unwrap();
        assert_eq!(
            units,
            [
                "systemd-networkd.service",
                "kiln-ssh-key.service",
                "kiln-ssh-host-keys.service"
            ]
        );
        assert!(t.contains("etc/ssh/sshd_config.d/50-kiln.conf"));
        assert!(t.contains("etc/resolv.conf"));
        assert!(network_on(None, true) && !network_on(None, false));
        assert!(!network_on(Some(NetworkMode::None), true));
    }

    #[test]
    fn the_key_script_writes_what_sshd_reads() {
        let d = tempfile::tempdir().unwrap();
        let script = KEY_SCRIPT
            .replace("/proc/cmdline", &d.path().join("cmdline").to_string_lossy())
            .replace("/run/kiln", &d.path().join("run").to_string_lossy());
        std::fs::write(
            d.path().join("cmdline"),
            "console=ttyS0 kiln.ssh_key=ssh-ed25519:AAAAC3Nz quiet\n",
        )
        .unwrap();
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .status()
            .unwrap();
        assert!(ok.success());
        let keys = std::fs::read_to_string(d.path().join("run/ssh/authorized_keys")).unwrap();
        assert_eq!(keys, "ssh-ed25519 AAAAC3Nz kiln\n");
    }
}
