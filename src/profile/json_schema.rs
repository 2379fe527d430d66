//! The JSON Schema of profile format v1, generated from the types the loader
//! deserializes (their doc comments become its descriptions), so the two cannot drift.
//! Values that kiln parses from strings (sizes, durations, modes, image paths) get the
//! schemas here, written from the same parsers' rules; a test checks both against a
//! third-party validator on good and bad profiles.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

use super::load::FORMAT_VERSION;
use super::schema::{ImagePath, MatrixKernel, Profile};
use super::tests::{Test, Tests};
use super::types::{Located, Mode, RelPath, Seconds, Size};
use crate::util::options::{FreeSpace, PartitionType, RootSize};

/// Where the repository keeps the schema, which the shipped profiles' `#:schema` lines
/// name (relative to the profile, as taplo reads them).
pub const SHIPPED_PATH: &str = "schema/profile-v1.json";

/// The schema of a profile file (format v1) as a JSON value.
pub fn profile_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator.into_root_schema_for::<Profile>().to_value();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("title".into(), "kiln profile, format v1".into());
        // Serde sees `version` as optional (the loader names it when it is missing, with
        // a hint); a file without it, or with another number, is not a v1 profile.
        if let Some(props) = obj.get_mut("properties").and_then(|p| p.as_object_mut()) {
            props.insert(
                "version".into(),
                serde_json::json!({
                    "description": "Format version of this profile: 1.",
                    "const": FORMAT_VERSION
                }),
            );
        }
        obj.insert("required".into(), serde_json::json!(["version"]));
    }
    schema
}

/// A schema defined by the JSON it is, named for its `$defs` entry.
macro_rules! literal_schema {
    ($ty:ty, $name:literal, $schema:tt) => {
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

/// The digits of a size and its optional binary suffix, as `parse_size` reads them.
const SIZE: &str = r"^\s*[0-9]+\s*([KkMmGgTt]([Ii]?[Bb])?|[Bb])?\s*$";

literal_schema!(RelPath, "HostPath", {
    "description": "A host path, relative to the directory of the profile file that names it.",
    "type": "string"
});

literal_schema!(ImagePath, "ImagePath", {
    "description": "An absolute path in the image, without `..` components.",
    "type": "string",
    "pattern": r"^(?!.*(?:^|/)\.\.(?:/|$))/"
});

impl JsonSchema for Size {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size: bytes, or a string with a binary suffix such as \"512M\", \"2G\", \"64K\".",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": SIZE }
            ]
        })
    }
}

literal_schema!(Seconds, "Duration", {
    "description": "A duration: seconds, or a string such as \"90s\", \"250ms\", \"5m\", \"1h\".",
    "anyOf": [
        { "type": "number", "minimum": 0 },
        { "type": "string", "pattern": r"^\s*([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*(ms|s|sec|m|min|h)?\s*$" }
    ]
});

literal_schema!(Mode, "Mode", {
    "description": "A file mode: an integer (0o755 in TOML) or an octal string such as \"0755\".",
    "anyOf": [
        { "type": "integer", "minimum": 0, "maximum": 4095 },
        { "type": "string", "pattern": "^(0o)?\\+?0*[0-7]{1,4}$" }
    ]
});

impl JsonSchema for FreeSpace {
    fn schema_name() -> Cow<'static, str> {
        "FreeSpace".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Free space: a percentage of the content such as \"25%\", or a size such as \"256M\".",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": r"^\s*[0-9]+\s*%\s*$" },
                { "type": "string", "pattern": SIZE }
            ]
        })
    }
}

impl JsonSchema for RootSize {
    fn schema_name() -> Cow<'static, str> {
        "RootSize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "\"auto\" (the content, its metadata and the free space asked for) or a size such as \"2G\".",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": r"^\s*auto\s*$" },
                { "type": "string", "pattern": SIZE }
            ]
        })
    }
}

literal_schema!(PartitionType, "PartitionType", {
    "description": "A GPT partition type: a Discoverable Partitions Specification name, or a GUID.",
    "anyOf": [
        { "enum": ["root", "root-x86-64", "esp", "linux-generic", "var", "tmp", "home", "srv", "swap"] },
        { "type": "string", "pattern": "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$" }
    ]
});

literal_schema!(MatrixKernel, "MatrixKernel", {
    "description": "A kernel: a path, a glob or a Debian package name, or { package, suite }.",
    "anyOf": [
        { "type": "string" },
        {
            "type": "object",
            "properties": {
                "package": { "type": "string", "description": "The package, e.g. \"linux-image-cloud-amd64\"." },
                "suite": { "type": "string", "description": "The suite to take it from; default: the first that has it." }
            },
            "required": ["package"],
            "additionalProperties": false
        }
    ]
});

impl JsonSchema for Tests {
    fn schema_name() -> Cow<'static, str> {
        "Tests".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let one = generator.subschema_for::<Test>();
        json_schema!({
            "description": "One [test] table, or a list of [[test]] tables (each a boot of the same image).",
            "anyOf": [one.clone(), { "type": "array", "items": one }]
        })
    }
}

/// Where a value was written is the loader's business; its schema is the value's.
impl<T: JsonSchema> JsonSchema for Located<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}
