//! `refscope doctor`: can this kernel, with these privileges, be traced,
//! and how. Exits 0 only when a real load-and-attach of the plan works.

use std::{io::Write, process::ExitCode};

use refscope_core::trace::{Device, HookStatus};
use serde::Serialize;

use crate::{
    cli::{AttachMode, DoctorArgs},
    kernel::{self, devices},
    probe::{config, loader},
    session::Facts,
};

#[derive(Serialize)]
struct Check {
    ok: bool,
    /// Works, but degraded (e.g. some optional hooks failed to attach).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    warn: bool,
    detail: String,
}

impl Check {
    fn ok(detail: impl Into<String>) -> Self {
        Check {
            ok: true,
            warn: false,
            detail: detail.into(),
        }
    }
    fn warn(detail: impl Into<String>) -> Self {
        Check {
            ok: true,
            warn: true,
            detail: detail.into(),
        }
    }
    fn bad(detail: impl Into<String>) -> Self {
        Check {
            ok: false,
            warn: false,
            detail: detail.into(),
        }
    }
}

#[derive(Serialize)]
struct Report {
    kernel_release: String,
    btf: Check,
    lockdown: String,
    privileges: Check,
    kprobes: Check,
    ftrace: Check,
    ring_buffer: Check,
    refcount_model: Option<String>,
    refcount_model_source: Option<String>,
    kallsyms: Check,
    iomem: Check,
    devices: Vec<Device>,
    hooks: Vec<HookStatus>,
    load: Check,
    /// The attach-time snapshot's programs (a warning when they fail:
    /// tracing works, pre-existing mappings are not seen).
    snapshot: Check,
    ok: bool,
    problems: Vec<String>,
}

pub fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let r = diagnose();
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &r)?;
        writeln!(out)?;
    } else {
        print_text(&mut out, &r)?;
    }
    Ok(if r.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn diagnose() -> Report {
    let facts = Facts::gather();
    let mut problems = Vec::new();
    let btf = match &facts.btf {
        Ok(_) => Check::ok("/sys/kernel/btf/vmlinux"),
        Err(e) => Check::bad(e.to_string()),
    };
    let caps = facts.caps;
    let names: Vec<&str> = [
        (kernel::CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
        (kernel::CAP_BPF, "CAP_BPF"),
        (kernel::CAP_PERFMON, "CAP_PERFMON"),
        (kernel::CAP_SYSLOG, "CAP_SYSLOG"),
    ]
    .iter()
    .filter(|(c, _)| kernel::has_cap(caps, *c))
    .map(|(_, n)| *n)
    .collect();
    let privileges = if facts.privileged() {
        Check::ok(format!("uid {}, {}", facts.euid, names.join(" ")))
    } else {
        Check::bad(format!(
            "uid {} with {}: tracing needs root (or CAP_BPF + CAP_PERFMON + CAP_SYSLOG + CAP_SYS_ADMIN); run with sudo",
            facts.euid,
            if names.is_empty() {
                "no relevant capabilities".into()
            } else {
                names.join(" ")
            }
        ))
    };
    let kprobes = if facts.kprobes {
        Check::ok("kprobe fallback available")
    } else {
        Check::bad(
            "this kernel has no kprobes (CONFIG_KPROBES off): no fallback when fentry is refused",
        )
    };
    let ftrace = match &facts.ftrace {
        Ok(f) => Check::ok(format!(
            "available_filter_functions lists {} functions",
            f.len()
        )),
        Err(e) => Check::bad(format!(
            "available_filter_functions unreadable ({e}); fentry targets are not pre-checked"
        )),
    };
    let ring_buffer = match kernel::version_of(&facts.release) {
        Some(v) if v >= (5, 8) => Check::ok("BPF ring buffer (5.8+)"),
        Some((a, b)) => Check::bad(format!("kernel {a}.{b} predates the BPF ring buffer (5.8)")),
        None => Check::bad("cannot tell the kernel version"),
    };
    let kallsyms = match &facts.kallsyms {
        Ok(k) if !k.addresses_visible() => Check::bad(
            "/proc/kallsyms hides addresses (kptr_restrict or not root): vmemmap_base cannot be found",
        ),
        Ok(k) => match k.address("vmemmap_base") {
            Some(_) => Check::ok(format!("{} symbols, vmemmap_base found", k.len())),
            None => Check::ok(format!(
                "{} symbols; no vmemmap_base (fixed memory layout): using {:#x}",
                k.len(),
                config::VMEMMAP_BASE_L4
            )),
        },
        Err(e) => Check::bad(format!("cannot read /proc/kallsyms: {e}")),
    };
    let (model, model_source) = facts.model().unzip();
    let plan = facts.plan(AttachMode::Auto);
    let hooks = plan.as_ref().map(|p| p.status.clone()).unwrap_or_default();
    let found = devices::discover().ok();
    let device_list = found
        .as_ref()
        .map(|d| d.devices.clone())
        .unwrap_or_default();

    // record and live refuse to run without device addresses.
    let iomem = match &found {
        Some(d) if d.addresses_hidden => Check::bad(
            "/proc/iomem shows zero addresses: finding device memory needs CAP_SYS_ADMIN (run with sudo)",
        ),
        Some(d) => Check::ok(format!("{} device memory range(s)", d.filter_ranges.len())),
        None => Check::bad("/proc/iomem is unreadable"),
    };
    for c in [&btf, &privileges, &ring_buffer, &kallsyms, &iomem] {
        if !c.ok {
            problems.push(c.detail.clone());
        }
    }
    if let Some(p) = &plan {
        for logical in p.missing_required() {
            problems.push(format!("no {logical} hook can be attached on this kernel"));
        }
    }

    // The real test: load the object and attach the plan, then detach.
    let mut snapshot = Check::warn("not attempted: the programs did not load");
    let load = match (&plan, facts.blocker()) {
        (_, Some(why)) => Check::bad(format!("not attempted: {why}")),
        (None, None) => Check::bad("not attempted: no plan"),
        (Some(plan), None) => {
            let (Ok(btf), Ok(ks)) = (&facts.btf, &facts.kallsyms) else {
                unreachable!("blocker() checked BTF and kallsyms")
            };
            match config::build(btf, ks, &config::Filters::default()) {
                Err(e) => Check::bad(format!("not attempted: {e}")),
                Ok(cfg) => {
                    let ranges = found.map(|d| d.filter_ranges).unwrap_or_default();
                    let mut loaded = loader::load(plan, &cfg, 1 << 20, &ranges);
                    if let Ok(p) = &mut loaded {
                        snapshot = snapshot_check(p);
                    }
                    match loaded {
                        Ok(p) if p.failures.is_empty() => {
                            Check::ok(format!("{} programs loaded and attached", p.attached.len()))
                        }
                        Ok(p) => {
                            let fails: Vec<String> = p
                                .failures
                                .iter()
                                .map(|f| {
                                    format!(
                                        "{}: {}",
                                        f.program,
                                        f.error.lines().last().unwrap_or_default()
                                    )
                                })
                                .collect();
                            let any_map = p.attached.iter().any(|(_, h)| {
                                plan.status
                                    .iter()
                                    .filter(|s| s.logical.starts_with("map_"))
                                    .any(|s| s.functions.iter().any(|f| f.function == h.function()))
                            });
                            let first = fails.first().cloned().unwrap_or_default();
                            let summary = if fails.len() > 1 {
                                format!("{first} (and {} more)", fails.len() - 1)
                            } else {
                                first
                            };
                            let locked = facts.lockdown.as_deref() == Some("confidentiality");
                            if any_map && !locked {
                                Check::warn(format!(
                                    "{} attached, {} failed: {}",
                                    p.attached.len(),
                                    p.failures.len(),
                                    fails.join("; ")
                                ))
                            } else {
                                Check::bad(loader::explain_refusal(
                                    &format!(
                                        "{} of {} programs refused; {summary}",
                                        fails.len(),
                                        fails.len() + p.attached.len()
                                    ),
                                    facts.kprobes,
                                    facts.lockdown.as_deref(),
                                ))
                            }
                        }
                        Err(e) => Check::bad(loader::explain_refusal(
                            &format!("{e:#}"),
                            facts.kprobes,
                            facts.lockdown.as_deref(),
                        )),
                    }
                }
            }
        }
    };
    // "not attempted" repeats a problem already listed.
    if !load.ok && !load.detail.starts_with("not attempted") {
        problems.push(load.detail.clone());
    }
    let ok = problems.is_empty() && load.ok;
    Report {
        kernel_release: facts.release.clone(),
        btf,
        lockdown: facts
            .lockdown
            .clone()
            .unwrap_or_else(|| "none (no lockdown LSM)".into()),
        privileges,
        kprobes,
        ftrace,
        ring_buffer,
        refcount_model: model.map(|m| m.as_str().to_owned()),
        refcount_model_source: model_source,
        kallsyms,
        iomem,
        devices: device_list,
        hooks,
        load,
        snapshot,
        ok,
        problems,
    }
}

/// Load the attach snapshot's programs into `p` and run the task iterator.
fn snapshot_check(p: &mut loader::Probes) -> Check {
    match p.guard.snapshot_kernel() {
        Err(e) => Check::warn(format!(
            "{e}: mappings that exist before refscope attaches will not be seen"
        )),
        Ok(mut k) => match crate::snapshot::KernelReads::task_mms(&mut k) {
            Ok(m) => Check::ok(format!(
                "task iterator and page reader load; {} address spaces listed",
                m.len()
            )),
            Err(e) => Check::warn(format!(
                "{e}: mappings that exist before refscope attaches will not be seen"
            )),
        },
    }
}

fn print_text(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    let mark = |c: &Check| match (c.ok, c.warn) {
        (true, false) => "ok  ",
        (true, true) => "warn",
        (false, _) => "FAIL",
    };
    writeln!(out, "refscope doctor: kernel {}", r.kernel_release)?;
    for (name, c) in [
        ("btf", &r.btf),
        ("privileges", &r.privileges),
        ("kprobes", &r.kprobes),
        ("ftrace", &r.ftrace),
        ("ring buffer", &r.ring_buffer),
        ("kallsyms", &r.kallsyms),
        ("iomem", &r.iomem),
    ] {
        writeln!(out, "  [{}] {name:<12} {}", mark(c), c.detail)?;
    }
    writeln!(out, "  [info] {:<12} {}", "lockdown", r.lockdown)?;
    writeln!(
        out,
        "  [info] {:<12} {}",
        "refcount",
        match (&r.refcount_model, &r.refcount_model_source) {
            (Some(m), Some(s)) => format!("{m}: {s}"),
            _ => "unknown (no BTF)".into(),
        }
    )?;
    if r.devices.is_empty() {
        writeln!(
            out,
            "  [info] {:<12} none found (or /proc/iomem unreadable)",
            "devices"
        )?;
    }
    for d in &r.devices {
        writeln!(
            out,
            "  [info] {:<12} {} {} pfn {:#x}-{:#x} ({})",
            "device",
            d.name,
            d.mode,
            d.pfn_start,
            d.pfn_end.saturating_sub(1),
            d.pgmap_type.as_str()
        )?;
    }
    writeln!(out, "  hooks:")?;
    for s in &r.hooks {
        let chosen: Vec<String> = s
            .functions
            .iter()
            .map(|f| format!("{} ({})", f.function, f.attach))
            .collect();
        writeln!(
            out,
            "    {:<8} {}",
            s.logical,
            if chosen.is_empty() {
                "none".into()
            } else {
                chosen.join(", ")
            }
        )?;
        for why in &s.skipped {
            writeln!(out, "             - {why}")?;
        }
    }
    writeln!(
        out,
        "  [{}] {:<12} {}",
        mark(&r.load),
        "load",
        r.load.detail
    )?;
    writeln!(
        out,
        "  [{}] {:<12} {}",
        mark(&r.snapshot),
        "snapshot",
        r.snapshot.detail
    )?;
    if r.ok {
        writeln!(out, "refscope can trace on this kernel.")?;
    } else {
        writeln!(out, "refscope cannot trace here:")?;
        for p in &r.problems {
            writeln!(out, "  - {p}")?;
        }
    }
    Ok(())
}
