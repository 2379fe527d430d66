//! `kiln import-mkosi`: an mkosi configuration (mkosi 14's layout or the current one)
//! as a kiln profile. What has a kiln equivalent is mapped; every other setting, and
//! every script kiln will not run, is reported with its file and line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::mkosi_ini::{Config, Layout, Setting};
use super::mkosi_values::{
    boolean, first_line, list, quote, quoted_list, relative_to, words, SCRIPTS, UBUNTU, WHY,
};

/// The profile text, and what the user must read about it.
#[derive(Debug)]
pub struct Imported {
    /// The kiln profile, TOML.
    pub profile: String,
    /// Loud warnings (another distribution mapped to Debian, a format kiln writes
    /// differently).
    pub warnings: Vec<String>,
    /// Settings and files not mapped, each `FILE:LINE: Setting=: why`.
    pub unmapped: Vec<String>,
}

/// Maps `config` to a profile whose paths are relative to `profile_dir`.
pub fn import(config: &Config, profile_dir: &Path) -> Result<Imported> {
    let mut warnings = Vec::new();
    let mut unmapped = Vec::new();
    // Every assignment of each setting, in order; the last decides a single value.
    let mut by_key: BTreeMap<&str, Vec<&Setting>> = BTreeMap::new();
    for s in &config.settings {
        by_key.entry(s.key.as_str()).or_default().push(s);
    }
    let last = |k: &str| by_key.get(k).and_then(|v| v.last().copied());
    let first_of = |keys: &[&str]| keys.iter().find_map(|k| last(k));
    let all_of = |keys: &[&str]| -> Vec<&Setting> {
        let mut v: Vec<&Setting> = keys
            .iter()
            .flat_map(|k| by_key.get(k).cloned().unwrap_or_default())
            .collect();
        v.sort_by_key(|s| config.settings.iter().position(|x| std::ptr::eq(x, *s)));
        v
    };
    let mut used: Vec<&str> = Vec::new();
    let mut use_keys = |keys: &[&'static str]| used.extend_from_slice(keys);

    // [distribution]
    use_keys(&[
        "Distribution",
        "Release",
        "Mirror",
        "Repositories",
        "Architecture",
    ]);
    let distro = last("Distribution").map(|s| s.value.to_ascii_lowercase());
    let release = last("Release").map(|s| s.value.clone());
    let suite = match distro.as_deref() {
        None | Some("debian") => release.unwrap_or_else(|| "trixie".to_string()),
        Some("ubuntu") => {
            let r = release.unwrap_or_default();
            let debian = UBUNTU
                .iter()
                .find(|(u, _)| *u == r)
                .map(|(_, d)| d.to_string())
                .unwrap_or_else(|| "trixie".to_string());
            warnings.push(format!(
                "{}: Distribution=ubuntu (Release={r}) becomes Debian {debian}, its closest \
                 Debian release: kiln builds Debian only. Package names mostly match; \
                 versions, defaults and Ubuntu-only packages do not",
                last("Distribution").map(|s| s.at()).unwrap_or_default()
            ));
            debian
        }
        Some(other) => {
            warnings.push(format!(
                "{}: Distribution={other} becomes Debian trixie: kiln builds Debian only. \
                 The package names below are {other}'s and may not exist in Debian",
                last("Distribution").map(|s| s.at()).unwrap_or_default()
            ));
            "trixie".to_string()
        }
    };
    let ubuntu_mirror = distro.as_deref() == Some("ubuntu");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Imported by `kiln import-mkosi` from {} ({} layout).",
        config.dir.display(),
        match config.layout {
            Layout::V14 => "mkosi 14",
            Layout::Current => "current mkosi",
        }
    );
    out.push_str("version = 1\n");
    let name = first_of(&["ImageId", "Output"]).map(|s| {
        s.value
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect::<String>()
    });
    use_keys(&["ImageId", "Output"]);
    if let Some(n) = name.filter(|n| !n.is_empty()) {
        let _ = writeln!(out, "name = {}", quote(&n));
    }
    if let Some(s) = last("SourceDateEpoch") {
        use_keys(&["SourceDateEpoch"]);
        match s.value.parse::<i64>() {
            Ok(n) => {
                let _ = writeln!(out, "source_date_epoch = {n}");
            }
            Err(_) => bail!(
                "{}: SourceDateEpoch={} is not a number of seconds",
                s.at(),
                s.value
            ),
        }
    }
    use_keys(&["RemoveFiles"]);
    let removed_files = list(&all_of(&["RemoveFiles"]));
    if !removed_files.is_empty() {
        let _ = writeln!(out, "remove = {}", quoted_list(&removed_files));
    }
    // Environment= is what mkosi hands its scripts; in kiln, template variables.
    use_keys(&["Environment"]);
    let mut variables = Vec::new();
    for s in all_of(&["Environment"]) {
        for w in s.value.split_whitespace() {
            match w.split_once('=') {
                Some((k, v)) => variables.push((k.to_string(), v.to_string())),
                None => unmapped.push(format!(
                    "{}: Environment={w}: passes the host's value through; kiln templates \
                     take values, not the host's environment",
                    s.at()
                )),
            }
        }
    }

    out.push_str("\n[distribution]\n");
    let _ = writeln!(out, "suite = {}", quote(&suite));
    if let Some(m) = last("Mirror") {
        if ubuntu_mirror || !matches!(distro.as_deref(), None | Some("debian")) {
            unmapped.push(format!(
                "{}: Mirror={}: a mirror of another distribution; kiln takes Debian's from the \
                 host's apt configuration",
                m.at(),
                m.value
            ));
        } else {
            let _ = writeln!(out, "mirror = {}", quote(&m.value));
        }
    }
    let components = list(&all_of(&["Repositories"]));
    if !components.is_empty() && !ubuntu_mirror {
        let _ = writeln!(out, "components = {}", quoted_list(&components));
    }
    if let Some(a) = last("Architecture") {
        let arch = match a.value.as_str() {
            "x86-64" | "x86_64" | "amd64" => "amd64",
            "arm64" | "aarch64" => "arm64",
            other => bail!(
                "{}: Architecture={other}: kiln builds amd64 and arm64",
                a.at()
            ),
        };
        let _ = writeln!(out, "architecture = {}", quote(arch));
    }
    let format_setting = last("Format");
    use_keys(&["Format"]);
    let format = match format_setting.map(|s| s.value.as_str()) {
        None | Some("disk") | Some("gpt_ext4") => "disk",
        Some("cpio") => "initramfs",
        Some("tar") => "tar",
        Some(other) => {
            let into = if ["directory", "subvolume"].contains(&other) {
                "tar"
            } else {
                "disk"
            };
            warnings.push(format!(
                "{}: Format={other} becomes format \"{into}\"{}",
                format_setting.map(|s| s.at()).unwrap_or_default(),
                if into == "disk" {
                    " (a GPT disk with an ext4 root)"
                } else {
                    ""
                }
            ));
            into
        }
    };
    use_keys(&["Packages", "Ssh", "RemovePackages"]);
    let mut packages = list(&all_of(&["Packages"]));
    let ssh = last("Ssh").map(boolean).transpose()?.unwrap_or(false);
    if ssh && !packages.iter().any(|p| p == "openssh-server") {
        // kiln gives an image with sshd its own key per boot, and a forwarded port.
        packages.push("openssh-server".to_string());
    }
    if format == "disk" {
        for p in ["systemd-sysv", "udev", "kmod"] {
            if !packages.iter().any(|x| x == p) {
                packages.push(p.to_string());
            }
        }
        out.push_str("base = \"minbase\"\n");
    }
    let _ = writeln!(out, "packages = {}", quoted_list(&packages));
    let removed = list(&all_of(&["RemovePackages"]));
    if !removed.is_empty() {
        let _ = writeln!(out, "exclude = {}", quoted_list(&removed));
    }

    // [kernel]
    use_keys(&["Bootable", "KernelCommandLine", "KernelCommandLineExtra"]);
    let bootable = last("Bootable")
        .map(|s| match s.value.as_str() {
            "auto" => Ok(false),
            _ => boolean(s),
        })
        .transpose()?
        .unwrap_or(false);
    let cmdline: Vec<String> = all_of(&["KernelCommandLine", "KernelCommandLineExtra"])
        .iter()
        .flat_map(|s| s.value.split_whitespace().map(str::to_string))
        .collect();
    out.push_str("\n[kernel]\n");
    if bootable {
        out.push_str(
            "# Bootable=yes: Debian's cloud kernel boots fastest in QEMU (linux-image-amd64 has\n\
             # the drivers for real hardware).\npackage = \"linux-image-cloud-amd64\"\n",
        );
    } else {
        out.push_str("# No kernel in the image: give one with --kernel or --kernel-tree.\n");
    }
    if !cmdline.is_empty() {
        let _ = writeln!(out, "cmdline = {}", quoted_list(&cmdline));
    }

    // [output]
    use_keys(&["RootSize"]);
    let _ = write!(out, "\n[output]\nformat = {}\n", quote(format));
    if let Some(s) = last("RootSize") {
        crate::util::options::parse_size(&s.value)
            .map_err(|e| anyhow::anyhow!("{}: RootSize={}: {e}", s.at(), s.value))?;
        let _ = writeln!(out, "root_size = {}", quote(&s.value));
    } else if format == "disk" {
        out.push_str("root_size = \"auto\"\n");
    }

    // [system]
    use_keys(&[
        "Hostname",
        "Password",
        "RootPassword",
        "Autologin",
        "PasswordIsHashed",
    ]);
    let mut system = String::new();
    if let Some(h) = last("Hostname") {
        let _ = writeln!(system, "hostname = {}", quote(&h.value));
    }
    let hashed = last("PasswordIsHashed")
        .map(boolean)
        .transpose()?
        .unwrap_or(false);
    if let Some(p) = first_of(&["RootPassword", "Password"]) {
        if hashed || p.value.starts_with("hashed:") {
            unmapped.push(format!(
                "{}: {}=: a hashed password; kiln takes it in clear ([system] root_password)",
                p.at(),
                p.key
            ));
        } else {
            let _ = writeln!(system, "root_password = {}", quote(&p.value));
        }
    }
    if let Some(a) = last("Autologin") {
        let _ = writeln!(system, "autologin = {}", boolean(a)?);
    }
    if !system.is_empty() {
        let _ = write!(out, "\n[system]\n{system}");
    }

    // [network] and [qemu]
    use_keys(&[
        "Netdev",
        "RuntimeNetwork",
        "QemuHeadless",
        "Console",
        "QemuGui",
    ]);
    let netdev = match (last("Netdev"), last("RuntimeNetwork")) {
        (Some(n), _) => boolean(n)?,
        (None, Some(r)) => r.value == "user",
        _ => false,
    };
    if netdev {
        out.push_str("\n[network]\nmode = \"user\"\n");
    }
    use_keys(&[
        "QemuMem", "RAM", "QemuSmp", "CPUs", "QemuKvm", "KVM", "QemuArgs",
    ]);
    let mut qemu = String::new();
    if let Some(m) = first_of(&["RAM", "QemuMem"]) {
        crate::util::options::parse_size(&m.value)
            .map_err(|e| anyhow::anyhow!("{}: {}={}: {e}", m.at(), m.key, m.value))?;
        let _ = writeln!(qemu, "memory = {}", quote(&m.value));
    }
    if let Some(c) = first_of(&["CPUs", "QemuSmp"]) {
        match c.value.parse::<u32>() {
            Ok(n) if n > 0 => {
                let _ = writeln!(qemu, "cpus = {n}");
            }
            _ => bail!("{}: {}={} is not a number of CPUs", c.at(), c.key, c.value),
        }
    }
    if let Some(k) = first_of(&["KVM", "QemuKvm"]) {
        // kiln's "auto" uses KVM when it really runs guests and TCG otherwise, which is
        // what a configuration asking for KVM wants on a host without it (CI).
        let accel = match k.value.as_str() {
            "auto" => "auto",
            _ if boolean(k)? => "auto",
            _ => "tcg",
        };
        let _ = writeln!(qemu, "accel = {}", quote(accel));
    }
    let args: Vec<String> = all_of(&["QemuArgs"])
        .iter()
        .flat_map(|s| s.value.split_whitespace().map(str::to_string))
        .collect();
    if !args.is_empty() {
        let _ = writeln!(qemu, "args = {}", quoted_list(&args));
    }
    if !qemu.is_empty() {
        let _ = write!(out, "\n[qemu]\n{qemu}");
    }

    // Trees: mkosi.skeleton/ and SkeletonTrees= first, then mkosi.extra/ and ExtraTrees=.
    use_keys(&["SkeletonTrees", "ExtraTrees"]);
    let mut trees: Vec<(PathBuf, Option<String>)> = Vec::new();
    for (dir, key) in [
        ("mkosi.skeleton", "SkeletonTrees"),
        ("mkosi.extra", "ExtraTrees"),
    ] {
        let d = config.dir.join(dir);
        if d.is_dir() {
            trees.push((d, None));
        }
        for s in all_of(&[key]) {
            for w in words(&s.value) {
                let (src, dest) = match w.split_once(':') {
                    Some((a, b)) => (a, Some(b.to_string())),
                    None => (w, None),
                };
                let base = s.file.parent().unwrap_or(Path::new("."));
                let path = base.join(src);
                if !path.is_dir() {
                    bail!(
                        "{}: {key}={w}: {} is not a directory (kiln copies directories; unpack an \
                         archive first)",
                        s.at(),
                        path.display()
                    );
                }
                trees.push((path, dest));
            }
        }
    }
    for (src, dest) in &trees {
        let _ = write!(
            out,
            "\n[[overlay]]\nsource = {}\n",
            quote(&relative_to(src, profile_dir))
        );
        if let Some(d) = dest {
            let _ = writeln!(out, "destination = {}", quote(d));
        }
    }
    if !variables.is_empty() {
        out.push_str("\n# mkosi's Environment=: values for templates ({{NAME}}).\n[variables]\n");
        for (k, v) in &variables {
            let bare = !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            let key = if bare { k.clone() } else { quote(k) };
            let _ = writeln!(out, "{key} = {}", quote(v));
        }
    }

    for s in &config.settings {
        if used.contains(&s.key.as_str()) {
            continue;
        }
        let why = WHY
            .iter()
            .find(|(k, _)| *k == s.key)
            .map(|(_, w)| *w)
            .unwrap_or("no kiln equivalent");
        unmapped.push(format!(
            "{}: {}={}: {why}",
            s.at(),
            s.key,
            first_line(&s.value)
        ));
    }
    for (file, line) in &config.matches {
        warnings.push(format!(
            "{}:{line}: [Match] is not evaluated: this file's settings were applied as if it \
             matched",
            file.display()
        ));
    }
    for script in SCRIPTS {
        let p = config.dir.join(script);
        if p.exists() {
            unmapped.push(format!(
                "{}: a script mkosi runs; kiln runs none while building (not run; put what it \
                 does in [[file]], [system] or an overlay)",
                p.display()
            ));
        }
    }
    Ok(Imported {
        profile: out,
        warnings,
        unmapped,
    })
}
