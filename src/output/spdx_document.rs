//! The typed SPDX 2.3 document the SBOM serializes: typed rather than built as JSON
//! values, because an overlay of the host's files makes thousands of packages. Fields are
//! declared in the order of their names, as the document has always listed them.

use serde::Serialize;

/// One SPDX checksum.
#[derive(Serialize)]
pub(super) struct Checksum<'a> {
    pub(super) algorithm: &'static str,
    #[serde(rename = "checksumValue")]
    pub(super) value: &'a str,
}

pub(super) fn sha256_of(value: &str) -> Option<Vec<Checksum<'_>>> {
    Some(vec![Checksum {
        algorithm: "SHA256",
        value,
    }])
}

/// A package's purl.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ExternalRef {
    pub(super) reference_category: &'static str,
    pub(super) reference_locator: String,
    pub(super) reference_type: &'static str,
}

/// An SPDX package: the image, a Debian package or a host file. Typed rather than built
/// as JSON values: an overlay of the host's files makes thousands. Fields in the order of
/// their names, as the document has always listed them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Package<'a> {
    #[serde(rename = "SPDXID")]
    pub(super) spdx_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) checksums: Option<Vec<Checksum<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) comment: Option<String>,
    pub(super) copyright_text: &'static str,
    pub(super) download_location: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) external_refs: Option<Vec<ExternalRef>>,
    pub(super) files_analyzed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) homepage: Option<&'a str>,
    pub(super) license_concluded: &'static str,
    pub(super) license_declared: String,
    pub(super) name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) package_file_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) primary_package_purpose: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) source_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) supplier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) version_info: Option<&'a str>,
}

impl<'a> Package<'a> {
    pub(super) fn new(spdx_id: String, name: &'a str) -> Package<'a> {
        Package {
            spdx_id,
            checksums: None,
            comment: None,
            copyright_text: "NOASSERTION",
            download_location: "NOASSERTION",
            external_refs: None,
            files_analyzed: false,
            homepage: None,
            license_concluded: "NOASSERTION",
            license_declared: "NOASSERTION".to_string(),
            name,
            package_file_name: None,
            primary_package_purpose: None,
            source_info: None,
            supplier: None,
            version_info: None,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Relationship {
    pub(super) related_spdx_element: String,
    pub(super) relationship_type: &'static str,
    pub(super) spdx_element_id: &'static str,
}

#[derive(Serialize)]
pub(super) struct CreationInfo {
    pub(super) created: String,
    pub(super) creators: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ExtractedLicense {
    pub(super) extracted_text: String,
    pub(super) license_id: String,
    pub(super) name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Document<'a> {
    #[serde(rename = "SPDXID")]
    pub(super) spdx_id: &'static str,
    pub(super) creation_info: CreationInfo,
    pub(super) data_license: &'static str,
    pub(super) document_namespace: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) has_extracted_licensing_infos: Vec<ExtractedLicense>,
    pub(super) name: String,
    pub(super) packages: Vec<Package<'a>>,
    pub(super) relationships: Vec<Relationship>,
    pub(super) spdx_version: &'static str,
}
