#!/usr/bin/env python3
"""The ecosystem commands beside what a user would run instead, median of --runs each.

    benches/ecosystem.py [--runs 5]

1. Reading an mkosi configuration: `kiln import-mkosi` of the Memorizer mkosi 14
   fixture against `mkosi summary` (mkosi 14, Debian bookworm's package) of the same.
2. Checking a profile: `kiln check` of every shipped profile against Python's
   `jsonschema` validating them with kiln's schema (shape only; kiln's check also
   applies the rules between keys).
3. The SBOM of the shipped disk profile: the build with it (`--rebuild`, warm cache),
   and `kiln sbom` from the manifest alone.
4. `kiln build --json` against `kiln build` when up to date (the report hashes the
   small outputs again).
"""
import argparse, glob, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILN = os.path.join(ROOT, "target/release/kiln")
FIXTURE = os.path.join(ROOT, "tests/fixtures/mkosi/v14-memorizer")


def median(cmd, runs, cwd=None):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
        times.append(time.perf_counter() - start)
        if p.returncode != 0:
            return f"fails: {p.stderr.strip().splitlines()[-1][:50]}"
    return f"{statistics.median(times) * 1000:9.0f} ms"


def line(title, *cells):
    print(f"{title:46}" + "".join(f"{c:>20}" for c in cells), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    print(f"median of {a.runs}")
    line("", "kiln", "instead")
    with tempfile.TemporaryDirectory(prefix="kiln-eco-") as work:
        mkosi = (median(["mkosi", "summary"], a.runs, cwd=FIXTURE)
                 if shutil.which("mkosi") else "no mkosi")
        line("1. read the Memorizer mkosi 14 config",
             median([KILN, "import-mkosi", FIXTURE, "-o", os.path.join(work, "m.toml")],
                    a.runs),
             mkosi + " (mkosi)")
        profiles = sorted(glob.glob(os.path.join(ROOT, "profiles/*.toml")))
        script = ("import json, sys, tomllib\nfrom jsonschema import Draft202012Validator\n"
                  "v = Draft202012Validator(json.load(open(sys.argv[1])))\n"
                  "for p in sys.argv[2:]:\n"
                  "    assert not list(v.iter_errors(tomllib.load(open(p, 'rb'))))\n")
        line(f"2. check {len(profiles)} shipped profiles",
             median([KILN, "check", *profiles], a.runs),
             median([sys.executable, "-c", script,
                     os.path.join(ROOT, "schema/profile-v1.json"), *profiles], a.runs)
             + " (jsonschema)")
        shutil.copytree(os.path.join(ROOT, "profiles"), os.path.join(work, "profiles"))
        disk = os.path.join(work, "profiles/debian-minimal-disk.toml")
        out = os.path.join(work, "out")
        subprocess.run([KILN, "build", disk, "-o", out, "-q"], check=True)
        line("3. debian-minimal-disk build with its SBOM",
             median([KILN, "build", disk, "-o", out, "--rebuild", "-q"], a.runs), "")
        line("   kiln sbom from its manifest",
             median([KILN, "sbom", os.path.join(out, "debian-minimal-disk.manifest.json")],
                    a.runs), "")
        line("4. up-to-date build --json / without",
             median([KILN, "build", disk, "-o", out, "--json", "-q"], a.runs),
             median([KILN, "build", disk, "-o", out, "-q"], a.runs) + " (no --json)")


if __name__ == "__main__":
    main()
