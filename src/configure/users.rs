//! Users and groups: /etc/passwd and /etc/group from base-passwd's masters (what its
//! postinst does), system users from sysusers.d (what dh_installsysusers' postinst
//! snippets and systemd-sysusers do), shadow files, root's password and SSH keys.

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use std::io::Read;

use crate::tree::{Data, Entry, Kind, Meta, Tree};

/// One /etc/passwd entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Comment field, usually the full name.
    pub gecos: String,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
}

/// One /etc/group entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Login names of the users for whom this is a supplementary group.
    pub members: Vec<String>,
}

/// The image's user and group databases, entries in file order.
#[derive(Debug, Default, Clone)]
pub struct Accounts {
    /// /etc/passwd entries.
    pub users: Vec<User>,
    /// /etc/group entries.
    pub groups: Vec<Group>,
}

/// Text of the file at `path`, following symlinks; None when it does not resolve to a regular file.
pub fn read_text(tree: &Tree, path: &str) -> Result<Option<String>> {
    let Ok(p) = tree.resolve(path) else {
        return Ok(None);
    };
    match tree.get(&p).map(|e| &e.kind) {
        Some(Kind::File(d)) => {
            let mut s = String::new();
            d.open()
                .with_context(|| format!("reading /{path}"))?
                .read_to_string(&mut s)?;
            Ok(Some(s))
        }
        _ => Ok(None),
    }
}

impl Accounts {
    /// Parses passwd and group file text; malformed lines are skipped and unreadable ids become 0.
    pub fn parse(passwd: &str, group: &str) -> Accounts {
        let users = passwd
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 7).then(|| User {
                    name: f[0].into(),
                    uid: f[2].parse().unwrap_or(0),
                    gid: f[3].parse().unwrap_or(0),
                    gecos: f[4].into(),
                    home: f[5].into(),
                    shell: f[6].into(),
                })
            })
            .collect();
        let groups = group
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 4).then(|| Group {
                    name: f[0].into(),
                    gid: f[2].parse().unwrap_or(0),
                    members: f[3]
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(String::from)
                        .collect(),
                })
            })
            .collect();
        Accounts { users, groups }
    }

    /// /etc/passwd text; the password field is `x`, as the hashes live in /etc/shadow.
    pub fn passwd(&self) -> String {
        self.users
            .iter()
            .map(|u| {
                format!(
                    "{}:x:{}:{}:{}:{}:{}\n",
                    u.name, u.uid, u.gid, u.gecos, u.home, u.shell
                )
            })
            .collect()
    }

    /// /etc/group text; the password field is `x`, as in /etc/gshadow.
    pub fn group(&self) -> String {
        self.groups
            .iter()
            .map(|g| format!("{}:x:{}:{}\n", g.name, g.gid, g.members.join(",")))
            .collect()
    }

    /// Id of the group called `name`, if there is one.
    pub fn gid_of(&self, name: &str) -> Option<u32> {
        self.groups.iter().find(|g| g.name == name).map(|g| g.gid)
    }

    fn used_ids(&self) -> BTreeSet<u32> {
        self.users
            .iter()
            .map(|u| u.uid)
            .chain(self.groups.iter().map(|g| g.gid))
            .collect()
    }

    /// The highest free system id, counting down from 999 as systemd-sysusers does.
    fn free_id(&self) -> u32 {
        let used = self.used_ids();
        (100..=999).rev().find(|i| !used.contains(i)).unwrap_or(999)
    }

    /// Applies sysusers.d lines: `u name id "gecos" home shell`, `g name id`, `m user group`.
    pub fn apply_sysusers(&mut self, text: &str) {
        for line in text.lines() {
            let words = split_quoted(line);
            if words.is_empty() || words[0].starts_with('#') {
                continue;
            }
            let field = |i: usize| words.get(i).map(|s| s.as_str()).filter(|s| *s != "-");
            match words[0].as_str() {
                "g" => {
                    let Some(name) = field(1) else { continue };
                    if self.gid_of(name).is_some() {
                        continue;
                    }
                    let gid = field(2)
                        .and_then(|i| i.parse().ok())
                        .filter(|g| !self.groups.iter().any(|x| x.gid == *g))
                        .unwrap_or_else(|| self.free_id());
                    self.groups.push(Group {
                        name: name.into(),
                        gid,
                        members: vec![],
                    });
                }
                "u" | "u!" => {
                    let Some(name) = field(1) else { continue };
                    if self.users.iter().any(|u| u.name == name) {
                        continue;
                    }
                    let id_field = field(2).unwrap_or("-");
                    let (uid_s, gid_s) = id_field.split_once(':').unwrap_or((id_field, ""));
                    let uid = uid_s
                        .parse()
                        .ok()
                        .filter(|u| !self.users.iter().any(|x| x.uid == *u))
                        .unwrap_or_else(|| {
                            // Same number for user and group where possible, as systemd-sysusers prefers.
                            let used = self.used_ids();
                            (100..=999).rev().find(|i| !used.contains(i)).unwrap_or(999)
                        });
                    let gid = match gid_s {
                        "" => match self.gid_of(name) {
                            Some(g) => g,
                            None => {
                                let gid = if self.groups.iter().any(|g| g.gid == uid) {
                                    self.free_id()
                                } else {
                                    uid
                                };
                                self.groups.push(Group {
                                    name: name.into(),
                                    gid,
                                    members: vec![],
                                });
                                gid
                            }
                        },
                        g => g.parse().ok().or_else(|| self.gid_of(g)).unwrap_or(65534),
                    };
                    let gecos = field(3).unwrap_or("").to_string();
                    let home = field(4).unwrap_or("/").to_string();
                    let shell = field(5).unwrap_or("/usr/sbin/nologin").to_string();
                    self.users.push(User {
                        name: name.into(),
                        uid,
                        gid,
                        gecos,
                        home,
                        shell,
                    });
                }
                "m" => {
                    let (Some(user), Some(group)) = (field(1), field(2)) else {
                        continue;
                    };
                    if let Some(g) = self.groups.iter_mut().find(|g| g.name == group) {
                        if !g.members.iter().any(|m| m == user) {
                            g.members.push(user.into());
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn split_quoted(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.trim().chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// crypt(3) SHA-512 hash with a salt derived from the inputs, so the image is reproducible.
pub fn hash_password(password: &str, salt_seed: &str) -> Result<String> {
    use sha2::Digest;
    use sha_crypt::{CustomizedPasswordHasher, Params, ShaCrypt};
    let salt = sha2::Sha256::digest(format!("kiln-salt:{salt_seed}:{password}").as_bytes());
    let params = Params::new(5000).map_err(|e| anyhow::anyhow!("{e}"))?;
    let h = ShaCrypt::SHA512
        .hash_password_customized(password.as_bytes(), &salt[..12], None, None, params)
        .map_err(|e| anyhow::anyhow!("hashing the root password: {e}"))?;
    Ok(h.to_string())
}

fn put(tree: &mut Tree, path: &str, text: String, mode: u32, gid: u32, epoch: i64) -> Result<()> {
    tree.insert(
        path,
        Entry::new(
            Kind::File(Data::bytes(text)),
            Meta::new(mode, epoch).owner(0, gid),
        ),
    )?;
    Ok(())
}

/// Sets up accounts when the image has a user database (base-passwd or /etc/passwd).
pub fn configure(
    tree: &mut Tree,
    root_password: Option<&str>,
    salt_seed: &str,
    epoch: i64,
) -> Result<bool> {
    let existing = (
        read_text(tree, "etc/passwd")?,
        read_text(tree, "etc/group")?,
    );
    let mut acc = match existing {
        (Some(p), Some(g)) => Accounts::parse(&p, &g),
        _ => match (
            read_text(tree, "usr/share/base-passwd/passwd.master")?,
            read_text(tree, "usr/share/base-passwd/group.master")?,
        ) {
            (Some(p), Some(g)) => Accounts::parse(&p, &g),
            _ => return Ok(false),
        },
    };
    let mut sysusers: Vec<String> = tree
        .iter()
        .filter(|(k, e)| {
            (k.starts_with("usr/lib/sysusers.d/") || k.starts_with("etc/sysusers.d/"))
                && k.ends_with(".conf")
                && matches!(e.kind, Kind::File(_))
        })
        .map(|(k, _)| k.clone())
        .collect();
    // Files sort by name regardless of directory, as systemd-sysusers reads them.
    sysusers.sort_by(|a, b| {
        crate::tree::path::file_name(a)
            .cmp(crate::tree::path::file_name(b))
            .then(a.cmp(b))
    });
    for f in sysusers {
        if let Some(text) = read_text(tree, &f)? {
            acc.apply_sysusers(&text);
        }
    }
    put(tree, "etc/passwd", acc.passwd(), 0o644, 0, epoch)?;
    put(tree, "etc/group", acc.group(), 0o644, 0, epoch)?;
    let shadow_gid = acc.gid_of("shadow").unwrap_or(0);
    let root_hash = match root_password {
        None => "*".to_string(),
        Some("") => String::new(),
        Some(p) => hash_password(p, salt_seed)?,
    };
    // An empty "last change" field: 0 would force a password change at first login.
    let shadow: String = acc
        .users
        .iter()
        .map(|u| {
            format!(
                "{}:{}::0:99999:7:::\n",
                u.name,
                if u.name == "root" {
                    root_hash.as_str()
                } else {
                    "*"
                }
            )
        })
        .collect();
    let gshadow: String = acc
        .groups
        .iter()
        .map(|g| format!("{}:*::{}\n", g.name, g.members.join(",")))
        .collect();
    put(tree, "etc/shadow", shadow, 0o640, shadow_gid, epoch)?;
    put(tree, "etc/gshadow", gshadow, 0o640, shadow_gid, epoch)?;
    Ok(true)
}

/// Installs SSH public keys for root.
pub fn authorized_keys(tree: &mut Tree, keys: &[String], epoch: i64) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    tree.insert("root", Entry::new(Kind::Dir, Meta::new(0o700, epoch)))?;
    tree.insert("root/.ssh", Entry::new(Kind::Dir, Meta::new(0o700, epoch)))?;
    let mut text = String::new();
    for k in keys {
        text.push_str(k.trim_end());
        text.push('\n');
    }
    put(tree, "root/.ssh/authorized_keys", text, 0o600, 0, epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysusers_allocates_from_the_top_and_keeps_fixed_ids() {
        let mut a = Accounts::parse(
            "root:x:0:0:root:/root:/bin/bash\n",
            "root:x:0:\nshadow:x:42:\n",
        );
        a.apply_sysusers("# c\nu systemd-network - \"systemd Network Management\" /\nu sshd -:65534 \"sshd user\" /run/sshd\ng fixed 123\nm systemd-network fixed\n");
        assert_eq!(a.users[1].name, "systemd-network");
        assert_eq!((a.users[1].uid, a.users[1].gid), (999, 999));
        assert_eq!(a.users[1].gecos, "systemd Network Management");
        assert_eq!(a.users[2].gid, 65534);
        assert_eq!(a.users[2].home, "/run/sshd");
        assert_eq!(a.gid_of("fixed"), Some(123));
        assert_eq!(
            a.groups.iter().find(|g| g.name == "fixed").unwrap().members,
            vec!["systemd-network"]
        );
    }

    #[test]
    fn password_hashes_are_crypt_sha512_and_reproducible() {
        let a = hash_password("root", "p").unwrap();
        assert!(a.starts_with("$6$"), "{a}");
        assert_eq!(a, hash_password("root", "p").unwrap());
    }
}
