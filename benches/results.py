#!/usr/bin/env python3
"""Getting a 1 GiB result file out of a VM: kiln's results disk against scp.

On profiles/dev.toml (trixie, systemd, sshd on a disk), in one run, each measured from
the guest starting to write the file to the file being whole on the host:
    kiln: `kiln test` whose test writes SIZE MiB into its results directory, minus the
          same test writing nothing (boot, power-off and the run's fixed costs cancel);
          this includes the guest's sha256 of the file and kiln's check of it
    scp:  the same image booted with `kiln boot --detach`; `kiln ssh -- dd …` writes the
          file to /root, then `scp` over the forwarded port (the project's old way)
and prints MB/s for each. The target: kiln at least as fast as scp.

usage: benches/results.py [--size MIB] [--out DIR]
"""
import argparse, os, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILN = os.path.join(ROOT, "target/release/kiln")
BASE = os.path.join(ROOT, "profiles/dev.toml")
SIZE_MIB = [1024]


def profile(work, command):
    path = os.path.join(work, "bench.toml")
    with open(path, "w") as f:
        f.write(f'version = 1\nname = "bench"\ninclude = ["{BASE}"]\n'
                f'[test]\ncommand = "{command}"\nresults = "/results"\nresults_size = "4G"\n'
                f'timeout = "1800s"\n'
                # Room in the root for scp's copy of the file.
                f'[output]\nfree_space = "{2 * SIZE_MIB[0] + 512}M"\n')
    return path


def kiln_test(work, out, command):
    p = profile(work, command)
    start = time.perf_counter()
    subprocess.run([KILN, "-q", "test", p, "-o", out, "--accel=tcg"], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024, help="MiB (default 1024)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    SIZE_MIB[0] = a.size
    work = tempfile.mkdtemp(prefix="kiln-bench-results-")
    out = a.out or os.path.join(work, "out")
    dd = f"dd if=/dev/zero of=/results/big bs=1M count={a.size} status=none"
    # Build once (and warm the cache) outside the measurement.
    kiln_test(work, out, "true")
    empty = kiln_test(work, out, "true")
    full = kiln_test(work, out, dd)
    got = os.path.getsize(os.path.join(out, "bench.run/results/big"))
    assert got == a.size << 20, got
    kiln_s = full - empty
    print(f"kiln test: {empty:.1f} s writing nothing, {full:.1f} s writing {a.size} MiB", flush=True)

    p = profile(work, "true")
    subprocess.run([KILN, "-q", "boot", p, "-o", out, "--no-build", "--detach", "--accel=tcg"],
                   check=True)
    try:
        subprocess.run([KILN, "-q", "ssh", p, "-o", out, "--", "true"], check=True)
        config = subprocess.run([KILN, "-q", "ssh-config", p, "-o", out], check=True,
                                capture_output=True, text=True).stdout
        cfg = os.path.join(work, "ssh_config")
        with open(cfg, "w") as f:
            f.write(config)
        host = next(l.split()[1] for l in config.splitlines() if l.startswith("Host "))
        start = time.perf_counter()
        subprocess.run([KILN, "-q", "ssh", p, "-o", out, "--",
                        f"dd if=/dev/zero of=/root/big bs=1M count={a.size} status=none && sync"],
                       check=True)
        dest = os.path.join(work, "big.scp")
        subprocess.run(["scp", "-q", "-F", cfg, f"{host}:/root/big", dest], check=True)
        scp_s = time.perf_counter() - start
        assert os.path.getsize(dest) == a.size << 20
    finally:
        subprocess.run([KILN, "-q", "stop", p, "-o", out, "--grace=0"])

    mb = (a.size << 20) / 1e6
    print(f"{a.size} MiB result, guest write to host file, TCG, one run:")
    print(f"  kiln results disk: {kiln_s:6.1f} s  {mb / kiln_s:6.1f} MB/s")
    print(f"  scp (kiln ssh):    {scp_s:6.1f} s  {mb / scp_s:6.1f} MB/s")
    print(f"  kiln/scp throughput: {scp_s / kiln_s:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
