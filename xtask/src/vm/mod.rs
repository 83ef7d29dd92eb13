//! `cargo xtask vm`: boot a pinned Debian kernel (or your own) in QEMU with
//! emulated persistent memory and a DAX filesystem, and run a command in it.
//! See docs/vm.md for usage and design.
//!
//! The pipeline, for each kernel:
//!  1. `kernels`: download the pinned packages (isolated apt, SHA-256
//!     checked), unpack the image and the modules the guest may load (cached).
//!  2. `guest`: write an initramfs (`newc`) with busybox, the init script,
//!     refscope's binaries, mkfs tools, modules and this boot's settings.
//!  3. `qemu`: boot it with the command's output, the kernel console and a
//!     control channel on separate ports; scan the console (`console`) and
//!     kill the guest on timeout or after a fatal splat's grace period.
//!  4. Turn what happened into a [`VmOutcome`]; the CLI turns that into an
//!     exit status, other xtask code (the guest tests) inspects it.

mod apt;
mod console;
mod guest;
pub mod guest_tests;
mod hardening;
mod kernels;
mod modules;
mod newc;
mod qemu;
mod tools;

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
pub use console::{Incident, IncidentKind};
use kernels::{Kernel, KernelList};
pub use qemu::Accel;
use qemu::{Control, Launch, MEMMAP_OFFSET_MIB, Watch};

use crate::{
    build,
    util::{self, note, step},
};

/// Filesystem made on the pmem device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Fs {
    #[default]
    Ext4,
    Xfs,
}

/// Namespace (and with it the largest page-table entry) alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Align {
    /// 4 KiB pages only.
    #[default]
    #[value(name = "4k")]
    K4,
    /// 2 MiB: DAX mappings can use PMDs.
    #[value(name = "2m")]
    M2,
    /// 1 GiB: device-dax can map PUDs (needs --mode devdax, and more than
    /// 2 GiB of pmem: the pfn info block takes the first GiB).
    #[value(name = "1g")]
    G1,
}

/// How the guest gets persistent memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum PmemKind {
    /// `memmap=SIZE!OFFSET` on the kernel command line (nd_e820).
    #[default]
    Memmap,
    /// A QEMU `-device nvdimm` described by an ACPI NFIT (nfit).
    Nvdimm,
}

/// What the namespace becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum NsMode {
    /// A pmem block device with a DAX filesystem at /mnt/dax.
    #[default]
    Fsdax,
    /// A device-dax character device, /dev/daxX.Y (no filesystem).
    Devdax,
}

/// Where the namespace's `struct page` array lives (pfn/dax `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum MemmapOn {
    /// On the device itself.
    #[default]
    Pmem,
    /// In ordinary RAM.
    Ram,
}

/// Which accelerator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum AccelChoice {
    /// KVM if a probe boot under KVM succeeds on this host (cached), else TCG.
    #[default]
    Auto,
    Tcg,
    Kvm,
}

/// Which kernel to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelChoice {
    /// A tag from xtask/kernels.json.
    Pinned(String),
    /// Your own bzImage and, optionally, its `lib/modules/<release>`.
    Custom {
        image: PathBuf,
        modules: Option<PathBuf>,
    },
}

/// One guest boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: KernelChoice,
    pub fs: Fs,
    pub align: Align,
    pub pmem: PmemKind,
    pub mode: NsMode,
    pub memmap_on: MemmapOn,
    pub pmem_mib: u64,
    pub memory_mib: u64,
    pub cpus: u32,
    /// QEMU CPU model; default `max,la57=off` (TCG) or `host` (KVM).
    pub cpu: Option<String>,
    /// Host directory mounted read-write at /share.
    pub share: Option<PathBuf>,
    /// The command; `None` starts a shell on the console.
    pub command: Option<Vec<String>>,
    /// Run the command on the console, attached to our terminal like the
    /// shell (for TUIs), instead of on separate channels. The outcome then
    /// has no exit status, incidents or boot time.
    pub tty: bool,
    /// Executables installed as `/bin/<file name>`.
    pub binaries: Vec<PathBuf>,
    /// Wall-clock limit for the whole run, boot included.
    pub timeout: Duration,
    /// How long a guest may go on after a panic, oops, stall or lockup
    /// before it is killed.
    pub grace: Duration,
    pub accel: AccelChoice,
    /// Extra kernel command-line parameters.
    pub append: Vec<String>,
    /// Copy the command's output to ours while it runs.
    pub echo_output: bool,
    /// Copy the kernel console to our stderr while it runs.
    pub echo_console: bool,
}

impl VmConfig {
    /// The defaults of `cargo xtask vm`.
    pub fn new(kernel: KernelChoice, command: Option<Vec<String>>) -> Self {
        Self {
            kernel,
            fs: Fs::default(),
            align: Align::default(),
            pmem: PmemKind::default(),
            mode: NsMode::default(),
            memmap_on: MemmapOn::default(),
            pmem_mib: 512,
            memory_mib: 2048,
            cpus: 2,
            cpu: None,
            share: None,
            command,
            tty: false,
            binaries: Vec::new(),
            timeout: Duration::from_secs(300),
            grace: Duration::from_secs(5),
            accel: AccelChoice::default(),
            append: Vec::new(),
            echo_output: true,
            echo_console: false,
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.pmem_mib < 16 || !self.pmem_mib.is_multiple_of(2) {
            bail!("--pmem-size must be an even number of MiB, at least 16");
        }
        if self.pmem == PmemKind::Memmap && self.memory_mib < MEMMAP_OFFSET_MIB + self.pmem_mib {
            bail!(
                "--memory {} is too small: the memmap= region sits at {MEMMAP_OFFSET_MIB} MiB and is {} MiB, \
                 so --memory must be at least {}",
                self.memory_mib,
                self.pmem_mib,
                MEMMAP_OFFSET_MIB + self.pmem_mib
            );
        }
        if self.cpus == 0 {
            bail!("--cpus must be at least 1");
        }
        if let Some(dir) = &self.share
            && !dir.is_dir()
        {
            bail!("--share {}: not a directory", dir.display());
        }
        if self.command.as_ref().is_some_and(Vec::is_empty) {
            bail!("empty command after --");
        }
        Ok(())
    }
}

/// What happened in one boot.
#[derive(Debug, Clone, Default)]
pub struct VmOutcome {
    /// Kernel label (`6.12`, or the image's file name).
    pub kernel: String,
    pub accel: &'static str,
    /// The command's exit status, if it finished.
    pub exit_status: Option<i32>,
    /// Why the guest could not set up (modules, namespace, mkfs, mount...).
    pub setup_error: Option<String>,
    /// Splats seen on the console (plus one if the taint flags show a WARN
    /// or oops the console missed).
    pub incidents: Vec<Incident>,
    /// `/proc/sys/kernel/tainted` after the command.
    pub taint: Option<u64>,
    /// Host seconds from starting QEMU to the command's start.
    pub boot_secs: Option<f64>,
    /// The guest's uptime when the command started.
    pub guest_uptime_secs: Option<f64>,
    pub total_secs: f64,
    pub timed_out: bool,
    /// Killed by the watchdog after a fatal incident's grace period.
    pub killed: bool,
    /// The kernel console, whole.
    pub console: String,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// QEMU's own messages, its exit status and its fatal error if it had one.
    pub qemu_output: String,
    pub qemu_status: Option<i32>,
    pub qemu_fatal: Option<String>,
}

const TAINT_DIE: u64 = 1 << 7;
const TAINT_WARN: u64 = 1 << 9;

impl VmOutcome {
    pub fn has(&self, kind: IncidentKind) -> bool {
        self.incidents.iter().any(|i| i.kind == kind)
    }

    /// Why `incident` does not count against the run: a known emulator
    /// artifact while running under TCG.
    pub fn ignored_artifact(&self, incident: &Incident) -> Option<&'static str> {
        if self.accel == Accel::Tcg.name() {
            incident.tcg_artifact()
        } else {
            None
        }
    }

    /// Incidents that count (known TCG artifacts under TCG do not).
    pub fn real_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents
            .iter()
            .filter(|i| self.ignored_artifact(i).is_none())
    }

    /// Pass or fail, with the reason. With `expect_oops`, an oops is the
    /// expected result and the command's status does not matter.
    pub fn verdict(&self, expect_oops: bool) -> Result<(), String> {
        if let Some(e) = &self.qemu_fatal {
            return Err(format!("QEMU failed: {e}"));
        }
        if let Some(e) = &self.setup_error {
            return Err(format!("guest setup failed: {e}"));
        }
        if expect_oops {
            return if self.has(IncidentKind::Oops) {
                Ok(())
            } else {
                Err(format!(
                    "expected a kernel oops, none happened ({})",
                    self.end_summary()
                ))
            };
        }
        let problems: Vec<String> = self
            .real_incidents()
            .map(|i| format!("{}: {}", i.kind, i.headline()))
            .collect();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        match self.exit_status {
            Some(0) if !self.timed_out => Ok(()),
            _ => Err(self.end_summary()),
        }
    }

    /// How the run ended, in words.
    fn end_summary(&self) -> String {
        if self.timed_out {
            return format!("timed out after {:.0} s", self.total_secs);
        }
        match self.exit_status {
            Some(0) => "the command exited with status 0".into(),
            Some(n) => format!("the command exited with status {n}"),
            None if self.killed => "the guest was killed after the grace period".into(),
            None if self.console.trim().is_empty() => format!(
                "QEMU exited ({}) before the guest booted",
                self.qemu_status
                    .map_or("killed".into(), |c| format!("status {c}"))
            ),
            None => "the guest stopped before the command finished".into(),
        }
    }

    /// The exit status `cargo xtask vm` should have for this outcome.
    pub fn exit_code(&self, expect_oops: bool) -> u8 {
        match (self.verdict(expect_oops), self.exit_status) {
            (Ok(()), _) => 0,
            (Err(_), Some(n)) if !expect_oops && (1..=255).contains(&n) => n as u8,
            _ => 1,
        }
    }

    /// The last `n` console lines.
    pub fn console_tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// What to show when the run failed: each splat in full, else the
    /// console's tail.
    pub fn failure_report(&self, expect_oops: bool) -> String {
        let mut text = String::new();
        let reason = self.verdict(expect_oops).err().unwrap_or_default();
        let _ = writeln!(text, "{}: FAILED: {reason}", self.kernel);
        for i in &self.incidents {
            match self.ignored_artifact(i) {
                Some(why) => {
                    let _ = writeln!(text, "--- {} (ignored: {why}) ---\n{}", i.kind, i.text);
                }
                None => {
                    let _ = writeln!(text, "--- {} ---\n{}", i.kind, i.text);
                }
            }
        }
        // The console's tail explains a setup failure, a hang or a guest
        // that died quietly; a command that merely failed needs none.
        let quiet_death = self.incidents.is_empty() && self.exit_status.is_none();
        if (self.setup_error.is_some() || self.timed_out || quiet_death)
            && !self.console.trim().is_empty()
        {
            let _ = writeln!(
                text,
                "--- last console lines ---\n{}",
                self.console_tail(40)
            );
        }
        if !self.qemu_output.trim().is_empty() {
            let _ = writeln!(text, "--- QEMU ---\n{}", self.qemu_output.trim_end());
        }
        text
    }
}

/// Boot one guest and run its command (or shell). The kernel is fetched on
/// first use.
pub fn run(cfg: &VmConfig) -> anyhow::Result<VmOutcome> {
    cfg.validate()?;
    let kernel = resolve_kernel(&cfg.kernel)?;
    let accel = resolve_accel(cfg.accel)?;
    let first = boot(cfg, &kernel, accel)?;
    match first.tcg_artifact_crash(accel) {
        Some(why) => {
            // Under TCG live code patching very rarely wedges or crashes the
            // guest: an int3 hit in enqueue_timer while the kernel patched
            // its own text during boot (2 of 9 runs of one test), a CPU
            // stuck on an ftrace call site while a tracer attached to it.
            // Boot once more, and say so; a second crash is reported as it is.
            note(format!(
                "{}: {why}; under TCG this is an emulation artifact of live code patching: \
                 booting once more",
                first.kernel
            ));
            boot(cfg, &kernel, accel)
        }
        None => Ok(first),
    }
}

impl VmOutcome {
    /// Why this run ended in a known artifact of TCG's live code patching,
    /// if it did: a crash before the command started, or a CPU stuck on an
    /// ftrace call site ([`Incident::stuck_at_call_site`]).
    fn tcg_artifact_crash(&self, accel: Accel) -> Option<String> {
        if let Some(headline) = self.crashed_before_command(accel) {
            return Some(format!(
                "the guest kernel crashed while booting, before the command ran ({headline})"
            ));
        }
        if accel != Accel::Tcg {
            return None;
        }
        self.incidents.iter().find_map(|i| {
            i.stuck_at_call_site().map(|f| {
                format!(
                    "live code patching tripped a CPU on the ftrace call site of {f} ({})",
                    i.headline()
                )
            })
        })
    }

    /// The headline of a fatal incident that happened under TCG before the
    /// guest command started (and before any setup step reported), if any.
    fn crashed_before_command(&self, accel: Accel) -> Option<String> {
        if accel != Accel::Tcg || self.boot_secs.is_some() || self.setup_error.is_some() {
            return None;
        }
        self.incidents
            .iter()
            .find(|i| matches!(i.kind, IncidentKind::Panic | IncidentKind::Oops))
            .map(|i| i.headline().to_owned())
    }
}

fn resolve_kernel(choice: &KernelChoice) -> anyhow::Result<Kernel> {
    match choice {
        KernelChoice::Pinned(tag) => {
            let list = KernelList::load()?;
            let spec = list.get(tag)?;
            kernels::pinned(&list, spec)
        }
        KernelChoice::Custom { image, modules } => kernels::custom(image, modules.as_deref()),
    }
}

static RUN_SEQ: AtomicU32 = AtomicU32::new(0);

fn boot(cfg: &VmConfig, kernel: &Kernel, accel: Accel) -> anyhow::Result<VmOutcome> {
    let interactive = cfg.command.is_none() || cfg.tty;
    // The modules this boot needs, in order.
    let wanted = guest::wanted_modules(cfg);
    let load = match &kernel.modules {
        Some(m) => {
            let order = m.index.load_order(&wanted);
            if !order.missing.is_empty() {
                bail!(
                    "kernel {} has neither a module nor a built-in for: {} (its modules are in {})",
                    kernel.label,
                    order.missing.join(", "),
                    m.dir.display()
                );
            }
            order.order
        }
        None => {
            note(format!(
                "kernel {}: no modules directory given; assuming {} are built in",
                kernel.label,
                wanted.join(", ")
            ));
            Vec::new()
        }
    };

    // A short directory for the sockets (unix socket paths are limited to
    // 108 bytes) and the initramfs; removed afterwards.
    let run_dir = std::env::temp_dir().join(format!(
        "refscope-vm-{}-{}",
        std::process::id(),
        RUN_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    remove_stale_run_dirs();
    fs::create_dir_all(&run_dir)
        .with_context(|| format!("failed to create {}", run_dir.display()))?;
    let _cleanup = RemoveOnDrop(run_dir.clone());
    if run_dir.join("console.sock").as_os_str().len() > 100 {
        bail!(
            "the temporary directory path {} is too long for unix sockets; set TMPDIR to a shorter one",
            run_dir.display()
        );
    }
    let mut binaries = strip_debug(&cfg.binaries, &run_dir)?;
    binaries.extend(tools::all()?);
    let initramfs = run_dir.join("initramfs.cpio");
    guest::write_initramfs(
        &guest::Contents {
            kernel,
            load: &load,
            conf: guest::vm_conf(cfg, kernel, interactive),
            command: cfg.command.as_deref().map(guest::command_script),
            binaries: &binaries,
        },
        &initramfs,
    )?;
    let launch = Launch {
        cfg,
        image: &kernel.image,
        initramfs: &initramfs,
        run_dir: &run_dir,
        accel,
        interactive,
    };
    if interactive {
        let started = Instant::now();
        let status = qemu::run_interactive(&launch)?;
        return Ok(VmOutcome {
            kernel: kernel.label.clone(),
            accel: accel.name(),
            exit_status: status.code(),
            total_secs: started.elapsed().as_secs_f64(),
            ..VmOutcome::default()
        });
    }
    let raw = qemu::run_batch(
        &launch,
        &Watch {
            timeout: cfg.timeout,
            grace: cfg.grace,
            echo_output: cfg.echo_output,
            echo_console: cfg.echo_console,
        },
    )?;
    Ok(outcome(kernel, accel, raw))
}

fn outcome(kernel: &Kernel, accel: Accel, raw: qemu::RawRun) -> VmOutcome {
    let mut out = VmOutcome {
        kernel: kernel.label.clone(),
        accel: accel.name(),
        total_secs: raw.elapsed.as_secs_f64(),
        timed_out: raw.timed_out,
        killed: raw.killed_after_grace,
        console: raw.console,
        incidents: raw.incidents,
        stdout: raw.stdout,
        stderr: raw.stderr,
        qemu_output: raw.qemu_output,
        qemu_status: raw.qemu_status.and_then(|s| s.code()),
        qemu_fatal: raw.qemu_fatal,
        ..VmOutcome::default()
    };
    for (at, msg) in raw.control {
        match msg {
            Control::Start(uptime) => {
                out.boot_secs = Some(at.as_secs_f64());
                out.guest_uptime_secs = Some(uptime);
            }
            Control::Taint(t) => out.taint = Some(t),
            Control::Exit(n) => out.exit_status = Some(n),
            Control::Error(e) => out.setup_error = Some(e),
        }
    }
    // The taint flags catch what the console may have lost.
    if let Some(t) = out.taint {
        if t & TAINT_WARN != 0 && !out.has(IncidentKind::Warn) {
            out.incidents.push(Incident {
                kind: IncidentKind::Warn,
                text: format!("the kernel is tainted W ({t}): a WARN fired but its splat was not on the console"),
            });
        }
        if t & TAINT_DIE != 0 && !out.has(IncidentKind::Oops) && !out.has(IncidentKind::Panic) {
            out.incidents.push(Incident {
                kind: IncidentKind::Oops,
                text: format!(
                    "the kernel is tainted D ({t}): it oopsed but the oops was not on the console"
                ),
            });
        }
    }
    out
}

/// Copies of `binaries` without DWARF (symbols stay, for backtraces): the
/// guest does not need it, and a smaller initramfs boots faster (refscope
/// with debug info is ~80 MB, ~14 MB without).
fn strip_debug(binaries: &[PathBuf], run_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if binaries.is_empty() {
        return Ok(Vec::new());
    }
    if !util::have("objcopy") {
        note(
            "objcopy (binutils) is missing: the guest gets binaries with their debug info (slower boot)",
        );
        return Ok(binaries.to_vec());
    }
    let dir = run_dir.join("bin");
    fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    binaries
        .iter()
        .map(|bin| {
            let name = bin
                .file_name()
                .with_context(|| format!("{} has no file name", bin.display()))?;
            let out = dir.join(name);
            util::output(
                Command::new("objcopy")
                    .arg("--strip-debug")
                    .arg(bin)
                    .arg(&out),
            )
            .with_context(|| format!("failed to strip {}", bin.display()))?;
            Ok(out)
        })
        .collect()
}

/// Run directories of xtask processes that are gone (killed with Ctrl-C
/// before they could clean up).
fn remove_stale_run_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("refscope-vm-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        let ours = pid == std::process::id().to_string();
        if !ours && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// TCG unless KVM is asked for, or `auto` and a KVM probe boot works here.
fn resolve_accel(choice: AccelChoice) -> anyhow::Result<Accel> {
    match choice {
        AccelChoice::Tcg => Ok(Accel::Tcg),
        AccelChoice::Kvm => {
            if !kvm_device_usable() {
                bail!("--accel kvm: /dev/kvm is missing or not readable and writable by this user");
            }
            Ok(Accel::Kvm)
        }
        AccelChoice::Auto => {
            if !kvm_device_usable() {
                return Ok(Accel::Tcg);
            }
            Ok(if kvm_probe()? { Accel::Kvm } else { Accel::Tcg })
        }
    }
}

fn kvm_device_usable() -> bool {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Boot the default kernel under KVM once and remember whether it worked,
/// per host kernel and QEMU version. (Nested KVM can exist and still fail
/// mid-boot with "KVM internal error", as on the machines this was built on.)
fn kvm_probe() -> anyhow::Result<bool> {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Probe {
        key: String,
        kvm_works: bool,
    }
    let host = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let qemu =
        util::stdout_of(Command::new("qemu-system-x86_64").arg("--version")).unwrap_or_default();
    let key = format!(
        "{}|{}",
        host.trim(),
        qemu.lines().next().unwrap_or_default()
    );
    let path = util::cache_dir()?.join("vm/kvm-probe.json");
    if let Some(p) = fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<Probe>(&t).ok())
        .filter(|p| p.key == key)
    {
        return Ok(p.kvm_works);
    }
    step("probing whether KVM works here (once per host kernel and QEMU version)");
    let list = KernelList::load()?;
    let mut cfg = VmConfig::new(
        KernelChoice::Pinned(list.default.clone()),
        Some(vec!["true".into()]),
    );
    cfg.timeout = Duration::from_secs(60);
    cfg.grace = Duration::from_secs(1);
    cfg.echo_output = false;
    let kernel = resolve_kernel(&cfg.kernel)?;
    let kvm_works = match boot(&cfg, &kernel, Accel::Kvm) {
        Ok(o) => o.verdict(false).is_ok(),
        Err(_) => false,
    };
    note(if kvm_works {
        "KVM works: using it"
    } else {
        "KVM does not work here: using TCG (emulation; --accel kvm forces KVM)"
    });
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&path, serde_json::to_string(&Probe { key, kvm_works })?)?;
    Ok(kvm_works)
}

// --- the command line --------------------------------------------------------

#[derive(Debug, Parser)]
pub struct Options {
    /// Kernel: a pinned tag (6.1, 6.12, 7.3; default 6.12), `all`, or the
    /// path of your own bzImage.
    #[arg(long, value_name = "TAG|all|PATH")]
    pub kernel: Option<String>,
    /// With --kernel PATH: its modules directory (.../lib/modules/RELEASE,
    /// with modules.dep).
    #[arg(long, value_name = "DIR")]
    pub modules: Option<PathBuf>,
    /// Filesystem on the pmem device.
    #[arg(long, value_enum, default_value_t)]
    pub fs: Fs,
    /// Namespace alignment: 2m lets DAX map 2 MiB pages (PMDs).
    #[arg(long, value_enum, default_value_t)]
    pub align: Align,
    /// How persistent memory is presented to the guest.
    #[arg(long, value_enum, default_value_t)]
    pub pmem: PmemKind,
    /// fsdax: filesystem at /mnt/dax; devdax: /dev/daxX.Y, no filesystem.
    #[arg(long, value_enum, default_value_t)]
    pub mode: NsMode,
    /// Where the namespace's struct pages live.
    #[arg(long, value_enum, default_value_t)]
    pub memmap_on: MemmapOn,
    /// Size of the persistent memory, MiB.
    #[arg(long, value_name = "MiB", default_value_t = 512)]
    pub pmem_size: u64,
    /// Host directory to mount read-write at /share in the guest.
    #[arg(long, value_name = "DIR")]
    pub share: Option<PathBuf>,
    /// Guest RAM, MiB (the memmap= region is carved out of it).
    #[arg(long, value_name = "MiB", default_value_t = 2048)]
    pub memory: u64,
    /// Guest CPUs.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub cpus: u32,
    /// QEMU CPU model (default: max,la57=off under TCG, host under KVM).
    #[arg(long, value_name = "MODEL")]
    pub cpu: Option<String>,
    /// Give up (and fail) after this many seconds, boot included.
    #[arg(long, value_name = "S", default_value_t = 300)]
    pub timeout: u64,
    /// Seconds a guest may go on after a panic/oops/stall before it is killed.
    #[arg(long, value_name = "S", default_value_t = 5)]
    pub grace: u64,
    /// Accelerator: auto uses KVM only if a probe boot works (cached).
    #[arg(long, value_enum, default_value_t)]
    pub accel: AccelChoice,
    /// Extra kernel command-line parameter (repeatable).
    #[arg(long, value_name = "PARAM")]
    pub append: Vec<String>,
    /// A kernel oops is the expected outcome: pass if one happens.
    #[arg(long)]
    pub expect_oops: bool,
    /// Show the kernel console while the guest runs (on stderr).
    #[arg(long)]
    pub console: bool,
    /// Do not build refscope and the workload first; use what the target
    /// directory has.
    #[arg(long)]
    pub no_build: bool,
    /// The command to run in the guest; none starts a shell on the console.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `cargo xtask vm`.
pub fn run_cli(opts: &Options) -> anyhow::Result<ExitCode> {
    let list = KernelList::load()?;
    let kernel_arg = opts.kernel.clone().unwrap_or_else(|| list.default.clone());
    let choices: Vec<KernelChoice> = if kernel_arg == "all" {
        list.tags()
            .into_iter()
            .map(|t| KernelChoice::Pinned(t.to_owned()))
            .collect()
    } else if list.get(&kernel_arg).is_ok() {
        vec![KernelChoice::Pinned(kernel_arg.clone())]
    } else if kernel_arg.contains('/') || Path::new(&kernel_arg).is_file() {
        vec![KernelChoice::Custom {
            image: PathBuf::from(&kernel_arg),
            modules: opts.modules.clone(),
        }]
    } else {
        // Let the list explain what exists.
        list.get(&kernel_arg)?;
        unreachable!("an unknown tag is an error");
    };
    if opts.modules.is_some() && !matches!(choices.as_slice(), [KernelChoice::Custom { .. }]) {
        bail!("--modules goes with --kernel PATH (pinned kernels bring their own modules)");
    }
    let command = (!opts.command.is_empty()).then(|| opts.command.clone());
    if command.is_none() && choices.len() > 1 {
        bail!("--kernel all needs a command (`-- CMD`); the interactive shell boots one kernel");
    }

    let binaries = guest_binaries(opts.no_build)?;
    let mut results = Vec::new();
    for kernel in choices {
        let cfg = VmConfig {
            fs: opts.fs,
            align: opts.align,
            pmem: opts.pmem,
            mode: opts.mode,
            memmap_on: opts.memmap_on,
            pmem_mib: opts.pmem_size,
            memory_mib: opts.memory,
            cpus: opts.cpus,
            cpu: opts.cpu.clone(),
            share: opts
                .share
                .as_ref()
                .map(|d| d.canonicalize().unwrap_or_else(|_| d.clone())),
            binaries: binaries.clone(),
            timeout: Duration::from_secs(opts.timeout),
            grace: Duration::from_secs(opts.grace),
            accel: opts.accel,
            append: opts.append.clone(),
            echo_console: opts.console,
            ..VmConfig::new(kernel.clone(), command.clone())
        };
        let label = match &kernel {
            KernelChoice::Pinned(t) => t.clone(),
            KernelChoice::Custom { image, .. } => image.display().to_string(),
        };
        step(format!(
            "kernel {label}: {}, pmem from {}, align {}, struct pages in {}{}",
            match cfg.mode {
                NsMode::Fsdax => format!("{} with DAX at /mnt/dax", value_name(cfg.fs)),
                NsMode::Devdax => "device-dax".into(),
            },
            value_name(cfg.pmem),
            value_name(cfg.align),
            value_name(cfg.memmap_on),
            if command.is_none() {
                ", interactive shell"
            } else {
                ""
            }
        ));
        let outcome = run(&cfg)?;
        if command.is_none() {
            return Ok(ExitCode::from(
                outcome.exit_status.unwrap_or(1).clamp(0, 255) as u8,
            ));
        }
        match (outcome.boot_secs, outcome.guest_uptime_secs) {
            (Some(b), Some(u)) => note(format!(
                "{}: boot-to-command {b:.1} s (guest uptime {u:.1} s), total {:.1} s, accel {}",
                outcome.kernel, outcome.total_secs, outcome.accel
            )),
            _ => note(format!(
                "{}: the command never started; total {:.1} s, accel {}",
                outcome.kernel, outcome.total_secs, outcome.accel
            )),
        }
        for i in &outcome.incidents {
            if let Some(why) = outcome.ignored_artifact(i) {
                note(format!("ignored ({why}): {}", i.headline()));
            }
        }
        if outcome.verdict(opts.expect_oops).is_err() {
            eprint!("{}", outcome.failure_report(opts.expect_oops));
        } else if opts.expect_oops {
            for i in outcome
                .incidents
                .iter()
                .filter(|i| i.kind == IncidentKind::Oops)
            {
                note(format!("expected oops seen: {}", i.headline()));
            }
        }
        results.push(outcome);
    }
    if results.len() > 1 {
        eprint!("{}", table(&results, opts.expect_oops));
    }
    let code = results
        .iter()
        .map(|o| o.exit_code(opts.expect_oops))
        .find(|&c| c != 0)
        .unwrap_or(0);
    Ok(ExitCode::from(code))
}

/// An option value as spelled on the command line.
fn value_name<T: ValueEnum>(v: T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_owned())
        .unwrap_or_default()
}

/// Per-kernel result table.
fn table(results: &[VmOutcome], expect_oops: bool) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n{:<8} {:<6} {:>5} {:>12} {:>8}  notes",
        "kernel", "result", "exit", "boot-to-cmd", "total"
    );
    for o in results {
        let verdict = o.verdict(expect_oops);
        let secs = |s: Option<f64>| s.map_or("-".into(), |s| format!("{s:.1}s"));
        let _ = writeln!(
            t,
            "{:<8} {:<6} {:>5} {:>12} {:>8}  {}",
            o.kernel,
            if verdict.is_ok() { "PASS" } else { "FAIL" },
            o.exit_status.map_or("-".into(), |c| c.to_string()),
            secs(o.boot_secs),
            secs(Some(o.total_secs)),
            verdict.err().unwrap_or_default()
        );
    }
    t
}

/// The tag of the default kernel (xtask/kernels.json).
pub fn default_kernel() -> anyhow::Result<String> {
    Ok(KernelList::load()?.default)
}

/// refscope and the workload for /bin, built unless `no_build`. Either
/// way the refscope must have its eBPF programs ([`build::check_programs`]).
pub fn guest_binaries(no_build: bool) -> anyhow::Result<Vec<PathBuf>> {
    if !no_build {
        let b = build::build().context("building refscope for the guest failed")?;
        return Ok(vec![b.refscope, b.workload]);
    }
    let dir = util::release_dir();
    let mut found = Vec::new();
    for name in ["refscope", "refscope-workload"] {
        let p = dir.join(name);
        if !p.is_file() {
            bail!(
                "--no-build: {} is not built; run without --no-build (or `cargo xtask build`)",
                p.display()
            );
        }
        found.push(p);
    }
    build::check_programs(&found[0])
        .context("--no-build: the refscope in the target directory cannot trace")?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome_with(exit: Option<i32>, incidents: Vec<Incident>) -> VmOutcome {
        VmOutcome {
            kernel: "6.12".into(),
            exit_status: exit,
            incidents,
            ..VmOutcome::default()
        }
    }

    fn warn() -> Incident {
        Incident {
            kind: IncidentKind::Warn,
            text: "WARNING: CPU: 0 PID: 1 at x.c:1 f".into(),
        }
    }

    #[test]
    fn verdicts() {
        assert!(outcome_with(Some(0), vec![]).verdict(false).is_ok());
        assert_eq!(outcome_with(Some(0), vec![]).exit_code(false), 0);
        // A failing command keeps its status.
        let failed = outcome_with(Some(3), vec![]);
        assert!(failed.verdict(false).unwrap_err().contains("status 3"));
        assert_eq!(failed.exit_code(false), 3);
        // A WARN fails an otherwise successful run.
        let warned = outcome_with(Some(0), vec![warn()]);
        assert!(warned.verdict(false).unwrap_err().contains("kernel WARN"));
        assert_eq!(warned.exit_code(false), 1);
        // No status: the guest died.
        assert_eq!(outcome_with(None, vec![]).exit_code(false), 1);
    }

    #[test]
    fn only_a_crash_before_the_command_under_tcg_is_booted_again() {
        let oops = Incident {
            kind: IncidentKind::Oops,
            text: "Oops: int3: 0000 [#1] PREEMPT SMP NOPTI".into(),
        };
        let booting = outcome_with(None, vec![oops.clone()]);
        assert!(booting.crashed_before_command(Accel::Tcg).is_some());
        assert!(booting.crashed_before_command(Accel::Kvm).is_none());
        let running = VmOutcome {
            boot_secs: Some(7.0),
            ..outcome_with(None, vec![oops])
        };
        assert!(running.crashed_before_command(Accel::Tcg).is_none());
        assert!(running.tcg_artifact_crash(Accel::Tcg).is_none());
        // A CPU stuck on an ftrace call site while the command ran: booted
        // again under TCG only.
        let stuck = VmOutcome {
            boot_secs: Some(7.0),
            ..outcome_with(
                None,
                vec![Incident {
                    kind: IncidentKind::SoftLockup,
                    text: "watchdog: BUG: soft lockup - CPU#1 stuck for 67s! [sh:437]\n\
                           RIP: 0010:page_add_new_anon_rmap+0x0/0x120\n\
                           Code: 00 00 <e8> 4b 77 00 25"
                        .into(),
                }],
            )
        };
        let why = stuck.tcg_artifact_crash(Accel::Tcg).unwrap();
        assert!(why.contains("page_add_new_anon_rmap"), "{why}");
        assert!(stuck.tcg_artifact_crash(Accel::Kvm).is_none());
        assert!(
            outcome_with(None, vec![warn()])
                .crashed_before_command(Accel::Tcg)
                .is_none()
        );
    }

    #[test]
    fn expected_oops() {
        let oops = Incident {
            kind: IncidentKind::Oops,
            text: "BUG: unable to handle page fault for address: 1".into(),
        };
        let o = VmOutcome {
            killed: true,
            ..outcome_with(None, vec![warn(), oops])
        };
        assert!(o.verdict(true).is_ok());
        assert!(o.verdict(false).is_err());
        let clean = outcome_with(Some(0), vec![]);
        assert!(
            clean
                .verdict(true)
                .unwrap_err()
                .contains("expected a kernel oops")
        );
        assert_eq!(clean.exit_code(true), 1);
    }

    #[test]
    fn taint_without_console_text_is_reported() {
        let raw = qemu::RawRun {
            control: vec![
                (Duration::from_secs(9), Control::Start(6.5)),
                (Duration::from_secs(10), Control::Taint(TAINT_WARN)),
                (Duration::from_secs(10), Control::Exit(0)),
            ],
            ..qemu::RawRun::default()
        };
        let kernel = Kernel {
            label: "6.12".into(),
            release: None,
            image: PathBuf::new(),
            config: None,
            system_map: None,
            modules: None,
        };
        let o = outcome(&kernel, Accel::Tcg, raw);
        assert_eq!(o.boot_secs, Some(9.0));
        assert_eq!(o.guest_uptime_secs, Some(6.5));
        assert!(o.has(IncidentKind::Warn));
        assert!(o.verdict(false).is_err());
    }

    #[test]
    fn tcg_artifacts_do_not_fail_a_tcg_run() {
        let artifact = Incident {
            kind: IncidentKind::Warn,
            text:
                "WARNING: CPU: 0 PID: 0 at arch/x86/kernel/traps.c:1120 exc_debug_kernel+0xca/0x160"
                    .into(),
        };
        let tcg = VmOutcome {
            accel: "tcg",
            ..outcome_with(Some(0), vec![artifact.clone()])
        };
        assert!(tcg.verdict(false).is_ok());
        assert!(tcg.failure_report(false).contains("ignored"));
        let kvm = VmOutcome {
            accel: "kvm",
            ..outcome_with(Some(0), vec![artifact])
        };
        assert!(kvm.verdict(false).is_err());
    }

    #[test]
    fn small_memory_is_rejected() {
        let mut cfg = VmConfig::new(KernelChoice::Pinned("6.12".into()), None);
        cfg.memory_mib = 1024;
        assert!(cfg.validate().unwrap_err().to_string().contains("--memory"));
        cfg.pmem = PmemKind::Nvdimm;
        assert!(cfg.validate().is_ok());
    }
}
