//! A serde deserializer over located nodes, so every error lands on the key or value that caused it.

use std::cell::RefCell;
use std::fmt;
use std::path::PathBuf;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::Deserialize;

use super::diag::{suggest, Loc, ProfileError};
use super::node::{Entry, Node, Value};

/// serde error carrying a profile diagnostic.
#[derive(Debug)]
pub struct DeError(pub ProfileError);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError(ProfileError::new(msg.to_string()))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let mut err = ProfileError::new(format!("unknown key `{field}`"));
        err.help = Some(match suggest(field, expected.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None if expected.is_empty() => "no keys are allowed here".to_string(),
            None => format!("valid keys here: {}", expected.join(", ")),
        });
        DeError(err)
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let mut err = ProfileError::new(format!("unknown value `{variant}`"));
        err.help = Some(match suggest(variant, expected.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("one of: {}", expected.join(", ")),
        });
        DeError(err)
    }

    fn missing_field(field: &'static str) -> Self {
        DeError(ProfileError::new(format!("missing required key `{field}`")))
    }
}

impl DeError {
    fn at(self, loc: &Loc, path: &str) -> Self {
        DeError(self.0.at(loc).key(path))
    }
}

/// Newtype name a path type uses to be resolved against the directory of the file that wrote it.
pub const REL_PATH: &str = "$kiln::RelPath";
/// Newtype name a wrapper uses to learn where its value was written.
pub const LOCATED: &str = "$kiln::Located";

thread_local! {
    static LAST_LOC: RefCell<Option<(Loc, String)>> = const { RefCell::new(None) };
    static HOST_PATHS: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

/// Every host path a deserialization resolved since the last call: what a build may read.
pub fn take_host_paths() -> Vec<PathBuf> {
    HOST_PATHS.with(|p| std::mem::take(&mut *p.borrow_mut()))
}

/// Location and key path of the value a `Located` wrapper is about to deserialize.
pub fn take_location() -> Option<(Loc, String)> {
    LAST_LOC.with(|l| l.borrow_mut().take())
}

/// Deserializes a node tree into `T`, reporting errors at the key or value that caused them.
pub fn from_node<'de, T: Deserialize<'de>>(node: &Node) -> Result<T, ProfileError> {
    T::deserialize(NodeDe {
        node,
        path: String::new(),
    })
    .map_err(|e| e.0)
}

/// A serde deserializer over one node, remembering its key path for errors.
pub struct NodeDe<'a> {
    node: &'a Node,
    path: String,
}

impl<'a> NodeDe<'a> {
    fn wrap<T>(&self, r: Result<T, DeError>) -> Result<T, DeError> {
        r.map_err(|e| e.at(&self.node.loc, &self.path))
    }
}

fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Str(s) => visitor.visit_str(s),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Array(items) => visitor.visit_seq(SeqDe {
                items: items.iter().enumerate(),
                path: &self.path,
            }),
            Value::Table(entries) => visitor.visit_map(MapDe {
                entries: entries.iter(),
                path: &self.path,
                pending: None,
            }),
        };
        self.wrap(r)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == REL_PATH {
            let r = match &self.node.value {
                Value::Str(s) => {
                    let p = PathBuf::from(s);
                    let p = if p.is_absolute() {
                        p
                    } else {
                        self.node.loc.dir().join(p)
                    };
                    HOST_PATHS.with(|h| h.borrow_mut().push(p.clone()));
                    visitor.visit_string(p.to_string_lossy().into_owned())
                }
                other => Err(de::Error::custom(format!(
                    "expected a path (a string), found {}",
                    other.type_name()
                ))),
            };
            return self.wrap(r);
        }
        if name == LOCATED {
            LAST_LOC.with(|l| *l.borrow_mut() = Some((self.node.loc.clone(), self.path.clone())));
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            other => Err(de::Error::custom(format!(
                "expected one of the names listed below (a string), found {}",
                other.type_name()
            ))),
        };
        self.wrap(r)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Table(_) => self.deserialize_any(visitor),
            other => {
                let msg = format!("expected a table, found {}", other.type_name());
                Err(DeError(ProfileError::new(msg)).at(&self.node.loc, &self.path))
            }
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple
        tuple_struct map identifier ignored_any
    }
}

struct SeqDe<'a, I> {
    items: I,
    path: &'a str,
}

impl<'de, 'a, I: Iterator<Item = (usize, &'a Node)>> de::SeqAccess<'de> for SeqDe<'a, I> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some((i, node)) => {
                let path = format!("{}[{}]", self.path, i);
                seed.deserialize(NodeDe { node, path }).map(Some)
            }
            None => Ok(None),
        }
    }
}

struct MapDe<'a, I> {
    entries: I,
    path: &'a str,
    pending: Option<&'a Entry>,
}

impl<'de, 'a, I: Iterator<Item = &'a Entry>> de::MapAccess<'de> for MapDe<'a, I> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some(entry) => {
                self.pending = Some(entry);
                let path = child_path(self.path, &entry.key);
                let key: de::value::StrDeserializer<'_, DeError> =
                    entry.key.as_str().into_deserializer();
                seed.deserialize(key)
                    .map(Some)
                    .map_err(|e| e.at(&entry.key_loc, &path))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let entry = self
            .pending
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("value requested before its key"))?;
        let path = child_path(self.path, &entry.key);
        seed.deserialize(NodeDe {
            node: &entry.node,
            path,
        })
    }
}
