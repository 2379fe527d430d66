//! The kernels a test runs on: as the command line and `[matrix] kernels` name them
//! ([`KernelRef`]), and as a cell boots them ([`CellKernel`]).

use std::path::{Path, PathBuf};

use super::absolute;
use crate::profile::LoadedProfile;

/// A kernel a test runs on, as the command line or `[matrix] kernels` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelRef {
    /// A kernel image file on the host.
    Host(PathBuf),
    /// Every kernel image (`vmlinuz*`, `bzImage*`) a directory holds or a glob matches.
    Glob(String),
    /// A kernel build tree after `make`: its bzImage, with its own modules.
    Tree(PathBuf),
    /// A Debian kernel package, from `suite` or else the first suite that has it.
    Package {
        /// The package name.
        name: String,
        /// The suite.
        suite: Option<String>,
    },
}

impl std::fmt::Display for KernelRef {
    /// How `--kernel` writes it; a package is `PACKAGE` or `PACKAGE/SUITE`, also its label.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelRef::Host(p) | KernelRef::Tree(p) => write!(f, "{}", p.display()),
            KernelRef::Glob(g) => f.write_str(g),
            KernelRef::Package {
                name,
                suite: Some(s),
            } => write!(f, "{name}/{s}"),
            KernelRef::Package { name, suite: None } => f.write_str(name),
        }
    }
}

impl KernelRef {
    /// Reads `s`, a path relative to `base`, a glob, a directory, `PACKAGE` or
    /// `PACKAGE/SUITE` (apt's spelling). An existing file wins over a package name.
    pub fn parse(s: &str, base: &Path) -> KernelRef {
        let path = base.join(s);
        if s.contains(['*', '?', '[']) {
            // The base is a directory name, not a pattern: `[` in it is literal.
            return KernelRef::Glob(if Path::new(s).is_absolute() {
                s.to_string()
            } else {
                format!("{}/{s}", glob::Pattern::escape(&base.to_string_lossy()))
            });
        }
        if crate::source::kernel_tree::is_tree(&path) {
            return KernelRef::Tree(absolute(&path));
        }
        if path.is_dir() {
            return KernelRef::Glob(path.to_string_lossy().into_owned());
        }
        if !path.exists() && crate::source::is_kernel_package_spec(s) {
            let (name, suite) = match s.split_once('/') {
                Some((n, suite)) => (n.to_string(), Some(suite.to_string())),
                None => (s.to_string(), None),
            };
            return KernelRef::Package { name, suite };
        }
        KernelRef::Host(absolute(&path))
    }

    /// The refs of a profile's `[matrix] kernels`, each resolved against the file that
    /// wrote it.
    pub fn from_matrix(lp: &LoadedProfile) -> Vec<KernelRef> {
        lp.profile
            .matrix
            .kernels
            .iter()
            .map(|k| {
                let base = k
                    .loc
                    .as_ref()
                    .map(|l| l.dir().to_path_buf())
                    .unwrap_or_else(|| lp.path.parent().unwrap_or(Path::new(".")).to_path_buf());
                match &k.value {
                    crate::profile::MatrixKernel::Name(s) => KernelRef::parse(s, &base),
                    crate::profile::MatrixKernel::Package { package, suite } => {
                        KernelRef::Package {
                            name: package.clone(),
                            suite: suite.clone(),
                        }
                    }
                }
            })
            .collect()
    }
}

/// A kernel a matrix runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellKernel {
    /// A short, unique name for tables, logs and `kernels` patterns (the package, or
    /// the image's file name).
    pub label: String,
    /// The kernel image on the host.
    pub image: PathBuf,
    /// The initrd QEMU loads on this kernel instead of the plan's: a disk's boot
    /// initramfs, or an initramfs image with this kernel's modules appended.
    pub initrd: Option<PathBuf>,
    /// How `--kernel` names this kernel again (a path, or `PACKAGE[/SUITE]`); None for
    /// the image's own kernel.
    pub spec: Option<String>,
}

impl CellKernel {
    /// A kernel image on the host, labelled by its file name.
    pub fn host(image: &std::path::Path) -> CellKernel {
        CellKernel {
            label: image
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| image.display().to_string()),
            image: std::path::absolute(image).unwrap_or_else(|_| image.to_path_buf()),
            initrd: None,
            spec: Some(image.display().to_string()),
        }
    }

    /// The label as one path component: a run directory's name.
    pub fn dir_name(&self) -> String {
        self.label.replace('/', "@")
    }
}

/// Makes labels unique by numbering repeats: `vmlinuz`, `vmlinuz#2`.
pub fn unique_labels(kernels: &mut [CellKernel]) {
    // Unique as directory names too: `a/b` and `a@b` would share one.
    let mut seen: Vec<String> = Vec::new();
    for k in kernels.iter_mut() {
        let base = k.label.clone();
        let mut n = 2;
        while seen.contains(&k.dir_name()) {
            k.label = format!("{base}#{n}");
            n += 1;
        }
        seen.push(k.dir_name());
    }
}
