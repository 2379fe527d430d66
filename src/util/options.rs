//! Writer options as values: what a profile's `[output]` table resolves to once, at load
//! time, so that writers never see profile types and nothing parses these strings again.
//! They sit below both the profile and the writers, which each import them from here.
//! The spellings accepted here are the profile's; the GUIDs behind partition types are
//! the disk writer's business (`output::disk`).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use uuid::Uuid;

/// Which writer makes the image.
#[derive(Debug, Deserialize, schemars::JsonSchema, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A newc cpio archive the kernel unpacks as its root file system (the default).
    #[default]
    Initramfs,
    /// A GPT disk image with an ext4 root partition.
    Disk,
    /// An uncompressed tar archive.
    Tar,
}

/// Initramfs compression.
#[derive(Debug, Deserialize, schemars::JsonSchema, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd frames, which kernels with CONFIG_RD_ZSTD unpack.
    #[default]
    Zstd,
    /// A plain newc archive.
    None,
}

/// Free space for an automatically sized file system: a percentage of the content or a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreeSpace {
    /// This percentage of the content's size.
    Percent(u32),
    /// This many bytes.
    Bytes(u64),
}

/// Default free space in an automatically sized root file system.
pub const DEFAULT_FREE_SPACE: FreeSpace = FreeSpace::Bytes(256 << 20);

impl FreeSpace {
    /// Parses `"25%"` or a size such as `"256M"`.
    pub fn parse(s: &str) -> Result<FreeSpace, String> {
        match s.trim().strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<u32>()
                .map(FreeSpace::Percent)
                .map_err(|_| format!("`{s}` is not a percentage such as \"25%\"")),
            None => parse_size(s).map(FreeSpace::Bytes),
        }
    }
}

/// The size of a root file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RootSize {
    /// Content, metadata and the free space asked for.
    #[default]
    Auto,
    /// Exactly this many bytes; a tree that does not fit is an error.
    Fixed(u64),
}

impl RootSize {
    /// Parses `"auto"` or a size such as `"2G"`.
    pub fn parse(s: &str) -> Result<RootSize, String> {
        if s.trim() == "auto" {
            Ok(RootSize::Auto)
        } else {
            parse_size(s).map(RootSize::Fixed)
        }
    }
}

/// A size in bytes: digits and an optional binary suffix (K, M, G, T; KiB, MB… all mean
/// powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size; write e.g. \"512M\" or \"2G\""))?;
    let mult: u64 = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => {
            return Err(format!(
                "`{s}` has an unknown size suffix; use K, M, G or T (powers of 1024)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// A GPT partition type, by its Discoverable Partitions Specification name or as a GUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartitionType {
    /// The root file system for x86-64 (`root`, `root-x86-64`).
    RootX86_64,
    /// An EFI system partition (`esp`).
    Esp,
    /// Any Linux file system (`linux-generic`).
    #[default]
    LinuxGeneric,
    /// `/var` (`var`).
    Var,
    /// `/var/tmp` (`tmp`).
    Tmp,
    /// `/home` (`home`).
    Home,
    /// `/srv` (`srv`).
    Srv,
    /// Swap (`swap`).
    Swap,
    /// Any other type, by GUID.
    Guid(Uuid),
}

impl PartitionType {
    /// Parses a name (`esp`, `var`, …) or a GUID.
    pub fn parse(s: &str) -> Result<PartitionType, String> {
        Ok(match s {
            "root" | "root-x86-64" => PartitionType::RootX86_64,
            "esp" => PartitionType::Esp,
            "linux-generic" => PartitionType::LinuxGeneric,
            "var" => PartitionType::Var,
            "tmp" => PartitionType::Tmp,
            "home" => PartitionType::Home,
            "srv" => PartitionType::Srv,
            "swap" => PartitionType::Swap,
            other => PartitionType::Guid(Uuid::parse_str(other).map_err(|_| {
                format!("partition type `{s}`: use root, esp, linux-generic, var, tmp, home, srv, swap or a GUID")
            })?),
        })
    }
}

/// What an extra partition holds.
#[derive(Debug, Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PartitionFs {
    /// An empty ext4 file system.
    #[default]
    Ext4,
    /// Nothing: the partition is left blank (zeros).
    None,
}

/// Deserializes a value from a string through its `parse` function; the message of a
/// parse error becomes the serde error, which the profile loader locates.
fn from_str<'de, D, T>(
    d: D,
    what: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<T> {
        what: &'static str,
        parse: fn(&str) -> Result<T, String>,
    }
    impl<'de, T> Visitor<'de> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.what)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.parse)(v).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            (self.parse)(&v.to_string()).map_err(E::custom)
        }
    }
    d.deserialize_any(V { what, parse })
}

impl<'de> Deserialize<'de> for FreeSpace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(
            d,
            "a percentage such as \"25%\" or a size such as \"256M\"",
            FreeSpace::parse,
        )
    }
}

impl<'de> Deserialize<'de> for RootSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(d, "\"auto\" or a size such as \"2G\"", RootSize::parse)
    }
}

impl<'de> Deserialize<'de> for PartitionType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(d, "a partition type name or GUID", PartitionType::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_once() {
        assert_eq!(FreeSpace::parse("25%"), Ok(FreeSpace::Percent(25)));
        assert_eq!(FreeSpace::parse("1M"), Ok(FreeSpace::Bytes(1 << 20)));
        assert!(FreeSpace::parse("x%").is_err());
        assert_eq!(RootSize::parse("auto"), Ok(RootSize::Auto));
        assert_eq!(RootSize::parse("2G"), Ok(RootSize::Fixed(2 << 30)));
        assert!(RootSize::parse("big").is_err());
        assert_eq!(PartitionType::parse("var"), Ok(PartitionType::Var));
        assert!(matches!(
            PartitionType::parse("0fc63daf-8483-4772-8e79-3d69d8477de4"),
            Ok(PartitionType::Guid(_))
        ));
        assert!(PartitionType::parse("usr-ish").is_err());
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert!(parse_size("99999999999T").is_err());
    }
}
