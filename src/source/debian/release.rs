//! The suite's InRelease: an OpenPGP-signed Release file listing every index with its
//! sha256. It is the root of trust: Packages files are checked against it, .debs
//! against Packages.
//!
//! rpgp checks the mathematics of a signature; which keys count is our policy: a
//! signature counts only if made by a key (or signing subkey) in the keyring whose
//! self-signatures verify, that is not revoked, that is not expired now, that existed
//! when it signed, and that is allowed to sign.

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use pgp::composed::{Deserializable, SignedPublicKey};
use pgp::packet::{Signature, SignatureType};
use pgp::types::KeyDetails;

use super::control;

/// The OpenPGP keys trusted to sign a suite's Release.
pub struct Keyring {
    /// The file the keys were read from, for messages.
    pub path: String,
    /// The keys, each with its subkeys and signatures.
    pub keys: Vec<SignedPublicKey>,
}

impl Keyring {
    /// Loads a binary (.gpg) or ASCII-armoured (.asc) keyring with any number of keys.
    pub fn load(path: &Path) -> Result<Keyring> {
        let bytes = std::fs::read(path).with_context(|| {
            format!("reading keyring {} (install debian-archive-keyring, or set [distribution] keyring)", path.display())
        })?;
        let mut keys = Vec::new();
        if bytes.starts_with(b"-----BEGIN PGP") {
            let (iter, _) =
                SignedPublicKey::from_armor_many(&bytes[..]).context("parsing armoured keyring")?;
            for k in iter {
                keys.push(k.with_context(|| format!("parsing a key in {}", path.display()))?);
            }
        } else {
            for k in SignedPublicKey::from_bytes_many(&bytes[..]).context("parsing keyring")? {
                match k {
                    Ok(k) => keys.push(k),
                    Err(e) => crate::util::progress::warn(format!(
                        "skipping an unreadable key in {}: {e}",
                        path.display()
                    )),
                }
            }
        }
        if keys.is_empty() {
            bail!("keyring {} holds no OpenPGP keys", path.display());
        }
        Ok(Keyring {
            path: path.display().to_string(),
            keys,
        })
    }
}

fn secs(t: pgp::types::Timestamp) -> u64 {
    t.as_secs() as u64
}

fn latest<'a>(sigs: impl Iterator<Item = &'a Signature>) -> Option<&'a Signature> {
    sigs.max_by_key(|s| s.created().map(secs).unwrap_or(0))
}

/// Whether `sig` names `k` as its issuer, by fingerprint or key id.
fn issued_by(sig: &Signature, k: &dyn KeyDetails) -> bool {
    let (fp, id) = (k.fingerprint(), k.legacy_key_id());
    sig.issuer_fingerprint().iter().any(|f| **f == fp)
        || sig.issuer_key_id().iter().any(|i| **i == id)
}

/// Whether `sig` names `key`, or one of its subkeys, as its issuer.
fn names(sig: &Signature, key: &SignedPublicKey) -> bool {
    issued_by(sig, &key.primary_key) || key.public_subkeys.iter().any(|s| issued_by(sig, &s.key))
}

fn self_issued(sig: &Signature, key: &SignedPublicKey) -> bool {
    issued_by(sig, &key.primary_key)
}

/// The key's newest self-certification that verifies. Third-party certifications
/// (Debian's keys sign each other) are not ours to check and are ignored.
fn valid_self_signature(key: &SignedPublicKey) -> Option<&Signature> {
    let mut valid = Vec::new();
    for user in &key.details.users {
        for sig in user.signatures.iter().filter(|s| self_issued(s, key)) {
            if sig
                .verify_certification(&key.primary_key, pgp::types::Tag::UserId, &user.id)
                .is_ok()
            {
                valid.push(sig);
            }
        }
    }
    for sig in key
        .details
        .direct_signatures
        .iter()
        .filter(|s| self_issued(s, key))
    {
        if sig.verify_key(&key.primary_key).is_ok() {
            valid.push(sig);
        }
    }
    latest(valid.into_iter())
}

/// Why a key may not be used, or None when it may.
fn primary_problem(key: &SignedPublicKey, now: u64, signed_at: u64) -> Option<String> {
    if key
        .details
        .revocation_signatures
        .iter()
        .any(|s| s.verify_key(&key.primary_key).is_ok())
    {
        return Some("the key is revoked".into());
    }
    let Some(self_sig) = valid_self_signature(key) else {
        return Some("the key has no valid self-signature".into());
    };
    let created = secs(key.primary_key.created_at());
    if signed_at < created {
        return Some("the signature is older than the key".into());
    }
    if let Some(exp) = self_sig.key_expiration_time() {
        let exp: std::time::Duration = exp.into();
        if exp.as_secs() > 0 && created + exp.as_secs() < now {
            return Some(format!(
                "the key expired {} days ago",
                (now - created - exp.as_secs()) / 86400
            ));
        }
    }
    None
}

fn subkey_problem(
    key: &SignedPublicKey,
    sub: &pgp::composed::SignedPublicSubKey,
    now: u64,
    signed_at: u64,
) -> Option<String> {
    let revoked = sub
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyRevocation))
        .any(|s| s.verify_subkey_binding(&key.primary_key, &sub.key).is_ok());
    if revoked {
        return Some("the subkey is revoked".into());
    }
    let created = secs(sub.key.created_at());
    if signed_at < created {
        return Some("the signature is older than the subkey".into());
    }
    let bindings = sub
        .signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::SubkeyBinding))
        .filter(|s| s.verify_subkey_binding(&key.primary_key, &sub.key).is_ok());
    let Some(binding) = latest(bindings) else {
        return Some("the subkey has no valid binding signature".into());
    };
    if !binding.key_flags().sign() {
        return Some("the subkey is not allowed to sign".into());
    }
    if let Some(exp) = binding.key_expiration_time() {
        let exp: std::time::Duration = exp.into();
        if exp.as_secs() > 0 && created + exp.as_secs() < now {
            return Some("the subkey expired".into());
        }
    }
    None
}

/// Checks the InRelease signature and returns the signed text (only that text may be trusted).
pub fn verify_inrelease(
    inrelease: &str,
    keyring: &Keyring,
    what: &str,
    now: SystemTime,
) -> Result<String> {
    let msg = super::cleartext::parse(inrelease)
        .with_context(|| format!("{what}: not an OpenPGP clear-signed file"))?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let text = &msg.signed;
    let mut problems = Vec::new();
    for sig in &msg.signatures {
        let signed_at = sig.created().map(secs).unwrap_or(0);
        let issuer = sig
            .issuer_fingerprint()
            .first()
            .map(|f| format!("{f:X}"))
            .or_else(|| {
                sig.issuer_key_id()
                    .first()
                    .map(|k| hex::encode_upper(k.as_ref()))
            })
            .unwrap_or_else(|| "an unknown key".into());
        // Each key tried costs a hash of the whole text and a public-key operation:
        // only the key the signature names is tried, and one that names none is refused
        // (gpg names the issuer in every signature it makes).
        if sig.issuer_fingerprint().is_empty() && sig.issuer_key_id().is_empty() {
            problems.push("a signature names no issuer".into());
            continue;
        }
        let mut found = false;
        for key in keyring.keys.iter().filter(|k| names(sig, k)) {
            if sig.verify(&key.primary_key, text.as_bytes()).is_ok() {
                found = true;
                match primary_problem(key, now, signed_at) {
                    None => return Ok(text.replace("\r\n", "\n")),
                    Some(p) => problems.push(format!("signature by {issuer}: {p}")),
                }
            }
            for sub in &key.public_subkeys {
                if sig.verify(&sub.key, text.as_bytes()).is_ok() {
                    found = true;
                    let problem = primary_problem(key, now, signed_at)
                        .or_else(|| subkey_problem(key, sub, now, signed_at));
                    match problem {
                        None => return Ok(text.replace("\r\n", "\n")),
                        Some(p) => problems.push(format!("signature by {issuer}: {p}")),
                    }
                }
            }
        }
        if !found {
            problems.push(format!(
                "signature by {issuer}: no key in the keyring makes it verify"
            ));
        }
    }
    bail!(
        "{what}: no valid signature from a key in {} ({}); refusing the archive",
        keyring.path,
        problems.join("; ")
    )
}

/// What kiln uses of a Release file.
#[derive(Debug, Clone)]
pub struct Release {
    /// Suite (e.g. `stable`).
    pub suite: String,
    /// Codename (e.g. `bookworm`).
    pub codename: String,
    /// Date, as written (RFC 2822).
    pub date: String,
    /// Valid-Until, as written, if present.
    pub valid_until: Option<String>,
    /// Acquire-By-Hash: whether indexes can be fetched from `by-hash/SHA256/<sha256>`.
    pub acquire_by_hash: bool,
    /// Index path relative to dists/<suite>/ → (sha256, size).
    pub sha256: HashMap<String, (String, u64)>,
}

/// Parses a Release file (its first paragraph); SHA256 lines other than `hash size path`
/// are skipped.
pub fn parse_release(text: &str) -> Result<Release> {
    let p = control::parse(text)
        .into_iter()
        .next()
        .context("the Release file is empty")?;
    let mut sha256 = HashMap::new();
    for line in p.get("SHA256").unwrap_or("").lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if let [hash, size, path] = w[..] {
            sha256.insert(
                path.to_string(),
                (hash.to_ascii_lowercase(), size.parse().unwrap_or(0)),
            );
        }
    }
    Ok(Release {
        suite: p.get("Suite").unwrap_or("").to_string(),
        codename: p.get("Codename").unwrap_or("").to_string(),
        date: p.get("Date").unwrap_or("").to_string(),
        valid_until: p.get("Valid-Until").map(String::from),
        acquire_by_hash: p.get("Acquire-By-Hash") == Some("yes"),
        sha256,
    })
}

/// Parses an RFC 2822 date as used in Release files ("Sat, 21 Nov 2026 09:15:44 UTC").
pub fn parse_date(s: &str) -> Option<u64> {
    let w: Vec<&str> = s.split_whitespace().collect();
    let w = if w.first().is_some_and(|d| d.ends_with(',')) {
        &w[1..]
    } else {
        &w[..]
    };
    if w.len() < 4 {
        return None;
    }
    let day: u64 = w[0].parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == w[1])? as u64
        + 1;
    let year: i64 = w[2].parse().ok()?;
    let hms: Vec<u64> = w[3].split(':').filter_map(|x| x.parse().ok()).collect();
    if hms.len() != 3 {
        return None;
    }
    // Days from civil date (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe as u64 * 365 + yoe as u64 / 4 - yoe as u64 / 100 + doy;
    let days = era * 146097 + doe as i64 - 719468;
    let offset = match w.get(4) {
        Some(z) if z.starts_with('+') || z.starts_with('-') => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let n: i64 = z[1..].parse().ok()?;
            sign * ((n / 100) * 3600 + (n % 100) * 60)
        }
        _ => 0,
    };
    Some((days * 86400 + (hms[0] * 3600 + hms[1] * 60 + hms[2]) as i64 - offset) as u64)
}

/// Refuses a Release whose Valid-Until has passed (a replayed, stale archive) unless told otherwise.
pub fn check_valid_until(r: &Release, what: &str, now: SystemTime, ignore: bool) -> Result<()> {
    let Some(vu) = &r.valid_until else {
        return Ok(());
    };
    let Some(until) = parse_date(vu) else {
        bail!("{what}: cannot read Valid-Until `{vu}`")
    };
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if now > until && !ignore {
        bail!(
            "{what}: expired: Valid-Until is {vu}, {} hours ago; the mirror may be stale or replaying old data \
             (for a snapshot archive, set `ignore_valid_until = true` in [distribution] or pass --ignore-valid-until)",
            (now - until) / 3600
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::cleartext::fixture;
    use super::*;

    fn keyring(armoured: &[&str]) -> Keyring {
        Keyring {
            path: "test.gpg".into(),
            keys: armoured
                .iter()
                .map(|k| SignedPublicKey::from_string(k).unwrap().0)
                .collect(),
        }
    }

    #[test]
    fn a_signature_by_a_key_in_the_keyring_gives_the_signed_text() {
        let now = SystemTime::now();
        let got = verify_inrelease(&fixture::signed_file(), &keyring(&[fixture::KEY]), "t", now);
        assert_eq!(
            got.unwrap(),
            "Origin: kiln-test\n-----dashed line\ntrailing"
        );
        let tampered = fixture::signed_file().replace("kiln-test", "kiln-evil");
        let e = verify_inrelease(&tampered, &keyring(&[fixture::KEY]), "t", now).unwrap_err();
        assert!(
            e.to_string()
                .contains("no key in the keyring makes it verify"),
            "{e:#}"
        );
        // The signature names its issuer: another key beside it changes nothing, and
        // alone it is not tried.
        let both = keyring(&[fixture::OTHER_KEY, fixture::KEY]);
        assert!(verify_inrelease(&fixture::signed_file(), &both, "t", now).is_ok());
        let other = keyring(&[fixture::OTHER_KEY]);
        let sig = &super::super::cleartext::parse(&fixture::signed_file())
            .unwrap()
            .signatures[0];
        assert!(!names(sig, &other.keys[0]));
        let e = verify_inrelease(&fixture::signed_file(), &other, "t", now).unwrap_err();
        assert!(
            e.to_string()
                .contains("no key in the keyring makes it verify"),
            "{e:#}"
        );
        // The same signature with its issuer subpackets taken out: refused untried.
        use pgp::packet::{PacketTrait, SubpacketData};
        let config = sig.config().unwrap();
        let unnamed = |sub: &[pgp::packet::Subpacket]| -> Vec<pgp::packet::Subpacket> {
            sub.iter()
                .filter(|s| {
                    !matches!(
                        s.data,
                        SubpacketData::IssuerKeyId(_) | SubpacketData::IssuerFingerprint(_)
                    )
                })
                .cloned()
                .collect()
        };
        let anonymous = Signature::v4(
            *sig.packet_header(),
            config.typ,
            config.pub_alg,
            config.hash_alg,
            sig.signed_hash_value().unwrap(),
            sig.signature().unwrap().clone(),
            unnamed(&config.hashed_subpackets),
            unnamed(&config.unhashed_subpackets),
        );
        assert!(anonymous.issuer_key_id().is_empty() && anonymous.issuer_fingerprint().is_empty());
        let armoured = pgp::composed::DetachedSignature::new(anonymous)
            .to_armored_string(Default::default())
            .unwrap();
        let file = fixture::signed_file();
        let at = file.find("-----BEGIN PGP SIGNATURE").unwrap();
        let file = format!("{}{armoured}", &file[..at]);
        let e = verify_inrelease(&file, &keyring(&[fixture::KEY]), "t", now).unwrap_err();
        assert!(
            e.to_string().contains("a signature names no issuer"),
            "{e:#}"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("Thu, 01 Jan 1970 00:00:00 UTC"), Some(0));
        assert_eq!(
            parse_date("Sat, 21 Nov 2026 09:15:44 UTC"),
            Some(1795252544)
        );
        assert_eq!(
            parse_date("Sat, 21 Nov 2026 10:15:44 +0100"),
            Some(1795252544)
        );
        assert_eq!(parse_date("garbage"), None);
    }

    #[test]
    fn release_fields() {
        let r = parse_release("Suite: stable\nCodename: trixie\nDate: x\nAcquire-By-Hash: yes\nSHA256:\n abc 12 main/binary-amd64/Packages.xz\n").unwrap();
        assert!(r.acquire_by_hash);
        assert_eq!(
            r.sha256["main/binary-amd64/Packages.xz"],
            ("abc".to_string(), 12)
        );
    }
}
