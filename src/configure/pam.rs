//! /etc/pam.d/common-*: what libpam-runtime's postinst makes with `pam-auth-update`,
//! made on the tree from the same inputs. Without these files every PAM service that
//! includes them (login, sshd, su) fails with "Critical error - immediate abort", so
//! neither autologin on the console nor SSH works.

use anyhow::Result;

use super::users::read_text;
use crate::tree::{Data, Entry, Kind, Meta, Tree};

const PROFILES: &str = "usr/share/pam-configs";
const TEMPLATES: &str = "usr/share/pam";

/// One PAM profile of /usr/share/pam-configs, reduced to what the common files need.
#[derive(Debug, Default)]
struct Profile {
    name: String,
    priority: i64,
    default_on: bool,
    interactive_only: bool,
    /// (field, lines) such as ("Auth", …), ("Auth-Type", ["Primary"]).
    fields: Vec<(String, Vec<String>)>,
}

impl Profile {
    fn parse(file: &str, text: &str) -> Profile {
        let mut p = Profile {
            name: file.to_string(),
            ..Profile::default()
        };
        for line in text.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some((_, lines)) = p.fields.last_mut() {
                    let l = line.trim();
                    if !l.is_empty() {
                        lines.push(l.to_string());
                    }
                }
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k {
                "Priority" => p.priority = v.parse().unwrap_or(0),
                "Default" => p.default_on = v == "yes",
                "Session-Interactive-Only" => p.interactive_only = v == "yes",
                _ => {}
            }
            let first = (!v.is_empty()).then(|| v.to_string());
            p.fields.push((k.to_string(), first.into_iter().collect()));
        }
        p
    }

    fn field(&self, k: &str) -> Option<&[String]> {
        self.fields
            .iter()
            .find(|(f, _)| f == k)
            .map(|(_, v)| v.as_slice())
    }
}

/// Writes /etc/pam.d/common-{auth,account,password,session,session-noninteractive}
/// from the image's PAM profiles (those marked `Default: yes`) and libpam-runtime's
/// templates, as `pam-auth-update --package` would; files the image has are kept.
/// Returns how many it wrote.
pub fn common_files(tree: &mut Tree, epoch: i64) -> Result<usize> {
    let mut profiles = Vec::new();
    let names: Vec<String> = tree
        .iter()
        .filter_map(|(p, _)| p.strip_prefix(&format!("{PROFILES}/")))
        .filter(|n| !n.contains('/'))
        .map(String::from)
        .collect();
    for n in names {
        if let Some(text) = read_text(tree, &format!("{PROFILES}/{n}"))? {
            let p = Profile::parse(&n, &text);
            if p.default_on {
                profiles.push(p);
            }
        }
    }
    // Highest priority first; equal priorities in name order, as pam-auth-update sorts.
    profiles.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)));
    let mut written = 0;
    for (file, kind, field, nonint) in [
        ("common-auth", "auth", "Auth", false),
        ("common-account", "account", "Account", false),
        ("common-password", "password", "Password", false),
        ("common-session", "session", "Session", false),
        ("common-session-noninteractive", "session", "Session", true),
    ] {
        let dest = format!("etc/pam.d/{file}");
        if tree.contains(&dest) {
            continue;
        }
        let Some(template) = read_text(tree, &format!("{TEMPLATES}/{file}"))? else {
            continue;
        };
        let use_profile = |p: &&Profile| !(nonint && p.interactive_only);
        let block = |wanted: &str| -> Vec<String> {
            let chosen: Vec<&Profile> = profiles
                .iter()
                .filter(use_profile)
                .filter(|p| {
                    p.field(&format!("{field}-Type"))
                        .and_then(|v| v.first())
                        .is_some_and(|t| t == wanted)
                })
                .collect();
            let mut lines = Vec::new();
            for (i, p) in chosen.iter().enumerate() {
                // The first module of the primary block has no earlier password to
                // reuse, so it takes the profile's "-Initial" variant when there is one.
                let body = if i == 0 && wanted == "Primary" {
                    p.field(&format!("{field}-Initial"))
                        .or_else(|| p.field(field))
                } else {
                    p.field(field)
                };
                lines.extend(body.unwrap_or_default().iter().cloned());
            }
            lines
        };
        let mut primary = block("Primary");
        if primary.is_empty() {
            // Nothing decides here (e.g. pam_unix's session is "Additional"): jump over
            // the pam_deny that follows, as pam-auth-update does.
            primary.push("[default=1]\t\t\tpam_permit.so".to_string());
        }
        let additional = block("Additional");
        let n = primary.len();
        // `success=end` jumps over the rest of the primary block and its pam_deny.
        let primary: Vec<String> = primary
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{kind}\t{}", l.replace("=end", &format!("={}", n - i))))
            .collect();
        let additional: Vec<String> = additional.iter().map(|l| format!("{kind}\t{l}")).collect();
        let prefix = if nonint { "session_nonint" } else { kind };
        let text = template
            .replace(&format!("${prefix}_primary"), &primary.join("\n"))
            .replace(&format!("${prefix}_additional"), &additional.join("\n"));
        tree.insert(
            &dest,
            Entry::new(Kind::File(Data::bytes(text)), Meta::new(0o644, epoch)),
        )?;
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> Entry {
        Entry::new(Kind::File(Data::bytes(s)), Meta::new(0o644, 0))
    }

    #[test]
    fn writes_what_pam_auth_update_writes() {
        let mut t = Tree::new(0);
        t.insert("usr/share/pam-configs/unix", f("Name: Unix authentication\nDefault: yes\nPriority: 256\nAuth-Type: Primary\nAuth:\n\t[success=end default=ignore]\tpam_unix.so nullok try_first_pass\nAuth-Initial:\n\t[success=end default=ignore]\tpam_unix.so nullok\nSession-Type: Additional\nSession:\n\trequired\tpam_unix.so\n")).unwrap();
        t.insert("usr/share/pam-configs/systemd", f("Name: Register user sessions\nDefault: yes\nPriority: 0\nSession-Interactive-Only: yes\nSession-Type: Additional\nSession:\n\toptional\tpam_systemd.so\n")).unwrap();
        t.insert("usr/share/pam-configs/mkhomedir", f("Name: home\nDefault: no\nPriority: 0\nSession-Type: Additional\nSession:\n\toptional\tpam_mkhomedir.so\n")).unwrap();
        t.insert(
            "usr/share/pam/common-auth",
            f("# head\n$auth_primary\nauth\trequisite\tpam_deny.so\n$auth_additional\n"),
        )
        .unwrap();
        t.insert(
            "usr/share/pam/common-session",
            f("$session_primary\nsession\trequired\tpam_permit.so\n$session_additional\n"),
        )
        .unwrap();
        t.insert(
            "usr/share/pam/common-session-noninteractive",
            f("$session_nonint_primary\nsession\trequired\tpam_permit.so\n$session_nonint_additional\n"),
        )
        .unwrap();
        assert_eq!(common_files(&mut t, 0).unwrap(), 3);
        let text = |p: &str| read_text(&t, p).unwrap().unwrap();
        assert_eq!(
            text("etc/pam.d/common-auth"),
            "# head\nauth\t[success=1 default=ignore]\tpam_unix.so nullok\nauth\trequisite\tpam_deny.so\n\n"
        );
        let s = text("etc/pam.d/common-session");
        assert!(s.contains("session\trequired\tpam_unix.so\nsession\toptional\tpam_systemd.so"));
        assert!(
            s.starts_with(
                "session\t[default=1]\t\t\tpam_permit.so\nsession\trequired\tpam_permit.so"
            ),
            "an empty primary block skips pam_deny: {s}"
        );
        assert!(!s.contains("mkhomedir"), "Default: no profiles stay out");
        let n = text("etc/pam.d/common-session-noninteractive");
        assert!(n.contains("pam_unix.so") && !n.contains("pam_systemd"));
    }
}
