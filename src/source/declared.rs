//! Entries the profile declares one by one: [[binary]], [[overlay]], [[directory]],
//! [[file]], [[symlink]], [[hardlink]] and [[device]], applied in that order.

use anyhow::{Context, Result};
use serde_json::Value;

use super::{elf, overlay};
use crate::profile::{DeviceKind, Owner, Profile};
use crate::template::Renderer;
use crate::tree::{path, Data, Entry, Kind, Meta, Tree};

/// What declared entries need from the build.
pub struct DeclaredContext<'a> {
    /// Modification time of every entry, in seconds since the Unix epoch.
    pub mtime: i64,
    /// Renders `[[file]]` entries with `template = true`.
    pub renderer: &'a Renderer,
    /// The variables templates are rendered with.
    pub data: &'a Value,
    /// Content digests of overlay files an earlier build computed (see
    /// [`overlay::Known`]): the writer need not hash those files again.
    pub known: &'a overlay::Known<'a>,
}

fn xattr_value(v: &str) -> Vec<u8> {
    match v.strip_prefix("0x") {
        Some(hex) => hex::decode(hex).unwrap_or_else(|_| v.as_bytes().to_vec()),
        None => v.as_bytes().to_vec(),
    }
}

/// Adds the profile's `[[binary]]`, `[[overlay]]`, `[[directory]]`, `[[file]]`, `[[symlink]]`,
/// `[[hardlink]]` and `[[device]]` entries to the tree, in that order; what the overlays'
/// walks read of the host goes to `seen`.
pub fn add_declared(
    tree: &mut Tree,
    p: &Profile,
    cx: &DeclaredContext,
    seen: &mut Vec<overlay::Seen>,
) -> Result<()> {
    binaries(tree, p, cx)?;
    overlays(tree, p, cx, seen)?;
    directories(tree, p, cx)?;
    files(tree, p, cx)?;
    symlinks(tree, p, cx)?;
    hardlinks(tree, p, cx)?;
    devices(tree, p, cx)?;
    Ok(())
}

/// `[[binary]]`: host executables with the shared libraries they load.
fn binaries(tree: &mut Tree, p: &Profile, cx: &DeclaredContext) -> Result<()> {
    for b in &p.binary {
        let host = if b.source.contains('/') {
            match &b.loc {
                Some(loc) if !b.source.starts_with('/') => loc.dir().join(&b.source),
                _ => b.source.clone().into(),
            }
        } else {
            elf::which(&b.source)
                .ok_or_else(|| b.error(format!("`{}` is not in $PATH", b.source)))?
        };
        if !host.is_file() {
            return Err(b
                .error(format!("`{}` is not a file", host.display()))
                .into());
        }
        let files = elf::closure(&host).map_err(|e| b.error(format!("{e:#}")))?;
        for f in files {
            let md = std::fs::metadata(&f).with_context(|| format!("reading {}", f.display()))?;
            let dest = if f == host {
                match &b.path {
                    Some(p) => p.as_str().to_string(),
                    None => path::normalize(&host.to_string_lossy()).map_err(anyhow::Error::msg)?,
                }
            } else {
                path::normalize(&f.to_string_lossy()).map_err(anyhow::Error::msg)?
            };
            use std::os::unix::fs::PermissionsExt;
            let mode = md.permissions().mode() & 0o7777;
            let entry = Entry::new(
                Kind::File(Data::host(f.clone(), md.len())),
                Meta::new(mode, cx.mtime),
            );
            tree.insert(&dest, entry)?;
        }
    }
    Ok(())
}

/// `[[overlay]]`: host directories copied in.
fn overlays(
    tree: &mut Tree,
    p: &Profile,
    cx: &DeclaredContext,
    seen: &mut Vec<overlay::Seen>,
) -> Result<()> {
    for o in &p.overlay {
        let dest = match &o.destination {
            Some(d) => d.as_str().to_string(),
            None => String::new(),
        };
        let keep = o.owner.unwrap_or_default() == Owner::Host;
        overlay::add_overlay(tree, &o.source, &dest, keep, cx.mtime, cx.known, seen)
            .with_context(|| format!("{}: overlay {}", loc_str(&o.loc), o.source.display()))?;
    }
    Ok(())
}

/// `[[directory]]`.
fn directories(tree: &mut Tree, p: &Profile, cx: &DeclaredContext) -> Result<()> {
    for d in &p.directory {
        let dest = d.path.as_str();
        let meta = Meta::new(d.mode.map(|m| m.0).unwrap_or(0o755), cx.mtime)
            .owner(d.uid.unwrap_or(0), d.gid.unwrap_or(0));
        tree.insert(dest, Entry::new(Kind::Dir, meta))?;
    }
    Ok(())
}

/// `[[file]]`: host files, inline text, templates.
fn files(tree: &mut Tree, p: &Profile, cx: &DeclaredContext) -> Result<()> {
    for f in &p.file {
        let dest = f.path.as_str();
        let render = f.template.unwrap_or(false);
        let data = match (&f.source, &f.content) {
            (Some(src), _) if render => {
                let text = std::fs::read_to_string(&src.0).map_err(|e| {
                    f.error(format!("cannot read template `{}`: {e}", src.display()))
                })?;
                Data::bytes(
                    cx.renderer
                        .render(&src.display().to_string(), &text, cx.data)
                        .map_err(|e| f.error(format!("{e:#}")))?,
                )
            }
            (Some(src), _) => {
                let md = std::fs::metadata(src.as_ref() as &std::path::Path)
                    .map_err(|e| f.error(format!("cannot read `{}`: {e}", src.display())))?;
                Data::host(src.0.clone(), md.len())
            }
            (None, Some(text)) if render => Data::bytes(
                cx.renderer
                    .render(&format!("{} ({})", f.key, f.path), text, cx.data)
                    .map_err(|e| f.error(format!("{e:#}")))?,
            ),
            (None, Some(text)) => Data::bytes(text.as_bytes()),
            (None, None) => return Err(f.error("a [[file]] needs `source` or `content`").into()),
        };
        let default_mode = match &f.source {
            Some(src) if !render => {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(src.as_ref() as &std::path::Path)
                    .map(|m| m.permissions().mode() & 0o777)
                    .unwrap_or(0o644)
            }
            _ => 0o644,
        };
        let mut meta = Meta::new(f.mode.map(|m| m.0).unwrap_or(default_mode), cx.mtime)
            .owner(f.uid.unwrap_or(0), f.gid.unwrap_or(0));
        for (k, v) in &f.xattrs {
            meta.xattrs.insert(k.clone(), xattr_value(v));
        }
        tree.insert(dest, Entry::new(Kind::File(data), meta))?;
    }
    Ok(())
}

/// `[[symlink]]`.
fn symlinks(tree: &mut Tree, p: &Profile, cx: &DeclaredContext) -> Result<()> {
    for s in &p.symlink {
        let dest = s.path.as_str();
        let meta = Meta::new(0o777, cx.mtime).owner(s.uid.unwrap_or(0), s.gid.unwrap_or(0));
        tree.insert(dest, Entry::new(Kind::Symlink(s.target.clone()), meta))?;
    }
    Ok(())
}

/// `[[hardlink]]`: another name for a regular file already in the image.
fn hardlinks(tree: &mut Tree, p: &Profile, _cx: &DeclaredContext) -> Result<()> {
    for h in &p.hardlink {
        let dest = h.path.as_str();
        let target = h.target.as_str();
        let target = tree.resolve(target)?;
        let meta = match tree.get(&target) {
            Some(Entry {
                kind: Kind::File(_),
                meta,
            }) => meta.clone(),
            Some(other) => {
                return Err(h
                    .error(format!(
                        "hard link target {} is a {}, not a regular file",
                        h.target,
                        other.kind.name()
                    ))
                    .into())
            }
            None => {
                return Err(h
                    .error(format!("hard link target {} is not in the image", h.target))
                    .into())
            }
        };
        tree.insert(dest, Entry::new(Kind::HardLink(target), meta))?;
    }
    Ok(())
}

/// `[[device]]`: device nodes, FIFOs and sockets.
fn devices(tree: &mut Tree, p: &Profile, cx: &DeclaredContext) -> Result<()> {
    for d in &p.device {
        let dest = d.path.as_str();
        let (major, minor) = (d.major.unwrap_or(0), d.minor.unwrap_or(0));
        let kind = match d.kind {
            DeviceKind::Char => Kind::CharDev { major, minor },
            DeviceKind::Block => Kind::BlockDev { major, minor },
            DeviceKind::Fifo => Kind::Fifo,
            DeviceKind::Socket => Kind::Socket,
        };
        let default_mode = match d.kind {
            DeviceKind::Char | DeviceKind::Block => 0o600,
            _ => 0o644,
        };
        let meta = Meta::new(d.mode.map(|m| m.0).unwrap_or(default_mode), cx.mtime)
            .owner(d.uid.unwrap_or(0), d.gid.unwrap_or(0));
        tree.insert(dest, Entry::new(kind, meta))?;
    }
    Ok(())
}

fn loc_str(loc: &Option<crate::profile::Loc>) -> String {
    loc.as_ref()
        .map(|l| l.to_string())
        .unwrap_or_else(|| "profile".into())
}
