#!/usr/bin/env python3
"""Time from boot to the first successful SSH command, kiln against a hand loop.

Builds profiles/dev.toml (trixie, systemd, sshd on a disk), then, each on a freshly
built image (same bytes, first boot both times), in one run:
    kiln boot --detach, then `kiln ssh -- true` (which waits for sshd's banner)
    the same kernel, boot initramfs and disk booted by a hand-written QEMU command
    (user-mode NIC forwarding a port to 22, the same key on the command line) and
    `until ssh … true; do sleep 0.5; done`
and prints both times and kiln's overhead in per cent (the target is within 10 %).

usage: benches/ssh.py [--out DIR]
"""
import argparse, os, shlex, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILE = os.path.join(ROOT, "profiles/dev.toml")
KILN = os.path.join(ROOT, "target/release/kiln")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(out):
    subprocess.run([KILN, "-q", "build", PROFILE, "-o", out], check=True)


def kiln_run(out):
    build(out)
    start = time.perf_counter()
    subprocess.run([KILN, "-q", "boot", PROFILE, "-o", out, "--no-build", "--detach", "--accel=tcg"], check=True)
    subprocess.run([KILN, "-q", "ssh", PROFILE, "-o", out, "--", "true"], check=True)
    took = time.perf_counter() - start
    subprocess.run([KILN, "-q", "stop", PROFILE, "-o", out, "--grace=0"], check=True)
    return took


def hand_run(out, work):
    build(out)
    printed = subprocess.run([KILN, "-q", "qemu", PROFILE, "-o", out, "--print", "--accel=tcg"],
                             check=True, capture_output=True, text=True).stdout
    words = shlex.split(printed.replace("\\\n", " "))
    append = words[words.index("-append") + 1]
    # What a user writes by hand: the kernel, its initramfs, the disk, a NIC, and the key
    # word the image reads (kiln's journal port is not attached by hand).
    append = " ".join(w for w in append.split() if w != "kiln.journal")
    key = os.path.join(out, "dev.ssh/id_ed25519")
    port = free_port()
    cmd = ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", "1G", "-smp", "1",
           "-nodefaults", "-display", "none", "-no-reboot",
           "-kernel", os.path.join(out, "dev.vmlinuz"), "-initrd", os.path.join(out, "dev.initrd.cpio.zst"),
           "-append", append,
           "-drive", f"file={os.path.join(out, 'dev.raw')},format=raw,if=none,id=d0,snapshot=on",
           "-device", "virtio-blk-pci,drive=d0,serial=kiln-root",
           "-nic", f"user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{port}-:22",
           "-serial", f"file:{os.path.join(work, 'hand-console.log')}"]
    loop = (f"until ssh -q -i {key} -p {port} -o BatchMode=yes -o StrictHostKeyChecking=no "
            f"-o UserKnownHostsFile=/dev/null -o ConnectTimeout=2 root@127.0.0.1 true; do sleep 0.5; done")
    start = time.perf_counter()
    qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        subprocess.run(["sh", "-c", loop], check=True, timeout=600)
        return time.perf_counter() - start
    finally:
        qemu.kill()
        qemu.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="output directory (default: a temporary one)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        out = a.out or os.path.join(work, "out")
        k = kiln_run(out)
        h = hand_run(out, work)
    print(f"boot to first ssh, trixie sshd disk under TCG")
    print(f"  kiln boot --detach + kiln ssh -- true : {k:6.1f} s")
    print(f"  hand QEMU command + ssh loop (0.5 s)   : {h:6.1f} s")
    print(f"  kiln's overhead                       : {100 * (k - h) / h:+6.1f} %")


if __name__ == "__main__":
    sys.exit(main())
