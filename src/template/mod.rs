//! Handlebars rendering for profile templates and kiln's own generated scripts.
//!
//! Strict mode: a misspelt variable is an error, not an empty string. No HTML escaping:
//! these are shell scripts, unit files and configuration, not web pages.

use anyhow::{Context, Result};
use handlebars::{Handlebars, Helper, HelperResult, Output, RenderContext, RenderErrorReason};
use serde_json::Value;

use crate::util::shell::shell_quote;

/// kiln's built-in templates.
pub const INITRAMFS_INIT: &str = include_str!("initramfs-init.sh.hbs");
/// /usr/lib/kiln/run-test: runs the test, keeps its results, reports its exit status to the host.
pub const TEST_WRAPPER: &str = include_str!("run-test.sh.hbs");
/// /init of a disk's boot initramfs: loads the root disk's modules, finds the root partition
/// and switches to it.
pub const DISK_INIT: &str = include_str!("disk-init.sh.hbs");
/// kiln-test.service: runs the test at boot in disk and tar images, then powers off.
pub const TEST_UNIT: &str = include_str!("kiln-test.service.hbs");
/// kiln-depmod.service: builds the module index at first boot when kiln copied modules in
/// without one. Installed as it is, not rendered.
pub const DEPMOD_UNIT: &str = include_str!("kiln-depmod.service.hbs");

/// `kiln exec`'s guest side: mounts the host's root and runs the command as the caller.
pub const HOST_INIT: &str = include_str!("host-init.sh");

/// A Handlebars renderer in strict mode, without HTML escaping, with the `sh` helper.
pub struct Renderer {
    hb: Handlebars<'static>,
}

/// `{{sh value}}`: the value as one single-quoted shell word.
fn sh_helper(
    h: &Helper,
    _: &Handlebars,
    _: &handlebars::Context,
    _: &mut RenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let v = h
        .param(0)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex("sh", 0))?;
    let s = match v.value() {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    out.write(&shell_quote(&s))?;
    Ok(())
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

impl Renderer {
    /// A renderer with kiln's settings and helpers.
    pub fn new() -> Renderer {
        let mut hb = Handlebars::new();
        hb.set_strict_mode(true);
        hb.register_escape_fn(handlebars::no_escape);
        hb.register_helper("sh", Box::new(sh_helper));
        Renderer { hb }
    }

    /// Renders `template`; `what` names it in errors (a file path or a built-in's name).
    pub fn render(&self, what: &str, template: &str, data: &Value) -> Result<String> {
        self.hb
            .render_template(template, data)
            .map_err(|e| anyhow::anyhow!("{}", describe(&e)))
            .with_context(|| format!("rendering template {what}"))
    }
}

fn describe(e: &handlebars::RenderError) -> String {
    let mut s = e.reason().to_string();
    if let (Some(line), Some(col)) = (e.line_no, e.column_no) {
        s = format!("line {line}, column {col}: {s}");
    }
    if matches!(e.reason(), RenderErrorReason::MissingVariable(_)) {
        s.push_str(" (define it under [variables] in the profile)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_and_unescaped() {
        let r = Renderer::new();
        assert_eq!(
            r.render("t", "a {{x}} <b>", &json!({"x": "<&>"})).unwrap(),
            "a <&> <b>"
        );
        let err = r.render("t", "{{missing}}", &json!({})).unwrap_err();
        assert!(format!("{err:#}").contains("missing"), "{err:#}");
    }

    #[test]
    fn shell_quoting() {
        let r = Renderer::new();
        assert_eq!(
            r.render("t", "{{sh x}}", &json!({"x": "it's"})).unwrap(),
            "'it'\\''s'"
        );
        assert_eq!(shell_quote("plain-word"), "plain-word");
    }
}
