//! The SBOM of an image: an SPDX 2.3 JSON document made from its manifest alone, so
//! `kiln sbom MANIFEST` gives the same bytes as the build wrote. It describes the image
//! (by its sha256) containing one package per Debian package (version, architecture,
//! the .deb's sha256, supplier from Maintainer, license from a machine-readable
//! copyright file) and one per file copied from the host.

use std::collections::BTreeSet;

use anyhow::{bail, Result};
use sha2::{Digest, Sha256};

use super::manifest::{Manifest, PackageRecord};
use super::spdx_document::{
    sha256_of, CreationInfo, Document, ExternalRef, ExtractedLicense, Package, Relationship,
};

/// The short names of the `License:` fields of a machine-readable (DEP-5) copyright
/// file's `Files:` paragraphs, in order, each once; empty for any other copyright file.
pub fn copyright_licenses(text: &str) -> Vec<String> {
    let paragraphs = crate::source::debian::control::parse(text);
    let dep5 = paragraphs
        .first()
        .and_then(|p| p.get("Format"))
        .is_some_and(|f| f.contains("copyright-format"));
    if !dep5 {
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    for p in paragraphs.iter().filter(|p| p.get("Files").is_some()) {
        if let Some(first) = p.get("License").and_then(|l| l.lines().next()) {
            let name = first.trim().to_string();
            if !name.is_empty() && !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

/// Debian's short license names that have an SPDX identifier of another spelling, or
/// the same; compared without case.
const SPDX_NAMES: &[(&str, &str)] = &[
    ("gpl-1", "GPL-1.0-only"),
    ("gpl-1+", "GPL-1.0-or-later"),
    ("gpl-2", "GPL-2.0-only"),
    ("gpl-2+", "GPL-2.0-or-later"),
    ("gpl-3", "GPL-3.0-only"),
    ("gpl-3+", "GPL-3.0-or-later"),
    ("lgpl-2", "LGPL-2.0-only"),
    ("lgpl-2+", "LGPL-2.0-or-later"),
    ("lgpl-2.1", "LGPL-2.1-only"),
    ("lgpl-2.1+", "LGPL-2.1-or-later"),
    ("lgpl-3", "LGPL-3.0-only"),
    ("lgpl-3+", "LGPL-3.0-or-later"),
    ("agpl-3", "AGPL-3.0-only"),
    ("agpl-3+", "AGPL-3.0-or-later"),
    ("gfdl-1.2", "GFDL-1.2-only"),
    ("gfdl-1.2+", "GFDL-1.2-or-later"),
    ("gfdl-1.3", "GFDL-1.3-only"),
    ("gfdl-1.3+", "GFDL-1.3-or-later"),
    ("apache-2.0", "Apache-2.0"),
    ("artistic", "Artistic-1.0"),
    ("artistic-1.0", "Artistic-1.0"),
    ("artistic-2.0", "Artistic-2.0"),
    ("bsd-2-clause", "BSD-2-Clause"),
    ("bsd-3-clause", "BSD-3-Clause"),
    ("bsd-4-clause", "BSD-4-Clause"),
    ("expat", "MIT"),
    ("mit", "MIT"),
    ("isc", "ISC"),
    ("zlib", "Zlib"),
    ("mpl-1.1", "MPL-1.1"),
    ("mpl-2.0", "MPL-2.0"),
    ("cc0", "CC0-1.0"),
    ("cc0-1.0", "CC0-1.0"),
    ("psf-2", "PSF-2.0"),
    ("python-2.0", "Python-2.0"),
    ("openssl", "OpenSSL"),
    ("curl", "curl"),
    ("x11", "X11"),
    ("fsfap", "FSFAP"),
    ("fsful", "FSFUL"),
    ("fsfullr", "FSFULLR"),
    ("bsl-1.0", "BSL-1.0"),
    ("unlicense", "Unlicense"),
    ("wtfpl", "WTFPL"),
    ("unicode-dfs-2016", "Unicode-DFS-2016"),
    ("sleepycat", "Sleepycat"),
    ("ofl-1.1", "OFL-1.1"),
    ("cc-by-3.0", "CC-BY-3.0"),
    ("cc-by-4.0", "CC-BY-4.0"),
    ("cc-by-sa-3.0", "CC-BY-SA-3.0"),
    ("cc-by-sa-4.0", "CC-BY-SA-4.0"),
];

/// `name` with every character an SPDX identifier may not hold (letters, digits, `.`
/// and `-`) replaced by `-`.
fn id_chars(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `LicenseRef-` for a name SPDX has no identifier for.
fn license_ref(name: &str) -> String {
    format!("LicenseRef-Debian-{}", id_chars(name))
}

/// A Debian license expression (`GPL-2+ or Artistic`, `BSD-3-clause and Expat`) as an
/// SPDX expression; names SPDX does not know (and `with ... exception` clauses) become
/// `LicenseRef-`s, added to `refs` with the name they stand for.
fn spdx_expression(debian: &str, refs: &mut BTreeSet<(String, String)>) -> String {
    let mut out = String::new();
    let mut clause: Vec<&str> = Vec::new();
    let mut flush = |clause: &mut Vec<&str>, out: &mut String| {
        if clause.is_empty() {
            return;
        }
        let name = clause.join(" ");
        let known = (clause.len() == 1)
            .then(|| {
                SPDX_NAMES
                    .iter()
                    .find(|(d, _)| d.eq_ignore_ascii_case(&name))
                    .map(|(_, s)| s.to_string())
            })
            .flatten();
        out.push_str(&known.unwrap_or_else(|| {
            let r = license_ref(&name);
            refs.insert((r.clone(), name.clone()));
            r
        }));
        clause.clear();
    };
    for word in debian.split_whitespace() {
        let word = word.trim_end_matches(',');
        if word.eq_ignore_ascii_case("or") || word.eq_ignore_ascii_case("and") {
            flush(&mut clause, &mut out);
            if !out.is_empty() {
                out.push_str(if word.eq_ignore_ascii_case("or") {
                    " OR "
                } else {
                    " AND "
                });
            }
        } else if !word.is_empty() {
            clause.push(word);
        }
    }
    flush(&mut clause, &mut out);
    if out.ends_with(" OR ") || out.ends_with(" AND ") || out.is_empty() {
        return "NOASSERTION".to_string();
    }
    out
}

/// A package's declared license: each of its copyright file's licenses, joined by AND.
fn declared(p: &PackageRecord, refs: &mut BTreeSet<(String, String)>) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in p
        .copyright_licenses
        .iter()
        .map(|l| spdx_expression(l, refs))
    {
        // Two Debian names can be one SPDX identifier (`Expat`, `MIT`).
        if e != "NOASSERTION" && !parts.contains(&e) {
            parts.push(e);
        }
    }
    match parts.len() {
        0 => "NOASSERTION".to_string(),
        1 => parts[0].clone(),
        _ => parts
            .iter()
            .map(|e| {
                if e.contains(" OR ") {
                    format!("({e})")
                } else {
                    e.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" AND "),
    }
}

/// `Maintainer: Name <mail>` as an SPDX supplier; teams and lists are organizations.
fn supplier(maintainer: &str) -> String {
    let (name, mail) = match maintainer.split_once('<') {
        Some((n, m)) => (n.trim(), Some(m.trim_end_matches('>').trim())),
        None => (maintainer.trim(), None),
    };
    let lower = name.to_ascii_lowercase();
    let kind = if ["team", "maintainers", "developers", "project", "group"]
        .iter()
        .any(|w| lower.contains(w))
    {
        "Organization"
    } else {
        "Person"
    };
    match mail {
        Some(m) => format!("{kind}: {name} ({m})"),
        None => format!("{kind}: {name}"),
    }
}

/// An SPDXID for the element `name` of `kind`.
fn spdx_id(kind: &str, name: &str) -> String {
    format!("SPDXRef-{kind}-{}", id_chars(name))
}

/// A package URL's version: everything but unreserved characters percent-encoded.
fn purl_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (the civil-from-days algorithm).
fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The SPDX 2.3 JSON document of the image `manifest` describes, pretty-printed.
pub fn spdx(manifest: &Manifest) -> Result<String> {
    if manifest.image.is_empty() || manifest.format.is_empty() {
        bail!("the manifest names no image");
    }
    let name = manifest
        .image
        .split('.')
        .next()
        .unwrap_or(&manifest.image)
        .to_string();
    let digest = manifest
        .image_sha256
        .clone()
        .or_else(|| manifest.image_sparse_sha256.clone())
        .unwrap_or_default();
    // A namespace unique to these bytes, the same for the same image.
    let ns = hex::encode(&Sha256::digest(format!("{}\n{digest}", manifest.image))[..16]);
    let mut refs = BTreeSet::new();
    let mut image = Package::new("SPDXRef-Image".into(), &name);
    image.package_file_name = Some(&manifest.image);
    image.primary_package_purpose = Some("OPERATING-SYSTEM");
    image.comment = Some(format!("A {} image built by kiln.", manifest.format));
    match (&manifest.image_sha256, &manifest.image_sparse_sha256) {
        (Some(h), _) => image.checksums = sha256_of(h),
        (None, Some(h)) => {
            image.comment = Some(format!(
                "A {} image built by kiln. Its sparse sha256 (see kiln's README) is {h}; \
                 `image_sha256 = true` in the profile's [output] adds the plain sha256.",
                manifest.format
            ));
        }
        (None, None) => {}
    }
    let mut packages = vec![image];
    for p in &manifest.packages {
        let mut pkg = Package::new(spdx_id("Package-deb", &p.name), &p.name);
        pkg.version_info = Some(&p.version);
        pkg.checksums = sha256_of(&p.deb_sha256);
        pkg.license_declared = declared(p, &mut refs);
        pkg.external_refs = Some(vec![ExternalRef {
            reference_category: "PACKAGE-MANAGER",
            reference_locator: format!(
                "pkg:deb/debian/{}@{}?arch={}",
                p.name,
                purl_escape(&p.version),
                p.architecture
            ),
            reference_type: "purl",
        }]);
        pkg.supplier = p.maintainer.as_deref().map(supplier);
        pkg.source_info = p
            .source
            .as_ref()
            .map(|s| format!("built from the Debian source package {s}"));
        pkg.homepage = p
            .homepage
            .as_deref()
            .filter(|h| h.starts_with("https://") || h.starts_with("http://"))
            .filter(|h| !h.contains(char::is_whitespace));
        packages.push(pkg);
    }
    // By path once: an overlay of the host's files can name every entry of the image.
    let by_path: foldhash::HashMap<&str, &crate::output::manifest::ManifestEntry> = manifest
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e))
        .collect();
    for (i, path) in manifest.host_files.iter().enumerate() {
        let mut file = Package::new(format!("SPDXRef-HostFile-{}", i + 1), path);
        file.primary_package_purpose = Some("FILE");
        file.comment = Some("Copied into the image from the build host by kiln.".into());
        let entry = by_path.get(path.as_str()).copied();
        match entry.and_then(|e| e.sha256.as_deref()) {
            Some(h) => file.checksums = sha256_of(h),
            None => {
                if let Some(h) = entry.and_then(|e| e.sparse_sha256.as_ref()) {
                    file.comment = Some(format!(
                        "Copied into the image from the build host by kiln; sparse sha256 {h}."
                    ));
                }
            }
        }
        packages.push(file);
    }
    let mut relationships = vec![Relationship {
        related_spdx_element: "SPDXRef-Image".into(),
        relationship_type: "DESCRIBES",
        spdx_element_id: "SPDXRef-DOCUMENT",
    }];
    relationships.extend(packages[1..].iter().map(|p| Relationship {
        related_spdx_element: p.spdx_id.clone(),
        relationship_type: "CONTAINS",
        spdx_element_id: "SPDXRef-Image",
    }));
    let doc = Document {
        spdx_id: "SPDXRef-DOCUMENT",
        creation_info: CreationInfo {
            created: utc(manifest.source_date_epoch.unwrap_or(0)),
            creators: vec![format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION"))],
        },
        data_license: "CC0-1.0",
        // A URN: unique to these bytes, naming no host.
        document_namespace: format!("urn:kiln:spdx:{name}:{ns}"),
        has_extracted_licensing_infos: refs
            .iter()
            .map(|(id, name)| ExtractedLicense {
                extracted_text: format!(
                    "The license Debian's machine-readable copyright files call `{name}`; \
                     its text is in the package's /usr/share/doc/PACKAGE/copyright."
                ),
                license_id: id.clone(),
                name: name.clone(),
            })
            .collect(),
        name: format!("{name} ({})", manifest.image),
        packages,
        relationships,
        spdx_version: "SPDX-2.3",
    };
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_license_expressions_become_spdx_ones() {
        let mut refs = BTreeSet::new();
        assert_eq!(spdx_expression("GPL-2+", &mut refs), "GPL-2.0-or-later");
        assert_eq!(
            spdx_expression("GPL-2+ or Artistic", &mut refs),
            "GPL-2.0-or-later OR Artistic-1.0"
        );
        assert_eq!(
            spdx_expression("BSD-3-clause and Expat", &mut refs),
            "BSD-3-Clause AND MIT"
        );
        assert!(refs.is_empty());
        assert_eq!(
            spdx_expression("GPL-2+ with OpenSSL exception", &mut refs),
            "LicenseRef-Debian-GPL-2--with-OpenSSL-exception"
        );
        assert_eq!(
            spdx_expression("public-domain", &mut refs),
            "LicenseRef-Debian-public-domain"
        );
        assert_eq!(refs.len(), 2);
        assert_eq!(spdx_expression("or", &mut refs), "NOASSERTION");
    }

    #[test]
    fn machine_readable_copyright_files_give_their_licenses() {
        let dep5 = "Format: copyright-format/1.0/\n\
                    Upstream-Name: x\n\nFiles: *\nCopyright: me\nLicense: GPL-2+\n\n\
                    Files: lib/*\nCopyright: you\nLicense: Expat\n text of it\n\n\
                    License: GPL-2+\n text\n";
        assert_eq!(copyright_licenses(dep5), ["GPL-2+", "Expat"]);
        assert!(copyright_licenses("This package was debianized by...\n").is_empty());
    }

    #[test]
    fn dates_and_suppliers() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(
            supplier("Debian systemd Maintainers <pkg-systemd-maintainers@lists.alioth.debian.org>"),
            "Organization: Debian systemd Maintainers (pkg-systemd-maintainers@lists.alioth.debian.org)"
        );
        assert_eq!(
            supplier("Jane Doe <jane@example.org>"),
            "Person: Jane Doe (jane@example.org)"
        );
        assert_eq!(purl_escape("1:2.3+dfsg-1"), "1%3A2.3%2Bdfsg-1");
    }
}
