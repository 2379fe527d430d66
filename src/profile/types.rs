//! Value types used by the profile schema: paths resolved against their file, sizes,
//! durations, file modes, and a wrapper that remembers where a value was written.

use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::de::{take_location, LOCATED, REL_PATH};
use super::diag::{Loc, ProfileError};

/// A host path, resolved relative to the directory of the profile file that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelPath(pub PathBuf);

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RelPath;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RelPath, E> {
                Ok(RelPath(PathBuf::from(v)))
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<RelPath, D::Error> {
                d.deserialize_str(self)
            }
        }
        d.deserialize_newtype_struct(REL_PATH, V)
    }
}

impl Deref for RelPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

/// A value together with the place in a profile where it was written, so checks made
/// later (a missing file, a bad combination) can still point at the right line.
#[derive(Clone)]
pub struct Located<T> {
    /// The value itself.
    pub value: T,
    /// Where it was written; `None` when it was not deserialized from a profile node.
    pub loc: Option<Loc>,
    /// Dotted key path of the value, e.g. `file[2]`; empty when unknown.
    pub key: String,
}

impl<T> Located<T> {
    /// An error about this value, pointing at where it was written.
    pub fn error(&self, message: impl Into<String>) -> ProfileError {
        let mut e = ProfileError::new(message).key(&self.key);
        if let Some(loc) = &self.loc {
            e = e.at(loc);
        }
        e
    }

    /// An error about one key of this table.
    pub fn field_error(&self, field: &str, message: impl Into<String>) -> ProfileError {
        let mut e = ProfileError::new(message).key(&format!("{}.{field}", self.key));
        if let Some(loc) = &self.loc {
            e = e.at(loc);
        }
        e
    }
}

/// The value alone: the debug form of a profile is what it means, so a build's key
/// does not change when a comment moves a line.
impl<T: fmt::Debug> fmt::Debug for Located<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T> Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Located<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Located<T>, D::Error> {
                let (loc, key) = match take_location() {
                    Some((loc, key)) => (Some(loc), key),
                    None => (None, String::new()),
                };
                Ok(Located {
                    value: T::deserialize(d)?,
                    loc,
                    key,
                })
            }
        }
        d.deserialize_newtype_struct(LOCATED, V(std::marker::PhantomData))
    }
}

/// A size in bytes, written as an integer or as a string with a binary suffix: "512M", "2G", "64K".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    /// Parses digits with an optional binary suffix: "512M", "2G", "4096".
    pub fn parse(s: &str) -> Result<Size, String> {
        crate::util::options::parse_size(s).map(Size)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
            if n >= 1 << shift && n.is_multiple_of(1 << shift) {
                return write!(f, "{}{}", n >> shift, unit);
            }
        }
        write!(f, "{n}")
    }
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Size::parse(s)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"512M\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                Size::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration, written as seconds or with a unit: "90s", "5m", "1h", "500ms".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl Seconds {
    /// Parses a number with an optional unit: ms, s (the default), m or h.
    pub fn parse(s: &str) -> Result<Seconds, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a duration; write e.g. \"90s\" or \"5m\""))?;
        let secs = match unit.trim() {
            "" | "s" | "sec" => n,
            "ms" => n / 1000.0,
            "m" | "min" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(format!("`{s}` has an unknown unit; use ms, s, m or h")),
        };
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!("`{s}` is not a valid duration"));
        }
        Ok(Seconds(Duration::from_secs_f64(secs)))
    }
}

impl std::str::FromStr for Seconds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Seconds::parse(s)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"90s\" or a number of seconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map(|v| Seconds(Duration::from_secs(v)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
                Seconds::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                Seconds::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Permission bits (including setuid, setgid and sticky): an octal string "0755" or an
/// integer, which in TOML is best written in octal: 0o755.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Mode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mode such as \"0755\" or 0o755")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Mode, E> {
                if (0..=0o7777).contains(&v) {
                    Ok(Mode(v as u32))
                } else {
                    Err(E::custom(format!("mode {v:#o} has bits outside 0o7777")))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Mode, E> {
                let digits = v.strip_prefix("0o").unwrap_or(v);
                match u32::from_str_radix(digits, 8) {
                    Ok(m) if m <= 0o7777 => Ok(Mode(m)),
                    _ => Err(E::custom(format!(
                        "`{v}` is not an octal mode such as \"0644\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(Size::parse("512M").unwrap().0, 512 << 20);
        assert_eq!(Size::parse("2G").unwrap().0, 2 << 30);
        assert_eq!(Size::parse("4096").unwrap().0, 4096);
        assert!(Size::parse("12Q").is_err());
        assert_eq!(Size(3 << 30).to_string(), "3G");
    }

    #[test]
    fn durations() {
        assert_eq!(Seconds::parse("90s").unwrap().0, Duration::from_secs(90));
        assert_eq!(Seconds::parse("5m").unwrap().0, Duration::from_secs(300));
        assert_eq!(
            Seconds::parse("250ms").unwrap().0,
            Duration::from_millis(250)
        );
        assert!(Seconds::parse("soon").is_err());
    }
}
