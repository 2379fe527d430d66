#!/usr/bin/env python3
"""Hostile and broken input: for each case, kiln's exit status, wall time and peak RSS,
with this tree's kiln and, if given, an older one side by side.

    benches/hostile.py [--before /path/to/old/kiln] [--cap 60]

A case that has not finished after --cap seconds is killed and reported as such; each
runs with its address space capped at 8 GiB. The
cases build their own input: a mirror on 127.0.0.1 that never answers, one whose
InRelease never ends, an include chain of 10 000 profiles, a template naming an
undefined variable, 70 000 hard links on one file, and results disks made with mke2fs
and debugfs holding a directory cycle, a 1 TiB sparse file and a 4095-byte symlink.
"""
import argparse, os, resource, socket, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILN = os.path.join(ROOT, "target/release/kiln")


def serve(handler):
    """A TCP server on 127.0.0.1 calling handler(conn) per connection; returns its URL."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)

    def loop():
        while True:
            c, _ = s.accept()
            threading.Thread(target=handler, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return f"http://127.0.0.1:{s.getsockname()[1]}/debian"


def silent(c):
    time.sleep(3600)


def endless(c):
    try:
        c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        chunk = b"x" * 65536
        while True:
            c.sendall(chunk)
    except OSError:
        pass


def measure(cmd, cap, env=None):
    """(exit status or 'killed', wall seconds, peak RSS in MB) of cmd under GNU time."""
    out = tempfile.NamedTemporaryFile(delete=False)
    start = time.perf_counter()
    # Address space capped at 8 GiB, so a case that reads without bound fails rather
    # than takes the host's memory.
    cap_as = lambda: resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    p = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", out.name] + cmd,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                         preexec_fn=cap_as, start_new_session=True)
    try:
        _, err = p.communicate(timeout=cap)
        status = p.returncode
    except subprocess.TimeoutExpired:
        # The whole session: GNU time and the kiln under it.
        os.killpg(p.pid, 9)
        p.communicate()
        status = "killed"
    wall = time.perf_counter() - start
    try:
        rss = int(open(out.name).read().split()[-1]) / 1024
    except (ValueError, IndexError):
        rss = float("nan")
    os.unlink(out.name)
    return status, wall, rss


def mke2fs(tree, img, *debugfs):
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", tree, img, "8M"], check=True)
    for c in debugfs:
        subprocess.run(["debugfs", "-w", "-R", c, img], check=True, capture_output=True)


def cases(work):
    """(name, argv after the kiln binary, env) for each case."""
    silent_url = serve(silent)
    endless_url = serve(endless)
    prof = os.path.join(work, "mirror.toml")
    with open(prof, "w") as f:
        f.write('version = 1\n[distribution]\nsuite = "trixie"\npackages = ["busybox"]\n')
    env = dict(os.environ, KILN_CACHE_DIR=os.path.join(work, "cache"))
    out = os.path.join(work, "out")
    yield ("mirror never answers (kiln lock)",
           ["lock", prof, "--mirror", silent_url], env)
    yield ("InRelease never ends (kiln lock)",
           ["lock", prof, "--mirror", endless_url], env)
    chain = os.path.join(work, "chain")
    os.makedirs(chain)
    for i in range(10000):
        inc = f'include = ["p{i + 1}.toml"]\n' if i + 1 < 10000 else ""
        open(os.path.join(chain, f"p{i}.toml"), "w").write(f"version = 1\n{inc}")
    yield ("include chain of 10 000", ["build", os.path.join(chain, "p0.toml"), "-o", out], env)
    tpl = os.path.join(work, "tpl.toml")
    open(tpl, "w").write('version = 1\n[[file]]\npath = "/init"\ntemplate = true\n'
                         'content = "{{nobody}}"\n')
    yield ("template names an undefined variable", ["build", tpl, "-o", out], env)
    links = os.path.join(work, "links.toml")
    with open(links, "w") as f:
        f.write('version = 1\n[output]\nformat = "disk"\n[[file]]\npath = "/f"\ncontent = "x"\n'
                '[[directory]]\npath = "/l"\n')
        for i in range(70000):
            f.write(f'[[hardlink]]\npath = "/l/{i}"\ntarget = "/f"\n')
    yield ("70 000 hard links on one file", ["build", links, "-o", out], env)
    tree = os.path.join(work, "tree")
    os.makedirs(os.path.join(tree, "sub"))
    open(os.path.join(tree, "sub/r.txt"), "w").write("42\n")
    cycle = os.path.join(work, "cycle.img")
    mke2fs(tree, cycle, "link /sub /sub/a", "link /sub /sub/b")
    yield ("results disk with a directory cycle (kiln extract)",
           ["extract", cycle, "/", os.path.join(work, "x1")], env)
    with open(os.path.join(tree, "huge"), "wb") as f:
        f.truncate(1 << 40)
    sparse = os.path.join(work, "sparse.img")
    mke2fs(tree, sparse)
    yield ("results disk with a 1 TiB sparse file (kiln extract)",
           ["extract", sparse, "/", os.path.join(work, "x2")], env)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", help="an older kiln binary to compare with")
    ap.add_argument("--cap", type=float, default=120)
    a = ap.parse_args()
    kilns = [("after", KILN)] + ([("before", a.before)] if a.before else [])
    with tempfile.TemporaryDirectory(prefix="kiln-hostile-") as work:
        rows = list(cases(work))
        print(f"{'case':55}" + "".join(f"{n:>32}" for n, _ in kilns))
        for name, args, env in rows:
            line = f"{name:55}"
            for _, binary in kilns:
                st, wall, rss = measure([binary] + args, a.cap, env)
                line += f"{f'exit {st}, {wall:6.1f} s, {rss:6.0f} MB':>32}"
                # What one binary left must not help or hinder the next.
                subprocess.run(["rm", "-rf", os.path.join(work, "out"), os.path.join(work, "cache"),
                                os.path.join(work, "x1"), os.path.join(work, "x2")])
            print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
