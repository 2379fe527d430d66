//! A TOML document as a tree of values that remember where they were written.
//!
//! Profiles are merged from several files (includes), so every value carries its own
//! location: an error found after merging still points at the file and line that set it.

use std::sync::Arc;

use toml_edit::{Item, TableLike};

use super::diag::{Loc, ProfileError, SourceFile};

/// A TOML value and where it was written.
#[derive(Debug, Clone)]
pub struct Node {
    /// The value; tables and arrays hold further nodes.
    pub value: Value,
    /// Where the value was written (a table without a span of its own gets its key's).
    pub loc: Loc,
}

/// A TOML value. Dates and times are rejected while parsing: no profile key uses them.
#[derive(Debug, Clone)]
pub enum Value {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// An array, including an array of tables.
    Array(Vec<Node>),
    /// A table (standard, inline or the document root), entries in written order.
    Table(Vec<Entry>),
}

/// One key of a table and its value.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key, unquoted.
    pub key: String,
    /// Where the key was written.
    pub key_loc: Loc,
    /// The value.
    pub node: Node,
}

impl Value {
    /// The type with an article, for messages: "a string", "an integer", ….
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

impl Node {
    /// Parses a TOML file, keeping the location of every key and value.
    pub fn parse(file: Arc<SourceFile>) -> Result<Node, ProfileError> {
        let doc = toml_edit::Document::parse(file.text.clone()).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            ProfileError::new(format!("invalid TOML: {}", e.message().trim())).at(&Loc {
                file: file.clone(),
                span,
            })
        })?;
        let root_loc = Loc {
            file: file.clone(),
            span: 0..0,
        };
        let table = doc
            .as_item()
            .as_table_like()
            .ok_or_else(|| ProfileError::new("the document is not a table").at(&root_loc))?;
        convert_table(table, &root_loc)
    }

    /// The entry for `key`, if this is a table that has it.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Table(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    /// Removes and returns the entry for `key`, if this is a table that has it.
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        match &mut self.value {
            Value::Table(entries) => {
                let i = entries.iter().position(|e| e.key == key)?;
                Some(entries.remove(i))
            }
            _ => None,
        }
    }

    /// Layers `over` on top of `self`: tables merge key by key, arrays append,
    /// anything else is replaced by the later value.
    pub fn merge(&mut self, over: Node) {
        match (&mut self.value, over.value) {
            (Value::Table(base), Value::Table(entries)) => {
                for entry in entries {
                    match base.iter_mut().find(|e| e.key == entry.key) {
                        Some(existing) => existing.node.merge(entry.node),
                        None => base.push(entry),
                    }
                }
            }
            (Value::Array(base), Value::Array(items)) => base.extend(items),
            (_, value) => {
                self.value = value;
                self.loc = over.loc;
            }
        }
    }
}

fn loc_of(span: Option<std::ops::Range<usize>>, fallback: &Loc) -> Loc {
    match span {
        Some(span) => Loc {
            file: fallback.file.clone(),
            span,
        },
        None => fallback.clone(),
    }
}

fn convert_table(table: &dyn TableLike, loc: &Loc) -> Result<Node, ProfileError> {
    let mut entries = Vec::new();
    for (key, item) in table.iter() {
        let key_loc = loc_of(table.key(key).and_then(|k| k.span()), loc);
        let node = match convert_item(item, &key_loc)? {
            Some(node) => node,
            None => continue,
        };
        entries.push(Entry {
            key: key.to_string(),
            key_loc,
            node,
        });
    }
    Ok(Node {
        value: Value::Table(entries),
        loc: loc.clone(),
    })
}

fn convert_item(item: &Item, key_loc: &Loc) -> Result<Option<Node>, ProfileError> {
    Ok(Some(match item {
        Item::None => return Ok(None),
        Item::Value(v) => convert_value(v, key_loc)?,
        Item::Table(t) => convert_table(t, &loc_of(t.span(), key_loc))?,
        Item::ArrayOfTables(a) => {
            let mut items = Vec::new();
            for t in a.iter() {
                items.push(convert_table(t, &loc_of(t.span(), key_loc))?);
            }
            Node {
                value: Value::Array(items),
                loc: loc_of(a.span(), key_loc),
            }
        }
    }))
}

fn convert_value(v: &toml_edit::Value, parent: &Loc) -> Result<Node, ProfileError> {
    use toml_edit::Value as V;
    let loc = loc_of(v.span(), parent);
    let value = match v {
        V::String(s) => Value::Str(s.value().clone()),
        V::Integer(i) => Value::Int(*i.value()),
        V::Float(f) => Value::Float(*f.value()),
        V::Boolean(b) => Value::Bool(*b.value()),
        V::Datetime(_) => {
            return Err(
                ProfileError::new("dates and times are not used by any profile key")
                    .at(&loc)
                    .help("write the value as a string or a number"),
            )
        }
        V::Array(a) => {
            let mut items = Vec::new();
            for item in a.iter() {
                items.push(convert_value(item, &loc)?);
            }
            Value::Array(items)
        }
        V::InlineTable(t) => return convert_table(t, &loc),
    };
    Ok(Node { value, loc })
}
