#!/usr/bin/env python3
"""Hostile and broken input: for each case, kiln's exit status, wall time and peak RSS,
with this tree's kiln and, if given, an older one side by side.

    benches/hostile.py [--before /path/to/old/kiln] [--cap 60]

A case that has not finished after --cap seconds is killed and reported as such; each
runs with its address space capped at 8 GiB. The cases build their own input: a
mirror on 127.0.0.1 that never answers, one whose InRelease never ends, one whose
InRelease is 16 MiB of two-byte lines, a signed archive (its own gpg key) serving a
.deb that never ends, a .deb whose control.tar.xz holds 2 GiB of zeros and a Depends
chain of 100 000 packages, an include chain of 10 000 profiles, a template naming an
undefined variable, 70 000 hard links on one file, and results disks made with mke2fs
and debugfs holding a directory cycle, a 1 TiB sparse file and a 4095-byte symlink.
"""
import argparse, hashlib, http.server, io, lzma, os, resource, socket, subprocess, sys, tarfile
import tempfile, threading, time

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


# Just under the 16 MiB an InRelease may be: clear-signed framing around two-byte lines.
SHORT_LINES = (b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n" + b"a\n" * 8_000_000
               + b"-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n")


def short_lines(c):
    try:
        c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                  % len(SHORT_LINES) + SHORT_LINES)
        c.close()
    except OSError:
        pass


class Mirror:
    """A signed Debian archive under `root`, suite `kilnbench`, served on 127.0.0.1 by a
    thread; `endless` names path suffixes whose bodies never end."""

    def __init__(self, root):
        self.root = root
        self.home = os.path.join(root, "gnupg")
        os.makedirs(self.home, mode=0o700)
        self.endless = set()
        gpg = ["gpg", "--homedir", self.home, "--batch", "--quiet", "--passphrase", ""]
        subprocess.run(gpg + ["--quick-gen-key", "kiln bench <bench@example.org>",
                              "ed25519", "sign", "never"], check=True, capture_output=True)
        self.keyring = os.path.join(root, "keyring.gpg")
        with open(self.keyring, "wb") as f:
            subprocess.run(gpg + ["--export"], check=True, stdout=f)
        self.gpg = gpg
        self.pool = os.path.join(root, "debian/pool")
        os.makedirs(self.pool)
        self.url = self._serve()

    @staticmethod
    def _tar_xz(path, members):
        """members: (name, size, reader) with reader(n) yielding the bytes in chunks."""
        with lzma.open(path, "wb", preset=0) as xz, tarfile.open(fileobj=xz, mode="w|") as t:
            for name, size, chunks in members:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = size, 0o644, 0
                t.addfile(info, _Chunks(chunks(size)))

    def deb(self, name, control_extra=b"", control_zeros=0):
        """Writes NAME_1.0_amd64.deb holding /usr/share/NAME; returns its stanza."""
        control = (f"Package: {name}\nVersion: 1.0\nArchitecture: amd64\n"
                   f"Maintainer: bench <b@example.org>\nDescription: bench\n").encode()
        parts = {}
        work = os.path.join(self.root, "build")
        os.makedirs(work, exist_ok=True)
        members = [("./control", len(control), lambda n: [control])]
        if control_zeros:
            members.append(("./md5sums", control_zeros, _zeros))
        self._tar_xz(os.path.join(work, "control.tar.xz"), members)
        data = name.encode() + b"\n"
        self._tar_xz(os.path.join(work, "data.tar.xz"),
                     [(f"./usr/share/{name}", len(data), lambda n: [data])])
        for m in ("control.tar.xz", "data.tar.xz"):
            parts[m] = open(os.path.join(work, m), "rb").read()
        deb = b"!<arch>\n"
        for m, body in [("debian-binary", b"2.0\n")] + list(parts.items()):
            deb += f"{m:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(body):<10}`\n".encode() + body
            if len(body) % 2:
                deb += b"\n"
        file = f"{name}_1.0_amd64.deb"
        open(os.path.join(self.pool, file), "wb").write(deb)
        return (f"Package: {name}\nVersion: 1.0\nArchitecture: amd64\nInstalled-Size: 1\n"
                f"Filename: pool/{file}\nSize: {len(deb)}\n"
                f"SHA256: {hashlib.sha256(deb).hexdigest()}\n")

    def publish(self, stanzas):
        """Packages.xz and a signed InRelease listing it."""
        dists = os.path.join(self.root, "debian/dists/kilnbench")
        binary = os.path.join(dists, "main/binary-amd64")
        os.makedirs(binary, exist_ok=True)
        packages = lzma.compress("\n".join(stanzas).encode(), preset=0)
        open(os.path.join(binary, "Packages.xz"), "wb").write(packages)
        release = ("Suite: kilnbench\nCodename: kilnbench\nDate: Sat, 21 Nov 2026 09:15:44 UTC\n"
                   "Architectures: amd64\nComponents: main\nSHA256:\n"
                   f" {hashlib.sha256(packages).hexdigest()} {len(packages)} "
                   "main/binary-amd64/Packages.xz\n")
        subprocess.run(self.gpg + ["--clearsign", "-o", os.path.join(dists, "InRelease")],
                       input=release.encode(), check=True)

    def profile(self, path, package):
        with open(path, "w") as f:
            f.write(f'version = 1\n[distribution]\nsuite = "kilnbench"\nmirror = "{self.url}"\n'
                    f'keyring = "{self.keyring}"\npackages = ["{package}"]\n')
        return path

    def _serve(self):
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):
                super().__init__(*a, directory=mirror.root, **k)

            def log_message(self, *a):
                pass

            def do_GET(self):
                if any(self.path.endswith(s) for s in mirror.endless):
                    self.send_response(200)
                    self.end_headers()
                    try:
                        for chunk in _zeros(1 << 62):
                            self.wfile.write(chunk)
                    except OSError:
                        pass
                    return
                super().do_GET()

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}/debian"


def _zeros(n):
    chunk = bytes(64 << 10)
    while n > 0:
        yield chunk[:min(n, len(chunk))]
        n -= len(chunk)


class _Chunks(io.RawIOBase):
    """A file object over an iterator of byte strings, for tarfile.addfile."""

    def __init__(self, chunks):
        self.it, self.buf = iter(chunks), b""

    def readable(self):
        return True

    def read(self, n=-1):
        while n < 0 or len(self.buf) < n:
            nxt = next(self.it, None)
            if nxt is None:
                break
            self.buf += nxt
        out, self.buf = (self.buf, b"") if n < 0 else (self.buf[:n], self.buf[n:])
        return out


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
    yield ("InRelease of 16 MiB in 2-byte lines (kiln lock)",
           ["lock", prof, "--mirror", serve(short_lines)], env)
    signed = Mirror(os.path.join(work, "signed"))
    stanzas = [signed.deb("endless"), signed.deb("bomb", control_zeros=2 << 30)]
    chain = 100000
    stanzas += [f"Package: c{i}\nVersion: 1.0\nArchitecture: amd64\nDepends: c{i + 1}\n"
                f"Filename: pool/c{i}.deb\nSize: 1\nSHA256: {'0' * 64}\n" for i in range(chain)]
    stanzas.append(signed.deb(f"c{chain}"))
    signed.publish(stanzas)
    signed.endless.add("endless_1.0_amd64.deb")
    yield (".deb that never ends (kiln build)",
           ["build", signed.profile(os.path.join(work, "endless.toml"), "endless"), "-o", out],
           env)
    yield ("2 GiB of zeros in control.tar.xz (kiln build)",
           ["build", signed.profile(os.path.join(work, "bomb.toml"), "bomb"), "-o", out], env)
    yield ("Depends chain of 100 000 (kiln lock)",
           ["lock", signed.profile(os.path.join(work, "c.toml"), "c0")], env)
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
        print(f"{'case':55}" + "".join(f"{n:>34}" for n, _ in kilns))
        for name, args, env in rows:
            line = f"{name:55}"
            for _, binary in kilns:
                st, wall, rss = measure([binary] + args, a.cap, env)
                line += f"{f'exit {st}, {wall:6.1f} s, {rss:6.0f} MB':>34}"
                # What one binary left must not help or hinder the next.
                subprocess.run(["rm", "-rf", os.path.join(work, "out"), os.path.join(work, "cache"),
                                os.path.join(work, "x1"), os.path.join(work, "x2")]
                               + [os.path.join(work, f) for f in os.listdir(work)
                                  if f.endswith(".lock")])
            print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
