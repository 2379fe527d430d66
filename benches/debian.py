#!/usr/bin/env python3
"""kiln's Debian root file system against mmdebstrap, on the same package set.

For trixie minbase (or --suite/--variant), times
    kiln build (output.format = "tar"), cold cache (a new empty cache each run)
    kiln build, warm cache
    mmdebstrap --mode=unshare --variant=minbase --format=tar
several times each and prints the medians side by side. Both download from the
mirror in the host's apt configuration.

usage: benches/debian.py [--suite trixie] [--runs 3]
"""
import argparse, os, re, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def host_mirror():
    for d in ["/etc/apt/sources.list.d"]:
        for f in sorted(os.listdir(d)):
            if f.endswith(".sources"):
                for m in re.findall(r"^URIs:\s*(\S+)", open(os.path.join(d, f)).read(), re.M):
                    if m.rstrip("/").endswith("/debian"):
                        return m.rstrip("/")
    for line in open("/etc/apt/sources.list").read().splitlines() if os.path.exists("/etc/apt/sources.list") else []:
        w = line.split()
        if w[:1] == ["deb"] and w[-3 if len(w) > 3 else 1].rstrip("/").endswith("/debian"):
            return w[1]
    sys.exit("no Debian mirror in /etc/apt")


def timed(cmd, env=None):
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="trixie")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    mirror = host_mirror()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    kiln = os.path.join(ROOT, "target", "release", "kiln")
    with tempfile.TemporaryDirectory() as tmp:
        profile = os.path.join(tmp, "bench.toml")
        with open(profile, "w") as f:
            f.write(f'version = 1\n[distribution]\nsuite = "{args.suite}"\nbase = "minbase"\n[output]\nformat = "tar"\n')
        out = os.path.join(tmp, "out")
        env = dict(os.environ)
        cold, warm, mm = [], [], []
        for i in range(args.runs):
            cache = os.path.join(tmp, f"cache{i}")
            env["KILN_CACHE_DIR"] = cache
            cold.append(timed([kiln, "--quiet", "build", profile, "-o", out], env))
            warm.append(timed([kiln, "--quiet", "build", profile, "-o", out], env))
            shutil.rmtree(cache)
        env["KILN_CACHE_DIR"] = os.path.join(tmp, "cache-warm")
        timed([kiln, "--quiet", "build", profile, "-o", out], env)
        for i in range(args.runs):
            mm.append(timed(["mmdebstrap", "--quiet", "--mode=unshare", "--variant=minbase", "--format=tar",
                             args.suite, os.path.join(tmp, "mm.tar"), f"deb {mirror} {args.suite} main"]))
        ksize = os.path.getsize(os.path.join(out, "bench.tar"))
        msize = os.path.getsize(os.path.join(tmp, "mm.tar"))
        mc, mw, mmm = statistics.median(cold), statistics.median(warm), statistics.median(mm)
        print(f"{args.suite} minbase, {args.runs} runs each, {os.cpu_count()} CPUs")
        print(f"{'tool':<48} {'median s':>9} {'min s':>7} {'max s':>7} {'tar':>9}")
        print(f"{'kiln build, cold cache (downloads)':<48} {mc:9.2f} {min(cold):7.2f} {max(cold):7.2f} {ksize/2**20:7.1f}M")
        print(f"{'kiln build, warm cache':<48} {mw:9.2f} {min(warm):7.2f} {max(warm):7.2f} {ksize/2**20:7.1f}M")
        print(f"{'mmdebstrap --mode=unshare --variant=minbase':<48} {mmm:9.2f} {min(mm):7.2f} {max(mm):7.2f} {msize/2**20:7.1f}M")
        print(f"ratio warm kiln / mmdebstrap: {mw/mmm:.2f}x (target <= 0.25x); cold: {mc/mmm:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
