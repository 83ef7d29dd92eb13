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
mod cli;
mod config;
mod console;
mod guest;
mod kernels;
mod modules;
mod newc;
mod outcome;
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
pub use cli::{Options, default_kernel, guest_binaries, run_cli};
pub use config::*;
pub use console::{Incident, IncidentKind};
use kernels::{Kernel, KernelList};
pub use outcome::VmOutcome;
use outcome::{TAINT_DIE, TAINT_WARN};
pub use qemu::Accel;
use qemu::{Control, Launch, MEMMAP_OFFSET_MIB, Watch};

use crate::{
    build,
    util::{self, note, step},
};

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
            // stuck on an ftrace call site while a tracer attached to it,
            // a kernel that stops printing early in boot, before init.
            // Boot once more, and say so; a second failure is reported as
            // it is.
            note(format!(
                "{}: {why}; under TCG this is an emulation artifact: booting once more",
                first.kernel
            ));
            boot(cfg, &kernel, accel)
        }
        None => Ok(first),
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
                t: None,
                text: format!("the kernel is tainted W ({t}): a WARN fired but its splat was not on the console"),
            });
        }
        if t & TAINT_DIE != 0 && !out.has(IncidentKind::Oops) && !out.has(IncidentKind::Panic) {
            out.incidents.push(Incident {
                kind: IncidentKind::Oops,
                t: None,
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
            t: None,
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
            t: None,
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
                    t: None,
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
    fn an_oops_before_the_command_started_is_told_by_its_printk_time() {
        // A kernel thread oopsed at 4.52 s while init went on and started
        // the command at 5.0 s (7.3, a static branch being patched).
        let mut sc = console::Scanner::default();
        for l in [
            "[    4.523878] Oops: int3: 0000 [#1] SMP NOPTI",
            "[    4.526683] RIP: 0010:__schedule+0x30c/0x1080",
            "[    4.530000] ---[ end trace 0000000000000000 ]---",
        ] {
            sc.feed(l);
        }
        let incidents = sc.into_incidents();
        assert_eq!(incidents[0].t, Some(4.523878));
        let o = |start: f64| VmOutcome {
            boot_secs: Some(6.0),
            guest_uptime_secs: Some(start),
            ..outcome_with(None, incidents.clone())
        };
        assert!(o(5.0).crashed_before_command(Accel::Tcg).is_some());
        assert!(o(5.0).tcg_artifact_crash(Accel::Tcg).is_some());
        assert!(o(5.0).crashed_before_command(Accel::Kvm).is_none());
        // After the command started it is the run's.
        assert!(o(4.0).crashed_before_command(Accel::Tcg).is_none());
    }

    #[test]
    fn a_boot_that_hangs_before_init_is_booted_again_under_tcg_only() {
        let hung = VmOutcome {
            timed_out: true,
            console: "[    1.305462] acpi PNP0A03:00: fail to add MMCONFIG information\n".into(),
            ..outcome_with(None, vec![])
        };
        let why = hung.tcg_artifact_crash(Accel::Tcg).unwrap();
        assert!(why.contains("init never ran"), "{why}");
        assert!(hung.tcg_artifact_crash(Accel::Kvm).is_none());
        // Init ran: whatever hung after that is reported as it is.
        let after_init = VmOutcome {
            console: format!("{}init: [2.27] started\n", hung.console),
            ..hung.clone()
        };
        assert!(after_init.tcg_artifact_crash(Accel::Tcg).is_none());
        // So is a timeout once the command started.
        let running = VmOutcome {
            boot_secs: Some(6.0),
            ..hung
        };
        assert!(running.tcg_artifact_crash(Accel::Tcg).is_none());
    }

    #[test]
    fn expected_oops() {
        let oops = Incident {
            kind: IncidentKind::Oops,
            t: None,
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
            t: None,
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
