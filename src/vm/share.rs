//! Host directories shared into the guest: over 9p, which QEMU serves itself and so needs
//! no root, or over virtiofs, which needs a virtiofsd beside QEMU and a shared memory
//! backend. Each share has its QEMU arguments; each transport, the kernel options it
//! needs (for the preflight); and [`choose`] picks the one a kernel takes.
//!
//! With `security_model=none` QEMU touches files with the caller's own credentials: the
//! guest sees the host's owners, and what it creates belongs to the caller.

use std::path::{Path, PathBuf};

use super::preflight::KernelConfig;

/// How a directory reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// virtio-9p, served by QEMU.
    NineP,
    /// virtiofs, served by a virtiofsd listening on a socket.
    VirtioFs,
}

/// One shared directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The host directory.
    pub host: PathBuf,
    /// The tag the guest mounts it by (also QEMU's device id, so letters, digits, `_`).
    pub tag: String,
    /// The guest may not write to it.
    pub readonly: bool,
    /// How it is served.
    pub transport: Transport,
}

impl Share {
    /// The QEMU arguments that serve this share. A virtiofs share connects to
    /// `socket`, where its virtiofsd listens.
    pub fn args(&self, socket: Option<&Path>) -> Vec<String> {
        match self.transport {
            Transport::NineP => {
                let mut fsdev = format!(
                    "local,id={},path={},security_model=none,multidevs=remap",
                    self.tag,
                    super::qemu::option_path(&self.host)
                );
                if self.readonly {
                    fsdev.push_str(",readonly=on");
                }
                vec![
                    "-fsdev".into(),
                    fsdev,
                    "-device".into(),
                    format!("virtio-9p-pci,fsdev={0},mount_tag={0}", self.tag),
                ]
            }
            Transport::VirtioFs => {
                let socket = socket.map(super::qemu::option_path).unwrap_or_default();
                vec![
                    "-chardev".into(),
                    format!("socket,id={},path={socket}", self.tag),
                    "-device".into(),
                    format!("vhost-user-fs-pci,chardev={0},tag={0}", self.tag),
                ]
            }
        }
    }
}

/// The kernel options a transport needs, as the preflight names them, and the modules
/// that provide them when they are modules, in load order.
pub fn needs(t: Transport) -> (&'static [&'static str], &'static [&'static str]) {
    match t {
        Transport::NineP => (
            &["NET_9P", "NET_9P_VIRTIO", "9P_FS"],
            &["netfs", "fscache", "9pnet", "9pnet_virtio", "9p"],
        ),
        Transport::VirtioFs => (&["FUSE_FS", "VIRTIO_FS"], &["fuse", "virtiofs"]),
    }
}

/// QEMU's arguments for memory the guest shares with a virtiofsd: vhost-user needs the
/// guest's RAM in a file descriptor the daemon can map.
pub fn shared_memory_args(bytes: u64) -> Vec<String> {
    vec![
        "-object".into(),
        format!("memory-backend-memfd,id=kiln-mem,size={bytes},share=on"),
        "-machine".into(),
        "memory-backend=kiln-mem".into(),
    ]
}

/// The transport a kernel takes: 9p where it has 9p (QEMU serves it, nothing else runs),
/// else virtiofs where it has virtiofs and `virtiofsd` can run here; or why neither.
/// `forced` is the user's choice; an unknown configuration takes 9p.
pub fn choose(
    config: Option<&KernelConfig>,
    forced: Option<Transport>,
    virtiofsd: &dyn Fn() -> Result<(), String>,
) -> Result<Transport, String> {
    let has = |t: Transport| {
        config.is_none_or(|c| {
            needs(t)
                .0
                .iter()
                .all(|o| matches!(c.get(o), Some("y" | "m")))
        })
    };
    let lacking = |t: Transport| {
        needs(t)
            .0
            .iter()
            .filter(|o| !matches!(config.and_then(|c| c.get(o)), Some("y" | "m")))
            .map(|o| format!("CONFIG_{o}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match forced {
        Some(t) if !has(t) => {
            return Err(format!(
                "sharing host directories over {} needs {}, which the kernel lacks",
                name(t),
                lacking(t)
            ))
        }
        Some(Transport::VirtioFs) => return virtiofsd().map(|_| Transport::VirtioFs),
        Some(Transport::NineP) => return Ok(Transport::NineP),
        None => {}
    }
    if has(Transport::NineP) {
        return Ok(Transport::NineP);
    }
    let no_9p = format!(
        "sharing host directories needs 9p ({}) or virtiofs; the kernel has no 9p",
        lacking(Transport::NineP)
    );
    if !has(Transport::VirtioFs) {
        return Err(format!(
            "{no_9p} and no virtiofs ({}); Debian's generic kernels (linux-image-6.1.0-NN-amd64) have both as modules",
            lacking(Transport::VirtioFs)
        ));
    }
    virtiofsd()
        .map(|_| Transport::VirtioFs)
        .map_err(|e| format!("{no_9p}; it has virtiofs, but {e}"))
}

/// The transport's name, as `--share` and the guest's `kiln.fs=` write it.
pub fn name(t: Transport) -> &'static str {
    match t {
        Transport::NineP => "9p",
        Transport::VirtioFs => "virtiofs",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(transport: Transport, readonly: bool) -> Share {
        Share {
            host: PathBuf::from("/home/a,b/src"),
            tag: "kiln_cwd".into(),
            readonly,
            transport,
        }
    }

    #[test]
    fn nine_p_arguments_double_commas_and_say_read_only() {
        assert_eq!(
            share(Transport::NineP, true).args(None),
            [
                "-fsdev",
                "local,id=kiln_cwd,path=/home/a,,b/src,security_model=none,multidevs=remap,readonly=on",
                "-device",
                "virtio-9p-pci,fsdev=kiln_cwd,mount_tag=kiln_cwd",
            ]
        );
    }

    #[test]
    fn virtiofs_arguments_name_the_socket() {
        let s = share(Transport::VirtioFs, true);
        assert_eq!(
            s.args(Some(Path::new("/run/user/1000/k,1.sock"))),
            [
                "-chardev",
                "socket,id=kiln_cwd,path=/run/user/1000/k,,1.sock",
                "-device",
                "vhost-user-fs-pci,chardev=kiln_cwd,tag=kiln_cwd",
            ]
        );
        assert_eq!(
            shared_memory_args(1 << 30),
            [
                "-object",
                "memory-backend-memfd,id=kiln-mem,size=1073741824,share=on",
                "-machine",
                "memory-backend=kiln-mem"
            ]
        );
        assert_eq!(needs(Transport::NineP).1.last(), Some(&"9p"));
    }

    #[test]
    fn each_kernel_gets_the_transport_it_has() {
        let generic = KernelConfig::parse(
            "CONFIG_NET_9P=m\nCONFIG_NET_9P_VIRTIO=m\nCONFIG_9P_FS=m\nCONFIG_FUSE_FS=m\nCONFIG_VIRTIO_FS=m\n",
        );
        let cloud = KernelConfig::parse(
            "# CONFIG_NET_9P is not set\nCONFIG_FUSE_FS=m\nCONFIG_VIRTIO_FS=m\n",
        );
        let bare = KernelConfig::parse("CONFIG_SERIAL_8250=y\n");
        let ok = || Ok(());
        let none = || Err("there is no virtiofsd".to_string());
        assert_eq!(choose(Some(&generic), None, &ok), Ok(Transport::NineP));
        assert_eq!(choose(None, None, &none), Ok(Transport::NineP));
        assert_eq!(
            choose(Some(&generic), Some(Transport::VirtioFs), &ok),
            Ok(Transport::VirtioFs)
        );
        assert_eq!(choose(Some(&cloud), None, &ok), Ok(Transport::VirtioFs));
        let e = choose(Some(&cloud), None, &none).unwrap_err();
        assert!(
            e.contains("CONFIG_NET_9P,") && e.contains("there is no virtiofsd"),
            "{e}"
        );
        let e = choose(Some(&bare), None, &ok).unwrap_err();
        assert!(
            e.contains("CONFIG_VIRTIO_FS") && e.contains("CONFIG_9P_FS"),
            "{e}"
        );
        let e = choose(Some(&cloud), Some(Transport::NineP), &ok).unwrap_err();
        assert!(e.contains("over 9p needs CONFIG_NET_9P"), "{e}");
    }
}
