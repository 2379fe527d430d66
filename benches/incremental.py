#!/usr/bin/env python3
"""Builds that should cost nothing, or little: this kiln, and an older one side by side.

    benches/incremental.py [--before OLD_KILN] [--runs 10]

1. A no-op `kiln build` of each shipped profile (median of --runs), unlocked, unlocked
   with `--index-max-age 1h` (this kiln only: the InRelease reused) and locked
   (`kiln lock` first, then `--locked`). An older kiln without no-op builds builds in
   full each time: that is its column.
2. The disk profile with one overlay file changed between builds (median of 7, the
   kilns interleaved).
3. An unlocked build of profiles/debian-minimal-disk.toml with a warm cache, in full
   (`--rebuild`): wall time and peak RSS.
4. The same, wall time and peak RSS, for every shipped profile, unlocked (resolved
   afresh: the kept resolution removed first) and locked.

Everything runs on a copy of profiles/ in a temporary directory (locks are written
beside the profiles), with the user's package cache (warm after the first build).
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILN = os.path.join(ROOT, "target/release/kiln")
CACHE = (os.environ.get("KILN_CACHE_DIR")
         or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kiln"))


def measured(cmd, env=None):
    """(ok, wall seconds, peak RSS in MB, last line of stderr) of one command."""
    with tempfile.NamedTemporaryFile() as t:
        start = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", t.name] + cmd, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - start
        try:
            rss = int(open(t.name).read().strip().splitlines()[-1]) / 1024
        except (ValueError, IndexError):
            rss = float("nan")
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    return p.returncode == 0, wall, rss, (lines[-1] if lines else "")


def rebuild(kiln):
    """`--rebuild` for a kiln that has it; a kiln without no-op builds always builds in full."""
    h = subprocess.run([kiln, "build", "--help"], capture_output=True, text=True).stdout
    return ["--rebuild"] if "--rebuild" in h else []


def median_builds(kiln, profile, out, runs, extra=(), between=None):
    """Median wall time of `runs` builds after a first one; or the error."""
    ok, _, _, last = measured([kiln, "build", profile, "-o", out, *extra])
    if not ok:
        return f"fails: {last[:60]}"
    times = []
    for i in range(runs):
        if between:
            between(i)
        ok, wall, _, last = measured([kiln, "build", profile, "-o", out, *extra])
        if not ok:
            return f"fails: {last[:60]}"
        times.append(wall)
    return f"{statistics.median(times) * 1000:8.0f} ms"


def row(title, kilns, work, kind, cell):
    """One line: `title`, then cell(kiln, its output directory) for each kiln."""
    line = title
    for label, k in kilns:
        line += f"{cell(k, os.path.join(work, f'out-{kind}-' + label.replace(' ', '-'))):>22}"
    print(line, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", help="an older kiln binary to compare with")
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    kilns = [("this kiln", KILN)] + ([("before", a.before)] if a.before else [])
    with tempfile.TemporaryDirectory(prefix="kiln-incremental-") as work:
        profiles = os.path.join(work, "profiles")
        shutil.copytree(os.path.join(ROOT, "profiles"), profiles)
        names = sorted(f[:-5] for f in os.listdir(profiles) if f.endswith(".toml"))
        print(f"1. no-op build, median of {a.runs}")
        print(f"{'profile':28}{'':10}" + "".join(f"{n:>22}" for n, _ in kilns))
        for name in names:
            p = os.path.join(profiles, f"{name}.toml")
            for mode in ("unlocked", "window", "locked"):
                extra = ()
                if mode == "window":
                    # Unlocked, with the InRelease of the last hour reused.
                    extra = ("--index-max-age", "1h")
                    row(f"{name:28}{mode:10}", kilns, work, "noop",
                        lambda k, out: median_builds(k, p, out, a.runs, extra) if k == KILN else "(no option)")
                    continue
                if mode == "locked":
                    if subprocess.run([KILN, "lock", p], capture_output=True).returncode != 0:
                        continue
                    extra = ("--locked",)
                row(f"{name:28}{mode:10}", kilns, work, "noop",
                    lambda k, out: median_builds(k, p, out, a.runs, extra))

        print("\n2. the disk profile with one overlay file changed between builds, median of 7, interleaved")
        disk = os.path.join(work, "overlaid.toml")
        layer = os.path.join(work, "layer")
        os.makedirs(os.path.join(layer, "etc"))
        with open(disk, "w") as f:
            f.write('version = 1\ninclude = ["profiles/debian-minimal-disk.toml"]\n'
                    '[[overlay]]\nsource = "layer"\n')

        def change(i):
            with open(os.path.join(layer, "etc/changed"), "w") as f:
                f.write(f"change {i}\n")
        # Interleaved (every kiln once a round), so that the writeback of the images
        # built before, and this machine's slow spells, fall on all of them alike.
        outs = {label: os.path.join(work, "out-overlay-" + label.replace(" ", "-")) for label, _ in kilns}
        times = {label: [] for label, _ in kilns}
        for i in range(-1, 7):
            for label, k in kilns:
                change(f"{label} {i}")
                ok, wall, _, last = measured([k, "build", disk, "-o", outs[label]])
                if not ok:
                    times[label] = f"fails: {last[:60]}"
                if i >= 0 and isinstance(times[label], list):
                    times[label].append(wall)
        line = f"{'overlaid debian-minimal-disk':38}"
        for label, _ in kilns:
            t = times[label]
            line += f"{t if isinstance(t, str) else f'{statistics.median(t) * 1000:8.0f} ms':>22}"
        print(line, flush=True)

        print("\n3. unlocked build of debian-minimal-disk with a warm cache, in full")
        p = os.path.join(profiles, "debian-minimal-disk.toml")
        lock = os.path.join(profiles, "debian-minimal-disk.lock")
        if os.path.exists(lock):
            os.unlink(lock)
        def full(k, out):
            extra = rebuild(k)
            measured([k, "build", p, "-o", out, *extra])
            ok, wall, rss, last = measured([k, "build", p, "-o", out, *extra])
            return f"{wall:.2f} s, {rss:.0f} MB" if ok else "fails: " + last[:40]
        row(f"{'debian-minimal-disk':38}", kilns, work, "full", full)

        print("\n4. peak RSS of a full build (--rebuild) of each shipped profile, unlocked and locked")
        for name in names:
            p = os.path.join(profiles, f"{name}.toml")
            lock = os.path.join(profiles, f"{name}.lock")
            for mode in ("unlocked", "locked"):
                if os.path.exists(lock):
                    os.unlink(lock)
                extra = []
                if mode == "locked":
                    if subprocess.run([KILN, "lock", p], capture_output=True).returncode != 0:
                        continue
                    extra = ["--locked"]

                def peak(k, out):
                    extra_k = extra + rebuild(k)
                    measured([k, "build", p, "-o", out, *extra_k])
                    # Unlocked: resolved afresh, reading the index, not the kept resolution.
                    shutil.rmtree(os.path.join(CACHE, "resolved"), ignore_errors=True)
                    ok, wall, rss, last = measured([k, "build", p, "-o", out, *extra_k])
                    return f"{wall:.2f} s, {rss:.0f} MB" if ok else "fails: " + last[:40]
                row(f"{name:28}{mode:10}", kilns, work, "peak", peak)


if __name__ == "__main__":
    sys.exit(main())
