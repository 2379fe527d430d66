//! The layers after packages: system configuration, declared entries, the test and
//! kiln's generated files; then units are enabled, once every unit file is in place.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::configure::{self, ConfigureInput};
use crate::plan::Plan;
use crate::profile::{Format, LoadedProfile, Located, Test};
use crate::source::declared::{add_declared, DeclaredContext};
use crate::template::{self, Renderer};
use crate::tree::{Data, Entry, Kind, Meta, Tree};
use crate::util::progress;

/// Values templates see: the profile's [variables] at the top level, kiln's own under `kiln`.
pub fn template_data(lp: &LoadedProfile, plan: &Plan, modules: &[String]) -> Result<Value> {
    let mut data = serde_json::Map::new();
    for (k, v) in &lp.profile.variables {
        if k == "kiln" {
            bail!(
                "{}: [variables] cannot define `kiln`; that name holds kiln's own values",
                lp.path.display()
            );
        }
        data.insert(k.clone(), v.clone());
    }
    data.insert(
        "kiln".into(),
        json!({
            "name": plan.name,
            "format": match plan.format { Format::Initramfs => "initramfs", Format::Disk => "disk", Format::Tar => "tar" },
            "results": plan.results,
            "modules": modules,
            "source_date_epoch": plan.epoch,
        }),
    );
    Ok(Value::Object(data))
}

/// Adds the layers after packages. `units` are those packages and kiln enable.
pub fn assemble(
    tree: &mut Tree,
    lp: &LoadedProfile,
    plan: &Plan,
    renderer: &Renderer,
    data: &Value,
    units: Vec<String>,
) -> Result<()> {
    let p = &lp.profile;
    let input = ConfigureInput {
        system: &p.system,
        name: &plan.name,
        units,
        epoch: plan.epoch,
    };
    configure::configure(tree, &input)?;
    let cx = DeclaredContext {
        mtime: plan.epoch,
        renderer,
        data,
    };
    add_declared(tree, p, &cx)?;
    if let Some(test) = &p.test {
        add_test(tree, lp, plan, renderer, data, test)?;
    }
    configure::enable_units(tree, &input)?;
    if plan.format == Format::Initramfs && !tree.contains("init") {
        bail!(
            "{}: the initramfs has no /init; add a [test] (kiln then generates /init) or a [[file]] with path = \"/init\"",
            lp.path.display()
        );
    }
    Ok(())
}

fn exe(data: Data, mtime: i64) -> Entry {
    Entry::new(Kind::File(data), Meta::new(0o755, mtime))
}

/// The test's script, kiln's wrapper around it, and what starts the wrapper: /init in
/// an initramfs, a systemd unit in a disk or tar.
fn add_test(
    tree: &mut Tree,
    lp: &LoadedProfile,
    plan: &Plan,
    renderer: &Renderer,
    data: &Value,
    test: &Located<Test>,
) -> Result<()> {
    let body = match (&test.command, &test.script) {
        (Some(cmd), _) => Data::bytes(format!(
            "#!/bin/sh\n# The [test] command of profile \"{}\".\n{cmd}\n",
            plan.name
        )),
        (None, Some(script)) => {
            let md = std::fs::metadata(script as &Path)
                .with_context(|| format!("reading test script {}", script.display()))?;
            Data::Host {
                path: script.0.clone(),
                size: md.len(),
            }
        }
        (None, None) => bail!("{}: [test] needs `command` or `script`", lp.path.display()),
    };
    tree.insert("usr/lib/kiln/test", exe(body, plan.epoch))?;
    let wrapper = renderer.render("run-test (built in)", template::TEST_WRAPPER, data)?;
    tree.insert(
        "usr/lib/kiln/run-test",
        exe(Data::bytes(wrapper), plan.epoch),
    )?;
    match plan.format {
        Format::Initramfs => {
            if tree.contains("init") {
                progress::step("the profile provides /init; kiln's generated /init is not used");
            } else {
                let init = renderer.render("init (built in)", template::INITRAMFS_INIT, data)?;
                tree.insert("init", exe(Data::bytes(init), plan.epoch))?;
            }
        }
        // A tar is a root file system for someone else to boot: it gets the unit too.
        Format::Disk | Format::Tar => {
            let unit =
                renderer.render("kiln-test.service (built in)", template::TEST_UNIT, data)?;
            tree.insert(
                "usr/lib/systemd/system/kiln-test.service",
                Entry::new(Kind::File(Data::bytes(unit)), Meta::new(0o644, plan.epoch)),
            )?;
        }
    }
    Ok(())
}
