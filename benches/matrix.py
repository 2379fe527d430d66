#!/usr/bin/env python3
"""A kernel matrix with kiln against a shell loop of bare QEMU boots.

Builds the busybox test image once, fetches four Debian kernels (bookworm's
6.1.0-47 and 6.1.0-52 cloud kernels, the current bookworm cloud kernel, and the trixie
kernel the profile installs), then times, in one run:
    kiln test --kernel K1 … --kernel K4 -j 1
    kiln test --kernel K1 … --kernel K4 -j 2
    a shell loop that boots each kernel with the QEMU command kiln prints
    (`kiln qemu --print --test`), one after another, and waits for it to exit.
It prints the wall times, kiln's speed-up from -j 2, and kiln's -j 1 time per cell
beside the bare loop's.

usage: benches/matrix.py [--accel tcg]
"""
import argparse, glob, os, shutil, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILE = os.path.join(ROOT, "profiles/busybox.toml")
KERNEL_PACKAGES = ["linux-image-6.1.0-47-cloud-amd64", "linux-image-6.1.0-52-cloud-amd64"]


def fetch_kernel(pkg, work):
    d = os.path.join(work, pkg)
    os.makedirs(d)
    subprocess.run(["apt-get", "download", "-q", pkg], cwd=d, check=True, stdout=subprocess.DEVNULL)
    deb = glob.glob(os.path.join(d, "*.deb"))[0]
    subprocess.run(["dpkg-deb", "-x", deb, os.path.join(d, "x")], check=True)
    return glob.glob(os.path.join(d, "x/boot/vmlinuz-*"))[0]


def timed(cmd, **kw):
    start = time.perf_counter()
    r = subprocess.run(cmd, **kw)
    return time.perf_counter() - start, r.returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accel", default="tcg")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    kiln = os.path.join(ROOT, "target/release/kiln")
    with tempfile.TemporaryDirectory() as work:
        out = os.path.join(work, "out")
        subprocess.run([kiln, "-q", "build", PROFILE, "-o", out], check=True)
        kernels = [fetch_kernel(p, work) for p in KERNEL_PACKAGES]
        # The current bookworm cloud kernel, through its metapackage's dependency.
        meta = subprocess.run(["apt-cache", "depends", "linux-image-cloud-amd64"], capture_output=True, text=True).stdout
        current = next(l.split(":")[1].strip() for l in meta.splitlines() if "Depends:" in l and "linux-image-" in l)
        kernels.append(fetch_kernel(current, work))
        kernels.append(os.path.join(out, "busybox.vmlinuz"))
        kargs = [a for k in kernels for a in ("--kernel", k)]
        common = [kiln, "-q", "test", PROFILE, "-o", out, "--no-build", "--accel", args.accel]
        t1, c1 = timed(common + kargs + ["-j", "1"], stdout=subprocess.DEVNULL)
        t2, c2 = timed(common + kargs + ["-j", "2"], stdout=subprocess.DEVNULL)
        # The bare loop: kiln's own printed command (1 vCPU, as the matrix uses), per kernel.
        printed = subprocess.run([kiln, "-q", "qemu", "--print", "--test", PROFILE, "-o", out,
                                  "--accel", args.accel, "--cpus", "1", "--kernel", kernels[0]],
                                 capture_output=True, text=True, check=True).stdout
        loop_start = time.perf_counter()
        for k in kernels:
            cmd = printed.replace(kernels[0], k)
            subprocess.run(["sh", "-c", cmd], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tb = time.perf_counter() - loop_start
        n = len(kernels)
        print(f"{n} kernels: {', '.join(os.path.basename(k) for k in kernels)}; accel {args.accel}; {os.cpu_count()} CPUs")
        print(f"{'what':<44} {'wall s':>8} {'per cell s':>11}")
        print(f"{'kiln test -j 1 (exit ' + str(c1) + ')':<44} {t1:8.2f} {t1 / n:11.2f}")
        print(f"{'kiln test -j 2 (exit ' + str(c2) + ')':<44} {t2:8.2f} {t2 / n:11.2f}")
        print(f"{'bare qemu loop (kiln qemu --print --test)':<44} {tb:8.2f} {tb / n:11.2f}")
        print(f"speed-up of -j 2 over -j 1: {t1 / t2:.2f}x (target >= 1.8x); "
              f"kiln -j 1 per cell vs bare loop: {100 * (t1 - tb) / tb:+.1f}% (target within 5%)")


if __name__ == "__main__":
    sys.exit(main())
