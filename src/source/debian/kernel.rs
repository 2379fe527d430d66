//! The kernel of a Debian `linux-image-*` package.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::Arc;

use anyhow::{bail, Result};

use super::deb::Unpacked;
use crate::source::kernel::{module_name, KernelFiles};
use crate::tree::Data;

/// Whether a package is a kernel image package (a metapackage or a versioned one).
pub fn is_kernel_package(name: &str) -> bool {
    name.starts_with("linux-image-")
}

/// The kernel's files from its unpacked packages.
pub fn kernel_files(pkgs: &[Unpacked]) -> Result<KernelFiles> {
    let mut vmlinuz = None;
    let mut modules = BTreeMap::new();
    let mut builtin_src = None;
    let mut config = None;
    for u in pkgs {
        let tar = Arc::new(u.data_tar.clone());
        for m in &u.members {
            if m.kind != 'f' {
                continue;
            }
            let data = Data::Slice {
                file: tar.clone(),
                offset: m.offset,
                len: m.size,
                digest: m.digest.clone(),
            };
            let p = m.path.as_str();
            if let Some(rest) = p.strip_prefix("boot/vmlinuz-") {
                vmlinuz = Some((rest.to_string(), data));
            } else if p.contains("/modules/")
                && (p.ends_with(".ko")
                    || p.ends_with(".ko.xz")
                    || p.ends_with(".ko.zst")
                    || p.ends_with(".ko.gz"))
            {
                modules.insert(module_name(p), (p.to_string(), data));
            } else if p.ends_with("/modules.builtin") {
                builtin_src = Some(data);
            } else if p.starts_with("boot/config-") {
                config = Some(data);
            }
        }
    }
    let Some((release, vmlinuz)) = vmlinuz else {
        bail!("the kernel package has no /boot/vmlinuz-*; is it a linux-image package?");
    };
    let mut builtin = BTreeSet::new();
    if let Some(d) = builtin_src {
        let mut s = String::new();
        d.open()?.read_to_string(&mut s)?;
        builtin = s.lines().map(module_name).collect();
    }
    Ok(KernelFiles {
        release,
        vmlinuz,
        modules,
        builtin,
        config,
    })
}
