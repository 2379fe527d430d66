//! The layers after packages: system configuration, declared entries, the test and
//! kiln's generated files; then units are enabled, once every unit file is in place.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::configure::{self, ConfigureInput};
use crate::plan::Plan;
use crate::profile::{Format, LoadedProfile, Located, Test};
use crate::source::declared::{add_declared, DeclaredContext};
use crate::source::overlay::{Known, Seen};
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
            "tests": plan.tests.iter().zip(p_tests(lp)).map(|(t, unit)| json!({
                "name": t.name,
                "results": t.results,
                "unit": unit,
            })).collect::<Vec<_>>(),
            "results": plan.tests.first().and_then(|t| t.results.as_deref()),
            "first_test": plan.tests.first().map(|t| t.name.as_str()).unwrap_or(""),
            "modules": modules,
            "source_date_epoch": plan.epoch,
        }),
    );
    Ok(Value::Object(data))
}

/// Each test's unit, in the plan's order.
fn p_tests(lp: &LoadedProfile) -> Vec<Option<String>> {
    lp.profile.tests().iter().map(|t| t.unit.clone()).collect()
}

/// Adds the layers after packages. `units` are those packages and kiln enable; `known`
/// gives the content digests of unchanged overlay files. Returns what the overlays'
/// walks read of the host, for the build's record.
pub fn assemble(
    tree: &mut Tree,
    lp: &LoadedProfile,
    plan: &Plan,
    renderer: &Renderer,
    data: &Value,
    units: Vec<String>,
    known: &Known<'_>,
) -> Result<Vec<Seen>> {
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
        known,
    };
    let mut seen = Vec::new();
    add_declared(tree, p, &cx, &mut seen)?;
    if plan.run.host.is_some() {
        // The profile's own files and packages: laid over the host's root by the guest.
        if !tree.is_empty() {
            let own = std::mem::replace(tree, Tree::new(plan.epoch));
            *tree = own.moved_under(HOST_LAYER);
        }
        add_host_boot(tree, plan)?;
    }
    let tests = p.tests();
    for (t, tp) in tests.iter().zip(&plan.tests) {
        add_test_body(tree, lp, plan, &tp.name, t)?;
    }
    if !tests.is_empty() {
        add_runner(tree, plan, renderer, data)?;
    }
    let network = configure::access::network_on(p.network.mode, configure::access::has_sshd(tree));
    let systemd = configure::has_systemd(tree);
    let mut access = configure::access::guest_side(tree, network, systemd, plan.epoch)?;
    if systemd {
        access.extend(configure::access::journal_unit(tree, plan.epoch)?);
    }
    if plan.format == Format::Initramfs && !tree.contains("init") {
        if !tree.contains("bin/sh") && !tree.contains("usr/bin/sh") {
            bail!(
                "{}: the initramfs has no /init, and no /bin/sh for the one kiln generates; add busybox (a [[binary]] or a package) with a /bin/sh link, or a [[file]] with path = \"/init\"",
                lp.path.display()
            );
        }
        let mut data = data.clone();
        data["kiln"]["network"] = Value::Bool(network);
        let init = renderer.render("init (built in)", template::INITRAMFS_INIT, &data)?;
        tree.insert("init", exe(Data::bytes(init), plan.epoch))?;
    }
    let mut input = input;
    input.units.extend(access);
    configure::enable_units(tree, &input)?;
    Ok(seen)
}

/// Where an image of the host's userspace keeps kiln's host init.
const HOST_INIT: &str = "/usr/lib/kiln/host-init";

/// Where it keeps the profile's own entries, which its init lays over the host's root.
const HOST_LAYER: &str = "usr/lib/kiln/layer";

/// What boots into the host's userspace: a static busybox from the host (its shell runs
/// kiln's init and mounts the shares) and kiln's host init.
fn add_host_boot(tree: &mut Tree, plan: &Plan) -> Result<()> {
    {
        let busybox = crate::source::elf::which("busybox").context(
            "a [host] image boots with the host's busybox, and there is none in $PATH (Debian: apt install busybox-static)",
        )?;
        for f in crate::source::elf::closure(&busybox)? {
            let md = std::fs::metadata(&f).with_context(|| format!("reading {}", f.display()))?;
            let dest = if f == busybox {
                "bin/busybox".to_string()
            } else {
                f.to_string_lossy().trim_start_matches('/').to_string()
            };
            let data = Data::host(f.clone(), md.len());
            tree.insert(&dest, exe(data, plan.epoch))?;
        }
    }
    tree.insert(
        "bin/sh",
        Entry::new(
            Kind::Symlink("busybox".into()),
            Meta::new(0o777, plan.epoch),
        ),
    )?;
    tree.insert(
        HOST_INIT.trim_start_matches('/'),
        exe(Data::bytes(template::HOST_INIT), plan.epoch),
    )?;
    Ok(())
}

fn exe(data: Data, mtime: i64) -> Entry {
    Entry::new(Kind::File(data), Meta::new(0o755, mtime))
}

/// A test's command or script at `/usr/lib/kiln/tests/NAME`; a unit test has none.
fn add_test_body(
    tree: &mut Tree,
    lp: &LoadedProfile,
    plan: &Plan,
    name: &str,
    test: &Located<Test>,
) -> Result<()> {
    let body = match (&test.command, &test.script, &test.unit) {
        // Run on the host's root by kiln's host init (unless the run gives a command).
        (Some(cmd), _, _) if plan.run.host.is_some() => Data::bytes(format!(
            "#!/bin/sh\n# The test \"{name}\" of profile \"{}\", on the host's userspace.\nexec {HOST_INIT} /bin/sh -c {}\n",
            plan.name,
            crate::util::shell::shell_quote(cmd)
        )),
        (Some(cmd), _, _) => Data::bytes(format!(
            "#!/bin/sh\n# The test \"{name}\" of profile \"{}\".\n{cmd}\n",
            plan.name
        )),
        (None, Some(script), _) => {
            let md = std::fs::metadata(script as &Path)
                .with_context(|| format!("reading test script {}", script.display()))?;
            Data::host(script.0.clone(), md.len())
        }
        (None, None, Some(_)) => return Ok(()),
        (None, None, None) => bail!(
            "{}: test `{name}` needs `command`, `script` or `unit`",
            lp.path.display()
        ),
    };
    tree.insert(&format!("usr/lib/kiln/tests/{name}"), exe(body, plan.epoch))?;
    Ok(())
}

/// kiln's wrapper, which picks the test the kernel command line names, and what starts
/// it: /init in an initramfs, a systemd unit in a disk or tar.
fn add_runner(tree: &mut Tree, plan: &Plan, renderer: &Renderer, data: &Value) -> Result<()> {
    let wrapper = renderer.render("run-test (built in)", template::TEST_WRAPPER, data)?;
    tree.insert(
        "usr/lib/kiln/run-test",
        exe(Data::bytes(wrapper), plan.epoch),
    )?;
    match plan.format {
        // The generated /init (see `assemble`) starts the wrapper.
        Format::Initramfs => {
            if tree.contains("init") {
                progress::step("the profile provides /init; kiln's generated /init is not used");
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
