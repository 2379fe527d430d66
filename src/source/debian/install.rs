//! Putting unpacked packages into the tree, as dpkg would have: merged /usr, files
//! owned by the package that may replace the other, maintainer-script work that matters
//! (alternatives) done declaratively, and the dpkg database written so dpkg and apt work
//! in the guest.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::{Context, Result};

use super::deb::Unpacked;
use super::deps;
use super::lock::LockedPackage;
use crate::tree::{path, Data, Entry, Kind, Meta, Tree};
use crate::util::progress;

/// What installing did that a user may want to know.
#[derive(Debug, Default)]
pub struct InstallReport {
    /// "path: a's copy replaced by b's".
    pub overwritten: Vec<String>,
    /// Packages with maintainer scripts kiln did not run.
    pub with_scripts: Vec<String>,
    /// Units the packages' scripts would enable (`deb-systemd-helper enable`).
    pub units: Vec<String>,
    /// Alternatives set up: (name, chosen path).
    pub alternatives: Vec<(String, String)>,
}

/// A package to install: its lock entry and its unpacked .deb.
pub struct Package<'a> {
    /// The package as pinned by the lock.
    pub locked: &'a LockedPackage,
    /// Its cached, unpacked contents.
    pub unpacked: &'a Unpacked,
}

/// The tree entry for a package member: its bytes stay in the cached data.tar, its
/// ownership and mode come from the tar header, its mtime is clamped to `epoch`.
pub fn member_entry(
    tree: &Tree,
    m: &super::deb::Member,
    data_tar: &Arc<std::path::PathBuf>,
    epoch: i64,
) -> Result<Option<Entry>> {
    let meta = Meta::new(m.mode, m.mtime.min(epoch)).owner(m.uid, m.gid);
    let kind = match m.kind {
        'd' => Kind::Dir,
        'f' => Kind::File(Data::Slice {
            file: data_tar.clone(),
            offset: m.offset,
            len: m.size,
            digest: m.digest.clone(),
        }),
        'l' => Kind::Symlink(m.link.clone().unwrap_or_default()),
        'h' => {
            let target =
                path::relative(m.link.as_deref().unwrap_or("")).map_err(anyhow::Error::msg)?;
            Kind::HardLink(tree.resolve_parent(&target)?)
        }
        'c' => Kind::CharDev {
            major: m.major,
            minor: m.minor,
        },
        'b' => Kind::BlockDev {
            major: m.major,
            minor: m.minor,
        },
        'p' => Kind::Fifo,
        _ => return Ok(None),
    };
    Ok(Some(Entry::new(kind, meta)))
}

/// The merged-/usr symlinks every Debian release since bookworm expects.
pub fn merged_usr(tree: &mut Tree, mtime: i64) -> Result<()> {
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        if !tree.contains(link) {
            tree.insert(target, Entry::new(Kind::Dir, Meta::new(0o755, mtime)))?;
            tree.insert(
                link,
                Entry::new(Kind::Symlink(target.to_string()), Meta::new(0o777, mtime)),
            )?;
        }
    }
    Ok(())
}

fn replaces(u: &Unpacked) -> Vec<String> {
    u.control_field("Replaces")
        .map(|r| deps::parse_flat(&r).into_iter().map(|d| d.name).collect())
        .unwrap_or_default()
}

/// Where the system users that postinsts would make are declared.
pub const POSTINST_SYSUSERS: &str = "usr/lib/sysusers.d/kiln-postinst-users.conf";

/// Installs `pkgs` in name order over the merged-/usr links, then sets up alternatives.
/// Where two packages ship the same file, `Replaces:` decides; otherwise the later one wins.
pub fn install(tree: &mut Tree, pkgs: &[Package], epoch: i64) -> Result<InstallReport> {
    let mut report = InstallReport::default();
    merged_usr(tree, epoch)?;
    let mut order: Vec<&Package> = pkgs.iter().collect();
    order.sort_by(|a, b| a.locked.name.cmp(&b.locked.name));
    let replaces: HashMap<&str, Vec<String>> = order
        .iter()
        .map(|p| (p.locked.name.as_str(), replaces(p.unpacked)))
        .collect();
    let mut owner: HashMap<String, &str> = HashMap::new();
    let mut system_users: Vec<String> = Vec::new();
    for p in &order {
        let name = p.locked.name.as_str();
        let data_tar = Arc::new(p.unpacked.data_tar.clone());
        for m in &p.unpacked.members {
            if m.path.is_empty() {
                continue;
            }
            let Some(Entry { kind, meta }) = member_entry(tree, m, &data_tar, epoch)? else {
                continue;
            };
            if !matches!(kind, Kind::Dir) {
                let landed = tree.resolve_parent(&m.path)?;
                if let Some(prev) = owner.get(&landed).copied() {
                    if prev != name {
                        let prev_replaces_us = replaces
                            .get(prev)
                            .is_some_and(|r| r.iter().any(|x| x == name));
                        let we_replace_prev = replaces
                            .get(name)
                            .is_some_and(|r| r.iter().any(|x| x == prev));
                        if prev_replaces_us && !we_replace_prev {
                            continue;
                        }
                        if !we_replace_prev {
                            report
                                .overwritten
                                .push(format!("/{landed}: {prev}'s copy replaced by {name}'s"));
                        }
                    }
                }
                owner.insert(landed, name);
            }
            tree.insert(&m.path, Entry::new(kind, meta))
                .with_context(|| format!("installing /{} from {name}", m.path))?;
        }
        if p.unpacked
            .info
            .keys()
            .any(|k| ["preinst", "postinst", "prerm", "postrm"].contains(&k.as_str()))
        {
            report.with_scripts.push(name.to_string());
        }
        if let Some(postinst) = p.unpacked.info.get("postinst") {
            let text = String::from_utf8_lossy(postinst);
            report.units.extend(units_enabled_by(&text));
            system_users.extend(super::postinst_users::sysusers_lines(&text));
        }
    }
    if !system_users.is_empty() {
        // Read with the packages' own sysusers.d files when accounts are made; a user a
        // package also declares there is made once.
        let text = format!(
            "# Written by kiln: the system users these packages' postinsts make with adduser.\n{}\n",
            system_users.join("\n")
        );
        tree.insert(
            POSTINST_SYSUSERS,
            Entry::new(Kind::File(Data::bytes(text)), Meta::new(0o644, epoch)),
        )?;
    }
    report.alternatives = alternatives(tree, pkgs, epoch)?;
    Ok(report)
}

/// Units a postinst enables: through deb-systemd-helper (what dh_installsystemd writes)
/// or `systemctl enable` (as systemd's own postinst does).
///
/// dh_installsystemd wraps units it must not enable on a fresh install (`--no-enable`)
/// in `if deb-systemd-helper debian-installed …` blocks; enables inside those are for
/// upgrades and are skipped.
pub fn units_enabled_by(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    // Nesting depth of `if` inside an upgrade-only block; 0 = not in one.
    let mut upgrade_only = 0usize;
    for line in script.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let opens = words.first() == Some(&"if");
        let closes = words
            .first()
            .is_some_and(|w| *w == "fi" || w.starts_with("fi;"));
        if upgrade_only > 0 {
            if opens {
                upgrade_only += 1;
            } else if closes {
                upgrade_only -= 1;
            }
            continue;
        }
        if opens && line.contains("deb-systemd-helper debian-installed") {
            upgrade_only = 1;
            continue;
        }
        let Some(i) = words
            .iter()
            .position(|w| w.ends_with("deb-systemd-helper") || w.ends_with("systemctl"))
        else {
            continue;
        };
        let Some(j) = words[i + 1..].iter().position(|w| *w == "enable") else {
            continue;
        };
        // Only options (and their ${…} values) may stand between the command and "enable".
        if words[i + 1..i + 1 + j]
            .iter()
            .any(|w| !w.starts_with('-') && !w.starts_with("${"))
        {
            continue;
        }
        for w in &words[i + 2 + j..] {
            let w = w.trim_matches(|c| c == '\'' || c == '"');
            if w.starts_with('>')
                || w.starts_with('|')
                || w.starts_with('&')
                || w.starts_with(';')
                || w.contains('$')
            {
                break;
            }
            if w.starts_with('-') {
                continue;
            }
            if w.contains('.') {
                out.push(w.to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// One `update-alternatives --install` call found in a maintainer script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AltInstall {
    /// The generic name's symlink, e.g. /usr/bin/awk.
    pub link: String,
    /// The alternative's name, e.g. `awk`: its link in /etc/alternatives.
    pub name: String,
    /// The choice this call offers, e.g. /usr/bin/mawk.
    pub path: String,
    /// The highest-priority installed choice is the one selected.
    pub priority: i64,
    /// (link, name, path)
    pub slaves: Vec<(String, String, String)>,
}

/// `update-alternatives --install LINK NAME PATH PRIORITY [--slave LINK NAME PATH]…`
/// calls in a maintainer script. Calls whose arguments use shell variables are skipped.
pub fn parse_alternatives(script: &str) -> Vec<AltInstall> {
    let joined = script.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let words: Vec<String> = line
            .split_whitespace()
            .map(|w| w.trim_matches(|c| c == '\'' || c == '"').to_string())
            .collect();
        let Some(start) = words
            .iter()
            .position(|w| w.ends_with("update-alternatives"))
        else {
            continue;
        };
        let words = &words[start + 1..];
        let Some(i) = words.iter().position(|w| w == "--install") else {
            continue;
        };
        let a = &words[i + 1..];
        if a.len() < 4 || a[..4].iter().any(|w| w.contains('$')) {
            continue;
        }
        let Ok(priority) = a[3].parse::<i64>() else {
            continue;
        };
        let mut alt = AltInstall {
            link: a[0].clone(),
            name: a[1].clone(),
            path: a[2].clone(),
            priority,
            slaves: Vec::new(),
        };
        let mut j = 4;
        while j + 3 < a.len() && a[j] == "--slave" {
            if a[j + 1..j + 4].iter().any(|w| w.contains('$')) {
                break;
            }
            alt.slaves
                .push((a[j + 1].clone(), a[j + 2].clone(), a[j + 3].clone()));
            j += 4;
        }
        out.push(alt);
    }
    out
}

/// Chooses, for each alternative name, the highest-priority installed choice, and makes
/// the links and update-alternatives' state file as `update-alternatives --install` would.
fn alternatives(tree: &mut Tree, pkgs: &[Package], epoch: i64) -> Result<Vec<(String, String)>> {
    let mut by_name: BTreeMap<String, Vec<AltInstall>> = BTreeMap::new();
    for p in pkgs {
        if let Some(s) = p.unpacked.info.get("postinst") {
            for a in parse_alternatives(&String::from_utf8_lossy(s)) {
                by_name.entry(a.name.clone()).or_default().push(a);
            }
        }
    }
    let mut chosen = Vec::new();
    let exists = |tree: &Tree, p: &str| {
        path::normalize(p)
            .ok()
            .and_then(|n| tree.resolve(&n).ok())
            .is_some_and(|r| tree.contains(&r))
    };
    for (name, mut choices) in by_name {
        // update-alternatives refuses names with a slash; here one would climb out of
        // /etc/alternatives.
        if name.is_empty() || name == "." || name == ".." || name.contains('/') {
            progress::warn(format!("ignoring alternative `{name}`: not a valid name"));
            continue;
        }
        choices.retain(|c| exists(tree, &c.path));
        choices.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| a.path.cmp(&b.path))
        });
        choices.dedup_by(|a, b| a.path == b.path);
        let Some(best) = choices.first().cloned() else {
            continue;
        };
        let link_meta = Meta::new(0o777, epoch);
        let set_link = |tree: &mut Tree, link: &str, name: &str, target: &str| -> Result<()> {
            let alt = format!("etc/alternatives/{name}");
            tree.insert(
                &alt,
                Entry::new(Kind::Symlink(target.to_string()), link_meta.clone()),
            )?;
            let l = path::normalize(link).map_err(anyhow::Error::msg)?;
            let landed = tree.resolve_parent(&l)?;
            // Never replace a real file a package shipped at the link's place.
            if !matches!(
                tree.get(&landed).map(|e| &e.kind),
                Some(Kind::File(_)) | Some(Kind::Dir)
            ) {
                tree.insert(
                    &l,
                    Entry::new(Kind::Symlink(format!("/{alt}")), link_meta.clone()),
                )?;
            }
            Ok(())
        };
        set_link(tree, &best.link, &name, &best.path)?;
        for (slink, sname, spath) in &best.slaves {
            if exists(tree, spath) {
                set_link(tree, slink, sname, spath)?;
            }
        }
        // update-alternatives' administrative file, so the guest can change the choice.
        let mut slaves: Vec<(String, String)> = Vec::new();
        for c in &choices {
            for (l, n, _) in &c.slaves {
                if !slaves.iter().any(|(sn, _)| sn == n) {
                    slaves.push((n.clone(), l.clone()));
                }
            }
        }
        let mut admin = format!("auto\n{}\n", best.link);
        for (n, l) in &slaves {
            admin.push_str(&format!("{n}\n{l}\n"));
        }
        admin.push('\n');
        for c in &choices {
            admin.push_str(&format!("{}\n{}\n", c.path, c.priority));
            for (n, _) in &slaves {
                let p = c
                    .slaves
                    .iter()
                    .find(|(_, sn, _)| sn == n)
                    .map(|(_, _, p)| p.as_str())
                    .unwrap_or("");
                admin.push_str(&format!("{p}\n"));
            }
        }
        admin.push('\n');
        tree.insert(
            &format!("var/lib/dpkg/alternatives/{name}"),
            Entry::new(Kind::File(Data::bytes(admin)), Meta::new(0o644, epoch)),
        )?;
        chosen.push((name, best.path));
    }
    Ok(chosen)
}

/// Tells the user which packages had maintainer scripts kiln did not run, and which files two packages shipped.
pub fn log_report(r: &InstallReport) {
    if !r.with_scripts.is_empty() {
        progress::step(format!(
            "maintainer scripts not run ({} packages; their effects that matter are applied declaratively): {}",
            r.with_scripts.len(),
            r.with_scripts.join(" ")
        ));
    }
    for o in &r.overwritten {
        progress::step(format!("file in two packages: {o}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_alternatives_in_postinst() {
        let s = "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n  update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \\\n    --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz\n  update-alternatives --install /usr/bin/x x \"$DIR/x\" 1\nfi\n";
        let a = parse_alternatives(s);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].name, "awk");
        assert_eq!(a[0].priority, 5);
        assert_eq!(
            a[0].slaves,
            vec![(
                "/usr/share/man/man1/awk.1.gz".into(),
                "awk.1.gz".into(),
                "/usr/share/man/man1/mawk.1.gz".into()
            )]
        );
    }

    #[test]
    fn finds_units_deb_systemd_helper_enables() {
        let s = "if deb-systemd-helper debian-installed 'ssh.socket'; then\n  if deb-systemd-helper --quiet was-enabled 'ssh.socket'; then\n    deb-systemd-helper enable 'ssh.socket' >/dev/null || true\n  fi\nfi\n\t\tdeb-systemd-helper enable 'ssh.service' >/dev/null || true\n deb-systemd-helper unmask 'x.service'\n    systemctl ${DPKG_ROOT:+--root=\"$DPKG_ROOT\"} enable getty@tty1.service || true\n systemctl is-enabled foo.service\n";
        assert_eq!(
            units_enabled_by(s),
            vec!["getty@tty1.service", "ssh.service"]
        );
    }
}
