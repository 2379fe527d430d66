//! Is KVM usable? `/dev/kvm` existing is not enough: on some hosts (nested
//! virtualisation gone wrong) a guest hangs the moment it leaves real mode. kiln boots a
//! tiny firmware (see kvm_probe.S) that walks into long mode and exits; if that does not
//! finish within the probe's time limit, TCG it is.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::plan::Accel;

/// Real mode → protected mode → paging → long mode → `out 0xf4`. Built from kvm_probe.S.
const PROBE_CODE: &str = "fa31c08ed8b800f08ed8660f0116b0000f20c06683c8010f22c066ea22000f00080066b810008ed88ec08ed0bf0010000031c0b9000c0000f3abc7050010000003200000c7050020000003300000c7050030000083000000b8001000000f22d80f20e083c8200f22e0b9800000c00f320d000100000f300f20c00d000000800f22c0ea89000f001800b042e6f4f4ebfd0000000000000000ffff0000009acf00ffff00000092cf00ffff0000009aaf001f0090000f";
/// At the reset vector (0xfffffff0): `ljmp $0xf000, $0x0000`, the code's start.
const RESET_CODE: [u8; 5] = [0xea, 0x00, 0x00, 0x00, 0xf0];
const EXPECTED_EXIT: i32 = (0x42 << 1) | 1;
/// How long the probe firmware gets to reach long mode before KVM is judged unusable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The 64 KiB firmware image.
pub fn probe_firmware() -> Vec<u8> {
    let mut image = vec![0u8; 0x10000];
    let code = hex::decode(PROBE_CODE).unwrap_or_default();
    image[..code.len()].copy_from_slice(&code);
    image[0xfff0..0xfff0 + RESET_CODE.len()].copy_from_slice(&RESET_CODE);
    image
}

/// How QEMU runs the guest's CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accelerator {
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
    /// QEMU's software emulation: works everywhere, much slower.
    Tcg,
}

impl Accelerator {
    /// The value for QEMU's `-accel` option.
    pub fn name(self) -> &'static str {
        match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Tcg => "tcg",
        }
    }
}

/// The accelerator to use and, when it is not what was asked for, why.
#[derive(Debug, Clone)]
pub struct AccelChoice {
    /// Accelerator the VM will run with.
    pub accel: Accelerator,
    /// Why KVM is not used although `auto` asked for it; None otherwise.
    pub warning: Option<String>,
}

/// An explicit `tcg` or `kvm` is used as is; `auto` probes KVM (once per host boot) and falls back to TCG with a warning.
pub fn choose(requested: Accel, qemu: &str) -> AccelChoice {
    match requested {
        Accel::Tcg => AccelChoice {
            accel: Accelerator::Tcg,
            warning: None,
        },
        Accel::Kvm => AccelChoice {
            accel: Accelerator::Kvm,
            warning: None,
        },
        Accel::Auto => match probe_cached(qemu) {
            Ok(()) => AccelChoice {
                accel: Accelerator::Kvm,
                warning: None,
            },
            Err(why) => AccelChoice {
                accel: Accelerator::Tcg,
                warning: Some(format!(
                    "KVM is not usable ({why}); falling back to TCG, which is much slower"
                )),
            },
        },
    }
}

/// The probe's answer for this host boot and this QEMU binary: a QEMU upgraded (or
/// installed) since is probed again.
fn cache_file(qemu: &str) -> Option<PathBuf> {
    use sha2::{Digest, Sha256};
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let binary = if qemu.contains('/') {
        PathBuf::from(qemu)
    } else {
        crate::source::elf::which(qemu)?
    };
    let md = std::fs::metadata(&binary).ok()?;
    let mtime = md
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    let key = Sha256::new()
        .chain_update(binary.as_os_str().as_encoded_bytes())
        .chain_update(md.len().to_le_bytes())
        .chain_update(mtime.as_nanos().to_le_bytes())
        .finalize();
    Some(crate::util::cache::cache_dir().join(format!(
        "kvm-probe-{}-{}",
        boot_id.trim(),
        &hex::encode(key)[..16]
    )))
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// KVM ran the probe guest, or definitely cannot: worth remembering until the host
    /// reboots or QEMU changes.
    Definite(Result<(), String>),
    /// The probe could not tell (QEMU would not start, /dev/kvm cannot be opened): asked
    /// again next time.
    Unknown(String),
}

/// Probes once per host boot and QEMU binary. Whether /dev/kvm can be opened is checked
/// every time: joining the kvm group changes it without a reboot.
fn probe_cached(qemu: &str) -> Result<(), String> {
    open_kvm()?;
    cached(cache_file(qemu).as_deref(), || probe(qemu, PROBE_TIMEOUT))
}

/// Whether this user may open /dev/kvm, and if not, what to do about it.
fn open_kvm() -> Result<(), String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(format!(
            "/dev/kvm: {e}; join the kvm group (sudo usermod -aG kvm $USER, then log in again)"
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(
            "there is no /dev/kvm (load the kvm_intel or kvm_amd module; in a container, pass the device in)"
                .to_string(),
        ),
        Err(e) => Err(format!("/dev/kvm: {e}")),
    }
}

/// The answer recorded in `cache`, or `probe`'s, recorded there when it is definite.
fn cached(cache: Option<&std::path::Path>, probe: impl FnOnce() -> Answer) -> Result<(), String> {
    if let Some(c) = cache {
        if let Ok(s) = std::fs::read_to_string(c) {
            return match s.strip_prefix("ok") {
                Some(_) => Ok(()),
                None => Err(s.trim().to_string()),
            };
        }
    }
    let result = match probe() {
        Answer::Unknown(why) => return Err(why),
        Answer::Definite(result) => result,
    };
    if let Some(c) = cache {
        let text = match &result {
            Ok(()) => "ok\n".to_string(),
            Err(e) => format!("{e}\n"),
        };
        let _ = crate::util::atomic::write(c, text.as_bytes());
    }
    result
}

/// Boots the probe firmware under KVM; Ok when it reaches long mode in time.
pub fn probe(qemu: &str, timeout: Duration) -> Answer {
    if let Err(why) = open_kvm() {
        return Answer::Unknown(why);
    }
    let Ok(dir) = tempfile::tempdir() else {
        return Answer::Unknown("cannot create a temporary directory for the probe".into());
    };
    let bios = dir.path().join("probe.bin");
    if let Err(e) = std::fs::write(&bios, probe_firmware()) {
        return Answer::Unknown(format!("writing the probe firmware: {e}"));
    }
    let spawned = Command::new(qemu)
        .args([
            "-machine",
            "q35",
            "-accel",
            "kvm",
            "-m",
            "16",
            "-nodefaults",
            "-no-user-config",
        ])
        .args([
            "-display",
            "none",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-bios",
        ])
        .arg(&bios)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return Answer::Unknown(format!(
                "cannot run {qemu}: {e} (Debian: apt install qemu-system-x86)"
            ))
        }
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Answer::Definite(if status.code() == Some(EXPECTED_EXIT) {
                    Ok(())
                } else {
                    Err(format!("the probe guest failed under KVM ({status})"))
                });
            }
            Ok(None) if start.elapsed() > timeout => {
                // SAFETY: signalling the process group we created for the probe.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                return Answer::Definite(Err(format!(
                    "a probe guest hung for {:.0?} under KVM",
                    timeout
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Answer::Unknown(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_has_code_and_reset_vector() {
        let fw = probe_firmware();
        assert_eq!(fw.len(), 0x10000);
        assert_eq!(fw[0], 0xfa, "starts with cli");
        assert_eq!(&fw[0xfff0..0xfff5], &[0xea, 0x00, 0x00, 0x00, 0xf0]);
    }

    #[test]
    fn the_answer_is_cached_until_the_file_goes() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("kvm-probe-boot");
        let calls = std::cell::Cell::new(0);
        let hangs = || {
            calls.set(calls.get() + 1);
            Answer::Definite(Err("a probe guest hung".to_string()))
        };
        assert_eq!(cached(Some(&c), hangs), Err("a probe guest hung".into()));
        assert_eq!(cached(Some(&c), hangs), Err("a probe guest hung".into()));
        assert_eq!(calls.get(), 1, "the second answer came from the cache");
        std::fs::remove_file(&c).unwrap();
        assert_eq!(cached(Some(&c), || Answer::Definite(Ok(()))), Ok(()));
        assert_eq!(std::fs::read_to_string(&c).unwrap(), "ok\n");
        assert_eq!(cached(None, || Answer::Definite(Ok(()))), Ok(()));
    }

    #[test]
    fn a_probe_that_could_not_tell_is_not_remembered() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("kvm-probe-boot");
        let missing = || Answer::Unknown("cannot run qemu-system-x86_64".to_string());
        assert!(cached(Some(&c), missing).is_err());
        assert!(!c.exists(), "nothing cached");
        assert_eq!(cached(Some(&c), || Answer::Definite(Ok(()))), Ok(()));
    }

    #[test]
    fn a_missing_qemu_says_how_to_install_it() {
        match probe("/nonexistent/qemu-system-x86_64", PROBE_TIMEOUT) {
            Answer::Unknown(why) => assert!(
                why.contains("apt install qemu-system-x86") || why.contains("/dev/kvm"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
    }

    /// The embedded bytes are what kvm_probe.S assembles to (binutils is a test dependency).
    #[test]
    fn firmware_matches_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src/vm/kvm_probe.S");
        let obj = dir.path().join("p.o");
        let bin = dir.path().join("p.bin");
        let ok = Command::new("as")
            .args(["--32", "-o"])
            .arg(&obj)
            .arg(src)
            .status()
            .map(|s| s.success());
        assert!(
            matches!(ok, Ok(true)),
            "GNU as could not assemble {src}: install binutils"
        );
        assert!(Command::new("objcopy")
            .args(["-O", "binary", "-j", ".text"])
            .arg(&obj)
            .arg(&bin)
            .status()
            .unwrap()
            .success());
        assert_eq!(std::fs::read(&bin).unwrap(), probe_firmware());
    }
}
