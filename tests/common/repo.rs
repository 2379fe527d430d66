//! A Debian repository the tests build themselves: .debs made with the tar and ar
//! crates, Packages/Release written by hand, InRelease signed by a throwaway gpg key,
//! served over HTTP by a small in-test server that also speaks as a forward proxy.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

pub struct FileSpec {
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Symlink target instead of content; `hard:TARGET` for a hard link.
    pub link: Option<String>,
}

pub fn file(path: &str, content: &str, mode: u32) -> FileSpec {
    FileSpec {
        path: path.into(),
        content: content.as_bytes().to_vec(),
        mode,
        uid: 0,
        gid: 0,
        link: None,
    }
}

pub struct PkgSpec {
    pub name: String,
    pub version: String,
    pub depends: String,
    pub extra: String,
    pub files: Vec<FileSpec>,
    /// More members of control.tar (md5sums, scripts), as name and bytes.
    pub control_members: Vec<(String, Vec<u8>)>,
}

pub fn pkg(name: &str, version: &str, depends: &str, files: Vec<FileSpec>) -> PkgSpec {
    PkgSpec {
        name: name.into(),
        version: version.into(),
        depends: depends.into(),
        extra: String::new(),
        files,
        control_members: Vec::new(),
    }
}

fn tar_xz(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    let raw = b.into_inner().unwrap();
    let mut out = Vec::new();
    let mut enc = liblzma::write::XzEncoder::new(&mut out, 6);
    enc.write_all(&raw).unwrap();
    enc.finish().unwrap();
    out
}

fn dir_header(path: &str) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_path(path).unwrap();
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    h
}

pub fn build_deb(p: &PkgSpec) -> Vec<u8> {
    let control = format!(
        "Package: {}\nVersion: {}\nArchitecture: amd64\nMaintainer: kiln tests <t@example.org>\n{}{}Description: test package {}\n",
        p.name,
        p.version,
        if p.depends.is_empty() { String::new() } else { format!("Depends: {}\n", p.depends) },
        p.extra,
        p.name
    );
    let control_tar = tar_xz(|b| {
        b.append(&dir_header("./"), &[][..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_path("./control").unwrap();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(control.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append(&h, control.as_bytes()).unwrap();
        for (name, bytes) in &p.control_members {
            let mut h = tar::Header::new_gnu();
            h.set_path(format!("./{name}")).unwrap();
            h.set_mode(0o644);
            h.set_size(bytes.len() as u64);
            h.set_mtime(1_600_000_000);
            h.set_cksum();
            b.append(&h, &bytes[..]).unwrap();
        }
    });
    let data_tar = tar_xz(|b| {
        let mut dirs: Vec<String> = Vec::new();
        for f in &p.files {
            let mut parts: Vec<&str> = f.path.trim_start_matches('/').split('/').collect();
            parts.pop();
            for i in 1..=parts.len() {
                let d = format!("./{}/", parts[..i].join("/"));
                // A hostile name's `..` has no directory of its own.
                if !dirs.contains(&d) && !d.contains("..") {
                    dirs.push(d);
                }
            }
        }
        b.append(&dir_header("./"), &[][..]).unwrap();
        for d in &dirs {
            b.append(&dir_header(d), &[][..]).unwrap();
        }
        for f in &p.files {
            let mut h = tar::Header::new_gnu();
            let name = format!(".{}", f.path);
            if h.set_path(&name).is_err() {
                // A name tar refuses to write (`..`): the bytes as a hostile archive has them.
                let raw = &mut h.as_old_mut().name;
                raw[..name.len()].copy_from_slice(name.as_bytes());
            }
            h.set_mode(f.mode);
            h.set_uid(f.uid);
            h.set_gid(f.gid);
            h.set_mtime(1_600_000_000);
            match &f.link {
                // "hard:TARGET": a hard link, its target as written.
                Some(t) if t.starts_with("hard:") => {
                    h.set_entry_type(tar::EntryType::Link);
                    let target = &t["hard:".len()..];
                    if h.set_link_name(target).is_err() {
                        let raw = &mut h.as_old_mut().linkname;
                        raw[..target.len()].copy_from_slice(target.as_bytes());
                    }
                    h.set_size(0);
                    h.set_cksum();
                    b.append(&h, &[][..]).unwrap();
                }
                Some(t) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_link_name(t).unwrap();
                    h.set_size(0);
                    h.set_cksum();
                    b.append(&h, &[][..]).unwrap();
                }
                None => {
                    h.set_size(f.content.len() as u64);
                    h.set_cksum();
                    b.append(&h, &f.content[..]).unwrap();
                }
            }
        }
    });
    let mut ar = ar::Builder::new(Vec::new());
    for (name, data) in [
        ("debian-binary", b"2.0\n".to_vec()),
        ("control.tar.xz", control_tar),
        ("data.tar.xz", data_tar),
    ] {
        let h = ar::Header::new(name.as_bytes().to_vec(), data.len() as u64);
        ar.append(&h, &data[..]).unwrap();
    }
    ar.into_inner().unwrap()
}

pub fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

pub struct Repo {
    pub root: PathBuf,
    pub gnupg: PathBuf,
    pub keyring: PathBuf,
    pub suite: String,
    /// The uncompressed Packages index `create` wrote, to republish in other forms.
    pub packages: String,
}

fn gpg(home: &Path) -> Command {
    let mut c = Command::new("gpg");
    c.env("GNUPGHOME", home).args([
        "--batch",
        "--quiet",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
    ]);
    c
}

/// A throwaway signing key in its own GNUPGHOME; returns the exported public keyring.
pub fn make_key(home: &Path, uid: &str) -> PathBuf {
    std::fs::create_dir_all(home).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let st = gpg(home)
        .args(["--quick-gen-key", uid, "ed25519", "sign", "1y"])
        .status()
        .unwrap();
    assert!(st.success(), "gpg key generation failed");
    let out = gpg(home).args(["--export", uid]).output().unwrap();
    assert!(out.status.success() && !out.stdout.is_empty());
    let p = home.join("keyring.gpg");
    std::fs::write(&p, out.stdout).unwrap();
    p
}

impl Repo {
    /// Writes pool, Packages(.xz), Release and a signed InRelease for `pkgs`.
    pub fn create(dir: &Path, suite: &str, pkgs: &[PkgSpec], release_extra: &str) -> Repo {
        let root = dir.join("repo/debian");
        let gnupg = dir.join("gnupg");
        let keyring = make_key(&gnupg, "kiln test archive <archive@example.org>");
        let mut repo = Repo {
            root,
            gnupg,
            keyring,
            suite: suite.into(),
            packages: String::new(),
        };
        let mut packages = String::new();
        for p in pkgs {
            let deb = build_deb(p);
            let rel = format!("pool/main/{}/{}_{}_amd64.deb", p.name, p.name, p.version);
            let path = repo.root.join(&rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &deb).unwrap();
            packages.push_str(&format!(
                "Package: {}\nVersion: {}\nArchitecture: amd64\n{}{}Filename: {rel}\nSize: {}\nSHA256: {}\nDescription: test package\n\n",
                p.name,
                p.version,
                if p.depends.is_empty() { String::new() } else { format!("Depends: {}\n", p.depends) },
                p.extra,
                deb.len(),
                sha256(&deb)
            ));
        }
        repo.write_indexes(packages.as_bytes(), release_extra);
        repo.packages = packages;
        repo
    }

    pub fn dists(&self) -> PathBuf {
        self.root.join("dists").join(&self.suite)
    }

    pub fn write_indexes(&self, packages: &[u8], release_extra: &str) {
        self.publish_indexes(packages, release_extra, &["Packages.xz"], false);
    }

    /// Publishes `packages` as each of `names` ("Packages.xz", "Packages.gz", "Packages"),
    /// removes the other forms, and signs a Release listing exactly those. With `by_hash`,
    /// the Release says `Acquire-By-Hash: yes` and each file is also served from
    /// `by-hash/SHA256/<its sha256>` beside it.
    pub fn publish_indexes(
        &self,
        packages: &[u8],
        release_extra: &str,
        names: &[&str],
        by_hash: bool,
    ) {
        let bin = self.dists().join("main/binary-amd64");
        std::fs::create_dir_all(&bin).unwrap();
        for stale in ["Packages.xz", "Packages.gz", "Packages"] {
            let _ = std::fs::remove_file(bin.join(stale));
        }
        let _ = std::fs::remove_dir_all(bin.join("by-hash"));
        let mut listed = String::new();
        for name in names {
            let bytes = match *name {
                "Packages.xz" => {
                    let mut xz = Vec::new();
                    let mut enc = liblzma::write::XzEncoder::new(&mut xz, 6);
                    enc.write_all(packages).unwrap();
                    enc.finish().unwrap();
                    xz
                }
                "Packages.gz" => {
                    let mut enc =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    enc.write_all(packages).unwrap();
                    enc.finish().unwrap()
                }
                "Packages" => packages.to_vec(),
                other => panic!("unknown index form {other}"),
            };
            std::fs::write(bin.join(name), &bytes).unwrap();
            if by_hash {
                let dir = bin.join("by-hash/SHA256");
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(sha256(&bytes)), &bytes).unwrap();
            }
            listed.push_str(&format!(
                " {} {} main/binary-amd64/{name}\n",
                sha256(&bytes),
                bytes.len()
            ));
        }
        let release = format!(
            "Origin: kiln-test\nSuite: {s}\nCodename: {s}\nDate: Sat, 21 Nov 2026 09:15:44 UTC\n{release_extra}{}Architectures: amd64\nComponents: main\nSHA256:\n{listed}",
            if by_hash { "Acquire-By-Hash: yes\n" } else { "" },
            s = self.suite
        );
        self.sign_release(&release);
    }

    pub fn sign_release(&self, release: &str) {
        std::fs::write(self.dists().join("Release"), release).unwrap();
        let _ = std::fs::remove_file(self.dists().join("InRelease"));
        let st = gpg(&self.gnupg)
            .args(["--clearsign", "--digest-algo", "SHA256", "-o"])
            .arg(self.dists().join("InRelease"))
            .arg(self.dists().join("Release"))
            .status()
            .unwrap();
        assert!(st.success());
    }
}

/// An HTTP/1.1 server for a directory. Requests may use origin form (`GET /path`) or,
/// as sent to a proxy, absolute form (`GET http://host/path`); it records each request line.
pub struct Server {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<String>>>,
    /// Requests whose path ends with the first string get the second's hostile answer.
    pub hostile: Arc<Mutex<Vec<(String, Hostile)>>>,
}

/// How a hostile mirror answers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Hostile {
    /// Accepts the request and never answers.
    Silent,
    /// Answers 200 and sends bytes until the client goes away.
    Endless,
}

impl Server {
    pub fn start(root: PathBuf, strip_prefix: &'static str) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let hostile = Arc::new(Mutex::new(Vec::new()));
        let reqs = requests.clone();
        let bad = hostile.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let root = root.clone();
                let reqs = reqs.clone();
                let bad = bad.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &root, strip_prefix, &reqs, &bad);
                });
            }
        });
        Server {
            port,
            requests,
            hostile,
        }
    }

    /// From now on, answers requests for paths ending in `suffix` as `how` says.
    pub fn misbehave(&self, suffix: &str, how: Hostile) {
        self.hostile.lock().unwrap().push((suffix.to_string(), how));
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn request_lines(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(
    stream: TcpStream,
    root: &Path,
    strip_prefix: &str,
    reqs: &Mutex<Vec<String>>,
    hostile: &Mutex<Vec<(String, Hostile)>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut w = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_string();
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        reqs.lock().unwrap().push(line.clone());
        let target = line.split_whitespace().nth(1).unwrap_or("/");
        let path = match target.strip_prefix("http://") {
            Some(rest) => rest.find('/').map(|i| &rest[i..]).unwrap_or("/"),
            None => target,
        };
        let path = path.strip_prefix(strip_prefix).unwrap_or(path);
        let how = hostile
            .lock()
            .unwrap()
            .iter()
            .find(|(suffix, _)| path.ends_with(suffix.as_str()))
            .map(|(_, how)| *how);
        match how {
            Some(Hostile::Silent) => {
                std::thread::sleep(std::time::Duration::from_secs(600));
                return Ok(());
            }
            Some(Hostile::Endless) => {
                write!(w, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
                let chunk = vec![0u8; 1 << 16];
                loop {
                    w.write_all(&chunk)?;
                }
            }
            None => {}
        }
        let file = root.join(path.trim_start_matches('/'));
        match std::fs::File::open(&file).and_then(|mut f| {
            let mut b = Vec::new();
            f.read_to_end(&mut b)?;
            Ok(b)
        }) {
            Ok(body) if file.is_file() => {
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )?;
                w.write_all(&body)?;
            }
            _ => {
                write!(w, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
            }
        }
        w.flush()?;
        if headers
            .get("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            return Ok(());
        }
    }
}
