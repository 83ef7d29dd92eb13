//! Attaching to the running kernel: what `record`, `live` and `doctor`
//! share. Gathers kernel facts, checks privileges, plans the hooks, loads
//! and attaches the programs, and takes the attach snapshot. Recording
//! from there is `crate::recorder`'s; auditing, `crate::audit::Auditor`'s.

use std::{
    collections::HashSet,
    io::{self, IsTerminal as _},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use refscope_core::{
    model::RefcountModel,
    trace::{AuditSettings, Clock, FORMAT_NAME, FORMAT_VERSION, Filters as TraceFilters, Header},
};

use crate::{
    btf::{Btf, BtfError},
    cli::{AttachMode, TraceOpts},
    hash::AddrMapper,
    kernel::{self, Kallsyms, clock_ns, devices},
    pipeline::Pipeline,
    probe::{
        config::{self, Filters},
        loader::{self, Attached, Probes},
        plan::{self, KernelView, Plan},
    },
    snapshot,
};

/// Everything we know about the kernel before loading anything.
pub struct Facts {
    pub release: String,
    pub btf: Result<Btf, BtfError>,
    pub kallsyms: io::Result<Kallsyms>,
    pub ftrace: io::Result<HashSet<String>>,
    pub blacklist: HashSet<String>,
    pub kprobes: bool,
    pub lockdown: Option<String>,
    pub caps: u64,
    pub euid: u32,
}

impl Facts {
    /// Why this kernel refused the programs (`refused` of them, `attached`
    /// attached; `first` the first refusal), and what to do: one reason,
    /// not a warning per program.
    pub fn refusal(
        &self,
        first: &loader::AttachFailure,
        refused: usize,
        attached: usize,
    ) -> String {
        loader::explain_refusal(
            &format!(
                "{refused} of {} programs refused; {}: {}",
                refused + attached,
                first.program,
                first.error.lines().last().unwrap_or_default()
            ),
            self.kprobes,
            self.lockdown.as_deref(),
        )
    }

    pub fn gather() -> Self {
        Facts {
            release: kernel::release(),
            btf: Btf::from_sys_fs(),
            kallsyms: Kallsyms::from_proc(),
            ftrace: kernel::filter_functions(),
            blacklist: kernel::kprobe_blacklist(),
            kprobes: kernel::kprobes_available(),
            lockdown: kernel::lockdown(),
            caps: kernel::effective_caps(),
            // SAFETY: geteuid has no preconditions.
            euid: unsafe { libc::geteuid() },
        }
    }

    /// Whether we hold what loading and attaching tracing programs needs.
    pub fn privileged(&self) -> bool {
        use kernel::{CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYSLOG, has_cap};
        has_cap(self.caps, CAP_SYS_ADMIN)
            || (has_cap(self.caps, CAP_BPF)
                && has_cap(self.caps, CAP_PERFMON)
                && has_cap(self.caps, CAP_SYSLOG))
    }

    /// The first reason tracing cannot start, with what to do about it.
    pub fn blocker(&self) -> Option<String> {
        if !self.privileged() {
            use kernel::{CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYSLOG, has_cap};
            let names = [
                (CAP_BPF, "CAP_BPF"),
                (CAP_PERFMON, "CAP_PERFMON"),
                (CAP_SYSLOG, "CAP_SYSLOG"),
                (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
            ];
            let list = |held: bool| {
                names
                    .iter()
                    .filter(|(c, _)| has_cap(self.caps, *c) == held)
                    .map(|(_, n)| *n)
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let have = list(true);
            return Some(format!(
                "refscope needs root, or CAP_BPF + CAP_PERFMON + CAP_SYSLOG (and CAP_SYS_ADMIN to read /proc/iomem); \
                 this process (uid {}) {}lacks {}: run it with sudo",
                self.euid,
                if have.is_empty() {
                    String::new()
                } else {
                    format!("has {have} but ")
                },
                list(false)
            ));
        }
        if let Err(e) = &self.btf {
            return Some(format!("{e}"));
        }
        if let Err(e) = &self.kallsyms {
            return Some(format!("cannot read /proc/kallsyms: {e}"));
        }
        None
    }

    pub fn model(&self) -> Option<(RefcountModel, String)> {
        self.btf.as_ref().ok().map(config::refcount_model)
    }

    pub fn plan(&self, mode: AttachMode) -> Option<Plan> {
        let (Ok(btf), Ok(kallsyms)) = (&self.btf, &self.kallsyms) else {
            return None;
        };
        Some(plan::plan(
            mode,
            &KernelView {
                btf,
                kallsyms,
                ftrace: self.ftrace.as_ref().ok(),
                kprobe_blacklist: &self.blacklist,
                kprobes: self.kprobes,
            },
        ))
    }
}

impl Facts {
    /// The plan a tracing session attaches (`record`, `live`, and
    /// `bench-floor`'s empty programs): this kernel's plan for `attach`,
    /// less the logical hooks `skip_hooks` names; an error if no map hook
    /// is left.
    pub fn trace_plan(&self, attach: AttachMode, skip_hooks: &[String]) -> anyhow::Result<Plan> {
        let mut plan = self.plan(attach).context("no hook plan")?;
        plan.skip(skip_hooks).map_err(anyhow::Error::msg)?;
        if let Some(why) = no_map_hook(&self.release, &plan) {
            bail!("{why}");
        }
        Ok(plan)
    }
}

/// An attached tracing session.
pub struct Session {
    pub header: Header,
    pub probes: Probes,
    pub pipeline: Pipeline,
    pub plan: Plan,
    /// Device pfn ranges found at start-up (the in-kernel filter's seed).
    pub device_ranges: Vec<(u64, u64)>,
}

impl Session {
    /// Attach according to `opts`. `command` is recorded in the header.
    pub fn start(opts: &TraceOpts, command: Vec<String>) -> anyhow::Result<Session> {
        // The trace's time origin: before attaching, so the first events
        // (during attach) are not before it.
        let clock = clock_now();
        let facts = Facts::gather();
        if let Some(why) = facts.blocker() {
            bail!("{why}");
        }
        let (Ok(btf), Ok(kallsyms)) = (facts.btf.as_ref(), facts.kallsyms.as_ref()) else {
            unreachable!("blocker() checked BTF and kallsyms");
        };
        let (model, model_source) = config::refcount_model(btf);
        let gup = config::gup_flags(btf);
        let mut plan = facts.trace_plan(opts.attach, &opts.skip_hooks)?;
        let cfg = config::build(
            btf,
            kallsyms,
            &Filters {
                pids: opts.pids.clone(),
                comm: opts.comm.clone(),
                gup_stacks: opts.gup_stacks,
            },
        )?;
        let found = devices::discover().context("cannot read /proc/iomem")?;
        if found.addresses_hidden {
            bail!(
                "/proc/iomem shows zero addresses: refscope needs CAP_SYS_ADMIN (run it with sudo)"
            );
        }
        if found.filter_ranges.is_empty() {
            log::warn!(
                "no persistent memory or soft-reserved (CXL) memory found in /proc/iomem; \
                 devices bound later are picked up from memremap_pages"
            );
        }
        let probes = loader::load(&plan, &cfg, opts.ringbuf_size, &found.filter_ranges)?;
        let locked = facts.lockdown.as_deref() == Some("confidentiality");
        if (probes.attached.is_empty() || locked)
            && let Some(f) = probes.failures.first()
        {
            // This kernel refuses tracing: one reason and what to do, not
            // a warning per program.
            bail!(
                "{}",
                facts.refusal(f, probes.failures.len(), probes.attached.len())
            );
        }
        for f in &probes.failures {
            log::warn!(
                "could not attach {} ({}): {}",
                f.program,
                f.hook.function(),
                f.error
            );
            for s in &mut plan.status {
                s.functions.retain(|a| a.function != f.hook.function());
                if !s.skipped.iter().any(|x| x.starts_with(f.hook.function())) {
                    let first = f.error.lines().last().unwrap_or_default();
                    s.skipped
                        .push(format!("{}: attach failed: {first}", f.hook.function()));
                }
            }
        }
        if let Some(why) = no_map_hook(&facts.release, &plan) {
            bail!("{why}");
        }

        let mapper = AddrMapper::new(opts.raw_kernel_addresses);
        let header = Header {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            refscope_version: env!("CARGO_PKG_VERSION").into(),
            kernel_release: facts.release.clone(),
            refcount_model: model,
            refcount_model_source: model_source,
            hooks: plan.status.clone(),
            clock,
            hostname: kernel::hostname(),
            kernel_addresses: mapper.mode().into(),
            gup_flags: gup,
            devices: found.devices.clone(),
            filters: TraceFilters {
                pids: opts.pids.clone(),
                comm: opts.comm.clone(),
            },
            ringbuf_bytes: u64::from(loader::ringbuf_size(opts.ringbuf_size)),
            command,
            audit: (!opts.no_audit).then_some(AuditSettings {
                interval_s: opts.audit_interval,
            }),
        };
        let mut pipeline = Pipeline::new(&header, opts.timeline, mapper, facts.kallsyms.ok());
        pipeline.analyzer.set_max_pages(opts.max_pages);
        pipeline.analyzer.set_max_findings(opts.max_findings);
        Ok(Session {
            header,
            probes,
            pipeline,
            plan,
            device_ranges: found.filter_ranges,
        })
    }
}

/// Set by SIGINT, SIGTERM and SIGHUP once [`watch_stop_signals`] ran, so
/// synchronous work (the attach snapshot) can stop early. tokio registers
/// its handlers in the same registry: the event loops see the signal too.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

pub fn watch_stop_signals() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the action is an atomic store, which is async-signal-safe.
        unsafe {
            signal_hook_registry::register(sig, || STOP_REQUESTED.store(true, Ordering::Relaxed))
        }?;
    }
    Ok(())
}

pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::Relaxed)
}

/// The attach-time snapshot: seed the analysis with the mappings of device
/// memory that exist now (`crate::snapshot`). Problems are warnings: tracing
/// goes on without the seed. Stops early on SIGINT/SIGTERM/SIGHUP.
pub fn attach_snapshot(
    attached: &mut Attached,
    opts: &TraceOpts,
    ranges: &[(u64, u64)],
    sink: &mut impl snapshot::Sink,
    show_progress: bool,
) -> Option<snapshot::Summary> {
    if opts.no_snapshot {
        return None;
    }
    if let Err(e) = watch_stop_signals() {
        log::warn!("cannot watch for signals during the attach snapshot: {e}");
    }
    let mut kernel = match attached.snapshot_kernel() {
        Ok(k) => k,
        Err(e) => {
            log::warn!(
                "attach snapshot unavailable: {e}; mappings that existed before refscope attached \
                 are not seen (--no-snapshot skips this step)"
            );
            return None;
        }
    };
    let snapshot_opts = snapshot::Options {
        pids: opts.pids.clone(),
        comm: opts.comm.clone(),
        ranges: ranges.to_vec(),
        self_pid: std::process::id(),
    };
    let tty = show_progress && io::stderr().is_terminal();
    let mut last = Instant::now();
    let mut shown = false;
    let result = snapshot::run(
        &mut kernel,
        &mut snapshot::procfs::RealProcfs::default(),
        sink,
        &snapshot_opts,
        |p| {
            if tty && last.elapsed() >= Duration::from_millis(200) {
                last = Instant::now();
                shown = true;
                eprint!(
                    "\rrefscope: attach snapshot: {}/{} processes, {} mappings",
                    p.done, p.total, p.mappings
                );
            }
            !stop_requested()
        },
    );
    if shown {
        eprintln!();
    }
    match result {
        Ok(sum) => {
            let line = format!(
                "attach snapshot: {} mapping(s) of device memory ({} PMD, {}{} pages) in {} of {} processes, {:.2}s{}{}{}",
                sum.mappings,
                sum.pmd_mappings,
                if sum.pud_mappings > 0 {
                    format!("{} PUD, ", sum.pud_mappings)
                } else {
                    String::new()
                },
                sum.pages,
                sum.processes_mapping,
                sum.processes,
                sum.seconds,
                if sum.changed > 0 {
                    format!("; {} changed while read (left to the probes)", sum.changed)
                } else {
                    String::new()
                },
                if sum.pmd_unverified > 0 {
                    format!(
                        "; {} PMD(s) judged by contiguity (page table unreadable)",
                        sum.pmd_unverified
                    )
                } else {
                    String::new()
                },
                if sum.interrupted { "; interrupted" } else { "" },
            );
            if show_progress {
                eprintln!("refscope: {line}");
            } else {
                log::info!("{line}");
            }
            Some(sum)
        }
        Err(e) => {
            log::warn!(
                "the attach snapshot failed: {e}; mappings that existed before refscope attached \
                 are not all seen (--no-snapshot skips this step)"
            );
            None
        }
    }
}

/// The error when no map hook can be attached.
fn no_map_hook(release: &str, plan: &Plan) -> Option<String> {
    let missing = plan.missing_required();
    if missing.is_empty() {
        return None;
    }
    let tried: Vec<String> = plan
        .status
        .iter()
        .filter(|s| missing.contains(&s.logical.as_str()))
        .flat_map(|s| s.skipped.iter().cloned())
        .collect();
    Some(format!(
        "no {} hook can be attached on kernel {release}; tried:\n  {}",
        missing.join("/"),
        tried.join("\n  ")
    ))
}

/// CLOCK_MONOTONIC and CLOCK_REALTIME read back to back.
pub fn clock_now() -> Clock {
    Clock {
        monotonic_ns: clock_ns(libc::CLOCK_MONOTONIC),
        realtime_ns: clock_ns(libc::CLOCK_REALTIME),
    }
}
