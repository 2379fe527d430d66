//! The cleartext signature framework (RFC 9580, section 7) that wraps an InRelease: its
//! header, the dash-escaped text, and the armoured signatures after it, taken apart in
//! one pass.
//!
//! rpgp's own reader of this framework searches everything read so far for the
//! signature's start after every line, so its time grows with the square of the
//! file's lines: 1 MiB of short lines took it a minute here, and the 16 MiB an InRelease
//! may be, hours. That text arrives before any signature is checked, from any mirror or
//! anyone between kiln and a plain-HTTP one. rpgp still parses the signatures and does
//! every check of them; this module only finds them and the text they sign.

use anyhow::{bail, ensure, Context, Result};
use pgp::composed::{Deserializable, DetachedSignature};

const HEADER: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
const SIGNATURE_END: &str = "-----END PGP SIGNATURE-----";

/// More signatures than any archive puts on its Release (Debian's carry two or three).
/// Each one may cost a public-key operation per key that could have made it.
pub const MAX_SIGNATURES: usize = 16;

/// The largest signature block read.
const MAX_SIGNATURE_BLOCK: usize = 64 << 10;

/// A clear-signed file, taken apart.
#[derive(Debug)]
pub struct ClearSigned {
    /// The text as signed: dash escapes removed, spaces and tabs at the ends of lines
    /// removed, lines ending in CR LF, and no line break after the last line.
    pub signed: String,
    /// The signatures over it.
    pub signatures: Vec<pgp::packet::Signature>,
}

/// A line without its line break (LF or CR LF).
fn content(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

/// Takes a clear-signed file apart: its `Hash:` header lines must name hash algorithms
/// rpgp knows, and nothing but white space may follow the signature block.
pub fn parse(input: &str) -> Result<ClearSigned> {
    let mut lines = input.split_inclusive('\n');
    let first = lines.next().unwrap_or("");
    ensure!(
        content(first).trim_end() == HEADER,
        "it does not begin with `{HEADER}`"
    );
    let mut at = first.len();
    // The armour headers, up to a blank line: only `Hash:` belongs in this framework.
    for line in lines.by_ref() {
        at += line.len();
        let c = content(line);
        if c.trim().is_empty() {
            break;
        }
        let Some(names) = c.strip_prefix("Hash:") else {
            bail!(
                "unexpected armour header `{}`",
                c.chars().take(60).collect::<String>()
            );
        };
        for name in names.split(',') {
            name.trim()
                .parse::<pgp::crypto::hash::HashAlgorithm>()
                .map_err(|_| anyhow::anyhow!("unknown hash algorithm `{}`", name.trim()))?;
        }
    }
    // The text runs to the first line that begins with five dashes (a line of the text
    // that does is dash-escaped); the line break before that line is not part of it.
    let start = at;
    let mut end = None;
    for line in lines {
        if line.starts_with("-----") {
            end = Some(at);
            break;
        }
        at += line.len();
    }
    let Some(end) = end else {
        bail!("it carries no signature block");
    };
    let body = &input[start..end];
    let body = match body.strip_suffix('\n') {
        Some(b) => b.strip_suffix('\r').unwrap_or(b),
        None => body,
    };
    Ok(ClearSigned {
        signed: signed_text(body),
        signatures: signatures(&input[end..])?,
    })
}

/// The text a signature covers: dash escapes and the spaces and tabs that end lines
/// removed, lines joined with CR LF. As in rpgp, a line's break is set aside before
/// the blanks are trimmed and made CR LF after, so a CR that trimming leaves last
/// before a bare LF becomes part of that CR LF; any other CR is part of the text.
fn signed_text(body: &str) -> String {
    let mut signed = String::with_capacity(body.len() + body.len() / 16);
    let mut lines = body.split('\n').peekable();
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        let (line, crlf) = match line.strip_suffix('\r') {
            Some(l) if !last => (l, true),
            _ => (line, false),
        };
        let line = line.strip_prefix("- ").unwrap_or(line);
        let line = line.trim_end_matches([' ', '\t']);
        let line = match line.strip_suffix('\r') {
            Some(l) if !last && !crlf => l,
            _ => line,
        };
        signed.push_str(line);
        if !last {
            signed.push_str("\r\n");
        }
    }
    signed
}

/// The signatures of an armoured signature block, which nothing but white space follows.
fn signatures(armour: &str) -> Result<Vec<pgp::packet::Signature>> {
    let Some(close) = armour.find(SIGNATURE_END) else {
        bail!("its signature block has no `{SIGNATURE_END}` line");
    };
    // rpgp reads armour headers again from the start after every 8 KiB it reads, in
    // time that grows with the cube of their length; MAX_SIGNATURES signatures, even
    // RSA-4096 ones, take a tenth of this.
    ensure!(
        close <= MAX_SIGNATURE_BLOCK,
        "its signature block is over {} KiB",
        MAX_SIGNATURE_BLOCK >> 10
    );
    let after = &armour[close + SIGNATURE_END.len()..];
    ensure!(
        after.trim().is_empty(),
        "something follows its signature block"
    );
    let block = &armour[..close + SIGNATURE_END.len()];
    let (found, _) = DetachedSignature::from_armor_many(block.as_bytes())
        .context("reading its signature block")?;
    let mut sigs = Vec::new();
    for s in found {
        let s = s.context("reading a signature")?;
        ensure!(
            sigs.len() < MAX_SIGNATURES,
            "it carries more than {MAX_SIGNATURES} signatures"
        );
        sigs.push(s.signature);
    }
    ensure!(!sigs.is_empty(), "it carries no signature");
    Ok(sigs)
}

/// A key and a file it clear-signed, made with gpg, for tests.
#[cfg(test)]
pub(crate) mod fixture {
    use super::HEADER;

    /// Made with gpg: an ed25519 key, and a file it clear-signed.
    pub const KEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----

mDMEaxB/hxYJKwYBBAHaRw8BAQdAYJQ8g/46wRXklEp4uzhby4p+YF17x6QtxzLc
b3sRUb20JmtpbG4gY2xlYXJ0ZXh0IHRlc3QgPHRlc3RAZXhhbXBsZS5vcmc+iJAE
ExYIADgWIQTBvxtyoXn7j5WrV6kmlhttmWEwkQUCaxB/hwIbAwULCQgHAgYVCgkI
CwIEFgIDAQIeAQIXgAAKCRAmlhttmWEwkWE2AQCnepUCeshCuxxAU/KfLIC85LpM
VZowq/9bTvzhIoaoyQD9H1ENSo/o32ra0gBfHzo4ayM020upsSqxC2lYTOJ6UAc=
=GnDR
-----END PGP PUBLIC KEY BLOCK-----
";
    /// Another key, which signed nothing here.
    pub const OTHER_KEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----

mDMEaxCANhYJKwYBBAHaRw8BAQdAMNiL1DB6bl+pkD2OmnjVlpZL3/oFFq+7YXCm
NsFlqHi0ImtpbG4gb3RoZXIga2V5IDxvdGhlckBleGFtcGxlLm9yZz6IkAQTFggA
OBYhBGO4XcIO+7q0pxqdfW749kT7G48ABQJrEIA2AhsDBQsJCAcCBhUKCQgLAgQW
AgMBAh4BAheAAAoJEG749kT7G48A5FgA/ifW2nu+XwIslbgnkB25MSqpjEvXt8K0
bZJ8HPtbQ7QtAQC/HPpJIEgxY2IduEZwtfuDwRZwDGrswqq/tg+nSVmoCA==
=g50c
-----END PGP PUBLIC KEY BLOCK-----
";
    pub const SIGNATURE: &str = "-----BEGIN PGP SIGNATURE-----

iHUEARYIAB0WIQTBvxtyoXn7j5WrV6kmlhttmWEwkQUCaxB/hwAKCRAmlhttmWEw
kVELAQCiRy6Yg/Zzgz5QCeJyruSM4v0vSYomuqULp1JFGKiVbAEAiMWLDaFvJLBh
G88IPyWYsX3rqsS2xbeSOvYYGiLa1wA=
=++D0
-----END PGP SIGNATURE-----
";
    /// What the key signed, clear-signed (its dash-escaped line and trailing spaces
    /// included).
    pub fn signed_file() -> String {
        format!("{HEADER}\nHash: SHA256\n\nOrigin: kiln-test\n- -----dashed line\ntrailing  \n{SIGNATURE}")
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::*;
    use super::*;

    fn key() -> pgp::composed::SignedPublicKey {
        pgp::composed::SignedPublicKey::from_string(KEY).unwrap().0
    }

    #[test]
    fn the_signature_verifies_over_the_text_read() {
        let c = parse(&signed_file()).unwrap();
        assert_eq!(
            c.signed,
            "Origin: kiln-test\r\n-----dashed line\r\ntrailing"
        );
        assert_eq!(c.signatures.len(), 1);
        assert!(c.signatures[0].verify(&key(), c.signed.as_bytes()).is_ok());
        // One byte of the text changed: the same signature no longer verifies.
        let c = parse(&signed_file().replace("kiln-test", "kiln-evil")).unwrap();
        assert!(c.signatures[0].verify(&key(), c.signed.as_bytes()).is_err());
    }

    #[test]
    fn the_text_is_what_rpgp_reads_as_signed() {
        for text in [
            "Origin: Debian\nSuite: stable\n",
            "a line \t \n- -----dashed\n- plain\n\nlast",
            "crlf\r\nlines  \r\n- - twice\r\nend\r\n",
            "a lone\rcarriage return\r\n",
            "a\r \nb",
            "a\r\t\nb\r \r\nc\r",
            "- a\r\nb\r\r\n",
            "",
            "\n\n",
        ] {
            let input = format!("{HEADER}\nHash: SHA256\n\n{text}\n{SIGNATURE}");
            let theirs = pgp::composed::CleartextSignedMessage::from_string(&input)
                .unwrap_or_else(|e| panic!("rpgp refused {text:?}: {e}"))
                .0
                .signed_text();
            assert_eq!(parse(&input).unwrap().signed, theirs, "{text:?}");
        }
    }

    #[test]
    fn malformed_framing_is_refused() {
        let sig = SIGNATURE;
        for (input, why) in [
            ("Origin: Debian\n".to_string(), "does not begin"),
            (
                format!("{HEADER}\nVersion: 1\n\ntext\n{sig}"),
                "unexpected armour header",
            ),
            (
                format!("{HEADER}\nHash: NOPE\n\ntext\n{sig}"),
                "unknown hash algorithm",
            ),
            (
                format!("{HEADER}\nHash: SHA256\n\ntext only\n"),
                "no signature block",
            ),
            (
                format!("{HEADER}\n\ntext\n-----BEGIN PGP SIGNATURE-----\n\nAAAA\n"),
                "no `-----END PGP SIGNATURE-----`",
            ),
            (format!("{}more", signed_file()), "something follows"),
            (
                format!(
                    "{HEADER}\n\ntext\n{}",
                    sig.replace("PGP SIGNATURE", "PGP MESSAGE")
                ),
                "signature block",
            ),
            (
                format!("{HEADER}\n\ntext\n-----BEGIN PGP SIGNATURE-----\n\n{SIGNATURE_END}\n"),
                "no signature",
            ),
        ] {
            let e = format!("{:#}", parse(&input).unwrap_err());
            assert!(e.contains(why), "{input:?}: {e}");
        }
        // One signature too many, in one block.
        let one = DetachedSignature::from_armor_single(SIGNATURE.as_bytes())
            .unwrap()
            .0;
        let mut block = Vec::new();
        pgp::armor::write(
            &vec![one; MAX_SIGNATURES + 1],
            pgp::armor::BlockType::Signature,
            &mut block,
            None,
            true,
        )
        .unwrap();
        let input = format!("{HEADER}\n\ntext\n{}", String::from_utf8(block).unwrap());
        let e = format!("{:#}", parse(&input).unwrap_err());
        assert!(e.contains("more than 16 signatures"), "{e}");
        // Armour headers long enough to cost rpgp's reader hours.
        let padded = SIGNATURE.replacen(
            "\n\n",
            &format!("\nComment: {}\n\n", "x".repeat(1 << 20)),
            1,
        );
        let e = format!(
            "{:#}",
            parse(&format!("{HEADER}\n\ntext\n{padded}")).unwrap_err()
        );
        assert!(e.contains("signature block is over 64 KiB"), "{e}");
    }

    #[test]
    fn many_short_lines_take_linear_time() {
        // 16 MiB (the most an InRelease may be) of two-byte lines, then a signature
        // block as long: rpgp's reader took a minute over 1 MiB of such lines, this one
        // a fraction of a second over both.
        let input = format!(
            "{HEADER}\n\n{}-----BEGIN PGP SIGNATURE-----\n\n{}{SIGNATURE_END}\n",
            "a\n".repeat(8 << 20),
            "AAAA\n".repeat(3 << 20)
        );
        let start = std::time::Instant::now();
        assert!(parse(&input).is_err());
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }
}
