//! Before QEMU starts: the machine a run boots, checked against the kernel's
//! configuration (the preflight), entered through PVH where the kernel allows, with the
//! run's directory, results disk and shared directories (and their daemons) made ready.

use anyhow::{Context, Result};

use super::{host, results, wiring, Event, Mode, Outcome, RunDir, RunOptions, RunReport, Sink};
use crate::plan::{KernelEntry, Plan, RunConfig};
use crate::util::cache::Cache;
use crate::vm::kvm::{self, Accelerator};
use crate::vm::qemu::{self, Console, Disk, Launch, RunSpec, StatusChannel};
use crate::vm::share::{self, Share, Transport};
use crate::vm::virtiofsd::{Daemon, Virtiofsd};
use crate::vm::{launch, preflight, pvh};
use std::time::Duration;

/// The machine and run wiring for `plan` under `opts`, before anything is created:
/// for printing the command (`kiln qemu --print`) and for [`run`].
pub fn launch_for(plan: &Plan, opts: &RunOptions) -> Result<Launch> {
    let mut l = launch::launch(plan, &opts.config, opts.persist)?;
    l.pvh = pvh_entry(&l.kernel, opts.config.kernel_entry)?;
    Ok(l)
}

/// The vmlinux QEMU enters through PVH in place of `kernel`, as `entry` asks. A kernel
/// that is missing is left for [`launch::check_files`] to report.
fn pvh_entry(kernel: &std::path::Path, entry: KernelEntry) -> Result<Option<std::path::PathBuf>> {
    if entry == KernelEntry::Image || !kernel.is_file() {
        return Ok(None);
    }
    match pvh::vmlinux(kernel, &Cache::open()?)? {
        Ok(vmlinux) => Ok(Some(vmlinux)),
        Err(why) if entry == KernelEntry::Pvh => anyhow::bail!(
            "{} cannot be entered through PVH (kernel_entry = \"pvh\"): {why}; use kernel_entry \"auto\" or \"image\" (--kernel-entry)",
            kernel.display()
        ),
        Err(_) => Ok(None),
    }
}

/// The run spec of a run whose files are `files`.
pub fn spec(accel: Accelerator, files: &RunDir, mode: Mode) -> RunSpec {
    RunSpec {
        accel,
        console: match mode {
            Mode::Interactive => Console::Interactive,
            Mode::Test | Mode::Detached => Console::LogFile(files.console.clone()),
        },
        status: StatusChannel {
            uart: files.status_uart.clone(),
            virtio: files.status_virtio.clone(),
        },
    }
}

/// The vCPUs a run gets: under TCG one, unless the profile or `--cpus` asked for more.
/// Each TCG vCPU is a host thread and a guest boots no slower on one; and Debian's
/// kernels can oops while patching their code (int3 in `sched_clock_cpu`) on several
/// TCG vCPUs.
pub fn cpus_for(config: &RunConfig, accel: Accelerator) -> u32 {
    if accel == Accelerator::Tcg && !config.cpus_explicit {
        1
    } else {
        config.cpus
    }
}

/// Adds the results disk of a plan that asks for results.
pub fn attach_results(config: &RunConfig, l: &mut Launch, files: &RunDir) {
    if config.results.is_some() {
        l.disks
            .push(Disk::raw(files.results_img.clone(), results::SERIAL));
    }
}

/// A run whose QEMU is about to start: its machine, files and devices.
pub(super) struct Prepared {
    pub(super) launch: Launch,
    pub(super) files: RunDir,
    pub(super) accel: Accelerator,
    pub(super) facts: wiring::ImageFacts,
    /// The shared directories, each with the transport this kernel takes.
    pub(super) shares: Vec<Share>,
    /// The daemon of virtiofs shares, found by the preflight.
    pub(super) virtiofsd: Option<Virtiofsd>,
    /// Where virtiofs shares' daemons listen.
    pub(super) sockets: Option<tempfile::TempDir>,
}

impl Prepared {
    /// Starts a virtiofsd for each virtiofs share, before each QEMU start (a daemon
    /// serves one connection).
    pub(super) fn start_daemons(&self) -> Result<Vec<Daemon>> {
        let mut out = Vec::new();
        for s in self
            .shares
            .iter()
            .filter(|s| s.transport == Transport::VirtioFs)
        {
            let (Some(v), Some(dir)) = (&self.virtiofsd, &self.sockets) else {
                anyhow::bail!("a virtiofs share without its daemon");
            };
            let socket = dir.path().join(format!("{}.sock", s.tag));
            let _ = std::fs::remove_file(&socket);
            let log = self.files.dir.join(format!("virtiofsd-{}.log", s.tag));
            out.push(v.start(s, &socket, &log)?);
        }
        Ok(out)
    }
}

/// Checks the kernel against what the run needs and creates the run's files. Err(report):
/// the preflight failed and nothing is booted.
pub(super) fn prepare(
    plan: &Plan,
    opts: &RunOptions,
    sink: &mut dyn Sink,
) -> Result<std::result::Result<Prepared, RunReport>> {
    let mut l = launch_for(plan, opts)?;
    launch::check_files(&plan.profile, &l)?;
    let config = match preflight::find_config(&l.kernel) {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        ),
        // A kernel built with CONFIG_IKCONFIG carries its configuration inside.
        None => crate::vm::ikconfig::read(&l.kernel),
    };
    let kconfig = config.as_deref().map(preflight::KernelConfig::parse);
    let mut needs = preflight::needs(plan, &opts.config);
    let mut lacks = Vec::new();
    let vfs = std::cell::OnceCell::new();
    let mut transport = None;
    if !opts.config.shares.is_empty() || opts.config.host.is_some() {
        let daemon = || {
            vfs.get_or_init(Virtiofsd::find)
                .as_ref()
                .map(|_| ())
                .map_err(Clone::clone)
        };
        match share::choose(kconfig.as_ref(), opts.config.share_transport, &daemon) {
            Ok(t) => {
                // An initramfs loads what the kernel has as modules before its init
                // mounts anything.
                let module_ok = plan.format == crate::output::options::Format::Initramfs;
                needs.extend(share::needs(t).0.iter().map(|option| preflight::Need {
                    option,
                    module_ok,
                    why: "the shared host directories",
                }));
                l.cmdline.push(format!("kiln.fs={}", share::name(t)));
                transport = Some(t);
            }
            Err(e) => lacks.push(e),
        }
    }
    match &kconfig {
        Some(c) => lacks.extend(preflight::missing(c, &needs)),
        None => {
            sink.event(Event::Note(&format!(
                "no configuration found beside {} or inside it (CONFIG_IKCONFIG); booting without a preflight",
                l.kernel.display()
            )));
        }
    };
    if !lacks.is_empty() {
        let report = RunReport {
            outcome: Outcome::Preflight(lacks.join("; ")),
            guest: None,
            elapsed: Duration::ZERO,
            files: opts.run_dir(plan)?,
            hung_after_status: false,
            interactive: opts.mode == Mode::Interactive,
            cases: Vec::new(),
        };
        sink.event(Event::Finished(&report));
        return Ok(Err(report));
    }
    let choice = kvm::choose(opts.config.accel, &opts.config.qemu);
    if let Some(w) = &choice.warning {
        sink.event(Event::Warning(w));
    }
    let files = opts.run_dir(plan)?;
    qemu::text_paths(
        [l.kernel.as_path(), files.dir.as_path()]
            .into_iter()
            .chain(l.pvh.as_deref())
            .chain(l.initrd.as_deref())
            .chain(l.disks.iter().map(|d| d.path.as_path()))
            .chain(opts.config.shares.iter().map(|s| s.host.as_path())),
    )?;
    if opts.config.results.is_some() {
        results::prepare(
            &files.results_img,
            &plan.name,
            opts.config.results_size,
            plan.epoch,
        )?;
    }
    attach_results(&opts.config, &mut l, &files);
    l.cpus = cpus_for(&opts.config, choice.accel);
    let mut shares = opts.config.shares.clone();
    if let Some(h) = &opts.config.host {
        let dir = files.dir.join("host");
        host::write_files(&dir, h)?;
        shares.extend(host::shares(h, &dir));
    }
    for s in &mut shares {
        s.transport = transport.unwrap_or(Transport::NineP);
    }
    let virtiofs = shares.iter().any(|s| s.transport == Transport::VirtioFs);
    let sockets = if virtiofs {
        // A short path: a Unix socket's path is limited to 107 bytes.
        Some(
            tempfile::Builder::new()
                .prefix("kiln-vfs-")
                .tempdir()
                .context("creating virtiofsd's socket directory")?,
        )
    } else {
        None
    };
    let mut args = Vec::new();
    for s in &shares {
        let socket = sockets
            .as_ref()
            .map(|d| d.path().join(format!("{}.sock", s.tag)));
        args.extend(s.args(socket.as_deref()));
    }
    if virtiofs {
        args.extend(share::shared_memory_args(l.memory_mib << 20));
    }
    l.extra_args.splice(0..0, args);
    Ok(Ok(Prepared {
        facts: wiring::ImageFacts::read(plan),
        launch: l,
        files,
        accel: choice.accel,
        shares,
        virtiofsd: vfs.into_inner().and_then(|v| v.ok()),
        sockets,
    }))
}

/// The QEMU command of a prepared run with its devices wired, written into the run
/// directory as a script so the run can be repeated by hand.
pub(super) fn wired_command(
    plan: &Plan,
    opts: &RunOptions,
    p: &Prepared,
    attempt: u32,
) -> Result<(Vec<String>, wiring::Wiring)> {
    let mut l = p.launch.clone();
    let w = wiring::wire(plan, &opts.config, p.facts, &p.files, attempt, &mut l)?;
    let args = qemu::command(&l, &spec(p.accel, &p.files, opts.mode));
    let script = format!(
        "#!/bin/sh\n# The QEMU command of this run.\nexec {}",
        qemu::printable(&args)
    );
    let files = &p.files;
    std::fs::write(&files.qemu_sh, script)
        .and_then(|_| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&files.qemu_sh, std::fs::Permissions::from_mode(0o755))
        })
        .with_context(|| format!("writing {}", files.qemu_sh.display()))?;
    Ok((args, w))
}
