//! Host binaries with their shared-library closure: the ELF interpreter and every
//! DT_NEEDED library, found the way the dynamic linker would find them.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use object::elf;
use object::read::elf::{ElfFile64, ProgramHeader};
use object::Endianness;

/// What the dynamic linker needs to run one ELF file.
#[derive(Debug, Default)]
pub struct ElfDeps {
    /// PT_INTERP: the dynamic linker's path, if the file is dynamically linked.
    pub interpreter: Option<String>,
    /// DT_NEEDED: the names of the libraries it loads, in order.
    pub needed: Vec<String>,
    /// DT_RUNPATH and DT_RPATH directories, with `$ORIGIN` expanded.
    pub search: Vec<String>,
}

/// Reads a file's dynamic-linking needs; a file that is not ELF (a script) has none.
/// 32-bit ELF is an error.
pub fn read_deps(path: &Path) -> Result<ElfDeps> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if data.get(..4) != Some(b"\x7fELF") {
        return Ok(ElfDeps::default());
    }
    if data.get(4) != Some(&2) {
        bail!(
            "{} is a 32-bit ELF file; kiln resolves libraries for 64-bit binaries only",
            path.display()
        );
    }
    let file = ElfFile64::<Endianness>::parse(&*data)
        .with_context(|| format!("parsing ELF {}", path.display()))?;
    let endian = file.endian();
    let mut deps = ElfDeps::default();
    for ph in file.elf_program_headers() {
        if let Some(interp) = ph.interpreter(endian, &*data)? {
            deps.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
    }
    let table = file.elf_dynamic_table()?;
    let origin = path
        .parent()
        .unwrap_or(Path::new("/"))
        .to_string_lossy()
        .into_owned();
    for d in table.iter() {
        let (tag, val) = (d.tag, d.val);
        let get = |v: u64| -> Result<String> {
            let s = table
                .strings()
                .get(v as u32)
                .map_err(|_| anyhow!("bad dynamic string in {}", path.display()))?;
            Ok(String::from_utf8_lossy(s).into_owned())
        };
        if tag == elf::DT_NEEDED {
            deps.needed.push(get(val)?);
        } else if tag == elf::DT_RUNPATH || tag == elf::DT_RPATH {
            for dir in get(val)?.split(':').filter(|s| !s.is_empty()) {
                deps.search.push(
                    dir.replace("$ORIGIN", &origin)
                        .replace("${ORIGIN}", &origin),
                );
            }
        }
    }
    Ok(deps)
}

/// Library directories from /etc/ld.so.conf (following `include` globs) and the defaults.
pub fn system_library_dirs() -> Vec<String> {
    let mut dirs = Vec::new();
    read_ld_conf(Path::new("/etc/ld.so.conf"), &mut dirs, 0);
    for d in [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
    ] {
        if !dirs.iter().any(|x| x == d) {
            dirs.push(d.to_string());
        }
    }
    dirs
}

fn read_ld_conf(path: &Path, dirs: &mut Vec<String>, depth: usize) {
    if depth > 8 {
        return;
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include") {
            let pattern = pattern.trim();
            let (dir, file_glob) = match pattern.rfind('/') {
                Some(i) => (&pattern[..i], &pattern[i + 1..]),
                None => (".", pattern),
            };
            let mut matches: Vec<PathBuf> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| glob_match(file_glob, &e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .collect();
            matches.sort();
            for m in matches {
                read_ld_conf(&m, dirs, depth + 1);
            }
        } else if !line.is_empty() && !dirs.iter().any(|d| d == line) {
            dirs.push(line.to_string());
        }
    }
}

/// `*` and `?` wildcards, enough for ld.so.conf includes.
fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// The binary, its interpreter and every library it loads, each once, in a stable order.
/// Returned paths are host paths; the image keeps them at the same place.
pub fn closure(binary: &Path) -> Result<Vec<PathBuf>> {
    let system = system_library_dirs();
    let mut out: BTreeSet<PathBuf> = BTreeSet::new();
    let mut seen_names: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<PathBuf> = VecDeque::from([binary.to_path_buf()]);
    while let Some(file) = queue.pop_front() {
        if !out.insert(file.clone()) {
            continue;
        }
        let deps = read_deps(&file)?;
        if let Some(interp) = deps.interpreter {
            queue.push_back(PathBuf::from(interp));
        }
        for name in deps.needed {
            if !seen_names.insert(name.clone()) {
                continue;
            }
            let found = if name.contains('/') {
                Some(PathBuf::from(&name))
            } else {
                deps.search
                    .iter()
                    .chain(system.iter())
                    .map(|d| Path::new(d).join(&name))
                    .find(|p| p.is_file())
            };
            match found {
                Some(p) => queue.push_back(p),
                None => bail!(
                    "{} needs {name}, which is not in its RUNPATH or the host's library directories ({})",
                    binary.display(),
                    system.join(", ")
                ),
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Finds a bare command name in $PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closure_of_a_dynamic_host_binary_has_libc_and_interpreter() {
        let ls = which("ls").expect("ls on PATH");
        let files = closure(&ls).unwrap();
        assert!(
            files
                .iter()
                .any(|f| f.to_string_lossy().contains("libc.so")),
            "{files:?}"
        );
        assert!(
            files
                .iter()
                .any(|f| f.to_string_lossy().contains("ld-linux")),
            "{files:?}"
        );
        let unique: BTreeSet<_> = files.iter().collect();
        assert_eq!(unique.len(), files.len());
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.conf", "libc.conf"));
        assert!(!glob_match("*.conf", "libc.conf.bak"));
    }
}
