//! systemd units enabled the way `systemctl enable` does it: by following the unit's
//! [Install] section and creating the symlinks, with no systemd running.

use anyhow::Result;

use super::users::read_text;
use crate::tree::{Data, Entry, Kind, Meta, Tree};

const UNIT_DIRS: [&str; 3] = [
    "etc/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
];

/// What `systemctl enable` reads from a unit file: its [Install] section, and [Unit] `Conflicts=`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Install {
    /// `WantedBy=`: units whose `.wants/` directory gets a link to this one.
    pub wanted_by: Vec<String>,
    /// `RequiredBy=`: units whose `.requires/` directory gets a link to this one.
    pub required_by: Vec<String>,
    /// `Alias=`: other names for this unit, linked in /etc/systemd/system.
    pub alias: Vec<String>,
    /// `Also=`: units enabled along with this one.
    pub also: Vec<String>,
    /// `DefaultInstance=`: the instance a template unit is enabled as when none is named.
    pub default_instance: Option<String>,
    /// From [Unit]: units this one cannot run beside.
    pub conflicts: Vec<String>,
}

/// Reads the [Install] keys and [Unit] `Conflicts=` from unit file text; other lines are ignored.
pub fn parse_install(text: &str) -> Install {
    let mut i = Install::default();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').to_string();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let words = || v.split_whitespace().map(String::from).collect::<Vec<_>>();
        match (section.as_str(), k.trim()) {
            ("Install", "WantedBy") => i.wanted_by.extend(words()),
            ("Install", "RequiredBy") => i.required_by.extend(words()),
            ("Install", "Alias") => i.alias.extend(words()),
            ("Install", "Also") => i.also.extend(words()),
            ("Install", "DefaultInstance") => i.default_instance = Some(v.trim().to_string()),
            ("Unit", "Conflicts") => i.conflicts.extend(words()),
            _ => {}
        }
    }
    i
}

/// (template file name, instance) for "getty@tty1.service"; (name, None) for plain units.
fn split_instance(unit: &str) -> (String, Option<String>) {
    match (unit.find('@'), unit.rfind('.')) {
        (Some(at), Some(dot)) if at < dot && at + 1 < dot => (
            format!("{}@{}", &unit[..at], &unit[dot..]),
            Some(unit[at + 1..dot].to_string()),
        ),
        _ => (unit.to_string(), None),
    }
}

/// A unit name kiln may turn into a path: no slash, not `.` or `..`, not empty.
fn valid_unit_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// Where a unit file lives in the image (stored path) and its text.
fn find_unit(tree: &Tree, file: &str) -> Result<Option<(String, String)>> {
    for d in UNIT_DIRS {
        let p = format!("{d}/{file}");
        if let Some(text) = read_text(tree, &p)? {
            let real = tree.resolve(&p).unwrap_or(p);
            return Ok(Some((real, text)));
        }
    }
    Ok(None)
}

fn link(tree: &mut Tree, at: &str, target: &str, epoch: i64) -> Result<()> {
    tree.insert(
        at,
        Entry::new(Kind::Symlink(target.to_string()), Meta::new(0o777, epoch)),
    )?;
    Ok(())
}

/// What [`enable`] did.
#[derive(Debug, Default)]
pub struct Enabled {
    /// Units enabled, in order, including those pulled in by `Also=`.
    pub units: Vec<String>,
    /// Units not enabled, each as `unit: reason`.
    pub skipped: Vec<String>,
}

/// Enables `units` in order. A unit that conflicts with one already enabled is skipped
/// (e.g. ssh.socket when ssh.service is enabled).
pub fn enable(tree: &mut Tree, units: &[String], epoch: i64) -> Result<Enabled> {
    let mut done = Enabled::default();
    let mut queue: Vec<String> = units.to_vec();
    queue.reverse();
    let mut conflicts_of: Vec<(String, Vec<String>)> = Vec::new();
    while let Some(unit) = queue.pop() {
        if done.units.contains(&unit)
            || done
                .skipped
                .iter()
                .any(|s| s.starts_with(&format!("{unit}:")))
        {
            continue;
        }
        if !valid_unit_name(&unit) {
            done.skipped.push(format!("{unit}: not a unit name"));
            continue;
        }
        let (file, instance) = split_instance(&unit);
        let Some((path, text)) = find_unit(tree, &file)? else {
            done.skipped
                .push(format!("{unit}: no such unit file in the image"));
            continue;
        };
        let inst = parse_install(&text);
        // Names from a unit file become paths; one that could climb out of
        // /etc/systemd/system is refused, not followed.
        if let Some(bad) = inst
            .wanted_by
            .iter()
            .chain(&inst.required_by)
            .chain(&inst.alias)
            .find(|w| !valid_unit_name(w))
        {
            done.skipped.push(format!(
                "{unit}: its [Install] names `{bad}`, which is not a unit name"
            ));
            continue;
        }
        let clash = done.units.iter().find(|u| {
            inst.conflicts.contains(u)
                || conflicts_of
                    .iter()
                    .any(|(x, c)| x == *u && c.contains(&unit))
        });
        if let Some(other) = clash {
            done.skipped
                .push(format!("{unit}: conflicts with {other}, which is enabled"));
            continue;
        }
        let instance = instance.or_else(|| inst.default_instance.clone());
        let name = match (&instance, file.find('@')) {
            (Some(i), Some(at)) => format!("{}@{}{}", &file[..at], i, &file[at + 1..]),
            _ => file.clone(),
        };
        // DefaultInstance= also becomes part of a path.
        if !valid_unit_name(&name) {
            done.skipped.push(format!(
                "{unit}: its instance makes `{name}`, which is not a unit name"
            ));
            continue;
        }
        let target = format!("/{path}");
        for t in &inst.wanted_by {
            link(
                tree,
                &format!("etc/systemd/system/{t}.wants/{name}"),
                &target,
                epoch,
            )?;
        }
        for t in &inst.required_by {
            link(
                tree,
                &format!("etc/systemd/system/{t}.requires/{name}"),
                &target,
                epoch,
            )?;
        }
        for a in &inst.alias {
            if !path.ends_with(&format!("/{a}")) {
                link(tree, &format!("etc/systemd/system/{a}"), &target, epoch)?;
            }
        }
        if inst.wanted_by.is_empty()
            && inst.required_by.is_empty()
            && inst.alias.is_empty()
            && inst.also.is_empty()
        {
            done.skipped.push(format!(
                "{unit}: has no [Install] section (static); nothing to enable"
            ));
            continue;
        }
        conflicts_of.push((unit.clone(), inst.conflicts.clone()));
        done.units.push(unit.clone());
        for a in inst.also.iter().rev() {
            queue.push(a.clone());
        }
    }
    Ok(done)
}

/// Where kiln records what it enabled, as a preset.
pub const PRESET: &str = "etc/systemd/system-preset/00-kiln.preset";

/// Records the units [`enable`] enabled as presets, everything else disabled. An image
/// boots first with an uninitialised machine-id, and on that boot systemd applies the
/// presets to every unit; the distribution's own (which enable e.g. ssh.socket beside
/// ssh.service, so the two fight over port 22) would undo what the packages' scripts
/// chose and kiln did.
pub fn write_preset(tree: &mut Tree, enabled: &Enabled, epoch: i64) -> Result<()> {
    let mut text = String::from(
        "# Written by kiln: the units enabled in this image, as the packages' scripts and the\n# profile chose them; systemd applies presets on first boot.\n",
    );
    for u in &enabled.units {
        match split_instance(u) {
            (template, Some(instance)) => text.push_str(&format!("enable {template} {instance}\n")),
            (name, None) => text.push_str(&format!("enable {name}\n")),
        }
    }
    text.push_str("disable *\n");
    tree.insert(
        PRESET,
        Entry::new(Kind::File(Data::bytes(text)), Meta::new(0o644, epoch)),
    )?;
    Ok(())
}

/// Root logs in without a password on the serial console.
pub fn autologin(tree: &mut Tree, epoch: i64) -> Result<()> {
    let dropin = "[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --noreset --noclear --keep-baud 115200,57600,38400,9600 - ${TERM}\n";
    for unit in ["serial-getty@ttyS0.service", "getty@tty1.service"] {
        tree.insert(
            &format!("etc/systemd/system/{unit}.d/kiln-autologin.conf"),
            Entry::new(Kind::File(Data::bytes(dropin)), Meta::new(0o644, epoch)),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_names_that_climb_are_refused() {
        let mut t = Tree::new(0);
        let f = |s: &str| Entry::new(Kind::File(Data::bytes(s)), Meta::new(0o644, 0));
        t.insert(
            "usr/lib/systemd/systemd",
            Entry::new(Kind::File(Data::bytes("")), Meta::new(0o755, 0)),
        )
        .unwrap();
        t.insert(
            "usr/lib/systemd/system/evil.service",
            f("[Install]\nWantedBy=../../../../tmp/x\nAlias=../../etc/passwd\n"),
        )
        .unwrap();
        t.insert(
            "usr/lib/systemd/system/getty@.service",
            f("[Install]\nWantedBy=getty.target\nDefaultInstance=../../../../tmp/y\n"),
        )
        .unwrap();
        let before = t.len();
        let e = enable(
            &mut t,
            &[
                "evil.service".into(),
                "../x.service".into(),
                "getty@.service".into(),
            ],
            0,
        )
        .unwrap();
        assert!(e.units.is_empty(), "{e:?}");
        assert_eq!(e.skipped.len(), 3, "{e:?}");
        assert!(e.skipped[2].contains("its instance makes"), "{e:?}");
        assert!(e.skipped[0].contains("not a unit name"), "{e:?}");
        assert_eq!(t.len(), before, "nothing was linked");
        assert!(t.iter().all(|(p, _)| !p.split('/').any(|c| c == "..")));
    }

    #[test]
    fn parses_install_sections() {
        let i = parse_install("[Unit]\nConflicts=ssh.service\n[Install]\nWantedBy=multi-user.target sockets.target\nAlias=sshd.service\nAlso=ssh.socket\n");
        assert_eq!(i.wanted_by, vec!["multi-user.target", "sockets.target"]);
        assert_eq!(i.alias, vec!["sshd.service"]);
        assert_eq!(i.also, vec!["ssh.socket"]);
        assert_eq!(i.conflicts, vec!["ssh.service"]);
        assert_eq!(
            split_instance("getty@tty1.service"),
            ("getty@.service".into(), Some("tty1".into()))
        );
        assert_eq!(split_instance("ssh.service"), ("ssh.service".into(), None));
    }

    #[test]
    fn enables_through_install_sections() {
        let mut t = Tree::new(0);
        let f = |s: &str| Entry::new(Kind::File(Data::bytes(s.as_bytes())), Meta::new(0o644, 0));
        t.insert(
            "usr/lib/systemd/system/ssh.service",
            f("[Install]\nWantedBy=multi-user.target\nAlias=sshd.service\n"),
        )
        .unwrap();
        t.insert(
            "usr/lib/systemd/system/ssh.socket",
            f("[Unit]\nConflicts=ssh.service\n[Install]\nWantedBy=sockets.target\n"),
        )
        .unwrap();
        t.insert(
            "usr/lib/systemd/system/getty@.service",
            f("[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n"),
        )
        .unwrap();
        let e = enable(
            &mut t,
            &[
                "ssh.service".into(),
                "ssh.socket".into(),
                "getty@tty1.service".into(),
                "nope.service".into(),
            ],
            0,
        )
        .unwrap();
        assert_eq!(e.units, vec!["ssh.service", "getty@tty1.service"]);
        assert_eq!(e.skipped.len(), 2);
        match &t
            .get("etc/systemd/system/multi-user.target.wants/ssh.service")
            .unwrap()
            .kind
        {
            Kind::Symlink(s) => assert_eq!(s, "/usr/lib/systemd/system/ssh.service"),
            _ => panic!(),
        }
        assert!(t.contains("etc/systemd/system/sshd.service"));
        assert!(t.contains("etc/systemd/system/getty.target.wants/getty@tty1.service"));
        assert!(!t.contains("etc/systemd/system/sockets.target.wants/ssh.socket"));
    }
}
