//! Declarative system set-up: what maintainer scripts and first-boot tools would have
//! done, done on the tree instead: accounts, hostname, machine-id, SSH keys, enabled
//! systemd units, console autologin.

pub mod access;
pub mod pam;
pub mod systemd;
pub mod users;

use anyhow::{Context, Result};

use crate::profile::System;
use crate::tree::{Data, Entry, Kind, Meta, Tree};
use crate::util::progress;

/// What configuring an image needs: the profile's `system` settings and facts about the build.
pub struct ConfigureInput<'a> {
    /// The profile's `system` section.
    pub system: &'a System,
    /// Image name: the default hostname, and the seed of the root password hash's salt.
    pub name: &'a str,
    /// Units packages' scripts would have enabled, plus kiln's own.
    pub units: Vec<String>,
    /// Timestamp of every entry written, in seconds since the Unix epoch.
    pub epoch: i64,
}

fn put(tree: &mut Tree, path: &str, text: &str, epoch: i64) -> Result<()> {
    tree.insert(
        path,
        Entry::new(
            Kind::File(Data::bytes(text.as_bytes())),
            Meta::new(0o644, epoch),
        ),
    )?;
    Ok(())
}

/// Whether the image has systemd (`/usr/lib/systemd/systemd`); systemd-only set-up needs it.
pub fn has_systemd(tree: &Tree) -> bool {
    tree.contains("usr/lib/systemd/systemd")
}

/// Sets up accounts, hostname, /etc/hosts and root's SSH keys and, on a systemd image,
/// machine-id, locale, keymap, time zone, fstab and autologin. Hosts, locale, keymap,
/// time zone and fstab files the image already has are kept.
pub fn configure(tree: &mut Tree, input: &ConfigureInput) -> Result<()> {
    let s = input.system;
    let epoch = input.epoch;
    let has_accounts = users::configure(tree, s.root_password.as_deref(), input.name, epoch)?;
    if !has_accounts && s.root_password.is_some() {
        progress::warn("system.root_password is set but the image has no /etc/passwd or base-passwd; it is ignored");
    }
    // A bare busybox initramfs gets a hostname only when asked; a full system always.
    if has_accounts || s.hostname.is_some() {
        let hostname = s.hostname.clone().unwrap_or_else(|| input.name.to_string());
        put(tree, "etc/hostname", &format!("{hostname}\n"), epoch)?;
        if !tree.contains("etc/hosts") {
            put(tree, "etc/hosts", &format!("127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"), epoch)?;
        }
    }
    let mut keys = Vec::new();
    for k in &s.ssh_authorized_keys {
        keys.push(
            std::fs::read_to_string(&k.0)
                .with_context(|| format!("reading SSH key {}", k.display()))?,
        );
    }
    users::authorized_keys(tree, &keys, epoch)?;
    if has_accounts {
        pam::common_files(tree, epoch)?;
    }
    generated_conffiles(tree, epoch)?;
    if has_systemd(tree) {
        // systemd fills it in on first boot; a fixed id would make every VM the same machine.
        put(tree, "etc/machine-id", "uninitialized\n", epoch)?;
        // With these set, systemd-firstboot has nothing to ask on the console at first boot.
        if !tree.contains("etc/locale.conf") {
            put(tree, "etc/locale.conf", "LANG=C.UTF-8\n", epoch)?;
        }
        if !tree.contains("etc/vconsole.conf") {
            put(tree, "etc/vconsole.conf", "KEYMAP=us\n", epoch)?;
        }
        if !tree.contains("etc/localtime") {
            tree.insert(
                "etc/localtime",
                Entry::new(
                    Kind::Symlink("/usr/share/zoneinfo/Etc/UTC".into()),
                    Meta::new(0o777, epoch),
                ),
            )?;
        }
        if !tree.contains("etc/fstab") {
            put(tree, "etc/fstab", "# The root file system is mounted from the kernel command line (root=PARTUUID=…).\n", epoch)?;
        }
        if s.autologin.unwrap_or(false) {
            systemd::autologin(tree, epoch)?;
        }
    }
    Ok(())
}

/// Configuration files packages' scripts make from templates they ship (rather than
/// ship as conffiles), without which their services do not start: sshd exits at once
/// without /etc/ssh/sshd_config, and pam_env fails every login without /etc/environment.
fn generated_conffiles(tree: &mut Tree, epoch: i64) -> Result<()> {
    for (dest, template) in [("etc/ssh/sshd_config", "usr/share/openssh/sshd_config")] {
        if tree.contains(dest) {
            continue;
        }
        if let Some(text) = users::read_text(tree, template)? {
            put(tree, dest, &text, epoch)?;
        }
    }
    if tree.contains("etc/pam.d") && !tree.contains("etc/environment") {
        put(tree, "etc/environment", "", epoch)?;
    }
    Ok(())
}

/// Enables the units packages asked for, kiln's own, and the profile's `system.enable`.
pub fn enable_units(tree: &mut Tree, input: &ConfigureInput) -> Result<()> {
    let s = input.system;
    if !has_systemd(tree) {
        if !s.enable.is_empty() {
            progress::warn(
                "system.enable lists units but the image has no systemd; they are ignored",
            );
        }
        return Ok(());
    }
    let mut units = input.units.clone();
    units.extend(s.enable.iter().cloned());
    let enabled = systemd::enable(tree, &units, input.epoch)?;
    systemd::write_preset(tree, &enabled, input.epoch)?;
    if !enabled.units.is_empty() {
        progress::step(format!("enabled units: {}", enabled.units.join(" ")));
    }
    for sk in &enabled.skipped {
        if s.enable.iter().any(|u| sk.starts_with(&format!("{u}:"))) {
            progress::warn(format!("not enabled: {sk}"));
        }
    }
    Ok(())
}
