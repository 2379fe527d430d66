//! Checks that need more than types: combinations of keys, paths that must exist,
//! values with a grammar of their own. Each error points at the key that caused it.

use super::diag::ProfileError;
use super::node::Node;
use super::schema::{DeviceKind, Format, Profile};
use super::types::Located;

fn exists<T>(
    item: &Located<T>,
    field: &str,
    p: &std::path::Path,
    dir: bool,
) -> Result<(), ProfileError> {
    match std::fs::metadata(p) {
        Ok(m) if dir && !m.is_dir() => {
            Err(item.field_error(field, format!("`{}` is not a directory", p.display())))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(item
            .field_error(field, format!("cannot use `{}`: {e}", p.display()))
            .help("paths in a profile are relative to the profile file that names them")),
    }
}

/// Checks `p` beyond its types. `name` is the image name; `root`, the merged tree,
/// locates errors about values that carry no location of their own.
pub fn validate(p: &Profile, name: &str, root: &Node) -> Result<(), ProfileError> {
    image_name(name, root)?;
    entries(p)?;
    top_level(p)?;
    output(p)?;
    kernel_and_test(p)?;
    distribution(p)?;
    network(p)?;
    host(p)?;
    system(p, root)
}

/// `[host]`: an initramfs, whose tests are commands (a script or a unit lives in the
/// image, which the host's userspace does not see).
fn host(p: &Profile) -> Result<(), ProfileError> {
    let Some(h) = &p.host else { return Ok(()) };
    if p.output.format.unwrap_or_default() != super::schema::Format::Initramfs {
        return Err(h.error(
            "[host] boots the host's userspace from an initramfs: remove output.format, or set it to \"initramfs\"",
        ));
    }
    if let Some(r) = &h.root {
        exists(h, "root", r, true)?;
    }
    for t in p.tests() {
        if t.command.is_none() {
            return Err(t.error(
                "a test of a [host] image is a `command`: it runs on the host's root, which does not see the image's files",
            ));
        }
        if t.results.is_some() {
            return Err(t.field_error(
                "results",
                "a test of a [host] image writes its results straight into the host's directory (the one kiln runs in); remove `results`",
            ));
        }
    }
    Ok(())
}

/// `[network]`: every forward parses, and no host port is forwarded twice.
fn network(p: &Profile) -> Result<(), ProfileError> {
    let mut hosts = Vec::new();
    for f in &p.network.forward {
        let fw = super::forward::Forward::parse(f).map_err(|e| f.error(e))?;
        if let Some(h) = fw.host {
            if hosts.contains(&(fw.proto, h)) {
                return Err(f.error(format!("host port {h} is forwarded twice")));
            }
            hosts.push((fw.proto, h));
        }
    }
    if p.network.mode == Some(crate::profile::NetworkMode::None) {
        if let Some(f) = p.network.forward.first() {
            return Err(f
                .error("ports are forwarded, but [network] mode is \"none\"")
                .help("remove `forward`, or set mode = \"user\""));
        }
    }
    Ok(())
}

/// The image name becomes file names in the output directory.
fn image_name(name: &str, root: &Node) -> Result<(), ProfileError> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        let loc = root
            .get("name")
            .map(|e| e.node.loc.clone())
            .unwrap_or_else(|| root.loc.clone());
        return Err(
            ProfileError::new(format!("`{name}` cannot be used as an image file name"))
                .at(&loc)
                .key("name")
                .help("use letters, digits, `-`, `_` and `.`, not starting with `.`"),
        );
    }
    Ok(())
}

/// `[[file]]`, `[[overlay]]`, `[[directory]]`, `[[symlink]]`, `[[hardlink]]`, `[[device]]`, `[[binary]]`.
fn entries(p: &Profile) -> Result<(), ProfileError> {
    for f in &p.file {
        match (&f.source, &f.content) {
            (Some(src), None) => exists(f, "source", src, false)?,
            (None, Some(_)) => {}
            (Some(_), Some(_)) => {
                return Err(f.error("a [[file]] takes `source` or `content`, not both"));
            }
            (None, None) => {
                return Err(
                    f.error("a [[file]] needs `source` (a host file) or `content` (inline text)")
                );
            }
        }
        for (k, v) in &f.xattrs {
            if !k.contains('.') {
                return Err(f.error(format!(
                    "xattr `{k}` has no namespace; write e.g. `user.{k}` or `security.{k}`"
                )));
            }
            if let Some(hex) = v.strip_prefix("0x") {
                if hex::decode(hex).is_err() {
                    return Err(f.error(format!("xattr `{k}`: `{v}` is not valid hex")));
                }
            }
        }
    }
    for o in &p.overlay {
        exists(o, "source", &o.source, true)?;
    }
    for s in &p.symlink {
        if s.target.is_empty() {
            return Err(s
                .error("a symlink target cannot be empty")
                .key(&format!("{}.target", s.key)));
        }
    }
    for d in &p.device {
        let numbered = matches!(d.kind, DeviceKind::Char | DeviceKind::Block);
        if numbered && (d.major.is_none() || d.minor.is_none()) {
            return Err(d.error("char and block devices need `major` and `minor`"));
        }
        if !numbered && (d.major.is_some() || d.minor.is_some()) {
            return Err(d.error("FIFOs and sockets have no `major`/`minor`"));
        }
        if d.major.is_some_and(|m| m > 0xfff) || d.minor.is_some_and(|m| m > 0xfffff) {
            return Err(d.error("device numbers are limited to major ≤ 4095 and minor ≤ 1048575"));
        }
    }
    Ok(())
}

/// `remove` and `source_date_epoch`.
fn top_level(p: &Profile) -> Result<(), ProfileError> {
    for r in &p.remove {
        if !r.starts_with('/') {
            return Err(r.error(format!("`{}` is not an absolute image path", r.value)));
        }
    }
    if let Some(v) = &p.source_date_epoch {
        if v.value < 0 || v.value > u32::MAX as i64 {
            return Err(v.error("source_date_epoch must be between 0 and 4294967295"));
        }
    }
    Ok(())
}

/// The smallest ext4 file system kiln writes (4096 blocks of 4 KiB).
const MIN_EXT4: u64 = 16 << 20;

/// `[output]` and its partitions.
fn output(p: &Profile) -> Result<(), ProfileError> {
    if let Some(level) = &p.output.compression_level {
        if !(1..=22).contains(&level.value) {
            return Err(level.error("zstd levels go from 1 to 22"));
        }
    }
    let format = p.output.format.unwrap_or_default();
    if format != Format::Disk {
        if let Some(part) = p.output.partition.first() {
            return Err(part.error("extra partitions need `output.format = \"disk\"`"));
        }
    }
    let mut labels = std::collections::BTreeSet::new();
    for part in &p.output.partition {
        if part.label.is_empty() || part.label.encode_utf16().count() > 36 {
            return Err(part.error("a partition label needs 1 to 36 characters"));
        }
        // Labels name partitions to tests and derive their PARTUUIDs: two alike would
        // make `root=PARTUUID=` and the tests' device names ambiguous.
        if part.filesystem.unwrap_or_default() == crate::util::options::PartitionFs::Ext4
            && part.size.0 < MIN_EXT4
        {
            return Err(part.error(format!(
                "an ext4 partition needs at least 16 MiB; `size` is {} (or set filesystem = \"none\")",
                crate::util::size::human_bytes(part.size.0)
            )));
        }
        if part.label == "root" {
            return Err(part.error(
                "the label \"root\" is the root partition's, which kiln makes itself; choose another",
            ));
        }
        if !labels.insert(part.label.as_str()) {
            return Err(part.error(format!(
                "another partition is already labelled \"{}\"; labels must differ",
                part.label
            )));
        }
    }
    Ok(())
}

/// `[kernel]` and `[test]`.
fn kernel_and_test(p: &Profile) -> Result<(), ProfileError> {
    let k = &p.kernel;
    let mut given: Vec<(&str, ProfileError)> = Vec::new();
    let msg = "[kernel] takes one of `path`, `package` and `tree`";
    if let Some(v) = &k.path {
        given.push(("path", v.error(msg)));
    }
    if let Some(v) = &k.package {
        given.push(("package", v.error(msg)));
    }
    if let Some(v) = &k.tree {
        given.push(("tree", v.error(msg)));
    }
    if given.len() > 1 {
        let names: Vec<&str> = given.iter().map(|(n, _)| *n).collect();
        let (_, mut e) = given.swap_remove(1);
        e.message = format!("{msg}, not {}", names.join(" and "));
        return Err(e);
    }
    if let Some(t) = &k.tree {
        if !t.value.0.is_dir() {
            return Err(t.error(format!(
                "kernel tree `{}` is not a directory",
                t.value.0.display()
            )));
        }
    }
    if let (Some(kp), None) = (&p.kernel.package, &p.distribution) {
        return Err(kp.error("[kernel] package needs a [distribution] to fetch it from"));
    }
    if let Some(d) = &p.kernel.debug_symbols {
        if d.value && p.kernel.package.is_none() {
            return Err(d.error(
                "debug_symbols takes the vmlinux from the kernel package's -dbg package; without [kernel] package, give [kernel] vmlinux instead",
            ));
        }
    }
    tests(p)
}

/// `[test]` or `[[test]]`: each runs one thing, names are unique and usable in paths and
/// on a kernel command line, and what a test asks for fits the image.
fn tests(p: &Profile) -> Result<(), ProfileError> {
    let all = p.tests();
    let format = p.output.format.unwrap_or_default();
    let mut names: Vec<String> = Vec::new();
    for t in &all {
        let what = [t.command.is_some(), t.script.is_some(), t.unit.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if what > 1 {
            return Err(t.error("a test takes one of `command`, `script` or `unit`"));
        }
        if what == 0 {
            return Err(t.error(
                "a test needs `command` (a shell command), `script` (a host file) or `unit` (a systemd unit in the image)",
            ));
        }
        if let Some(s) = &t.script {
            exists(t, "script", s, false)?;
        }
        if let Some(u) = &t.unit {
            if format == super::schema::Format::Initramfs {
                return Err(t.field_error(
                    "unit",
                    "a test unit needs systemd: use output.format = \"disk\", or `command`",
                ));
            }
            if u.contains('/') || !u.contains('.') {
                return Err(t.field_error(
                    "unit",
                    format!("`{u}` is not a unit name; write e.g. \"TEST-01-BASIC.service\""),
                ));
            }
        }
        let name = match &t.name {
            Some(n) => n.clone(),
            None if all.len() > 1 => {
                return Err(t.error("with several [[test]] tables, each needs a `name`"))
            }
            None => super::tests::DEFAULT_TEST_NAME.to_string(),
        };
        if name.is_empty()
            || name.starts_with(['.', '-'])
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(t.field_error(
                "name",
                format!("`{name}` is not a test name: use letters, digits, `.`, `_` and `-`"),
            ));
        }
        if names.contains(&name) {
            return Err(t.field_error("name", format!("two tests are named `{name}`")));
        }
        names.push(name);
        for k in &t.kernels {
            if let Err(e) = glob::Pattern::new(k) {
                return Err(t.field_error("kernels", format!("`{k}` is not a glob pattern: {e}")));
            }
        }
        if let Some(tap) = &t.tap {
            if t.results.is_none() {
                return Err(t.field_error(
                    "tap",
                    "`tap` names a file in the results directory: set `results` too",
                ));
            }
            if tap.is_empty() || tap.starts_with('/') || tap.split('/').any(|c| c == "..") {
                return Err(t.field_error(
                    "tap",
                    format!("`{tap}` must be a path inside the results directory"),
                ));
            }
        }
        if let Some(size) = &t.results_size {
            if size.0 < MIN_EXT4 {
                return Err(t.field_error(
                    "results_size",
                    format!(
                        "the results disk is ext4, which needs at least 16 MiB; `results_size` is {}",
                        crate::util::size::human_bytes(size.0)
                    ),
                ));
            }
        }
        if !t.require.is_empty() && t.results.is_none() {
            return Err(t.field_error(
                "require",
                "`require` names files in the results directory: set `results` too",
            ));
        }
        for r in &t.require {
            if r.is_empty() || r.starts_with('/') || r.split('/').any(|c| c == "..") {
                return Err(t.field_error(
                    "require",
                    format!("`{r}` must be a path inside the results directory"),
                ));
            }
        }
    }
    Ok(())
}

/// `[distribution]`.
fn distribution(p: &Profile) -> Result<(), ProfileError> {
    if let Some(d) = &p.distribution {
        if let Some(name) = &d.name {
            if name != "debian" {
                return Err(d.error(format!(
                    "distribution `{name}` is not supported yet; use \"debian\""
                )));
            }
        }
        if let Some(k) = &d.keyring {
            exists(d, "keyring", k, false)?;
        }
        if d.packages.is_empty() && d.base.unwrap_or_default() == super::schema::Base::None {
            return Err(
                d.error("[distribution] installs nothing: list `packages` or choose a `base`")
            );
        }
    }
    Ok(())
}

/// `[system]`.
fn system(p: &Profile, root: &Node) -> Result<(), ProfileError> {
    for k in &p.system.ssh_authorized_keys {
        if !k.exists() {
            let loc = root
                .get("system")
                .map(|e| e.node.loc.clone())
                .unwrap_or_else(|| root.loc.clone());
            return Err(
                ProfileError::new(format!("SSH key `{}` does not exist", k.display()))
                    .at(&loc)
                    .key("system.ssh_authorized_keys"),
            );
        }
    }
    Ok(())
}
