//! The guest's network device: QEMU's user-mode network (no root, no tap), with ports
//! forwarded from 127.0.0.1 on the host. Host ports not fixed by the profile are chosen
//! free per run and recorded in the run directory.

use std::net::{Ipv4Addr, TcpListener, UdpSocket};

use serde::{Deserialize, Serialize};

/// The NIC model Debian's kernels drive (virtio_net, built in or as a module).
pub const DEFAULT_MODEL: &str = "virtio-net-pci";

/// The guest port sshd listens on.
pub const SSH_PORT: u16 = 22;

// The run configuration's forwards, as the plan hands them on.
use crate::plan::{Forward, Proto};

/// A forward with its host port fixed for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bound {
    /// Transport.
    pub proto: Proto,
    /// The port on 127.0.0.1.
    pub host: u16,
    /// The guest port.
    pub guest: u16,
}

/// A port on 127.0.0.1 nothing listens on now. QEMU binds it a moment later; a run
/// whose QEMU lost the race is started again with other ports.
pub fn free_port(proto: Proto) -> std::io::Result<u16> {
    match proto {
        Proto::Tcp => Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port()),
        Proto::Udp => Ok(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port()),
    }
}

/// Fixes the host port of each forward, choosing free ones where none is given.
pub fn bind(forwards: &[Forward]) -> std::io::Result<Vec<Bound>> {
    forwards
        .iter()
        .map(|f| {
            Ok(Bound {
                proto: f.proto,
                host: match f.host {
                    Some(h) => h,
                    None => free_port(f.proto)?,
                },
                guest: f.guest,
            })
        })
        .collect()
}

/// The QEMU arguments of a user-mode NIC of `model` with `forwards`.
pub fn args(model: &str, forwards: &[Bound]) -> Vec<String> {
    let mut netdev = "user,id=net0".to_string();
    for f in forwards {
        netdev.push_str(&format!(
            ",hostfwd={}:127.0.0.1:{}-:{}",
            f.proto.name(),
            f.host,
            f.guest
        ));
    }
    vec![
        "-netdev".into(),
        netdev,
        "-device".into(),
        format!("{model},netdev=net0"),
    ]
}

/// The host port forwarded to the guest's sshd, if any.
pub fn ssh_port(forwards: &[Bound]) -> Option<u16> {
    forwards
        .iter()
        .find(|f| f.proto == Proto::Tcp && f.guest == SSH_PORT)
        .map(|f| f.host)
}

/// Whether QEMU's standard error says a forwarded host port was taken.
pub fn port_clash(stderr: &str) -> bool {
    stderr.contains("Could not set up host forwarding rule")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forwards() {
        assert_eq!(
            Forward::parse("8888:22").unwrap(),
            Forward {
                proto: Proto::Tcp,
                host: Some(8888),
                guest: 22
            }
        );
        assert_eq!(Forward::parse("22").unwrap().host, None);
        let u = Forward::parse("udp:5353:53").unwrap();
        assert_eq!((u.proto, u.host, u.guest), (Proto::Udp, Some(5353), 53));
        assert_eq!(u.to_string(), "udp:5353:53");
        for bad in ["", "0", "70000", "ssh", "1:2:3", "tcp:x:22"] {
            assert!(Forward::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn free_ports_differ_and_args_name_them() {
        let b = bind(&[Forward::parse("22").unwrap(), Forward::parse("80").unwrap()]).unwrap();
        assert_ne!(b[0].host, b[1].host);
        assert_eq!(ssh_port(&b), Some(b[0].host));
        let a = args(DEFAULT_MODEL, &b);
        assert_eq!(a[0], "-netdev");
        assert!(a[1].starts_with("user,id=net0,hostfwd=tcp:127.0.0.1:"));
        assert!(a[1].contains(&format!("127.0.0.1:{}-:80", b[1].host)));
        assert_eq!(a[3], "virtio-net-pci,netdev=net0");
    }
}
