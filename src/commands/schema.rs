//! `kiln schema`: the JSON Schema of profile format v1, for editors and validators.

use anyhow::Result;

use super::{ExitStatus, Printer};

/// Prints the schema, pretty-printed, ending in a newline.
pub fn schema(printer: &Printer) -> Result<ExitStatus> {
    let text = serde_json::to_string_pretty(&crate::profile::json_schema::profile_schema())?;
    printer.out(text);
    Ok(ExitStatus::SUCCESS)
}
