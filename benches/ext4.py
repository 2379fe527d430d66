#!/usr/bin/env python3
"""kiln's ext4 writer against the tools people use instead, on the same tree.

Prepares a Debian trixie root file system once (kiln builds it as a tar, which is
unpacked here with owners), then writes a 1 GiB ext4 image of it with:
    kiln build            (format = "disk": GPT + ext4 + manifest with every file's sha256
                           and the image's sparse digest; again with image_sha256 = true;
                           and built again after one [[file]] changed, the tree's
                           unchanged files not hashed again)
    mke2fs -t ext4 -d
    mke2fs -t ext4 -d under eatmydata (if installed: its fsyncs skipped, as kiln does
                           not flush its image; mke2fs's flush waits on the disk;
                           its ratio is printed for reference)
    systemd-repart        (CopyFiles=, Format=ext4)
    arcbox-ext4           (through benches/arcbox, a small harness)
in interleaved rounds (every tool once a round), and prints median wall time, CPU time
(user + system) and peak memory side by side.

usage: benches/ext4.py [TREE] [--runs 3] [--size 1G]   (default TREE: trixie, built here)
Needs root for the unpacked tree's ownership and for systemd-repart's loop devices.
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = '["systemd", "systemd-sysv", "udev", "openssh-server", "python3", "perl", "less", "vim-tiny", "iproute2", "curl"]'


def measured(cmd, cwd=None):
    """Wall seconds, peak RSS (MiB) and CPU seconds (user + system) of a command, via GNU
    time."""
    with tempfile.NamedTemporaryFile() as t:
        start = time.perf_counter()
        subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", t.name] + cmd, cwd=cwd, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        rss, user, sys_ = open(t.name).read().strip().splitlines()[-1].split()
    return wall, int(rss) / 1024, float(user) + float(sys_)


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(s[:-1]) * mult[s[-1].upper()] if s[-1].upper() in mult else int(s)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tree", nargs="?")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size", default="1G")
    args = ap.parse_args()
    size = parse_size(args.size)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=os.path.join(ROOT, "benches/arcbox"), check=True)
    kiln = os.path.join(ROOT, "target/release/kiln")
    arcbox = os.path.join(ROOT, "benches/arcbox/target/release/arcbox-harness")
    with tempfile.TemporaryDirectory() as tmp:
        tree = args.tree
        if not tree:
            prof = os.path.join(tmp, "tree.toml")
            open(prof, "w").write(f'version = 1\n[distribution]\nsuite = "trixie"\nbase = "minbase"\npackages = {PACKAGES}\n[output]\nformat = "tar"\n')
            subprocess.run([kiln, "--quiet", "build", prof, "-o", tmp], check=True)
            tree = os.path.join(tmp, "tree")
            os.mkdir(tree)
            subprocess.run(["tar", "-xpf", os.path.join(tmp, "tree.tar"), "-C", tree, "--numeric-owner"], check=True)
        tree = os.path.abspath(tree)
        used = int(subprocess.run(["du", "-sb", tree], capture_output=True, text=True).stdout.split()[0])
        files = sum(len(f) + len(d) for _, d, f in os.walk(tree))
        prof = os.path.join(tmp, "bench.toml")
        open(prof, "w").write(f'version = 1\n[output]\nformat = "disk"\nroot_size = "{size}"\n[[overlay]]\nsource = "{tree}"\nowner = "host"\n')
        # The same, with the image's plain sha256 as well: its holes hashed as zeros.
        prof_sha = os.path.join(tmp, "bench-sha.toml")
        open(prof_sha, "w").write(open(prof).read().replace("[output]\n", "[output]\nimage_sha256 = true\n"))
        defs = os.path.join(tmp, "defs")
        os.mkdir(defs)
        open(os.path.join(defs, "10-root.conf"), "w").write(
            f"[Partition]\nType=root\nFormat=ext4\nCopyFiles={tree}:/\nSizeMinBytes={size}\nSizeMaxBytes={size}\n")
        img = os.path.join(tmp, "img")

        def fresh():
            if os.path.exists(img):
                os.remove(img)
            subprocess.run(["sync"], check=True)

        def mke2fs(prefix=()):
            fresh()
            with open(img, "wb") as f:
                f.truncate(size)
            return measured([*prefix, "mke2fs", "-q", "-F", "-t", "ext4", "-d", tree, img])

        def kiln_build(profile):
            # Every tool starts without an old image to replace, so none pays for deleting one.
            shutil.rmtree(os.path.join(tmp, "out"), ignore_errors=True)
            subprocess.run(["sync"], check=True)
            return measured([kiln, "--quiet", "build", profile, "-o", os.path.join(tmp, "out")])

        # Built again after one [[file]] changed: the tree's files, unchanged since the
        # last build, are not hashed again. Its old image is removed first, as the
        # other tools' are (replacing one costs a build about 0.05 s here).
        changed = os.path.join(tmp, "changed.txt")
        open(changed, "w").write("0\n")
        prof_again = os.path.join(tmp, "bench-again.toml")
        open(prof_again, "w").write(open(prof).read() + f'[[file]]\npath = "/etc/kiln-bench-changed"\nsource = "{changed}"\n')
        again = [0]

        def kiln_again():
            out = os.path.join(tmp, "out-again")
            if again[0] == 0:
                subprocess.run([kiln, "--quiet", "build", prof_again, "-o", out], check=True)
            again[0] += 1
            open(changed, "w").write(f"{again[0]}\n")
            os.remove(os.path.join(out, "bench-again.raw"))
            subprocess.run(["sync"], check=True)
            return measured([kiln, "--quiet", "build", prof_again, "-o", out])

        tools = [
            ("kiln build (GPT + ext4 + digests manifest)", lambda: kiln_build(prof)),
            ("kiln build, image_sha256 = true", lambda: kiln_build(prof_sha)),
            ("kiln build again, one [[file]] changed", kiln_again),
            ("mke2fs -t ext4 -d", mke2fs),
        ] + ([("mke2fs -t ext4 -d, fsyncs skipped", lambda: mke2fs(["eatmydata"]))]
             if shutil.which("eatmydata") else []) + [
            ("systemd-repart (CopyFiles, Format=ext4)", lambda: (fresh(), measured(["systemd-repart", "--empty=create", "--size=auto", f"--definitions={defs}", "--dry-run=no", img]))[1]),
            ("arcbox-ext4 0.1.2 (harness)", lambda: (fresh(), measured([arcbox, tree, img, str(size)]))[1]),
        ]
        # Warm the page cache for everyone.
        subprocess.run(["tar", "-cf", "/dev/null", tree], check=True)
        # Rounds, each running every tool once, so that this machine's slow and fast
        # spells fall on all of them alike; a tool that fails is not run again.
        results = {name: [] for name, _ in tools}
        for _ in range(args.runs):
            for name, run in tools:
                if isinstance(results[name], Exception):
                    continue
                try:
                    results[name].append(run())
                except (subprocess.CalledProcessError, FileNotFoundError) as e:
                    results[name] = e
        print(f"tree: {tree} ({files} entries, {used / 2**20:.0f} MiB), image {size / 2**30:.1f} GiB, {args.runs} interleaved rounds, {os.cpu_count()} CPUs")
        print(f"{'tool':<44} {'median s':>9} {'min s':>7} {'CPU s':>6} {'peak RSS':>10}")
        for name, r in results.items():
            if isinstance(r, Exception):
                print(f"{name:<44} failed: {r}")
                continue
            walls = [w for w, _, _ in r]
            cpu = statistics.median(c for _, _, c in r)
            print(f"{name:<44} {statistics.median(walls):9.2f} {min(walls):7.2f} {cpu:6.2f} {max(m for _, m, _ in r):8.0f}MiB")
        k = results.get(tools[0][0])

        def ratio(name):
            m = results.get(name)
            if isinstance(k, list) and isinstance(m, list):
                return statistics.median([w for w, _, _ in k]) / statistics.median([w for w, _, _ in m])
            return None

        # The target is against mke2fs as its users run it (issue 14). Without its flush it
        # is printed for reference: kiln's image is not flushed either.
        r = ratio("mke2fs -t ext4 -d")
        if r is not None:
            print(f"ratio kiln / mke2fs -t ext4 -d: {r:.2f}x (target <= 0.5x)")
        r = ratio("mke2fs -t ext4 -d, fsyncs skipped")
        if r is not None:
            print(f"ratio kiln / mke2fs -t ext4 -d, fsyncs skipped: {r:.2f}x (for reference)")
        if isinstance(k, list):
            print(f"kiln peak RSS {max(x for _, x, _ in k):.0f} MiB (target <= 100 MiB)")

if __name__ == "__main__":
    sys.exit(main())
