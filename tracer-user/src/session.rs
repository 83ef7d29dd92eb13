//! Attaching to the running kernel: what `record`, `live` and `doctor`
//! share. Gathers kernel facts, checks privileges, plans the hooks, loads
//! and attaches the programs, and turns ring-buffer records into analysed
//! events.

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
    audit,
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
        let mut plan = facts.plan(opts.attach).context("no hook plan")?;
        plan.skip(&opts.skip_hooks).map_err(anyhow::Error::msg)?;
        if let Some(why) = no_map_hook(&facts.release, &plan) {
            bail!("{why}");
        }
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
                loader::explain_refusal(
                    &format!(
                        "{} of {} programs refused; {}: {}",
                        probes.failures.len(),
                        probes.failures.len() + probes.attached.len(),
                        f.program,
                        f.error.lines().last().unwrap_or_default()
                    ),
                    facts.kprobes,
                    facts.lockdown.as_deref(),
                )
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

/// One pass of the shadow audit (`crate::audit`). Problems are warnings:
/// tracing goes on; findings waiting for the audit stay unconfirmed.
pub fn audit(
    attached: &mut Attached,
    rec: &mut impl audit::Recording,
    scope: &audit::Scope,
    reason: u64,
) -> Option<audit::Summary> {
    let mut kernel = match attached.snapshot_kernel() {
        Ok(k) => k,
        Err(e) => {
            log::warn!("the shadow audit cannot read page tables: {e} (--no-audit skips it)");
            return None;
        }
    };
    match audit::run(
        &mut kernel,
        &mut snapshot::procfs::RealProcfs::default(),
        rec,
        scope,
        reason,
        std::process::id(),
    ) {
        Ok(sum) => {
            log::debug!("audit: {sum:?}");
            Some(sum)
        }
        Err(e) => {
            log::warn!("the shadow audit failed: {e}");
            None
        }
    }
}

/// How many passes in a row may fail to compare one address space before
/// the audit stops asking for it (the last pass still reads everything).
const AUDIT_RETRIES: u32 = 3;

/// The share of wall time periodic audits may take (docs/rules.md).
const AUDIT_BUDGET: f64 = 0.02;

/// When a session audits its shadow (`record` and `live` alike): the
/// confirmations findings ask for after each read of the ring buffer,
/// periodic passes within [`AUDIT_BUDGET`], a last pass before detaching;
/// and what they cost.
pub struct Auditor {
    scope: audit::Scope,
    every: Option<Duration>,
    next: Option<Instant>,
    /// Address spaces a pass read but could not compare (the ring buffer
    /// held behind a record still being written): verified again, at most
    /// [`AUDIT_RETRIES`] times each (a record that is never committed must
    /// not make every read of the ring buffer wait).
    again: Vec<Retry>,
    pub cost: AuditCost,
}

impl Auditor {
    /// `None` when the session does not audit (`--no-audit`).
    pub fn new(header: &Header, opts: &TraceOpts) -> Option<Auditor> {
        let settings = header.audit?;
        let every = Some(settings.interval_s)
            .filter(|&s| s > 0.0)
            .map(Duration::from_secs_f64);
        Some(Auditor {
            scope: audit::Scope::All {
                pids: opts.pids.clone(),
                comm: opts.comm.clone(),
            },
            every,
            next: every.map(|d| Instant::now() + d),
            again: Vec::new(),
            cost: AuditCost::default(),
        })
    }

    /// Findings waiting for the page table: audit their address spaces now.
    pub fn verify(&mut self, attached: &mut Attached, rec: &mut impl audit::Recording) {
        let mut req = rec.verify_requests();
        for (x, _) in &self.again {
            if !req.contains(x) {
                req.push(*x);
            }
        }
        if !req.is_empty() {
            let pass = audit(
                attached,
                rec,
                &audit::Scope::Only(req),
                refscope_common::audit_reason::VERIFY,
            );
            self.add(pass, true);
        }
    }

    /// Account for a pass; `requested_again`: it was asked for every
    /// address space waiting in `again`.
    fn add(&mut self, pass: Option<audit::Summary>, requested_again: bool) {
        if let Some(s) = &pass {
            let old = std::mem::take(&mut self.again);
            let (next, given_up) = retry_after(&old, &s.unsynced, requested_again);
            for (mm, pid) in given_up {
                log::warn!(
                    "the shadow audit could not compare address space {mm:#x} (pid {pid}) \
                     {AUDIT_RETRIES} times: the ring buffer stays held behind a record still being written"
                );
            }
            self.again = next;
        }
        self.cost.add(pass);
    }

    /// The periodic pass, when it is due. Never more than [`AUDIT_BUDGET`]
    /// of the time: a host with much device memory mapped is audited less
    /// often.
    pub fn tick(&mut self, attached: &mut Attached, rec: &mut impl audit::Recording) {
        if self.next.is_none_or(|at| Instant::now() < at) {
            return;
        }
        let pass = audit(
            attached,
            rec,
            &self.scope,
            refscope_common::audit_reason::PERIODIC,
        );
        let spent = pass.as_ref().map_or(Duration::ZERO, |p| p.elapsed);
        self.add(pass, false);
        self.next = self
            .every
            .map(|d| Instant::now() + d.max(spent.mul_f64(1.0 / AUDIT_BUDGET)));
    }

    /// Before detaching (the ring buffer drained): confirm what waits, the
    /// last audit of everything, then confirm what it raised (findings
    /// raised while it read the tables wait for a read after).
    pub fn finish(&mut self, attached: &mut Attached, rec: &mut impl audit::Recording) {
        self.verify(attached, rec);
        let pass = audit(
            attached,
            rec,
            &self.scope,
            refscope_common::audit_reason::FINAL,
        );
        self.add(pass, false);
        rec.sync();
        self.verify(attached, rec);
    }
}

/// An address space to audit again (id, a pid holding it), and how many
/// passes failed to compare it.
type Retry = ((u64, u32), u32);

/// Address spaces to audit again after a pass that could not compare
/// `unsynced`, from `old` (with the tries each took); `requested_again`:
/// the pass was asked for all of `old`, so those it compared are done.
/// Returns them and those given up after [`AUDIT_RETRIES`] tries.
fn retry_after(
    old: &[Retry],
    unsynced: &[(u64, u32)],
    requested_again: bool,
) -> (Vec<Retry>, Vec<(u64, u32)>) {
    let mut next: Vec<Retry> = Vec::new();
    if !requested_again {
        next.extend(old.iter().filter(|(x, _)| !unsynced.contains(x)).copied());
    }
    let mut given_up = Vec::new();
    for x in unsynced {
        let tries = old.iter().find(|(y, _)| y == x).map_or(0, |(_, n)| *n) + 1;
        if tries < AUDIT_RETRIES {
            next.push((*x, tries));
        } else {
            given_up.push(*x);
        }
    }
    (next, given_up)
}

/// What the audit passes of a session cost, for its summary.
#[derive(Default)]
pub struct AuditCost {
    passes: u64,
    blocks: u64,
    /// Address spaces read but not compared, the ring buffer held.
    unsynced: u64,
    total: Duration,
    max: Duration,
}

impl AuditCost {
    fn add(&mut self, s: Option<audit::Summary>) {
        if let Some(s) = s {
            self.passes += 1;
            self.blocks += s.blocks;
            self.unsynced += s.unsynced.len() as u64;
            self.total += s.elapsed;
            self.max = self.max.max(s.elapsed);
        }
    }

    /// The summary line (none without a pass).
    pub fn line(&self) -> Option<String> {
        (self.passes > 0).then(|| {
            format!(
                "refscope: shadow audit cost: {} pass(es), {} page-table block(s) read, {:.1} ms in all, longest {:.1} ms",
                self.passes,
                self.blocks,
                self.total.as_secs_f64() * 1e3,
                self.max.as_secs_f64() * 1e3
            ) + &if self.unsynced > 0 {
                format!(
                    "; {} address space(s) read again: the ring buffer was held behind a record still being written",
                    self.unsynced
                )
            } else {
                String::new()
            }
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_space_not_compared_is_audited_again_a_bounded_number_of_times() {
        let a = (0xa, 1);
        let b = (0xb, 2);
        // A periodic pass could not compare a: due again, first try.
        let (next, gone) = retry_after(&[], &[a], false);
        assert_eq!((next.clone(), gone), (vec![(a, 1)], vec![]));
        // A periodic pass that did not read a keeps it due; b joins.
        let (next, _) = retry_after(&next, &[b], false);
        assert_eq!(next, vec![(a, 1), (b, 1)]);
        // A confirmation asked for both and compared b: a is tried again.
        let (next, gone) = retry_after(&next, &[a], true);
        assert_eq!((next.clone(), gone), (vec![(a, 2)], vec![]));
        // The third failure gives it up.
        let (next, gone) = retry_after(&next, &[a], true);
        assert_eq!(AUDIT_RETRIES, 3);
        assert_eq!((next, gone), (vec![], vec![a]));
    }
}
