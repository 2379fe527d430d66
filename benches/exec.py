#!/usr/bin/env python3
"""`uname -r` under one kernel, TCG, median of N rounds (each runs every tool once, so the
machine's slow spells fall on all alike): kiln exec against virtme-ng and vmtest.

All three boot the same unpacked Debian kernel (default linux-image-6.1.0-47-amd64:
`boot/vmlinuz-…` beside `lib/modules/…`) with the host's userspace over 9p, in one run:
    kiln exec --kernel K --accel=tcg -- uname -r
    vng -v -r K --disable-kvm --force-9p --exec 'uname -r'   (pip install virtme-ng; needs kmod,
        and finds modules only in /lib/modules/RELEASE, so the package must be installed)
    vmtest -k K 'uname -r'                                 (cargo install vmtest; it runs the
        command through qemu-guest-agent, so apt install qemu-guest-agent)
A tool that is not installed is reported as such, not timed; one that fails is reported
with the line that says why.

vmtest has no switch for TCG: it takes KVM whenever /dev/kvm exists. On a host where KVM
guests hang (kiln's probe falls back to TCG there), vmtest runs in a private mount
namespace whose /dev lacks the kvm node (as root), so all three emulate.

usage: benches/exec.py [--package linux-image-6.1.0-47-amd64] [--runs 5]
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILN = os.path.join(ROOT, "target/release/kiln")


def unpack(package, work):
    subprocess.run(["apt-get", "download", "-q", package], cwd=work, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deb = next(f for f in os.listdir(work) if f.startswith(package) and f.endswith(".deb"))
    subprocess.run(["dpkg-deb", "-x", deb, "k"], cwd=work, check=True)
    boot = os.path.join(work, "k/boot")
    return os.path.join(boot, next(f for f in os.listdir(boot) if f.startswith("vmlinuz-")))


# A copy of /dev without kvm, over /dev, in a mount namespace of the command's own.
NO_KVM = ["unshare", "-m", "sh", "-c",
          'd=$(mktemp -d) && mount -t tmpfs tmpfs "$d" && cp -a /dev/. "$d"/ 2>/dev/null;'
          ' rm -f "$d/kvm"; mount --rbind /dev/pts "$d/pts"; mount --move "$d" /dev && exec "$@"',
          "sh"]


def why(out):
    """The line of a failed run's output that says why it failed."""
    lines = (out.stdout + out.stderr).splitlines()
    for marker in ("Kernel panic", "Caused by:", "error", "Error"):
        for i, line in enumerate(lines):
            if marker in line:
                if marker == "Caused by:" and i + 1 < len(lines):
                    return lines[i + 1].strip()
                return line.strip()
    return (lines[-1] if lines else "").strip()


def one_run(cmd, cwd, expect):
    """The time of one run that printed `expect` on a line of its own (a boot log that
    names the release does not count) and its exit status, or why it failed. A tool that
    prints the answer but exits non-zero is timed, and its status shown."""
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - start
    lines = (out.stdout + out.stderr).splitlines()
    if not any(l.strip() == expect for l in lines):
        return None, out.returncode, f"failed (exit {out.returncode}): {why(out)}"
    return took, out.returncode, None


def interleaved(runs, tools, cwd, expect):
    """Each tool's median over `runs` rounds, a round running every tool once, so that
    this machine's slow and fast spells fall on all of them alike. A tool that fails is
    not run again."""
    results = {name: ([], set(), None) for name, _ in tools}
    for _ in range(runs):
        for name, cmd in tools:
            times, codes, err = results[name]
            if err is not None:
                continue
            took, code, err = one_run(cmd, cwd, expect)
            if took is not None:
                times.append(took)
                codes.add(code)
            results[name] = (times, codes, err)
    out = {}
    for name, (times, codes, err) in results.items():
        if err is not None:
            out[name] = (None, err)
        else:
            note = "" if codes == {0} else f"  (exit status {sorted(codes)}, not 0)"
            out[name] = (statistics.median(times), note)
    return out


def kvm_usable(kernel, work):
    """Whether kiln would take KVM here (its probe runs a guest)."""
    out = subprocess.run([KILN, "qemu", "--print", "--kernel", kernel, "--accel=auto",
                          os.path.join(ROOT, "profiles/busybox.toml"), "-o", work + "/probe"],
                         capture_output=True, text=True)
    return "-accel kvm" in out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--package", default="linux-image-6.1.0-47-amd64")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="kiln-bench-exec-")
    kernel = unpack(a.package, work)
    release = os.path.basename(kernel)[len("vmlinuz-"):]
    # Warm kiln's cache (its boot image and the kernel's modules) outside the timing.
    subprocess.run([KILN, "-q", "exec", "--kernel", kernel, "--accel=tcg", "--", "true"],
                   cwd=work, check=True, capture_output=True)
    tools = [("kiln exec", KILN, [KILN, "-q", "exec", "--kernel", kernel, "--accel=tcg", "--", "uname", "-r"])]
    tools.append(("vng", shutil.which("vng"),
                  ["vng", "-v", "-r", kernel, "--disable-kvm", "--force-9p", "--exec", "uname -r"]))
    vmtest = ["vmtest", "-k", kernel, "uname -r"]
    if os.path.exists("/dev/kvm") and os.geteuid() == 0 and not kvm_usable(kernel, work):
        vmtest = NO_KVM + vmtest
    has_qga = shutil.which("qemu-ga") or os.path.exists("/usr/sbin/qemu-ga")
    tools.append(("vmtest", shutil.which("vmtest") and has_qga, vmtest))
    # vng reads the modules from /lib/modules/RELEASE only: as root, link the unpacked
    # ones there for the run (and remove the link after).
    link = f"/lib/modules/{release}"
    linked = False
    if tools[1][1] and not os.path.exists(link) and os.geteuid() == 0:
        os.symlink(os.path.join(work, "k/lib/modules", release), link)
        linked = True
    try:
        print(f"uname -r under {release}, TCG, median of {a.runs} interleaved rounds:")
        present = [(name, cmd) for name, have, cmd in tools if have]
        medians = interleaved(a.runs, present, work, release)
        for name, have, cmd in tools:
            if not have:
                print(f"  {name:10} not installed" +
                      (" (or no qemu-guest-agent)" if name == "vmtest" else ""))
                continue
            m, err = medians[name]
            print(f"  {name:10} {m:6.2f} s{err}" if m is not None else f"  {name:10} {err}")
        kiln, vng = medians.get("kiln exec", (None,))[0], medians.get("vng", (None,))[0]
        if kiln and vng:
            print(f"  kiln exec / vng: {kiln / vng:.2f}")
    finally:
        if linked:
            os.unlink(link)


if __name__ == "__main__":
    sys.exit(main())
