#!/usr/bin/env python3
"""kiln's initramfs writer against the pipeline people use instead.

Builds a zstd-3 newc initramfs from the same directory tree with
    kiln build (an [[overlay]] of the tree)
and
    find . | cpio -o -H newc | zstd -3 -T0
several times each (page cache warm for both), and prints both medians and the ratio.

usage: benches/initramfs.py [TREE] [--runs N]     (default TREE: /usr/share)
"""
import argparse, os, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(cmd, **kw):
    start = time.perf_counter()
    subprocess.run(cmd, check=True, **kw)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tree", nargs="?", default="/usr/share")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    tree = os.path.abspath(args.tree)

    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    kiln = os.path.join(ROOT, "target", "release", "kiln")
    with tempfile.TemporaryDirectory() as tmp:
        profile = os.path.join(tmp, "bench.toml")
        with open(profile, "w") as f:
            f.write(f'version = 1\n[[overlay]]\nsource = "{tree}"\n'
                    '[[file]]\npath = "/init"\ncontent = "#!/bin/sh\\n"\nmode = "0755"\n'
                    '[output]\ncompression_level = 3\n')
        out = os.path.join(tmp, "out")
        pipe_out = os.path.join(tmp, "pipe.cpio.zst")
        kiln_cmd = [kiln, "--quiet", "build", profile, "-o", out]
        pipe_cmd = ["sh", "-c", f"find . | cpio -o -H newc --quiet | zstd -3 -T0 -q -f -o {pipe_out}"]
        # Warm the page cache so both read from memory.
        timed(pipe_cmd, cwd=tree)
        timed(kiln_cmd)
        k, p = [], []
        for _ in range(args.runs):
            k.append(timed(kiln_cmd))
            p.append(timed(pipe_cmd, cwd=tree))
        files = sum(len(fs) + len(ds) for _, ds, fs in os.walk(tree))
        size = os.path.getsize(os.path.join(out, "bench.cpio.zst"))
        psize = os.path.getsize(pipe_out)
        mk, mp = statistics.median(k), statistics.median(p)
        print(f"tree: {tree} ({files} entries), {args.runs} runs each, {os.cpu_count()} CPUs")
        print(f"{'tool':<42} {'median s':>9} {'min s':>7} {'max s':>7} {'output':>10}")
        print(f"{'kiln build (cpio+zstd-3, sha256 manifest)':<42} {mk:9.2f} {min(k):7.2f} {max(k):7.2f} {size/2**20:8.1f}M")
        print(f"{'find | cpio -o -H newc | zstd -3 -T0':<42} {mp:9.2f} {min(p):7.2f} {max(p):7.2f} {psize/2**20:8.1f}M")
        print(f"ratio kiln/pipeline: {mk/mp:.2f}x (target <= 1.0x)")


if __name__ == "__main__":
    sys.exit(main())
