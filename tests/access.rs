//! Getting into running VMs as users do, with real QEMU under TCG, the host's ssh, scp
//! and gdb: a trixie disk with sshd booted in the background, logged into, copied out
//! of and into, and stopped; a busybox initramfs that takes an address by DHCP; two VMs
//! at once on different ports; gdb reading a register; and what a killed kiln, a timeout
//! and --dump-on-failure leave behind.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The pid of QEMU in the first `vm.json` under `runs`, waiting for one to appear.
fn wait_for_record(runs: &Path, limit: Duration) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let found = walk(runs)
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n == "vm.json"))
            .find_map(|p| serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok());
        if let Some(v) = found {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "no VM record under {}",
            runs.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Whether process `pid` runs (a zombie waiting for a reaper does not).
fn running(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, r)| !r.starts_with('Z'))
    })
}

fn gone_within(pid: u64, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if !running(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn vm_cmd(verb: &str, profile: &Path, out: &Path) -> Command {
    let mut c = kiln();
    c.arg(verb).arg(profile).arg("-o").arg(out);
    c
}

#[test]
fn a_disk_with_sshd_is_logged_into_copied_from_and_stopped_while_its_test_runs() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let profile = repo().join("profiles/dev.toml");
    let o = run(&mut vm_cmd("build", &profile, &out));
    assert!(o.status.success());
    // The test runs on its own throwaway overlay while the same image is logged into.
    let test = vm_cmd("test", &profile, &out)
        .args(["--no-build", "--accel=tcg"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_record(&out.join("dev.runs"), Duration::from_secs(60));
    let o = run(vm_cmd("boot", &profile, &out).args(["--no-build", "--detach", "--accel=tcg"]));
    assert!(o.status.success());
    let err = stderr(&o);
    assert!(err.contains("throwaway overlay"), "{err}");
    assert!(err.contains("kiln ssh"), "{err}");
    let o = run(vm_cmd("ssh", &profile, &out).args(["--", "true"]));
    assert_eq!(o.status.code(), Some(0), "key authentication works");
    let o = run(vm_cmd("ssh", &profile, &out).args(["--", "exit", "7"]));
    assert_eq!(o.status.code(), Some(7), "the remote status comes back");
    let o = run(vm_cmd("ssh", &profile, &out).args(["--", "cat", "/proc/cmdline"]));
    assert!(stdout(&o).contains("kiln.ssh_key=ssh-ed25519:"));
    assert!(!stdout(&o).contains("kiln.test="), "a boot runs no test");
    // Out, byte for byte against the image itself.
    let host = d.path().join("ssh-keygen");
    assert!(run(vm_cmd("cp", &profile, &out)
        .args([":/usr/bin/ssh-keygen"])
        .arg(&host))
    .status
    .success());
    let x = d.path().join("x");
    let image = out.join("dev.raw");
    assert!(run(kiln()
        .arg("extract")
        .arg(&image)
        .arg("/usr/bin/ssh-keygen")
        .arg(&x))
    .status
    .success());
    assert_eq!(sha256_file(&host), sha256_file(&x.join("ssh-keygen")));
    // In.
    let payload = write(d.path(), "in.bin", &"kiln\n".repeat(10_000));
    assert!(run(vm_cmd("cp", &profile, &out)
        .arg(&payload)
        .arg(":/root/in.bin"))
    .status
    .success());
    let o = run(vm_cmd("ssh", &profile, &out).args(["--", "sha256sum", "/root/in.bin"]));
    assert!(
        stdout(&o).starts_with(&sha256_file(&payload)),
        "{}",
        stdout(&o)
    );
    let o = run(&mut vm_cmd("ssh-config", &profile, &out));
    let cfg = stdout(&o);
    assert!(
        cfg.starts_with("Host dev\n")
            && cfg.contains("Port ")
            && cfg.contains("dev.ssh/id_ed25519"),
        "{cfg}"
    );
    let ps = run(kiln().args(["ps", "--json"]));
    let detached: Vec<serde_json::Value> = stdout(&ps)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| {
            v["detached"] == true
                && v["dir"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(out.to_str().unwrap()))
        })
        .collect();
    assert_eq!(detached.len(), 1, "{}", stdout(&ps));
    let pid = detached[0]["pid"].as_u64().unwrap();
    let o = run(vm_cmd("stop", &profile, &out).arg(format!("--pid={pid}")));
    assert!(o.status.success());
    assert!(
        gone_within(pid, Duration::from_secs(5)),
        "QEMU {pid} outlived kiln stop"
    );
    let o = test.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = run(vm_cmd("ssh", &profile, &out).args(["--", "true"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no running VM"), "{}", stderr(&o));
}

fn net_profile(dir: &Path, name: &str) -> PathBuf {
    write(
        dir,
        &format!("{name}.toml"),
        &format!(
            "version = 1\nname = \"{name}\"\n[distribution]\nsuite = \"trixie\"\npackages = [\"busybox-static\"]\n[kernel]\npackage = \"linux-image-cloud-amd64\"\ndebug_symbols = true\n[[symlink]]\npath = \"/bin/sh\"\ntarget = \"busybox\"\n[network]\nmode = \"user\"\nforward = [\"8080\"]\n[test]\ncommand = \"ip -4 addr show eth0 | grep 'inet 10.0.2.15/24' && ip route | grep -q 'default via 10.0.2.2' && grep -q 10.0.2.3 /etc/resolv.conf\"\ntimeout = \"120s\"\n[qemu]\nmemory = \"512M\"\naccel = \"tcg\"\n"
        ),
    )
}

#[test]
fn a_busybox_initramfs_takes_an_address_by_dhcp_and_two_vms_get_their_own_ports_and_gdb() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let a = net_profile(d.path(), "net-a");
    let b = net_profile(d.path(), "net-b");
    let o = run(&mut vm_cmd("test", &a, &out));
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(run(&mut vm_cmd("build", &b, &out)).status.success());
    for p in [&a, &b] {
        let o = run(vm_cmd("boot", p, &out).args(["--no-build", "--detach"]));
        assert!(o.status.success());
        assert!(stderr(&o).contains("guest port 8080 is forwarded to 127.0.0.1:"));
    }
    let record = |name: &str| -> serde_json::Value {
        let dir = out.join(format!("{name}.runs"));
        wait_for_record(&dir, Duration::from_secs(5))
    };
    let (ra, rb) = (record("net-a"), record("net-b"));
    let port = |r: &serde_json::Value| r["forwards"][0]["host"].as_u64().unwrap();
    assert_ne!(port(&ra), port(&rb), "two VMs, two host ports");
    for p in [&a, &b] {
        assert!(run(vm_cmd("stop", p, &out).arg("--grace=0"))
            .status
            .success());
    }
    for r in [&ra, &rb] {
        assert!(gone_within(
            r["pid"].as_u64().unwrap(),
            Duration::from_secs(5)
        ));
    }
    // gdb, with the command kiln prints: first against a CPU held at reset, then, once
    // the kernel runs, reading its memory through the symbols of the -dbg package.
    if !which("gdb") {
        panic!("gdb is not installed (apt-get install gdb)");
    }
    let o = run(vm_cmd("boot", &a, &out).args([
        "--no-build",
        "--detach",
        "--gdb-wait",
        "--network=none",
    ]));
    let err = stderr(&o);
    assert!(err.contains("nokaslr added"), "{err}");
    let printed = printed_gdb_command(&err);
    // Taken out of the -dbg package (then kept in the cache).
    assert!(
        printed.contains("/vmlinux-") && printed.contains("-cloud-amd64"),
        "{printed}"
    );
    let text = run_gdb(&printed, "-ex 'info registers rip'");
    assert!(text.contains("rip") && text.contains("0xfff0"), "{text}");
    // Detaching let the CPU go: wait for the shell, then read the running kernel.
    let r = record("net-a");
    wait_for_console(
        Path::new(r["console"].as_str().unwrap()),
        "no test on this boot",
    );
    let text = run_gdb(
        &printed,
        "-ex 'p init_uts_ns.name.release' -ex 'x/s linux_banner'",
    );
    assert!(
        text.contains("-cloud-amd64\"") && text.contains("<linux_banner>:\t\"Linux version"),
        "{text}"
    );
    assert!(run(vm_cmd("stop", &a, &out).arg("--grace=0"))
        .status
        .success());
    assert!(gone_within(
        r["pid"].as_u64().unwrap(),
        Duration::from_secs(5)
    ));
}

#[test]
fn a_killed_kiln_leaves_no_qemu_and_a_timeout_keeps_a_task_dump_and_a_core() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let p = busybox_profile(
        d.path(),
        "hang",
        "[test]\ncommand = \"sleep 300\"\ntimeout = \"200s\"\n",
    );
    let mut child = test_cmd(&p, &out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let r = wait_for_record(&out.join("hang.runs"), Duration::from_secs(60));
    let qemu = r["pid"].as_u64().unwrap();
    assert!(running(qemu));
    child.kill().unwrap(); // SIGKILL: no handler of kiln's runs.
    child.wait().unwrap();
    assert!(
        gone_within(qemu, Duration::from_secs(5)),
        "QEMU {qemu} outlived a killed kiln"
    );

    let o = run(test_cmd(&p, &out).args(["--timeout=25s", "--dump-on-failure", "--memory=256M"]));
    assert_eq!(o.status.code(), Some(124), "{}", stdout(&o));
    let run_dir = std::fs::canonicalize(out.join("hang.run")).unwrap();
    let console = std::fs::read_to_string(run_dir.join("console.log")).unwrap();
    assert!(
        console.contains("sysrq: Show State"),
        "no task dump in the console"
    );
    assert!(console.contains("sysrq: Show Blocked State"));
    let core = std::fs::read(run_dir.join("vmcore")).unwrap();
    assert_eq!(&core[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([core[16], core[17]]), 4, "ET_CORE");
    assert!(stderr(&o).contains("drgn -c"), "{}", stderr(&o));
}
