//! The key `kiln ssh` logs in with: one ed25519 pair per output directory and image,
//! made by the host's ssh-keygen at `OUT/NAME.ssh/id_ed25519` (mode 0600). The image
//! never holds it; each boot is given the public half on its kernel command line.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::configure::access::KEY_WORD;

/// An image's SSH key pair.
#[derive(Debug, Clone)]
pub struct SshKey {
    /// The private key.
    pub private: PathBuf,
    /// The public key's type, e.g. "ssh-ed25519".
    pub kind: String,
    /// The public key's base64 body.
    pub body: String,
}

impl SshKey {
    /// The key of image `name` in `out_dir`, made on first use.
    pub fn ensure(out_dir: &Path, name: &str) -> Result<SshKey> {
        let dir = out_dir.join(format!("{name}.ssh"));
        let private = dir.join("id_ed25519");
        let public = dir.join("id_ed25519.pub");
        if !private.exists() || !public.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            let _ = std::fs::remove_file(&private);
            let _ = std::fs::remove_file(&public);
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                .arg(format!("kiln@{name}"))
                .arg("-f")
                .arg(&private)
                .output()
                .context("running ssh-keygen (install openssh-client)")?;
            if !out.status.success() {
                bail!(
                    "ssh-keygen could not make {}: {}",
                    private.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let text = std::fs::read_to_string(&public)
            .with_context(|| format!("reading {}", public.display()))?;
        let mut words = text.split_whitespace();
        match (words.next(), words.next()) {
            (Some(kind), Some(body)) => Ok(SshKey {
                private,
                kind: kind.to_string(),
                body: body.to_string(),
            }),
            _ => bail!(
                "{} is not an OpenSSH public key; remove {} and kiln makes a new pair",
                public.display(),
                dir.display()
            ),
        }
    }

    /// The kernel command-line word that gives a boot this key.
    pub fn cmdline_word(&self) -> String {
        format!("{KEY_WORD}={}:{}", self.kind, self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_a_private_key_once_and_keeps_it() {
        let d = tempfile::tempdir().unwrap();
        let a = SshKey::ensure(d.path(), "x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&a.private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(a.kind, "ssh-ed25519");
        let b = SshKey::ensure(d.path(), "x").unwrap();
        assert_eq!(a.body, b.body, "the pair is kept");
        assert!(a
            .cmdline_word()
            .starts_with("kiln.ssh_key=ssh-ed25519:AAAA"));
        assert!(!a.cmdline_word().contains(' '));
    }
}
