//! QEMU's gdb stub: where it listens, whether the CPU waits for the debugger, and the
//! gdb command that attaches to it.

use std::path::Path;

use crate::util::shell::shell_quote;

/// The gdb stub a run asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gdb {
    /// The port on 127.0.0.1.
    pub port: u16,
    /// Hold the CPU at reset until the debugger continues it.
    pub wait: bool,
}

impl Gdb {
    /// The QEMU arguments: the stub on 127.0.0.1 only, and `-S` to hold the CPU.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec!["-gdb".into(), format!("tcp:127.0.0.1:{}", self.port)];
        if self.wait {
            a.push("-S".into());
        }
        a
    }

    /// The command that attaches gdb, with the kernel's symbols when `vmlinux` is known.
    pub fn command(&self, vmlinux: Option<&Path>) -> String {
        let mut c = format!("gdb -ex 'target remote :{}'", self.port);
        if let Some(v) = vmlinux {
            c.push(' ');
            c.push_str(&shell_quote(&v.to_string_lossy()));
        }
        c
    }
}

/// The uncompressed kernel with symbols for `kernel`, when one lies where kernel builds
/// put it: beside the image (`vmlinux`, `vmlinux-RELEASE` for `vmlinuz-RELEASE`), or at
/// the top of a build tree whose `arch/*/boot/bzImage` this is.
pub fn find_vmlinux(kernel: &Path) -> Option<std::path::PathBuf> {
    let dir = kernel.parent()?;
    let name = kernel.file_name()?.to_string_lossy().to_string();
    let mut candidates = vec![dir.join("vmlinux")];
    if let Some(rel) = name.strip_prefix("vmlinuz-") {
        candidates.push(dir.join(format!("vmlinux-{rel}")));
        // Debian's -dbg packages install here.
        candidates.push(Path::new("/usr/lib/debug/boot").join(format!("vmlinux-{rel}")));
    }
    // arch/x86/boot/bzImage → the tree's top.
    if let Some(top) = dir.parent().and_then(Path::parent).and_then(Path::parent) {
        if dir.ends_with("boot") {
            candidates.push(top.join("vmlinux"));
        }
    }
    candidates.into_iter().find(|c| c.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_and_command() {
        let g = Gdb {
            port: 1234,
            wait: true,
        };
        assert_eq!(g.args(), ["-gdb", "tcp:127.0.0.1:1234", "-S"]);
        assert_eq!(
            g.command(Some(Path::new("/src/linux/vmlinux"))),
            "gdb -ex 'target remote :1234' /src/linux/vmlinux"
        );
        assert_eq!(
            Gdb {
                port: 9,
                wait: false
            }
            .args(),
            ["-gdb", "tcp:127.0.0.1:9"]
        );
    }

    #[test]
    fn finds_vmlinux_in_a_build_tree() {
        let d = tempfile::tempdir().unwrap();
        let boot = d.path().join("arch/x86/boot");
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::write(boot.join("bzImage"), b"k").unwrap();
        assert_eq!(find_vmlinux(&boot.join("bzImage")), None);
        std::fs::write(d.path().join("vmlinux"), b"elf").unwrap();
        assert_eq!(
            find_vmlinux(&boot.join("bzImage")),
            Some(d.path().join("vmlinux"))
        );
    }
}
