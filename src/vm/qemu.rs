//! The QEMU command line, built by a pure function of the launch description and the run
//! options, so it can be printed, tested and copied into a shell.

use std::path::PathBuf;

pub use super::disk::Disk;
use super::kvm::Accelerator;
pub use super::serial::{Console, StatusChannel};
use crate::util::shell::shell_quote;

/// Everything about a machine that comes from the plan, the run configuration and the
/// built image.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// The QEMU binary.
    pub binary: String,
    /// Machine type.
    pub machine: String,
    /// None: "host" under KVM, "max" under TCG.
    pub cpu: Option<String>,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Virtual CPUs.
    pub cpus: u32,
    /// The kernel image.
    pub kernel: PathBuf,
    /// The uncompressed vmlinux QEMU enters through PVH in place of `kernel`, when the
    /// run takes that way in.
    pub pvh: Option<PathBuf>,
    /// The initramfs, if any.
    pub initrd: Option<PathBuf>,
    /// Disks, in the order the guest sees them.
    pub disks: Vec<Disk>,
    /// The kernel command line, word by word.
    pub cmdline: Vec<String>,
    /// Devices beyond the disks and serial ports (network, monitor, gdb stub, vsock), as
    /// QEMU arguments.
    pub devices: Vec<String>,
    /// Further QEMU arguments, appended last so they can override.
    pub extra_args: Vec<String>,
}

/// How this particular run wires the accelerator, the console and the status channel.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// The accelerator chosen.
    pub accel: Accelerator,
    /// Where the console goes.
    pub console: Console,
    /// Where the status channel's output goes.
    pub status: StatusChannel,
}

/// The kernel command line kiln always starts from: the console on the first UART, a
/// panic that ends the VM at once (with -no-reboot) instead of hanging it, and magic
/// SysRq keys kiln can press (a task dump) when a run times out.
pub const BASE_CMDLINE: [&str; 3] = ["console=ttyS0", "panic=-1", "sysrq_always_enabled"];

/// The whole QEMU command, binary first.
pub fn command(l: &Launch, r: &RunSpec) -> Vec<String> {
    let mut a: Vec<String> = vec![l.binary.clone()];
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
    push(&["-machine", &l.machine]);
    push(&["-accel", r.accel.name()]);
    let cpu = l.cpu.clone().unwrap_or_else(|| match r.accel {
        Accelerator::Kvm => "host".to_string(),
        Accelerator::Tcg => "max".to_string(),
    });
    push(&["-cpu", &cpu]);
    push(&["-m", &format!("{}M", l.memory_mib)]);
    push(&["-smp", &l.cpus.to_string()]);
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    let kernel = l.pvh.as_ref().unwrap_or(&l.kernel);
    push(&["-kernel", &kernel.to_string_lossy()]);
    if let Some(initrd) = &l.initrd {
        push(&["-initrd", &initrd.to_string_lossy()]);
    }
    push(&["-append", &l.cmdline.join(" ")]);
    a.extend(r.console.args());
    a.extend(r.status.args());
    for (i, d) in l.disks.iter().enumerate() {
        a.extend(d.args(i));
    }
    a.extend(l.devices.iter().cloned());
    a.extend(l.extra_args.iter().cloned());
    a
}

/// A path inside a QEMU `key=value,…` option: commas are doubled, as QEMU reads them.
/// Paths that are not UTF-8 are refused before a run (see [`text_paths`]).
pub fn option_path(p: &std::path::Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// QEMU takes file names as text: the first of `paths` that is not UTF-8, as an error
/// that says what to do.
pub fn text_paths<'a>(paths: impl IntoIterator<Item = &'a std::path::Path>) -> anyhow::Result<()> {
    for p in paths {
        if p.to_str().is_none() {
            anyhow::bail!(
                "{} is not UTF-8, and QEMU takes file names as text; use a directory whose path is (e.g. --out-dir)",
                p.display()
            );
        }
    }
    Ok(())
}

/// One option and its value per line, quoted for a POSIX shell.
pub fn printable(args: &[String]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < args.len() {
        if i > 0 {
            out.push_str(" \\\n    ");
        }
        out.push_str(&shell_quote(&args[i]));
        let takes_value = i > 0
            && args[i].starts_with('-')
            && args.get(i + 1).is_some_and(|n| !n.starts_with('-'));
        if takes_value {
            out.push(' ');
            out.push_str(&shell_quote(&args[i + 1]));
            i += 1;
        }
        i += 1;
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch() -> Launch {
        Launch {
            binary: "qemu-system-x86_64".into(),
            machine: "q35".into(),
            cpu: None,
            memory_mib: 1024,
            cpus: 2,
            kernel: "/k/vmlinuz".into(),
            pvh: None,
            initrd: Some("/out/x.cpio.zst".into()),
            disks: vec![],
            cmdline: vec!["console=ttyS0".into(), "panic=-1".into(), "quiet".into()],
            devices: vec![],
            extra_args: vec!["-s".into()],
        }
    }

    fn run(accel: Accelerator) -> RunSpec {
        RunSpec {
            accel,
            console: Console::LogFile("/run/console.log".into()),
            status: StatusChannel {
                uart: "/run/status".into(),
                virtio: "/run/status-virtio".into(),
            },
        }
    }

    fn pair(args: &[String], opt: &str) -> Vec<String> {
        args.windows(2)
            .filter(|w| w[0] == opt)
            .map(|w| w[1].clone())
            .collect()
    }

    #[test]
    fn builds_a_test_command() {
        let a = command(&launch(), &run(Accelerator::Tcg));
        assert_eq!(a[0], "qemu-system-x86_64");
        assert_eq!(pair(&a, "-accel"), ["tcg"]);
        assert_eq!(pair(&a, "-cpu"), ["max"]);
        assert_eq!(pair(&a, "-m"), ["1024M"]);
        assert_eq!(pair(&a, "-smp"), ["2"]);
        assert_eq!(pair(&a, "-append"), ["console=ttyS0 panic=-1 quiet"]);
        assert_eq!(pair(&a, "-initrd"), ["/out/x.cpio.zst"]);
        assert!(a.contains(&"-no-reboot".to_string()));
        // Console first, status second: ttyS0 and ttyS1 in the guest.
        assert_eq!(
            pair(&a, "-serial"),
            ["chardev:console", "chardev:kiln-status"]
        );
        assert_eq!(
            a.last().unwrap(),
            "-s",
            "extra args come last so they can override"
        );
    }

    #[test]
    fn a_pvh_vmlinux_is_booted_in_place_of_the_image() {
        assert_eq!(
            pair(&command(&launch(), &run(Accelerator::Tcg)), "-kernel"),
            ["/k/vmlinuz"]
        );
        let mut l = launch();
        l.pvh = Some("/cache/pvh/k.vmlinux".into());
        assert_eq!(
            pair(&command(&l, &run(Accelerator::Tcg)), "-kernel"),
            ["/cache/pvh/k.vmlinux"]
        );
    }

    #[test]
    fn kvm_uses_host_cpu_unless_told_otherwise() {
        let a = command(&launch(), &run(Accelerator::Kvm));
        assert_eq!(pair(&a, "-cpu"), ["host"]);
        let mut l = launch();
        l.cpu = Some("max,pmu=off".into());
        assert_eq!(
            pair(&command(&l, &run(Accelerator::Kvm)), "-cpu"),
            ["max,pmu=off"]
        );
    }

    #[test]
    fn disks_are_virtio_with_serials() {
        let mut l = launch();
        l.disks.push(Disk {
            path: "/out/d.raw".into(),
            format: "raw".into(),
            serial: "kiln-root".into(),
            read_only: false,
            snapshot: false,
        });
        l.disks.push(Disk {
            path: "/out/r.img".into(),
            format: "raw".into(),
            serial: "kiln-results".into(),
            read_only: false,
            snapshot: false,
        });
        let a = command(&l, &run(Accelerator::Tcg));
        assert_eq!(
            pair(&a, "-drive"),
            [
                "file=/out/d.raw,format=raw,if=none,id=disk0",
                "file=/out/r.img,format=raw,if=none,id=disk1"
            ]
        );
        assert!(pair(&a, "-device")
            .contains(&"virtio-blk-pci,drive=disk1,serial=kiln-results".to_string()));
    }

    #[test]
    fn interactive_console_is_on_stdio() {
        let mut r = run(Accelerator::Tcg);
        r.console = Console::Interactive;
        assert_eq!(pair(&command(&launch(), &r), "-serial")[0], "mon:stdio");
    }

    #[test]
    fn printable_is_one_option_per_line_and_quoted() {
        let a = command(&launch(), &run(Accelerator::Tcg));
        let p = printable(&a);
        assert!(
            p.contains("\\\n    -append 'console=ttyS0 panic=-1 quiet'"),
            "{p}"
        );
        assert!(p.contains("\\\n    -no-reboot \\\n"), "{p}");
        // Round trip through a shell parser gives the same words.
        let joined = p.replace("\\\n", " ");
        assert_eq!(shlex_split(&joined), a);
    }

    fn shlex_split(s: &str) -> Vec<String> {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "for a in {}; do printf '%s\\n' \"$a\"; done",
                s.trim()
            ))
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }
}
