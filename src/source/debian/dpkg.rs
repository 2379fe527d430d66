//! The dpkg database (/var/lib/dpkg): status, file lists, md5sums, conffiles and the
//! maintainer scripts, so `dpkg -l`, `dpkg -S`, `apt` and later upgrades work in the guest.

use anyhow::Result;

use super::control::{self, Paragraph};
use super::install::Package;
use crate::tree::{Data, Entry, Kind, Meta, Tree};

/// dpkg's name for a package's info files: `name` or, for Multi-Arch: same, `name:arch`.
pub fn info_name(p: &Package) -> String {
    if p.locked.multi_arch.as_deref() == Some("same") {
        format!("{}:{}", p.locked.name, p.locked.architecture)
    } else {
        p.locked.name.clone()
    }
}

/// The status stanza: the package's control file with Status (and Conffiles) added.
pub fn status_paragraph(p: &Package) -> Paragraph {
    let ctl = control::parse(&p.unpacked.control)
        .into_iter()
        .next()
        .unwrap_or_default();
    let mut fields = Vec::with_capacity(ctl.fields.len() + 2);
    for (k, v) in ctl.fields {
        let is_package = k.eq_ignore_ascii_case("Package");
        fields.push((k, v));
        if is_package {
            fields.push(("Status".to_string(), "install ok installed".to_string()));
        }
    }
    if let Some(conffiles) = p.unpacked.info.get("conffiles") {
        // md5sums files leave conffiles out; dpkg hashes them when it unpacks, so do we.
        let lines: Vec<String> = String::from_utf8_lossy(conffiles)
            .lines()
            .map(|l| l.trim())
            .filter(|l| l.starts_with('/'))
            .map(|f| {
                format!(
                    "{f} {}",
                    conffile_md5(p, f).unwrap_or_else(|| "newconffile".into())
                )
            })
            .collect();
        if !lines.is_empty() {
            // Conffiles goes before Description, as dpkg writes it.
            let pos = fields
                .iter()
                .position(|(k, _)| k.eq_ignore_ascii_case("Description"))
                .unwrap_or(fields.len());
            fields.insert(
                pos,
                ("Conffiles".to_string(), format!("\n{}", lines.join("\n"))),
            );
        }
    }
    Paragraph { fields }
}

fn conffile_md5(p: &Package, path: &str) -> Option<String> {
    use md5::Digest;
    use std::io::Read;
    let rel = path.trim_start_matches('/');
    let m = p
        .unpacked
        .members
        .iter()
        .find(|m| m.path == rel && m.kind == 'f')?;
    let data = Data::Slice {
        file: std::sync::Arc::new(p.unpacked.data_tar.clone()),
        offset: m.offset,
        len: m.size,
        digest: None,
    };
    let mut bytes = Vec::new();
    data.open().ok()?.read_to_end(&mut bytes).ok()?;
    Some(hex::encode(md5::Md5::digest(&bytes)))
}

fn file(tree: &mut Tree, path: &str, bytes: Vec<u8>, mode: u32, epoch: i64) -> Result<()> {
    tree.insert(
        path,
        Entry::new(Kind::File(Data::bytes(bytes)), Meta::new(mode, epoch)),
    )?;
    Ok(())
}

const INFO_MEMBERS: [&str; 10] = [
    "md5sums",
    "conffiles",
    "preinst",
    "postinst",
    "prerm",
    "postrm",
    "config",
    "templates",
    "triggers",
    "shlibs",
];

/// Writes /var/lib/dpkg for `pkgs`: the status file, each package's file list and info
/// members (md5sums, maintainer scripts, …), and the other files and directories dpkg
/// expects. `arch` is the native architecture; `epoch` is every entry's mtime.
pub fn write_database(tree: &mut Tree, pkgs: &[Package], arch: &str, epoch: i64) -> Result<()> {
    let mut order: Vec<&Package> = pkgs.iter().collect();
    order.sort_by(|a, b| a.locked.name.cmp(&b.locked.name));
    let mut status = String::new();
    for p in &order {
        status.push_str(&status_paragraph(p).to_text());
        status.push('\n');
        let name = info_name(p);
        let mut list = String::from("/.\n");
        for m in &p.unpacked.members {
            if !m.path.is_empty() {
                list.push('/');
                list.push_str(&m.path);
                list.push('\n');
            }
        }
        file(
            tree,
            &format!("var/lib/dpkg/info/{name}.list"),
            list.into_bytes(),
            0o644,
            epoch,
        )?;
        for (member, bytes) in &p.unpacked.info {
            if INFO_MEMBERS.contains(&member.as_str()) || member == "symbols" || member == "shlibs"
            {
                let exec =
                    ["preinst", "postinst", "prerm", "postrm", "config"].contains(&member.as_str());
                file(
                    tree,
                    &format!("var/lib/dpkg/info/{name}.{member}"),
                    bytes.clone(),
                    if exec { 0o755 } else { 0o644 },
                    epoch,
                )?;
            }
        }
    }
    file(
        tree,
        "var/lib/dpkg/status",
        status.into_bytes(),
        0o644,
        epoch,
    )?;
    file(tree, "var/lib/dpkg/available", Vec::new(), 0o644, epoch)?;
    file(tree, "var/lib/dpkg/diversions", Vec::new(), 0o644, epoch)?;
    file(tree, "var/lib/dpkg/statoverride", Vec::new(), 0o644, epoch)?;
    file(
        tree,
        "var/lib/dpkg/arch",
        format!("{arch}\n").into_bytes(),
        0o644,
        epoch,
    )?;
    file(
        tree,
        "var/lib/dpkg/info/format",
        b"1\n".to_vec(),
        0o644,
        epoch,
    )?;
    for d in [
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
        "var/lib/dpkg/alternatives",
        "var/lib/dpkg/parts",
    ] {
        tree.insert(d, Entry::new(Kind::Dir, Meta::new(0o755, epoch)))?;
    }
    file(
        tree,
        "var/lib/dpkg/triggers/Unincorp",
        Vec::new(),
        0o644,
        epoch,
    )?;
    Ok(())
}

/// apt's sources for the guest, pointing at the mirror the image was built from.
pub fn write_apt_sources(
    tree: &mut Tree,
    mirror: &str,
    suite: &str,
    components: &[String],
    keyring_in_image: Option<&str>,
    epoch: i64,
) -> Result<()> {
    let mut s = format!(
        "Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: {}\n",
        components.join(" ")
    );
    if let Some(k) = keyring_in_image {
        s.push_str(&format!("Signed-By: {k}\n"));
    }
    file(
        tree,
        "etc/apt/sources.list.d/debian.sources",
        s.into_bytes(),
        0o644,
        epoch,
    )
}
