//! Turning the event stream into per-page state, a shadow of live PTE/PMD
//! mappings, and findings.
//!
//! [`Analyzer::apply`] takes one event at a time (time comes from the event);
//! the live recorder and `refscope report` call it the same way.

mod finding;
mod loss;
mod rules;

use std::collections::{BTreeMap, HashMap, VecDeque, hash_map::Entry};

pub use finding::{Finding, GupLabel, TimelineEntry};
pub use loss::{LossTracker, REORDER_WINDOW};
use refscope_common::{EventKind, HookId, PMD_ORDER, PUD_ORDER, flags};
pub use rules::{RuleId, Severity, Status};
use rustc_hash::FxBuildHasher;

use crate::{
    event::{Comm, Event, Hex},
    model::{
        Device, GupFlagBits, Loss, PgmapType, RefcountModel, idle_bias, transient_install_refs,
    },
};

type FxHashMap<K, V> = HashMap<K, V, FxBuildHasher>;

/// Base pages a PMD mapping covers on x86-64.
const PMD_PAGES: u64 = 512;
/// Largest mapping the shadow expects (a PMD), for range-overlap queries.
const MAX_MAPPING_BYTES: u64 = PMD_PAGES * 4096;
/// Largest mapping order the kernel reports (a PMD).
const MAX_ORDER: u8 = PMD_ORDER;
/// Pages a PUD (1 GiB) mapping covers; a PUD mapping keeps no per-page
/// state (it would be 262144 entries): see [`Analyzer::pud_heads`].
const PUD_PAGES: u64 = 1 << PUD_ORDER;
const PUD_BYTES: u64 = PUD_PAGES * 4096;

/// Orders an event may carry: a PTE up to a PMD, or a PUD.
fn valid_order(order: u8) -> bool {
    order <= MAX_ORDER || order == PUD_ORDER
}
/// Page frame numbers of x86-64's 52-bit physical addresses are below this.
const MAX_PFN: u64 = 1 << 40;

/// Analysis settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub model: RefcountModel,
    pub gup: GupFlagBits,
    /// Events kept per page (older ones are dropped and counted).
    pub timeline_len: usize,
    /// Pages tracked at most; idle pages are evicted (and counted) past it.
    pub max_pages: usize,
    /// Findings kept at most; later ones are only counted.
    pub max_findings: usize,
    /// The recording audits the shadow against the kernel's page tables
    /// (`audit` events follow): findings that accuse a mapping wait for the
    /// audit of its address space. Without, they are reported at once, as
    /// unconfirmed.
    pub verify: bool,
}

impl Config {
    pub fn new(model: RefcountModel) -> Self {
        Config {
            model,
            gup: GupFlagBits::default(),
            timeline_len: 64,
            max_pages: 4_000_000,
            max_findings: 100_000,
            verify: false,
        }
    }
}

/// Counters, for reports and the live header.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub events: u64,
    pub mappings_installed: u64,
    pub mappings_removed: u64,
    /// A mapping replaced another at the same address without an unmap.
    pub mappings_replaced: u64,
    pub gup_refs: u64,
    /// Releases that matched no GUP reference we saw (taken before attach,
    /// or by a path refscope does not hook).
    pub unmatched_releases: u64,
    pub pages_evicted: u64,
    pub timeline_evicted: u64,
    pub findings_dropped: u64,
    /// Events no kernel produces (an order above a PMD's, a pfn beyond
    /// 52-bit physical addresses): only from a corrupt trace; ignored.
    pub invalid_events: u64,
    pub dax_kills: u64,
    pub holder_notifications: u64,
    /// FOLL_GET references found released by a later refcount reading
    /// (their put did not go through a hooked function).
    pub gets_reconciled: u64,
    /// FOLL_LONGTERM pins the kernel refused (`gup_refused` events).
    pub gup_refused: u64,
    /// Mappings moved by mremap and copied by fork.
    pub mappings_moved: u64,
    pub mappings_copied: u64,
    /// Mappings fork copied, handed from the parent's pid to the child's
    /// once the child had one (`task_new`).
    pub mappings_reattributed: u64,
    /// Address spaces compared with the kernel's page tables (`audit`).
    pub audits: u64,
    /// Mappings the page tables had and the shadow did not (`audit_map`).
    pub drift_missing: u64,
    /// Mappings the shadow had and the page tables did not (`audit_unmap`).
    pub drift_stale: u64,
    /// Divergences an event explained after the audit: older than the
    /// page-table read, it reached refscope after the comparison. The
    /// shadow was behind, not wrong; not counted as drift.
    pub drift_late: u64,
    /// Findings dropped because the page table did not confirm them.
    pub findings_withdrawn: u64,
}

impl Stats {
    /// Divergences between the shadow and the kernel's page tables.
    pub fn drift(&self) -> u64 {
        self.drift_missing + self.drift_stale
    }
}

/// What kind of divergence the audit found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// The page table maps it; the shadow did not know.
    Missing,
    /// The shadow had it; the page table does not map it.
    Stale,
}

/// One divergence between the shadow and the kernel's page table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Drift {
    pub t: u64,
    pub kind: DriftKind,
    pub mm: Hex,
    pub pid: u32,
    pub comm: Comm,
    pub vaddr: Hex,
    pub pfn: u64,
    pub order: u8,
    /// The page-table entry found at `vaddr` (stale mappings; 0: none).
    pub entry: Hex,
    /// Which kind of path refscope missed, as far as the audit can tell.
    pub hint: &'static str,
    /// An event older than the read that found it arrived after: the
    /// shadow was behind, no path was missed.
    pub late: bool,
}

/// Divergences kept for reports (later ones are only counted).
const MAX_DRIFT_KEPT: usize = 10_000;

/// A finding that accuses a mapping, waiting for the page table's word.
#[derive(Debug)]
struct Pending {
    key: DedupeKey,
    finding: Finding,
    /// The audit found the page table does not map it.
    contradicted: bool,
}

/// Per-page state. Kept small: millions of these may exist.
#[derive(Debug, Default)]
pub struct Page {
    /// Last observed raw `_refcount` (None until one is seen).
    raw_ref: Option<i32>,
    /// Live shadow mappings covering this page.
    mapcount: u32,
    /// Outstanding FOLL_PIN and FOLL_GET references we saw taken.
    pins: u32,
    gets: u32,
    first_t: u64,
    last_t: u64,
    /// Index into `pgmaps` + 1 (0: unknown).
    pgmap: u16,
    page_flags: u8,
    #[expect(
        clippy::box_collection,
        reason = "8 bytes per page instead of 32: most pages never get a timeline"
    )]
    timeline: Option<Box<VecDeque<TimelineEntry>>>,
}

/// `Page::page_flags` bits.
const PAGE_FREED_REPORTED: u8 = 1 << 0;
const PAGE_MEMMAP_GONE: u8 = 1 << 1;
const PAGE_AT_ATTACH: u8 = 1 << 2;

/// A read-only view of a page, for reports and the live view.
#[derive(Clone, Copy, Debug)]
pub struct PageView<'a> {
    pub pfn: u64,
    pub raw_ref: Option<i32>,
    pub logical_ref: Option<i32>,
    pub mapcount: u32,
    pub pins: u32,
    pub gets: u32,
    pub first_t: u64,
    pub last_t: u64,
    pub pgmap: Option<&'a Pgmap>,
    pub memmap_gone: bool,
    pub at_attach: bool,
    pub timeline: &'a [TimelineEntry],
    timeline_tail: &'a [TimelineEntry],
}

impl<'a> PageView<'a> {
    /// The timeline in order (oldest first).
    pub fn timeline(&self) -> impl Iterator<Item = &'a TimelineEntry> + use<'a> {
        self.timeline.iter().chain(self.timeline_tail.iter())
    }
}

/// A live shadow mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub pfn: u64,
    pub order: u8,
    /// When it was installed.
    pub t: u64,
    pub pid: u32,
    pub comm: Comm,
    pub at_attach: bool,
}

/// GUP references one address space holds on one page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub comm: Comm,
    pub pins: u32,
    pub gets: u32,
    pub longterm: bool,
    pub first_t: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PgmapState {
    Live,
    /// `memunmap_pages` has started.
    Removing,
    /// `memunmap_pages` returned: the memmap is gone.
    Removed,
}

/// A device page map (`struct dev_pagemap`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pgmap {
    /// Kernel pointer id (0 when known only from the start-up scan).
    pub id: Hex,
    pub name: String,
    pub ty: PgmapType,
    pub ranges: Vec<(u64, u64)>,
    pub state: PgmapState,
}

impl Pgmap {
    fn contains(&self, pfn: u64) -> bool {
        self.ranges.iter().any(|&(a, b)| a <= pfn && pfn < b)
    }
}

/// `(rule, pfn, mm, vaddr, extra)`: one finding per distinct key.
type DedupeKey = (RuleId, u64, u64, u64, u64);

/// The analysis state.
pub struct Analyzer {
    cfg: Config,
    pages: FxHashMap<u64, Page>,
    mappings: BTreeMap<(u64, u64), Mapping>,
    holders: BTreeMap<(u64, u64), Holder>,
    pgmaps: Vec<Pgmap>,
    findings: Vec<Finding>,
    drained: usize,
    dedupe: FxHashMap<DedupeKey, usize>,
    /// Findings that collect every later event on their pfn.
    unplug_open: FxHashMap<u64, Vec<usize>>,
    loss: LossTracker,
    stats: Stats,
    last_t: u64,
    /// Addresses spaces (and who owned them) seen at attach time.
    finished: bool,
    /// Findings waiting for the audit of their address space.
    pending: Vec<Pending>,
    /// Address spaces (and a pid holding each) to audit before `pending`
    /// can be resolved; taken by the recorder.
    verify_requests: BTreeMap<u64, u32>,
    drift: Vec<Drift>,
    /// Kept divergences an event older than their read could still
    /// explain, by (address space, address): index into `drift`.
    drift_open: BTreeMap<(u64, u64), usize>,
    /// Keys of the PUD (1 GiB) mappings in `mappings`: range lookups look
    /// this far back only here, not over every PTE of the last GiB.
    pud_keys: std::collections::BTreeSet<(u64, u64)>,
    /// PUD mappings by first pfn: how many map it. The pages a PUD covers
    /// get no per-page `mapcount` (a compound mapping counts once, at its
    /// head); [`Analyzer::mapped`] consults both.
    pud_heads: BTreeMap<u64, u32>,
    /// Set while an audit correction is applied: what it raises is
    /// confirmed by the page table.
    in_audit: bool,
    /// Page count at which eviction is tried again: when it could not free
    /// enough (live pages are never evicted), not before the table grew by
    /// another tenth of the cap, so a table full of live pages is not
    /// rescanned on every event.
    evict_retry_at: usize,
}

impl Analyzer {
    pub fn new(cfg: Config) -> Self {
        Analyzer {
            cfg,
            pages: FxHashMap::default(),
            mappings: BTreeMap::new(),
            holders: BTreeMap::new(),
            pgmaps: Vec::new(),
            findings: Vec::new(),
            drained: 0,
            dedupe: FxHashMap::default(),
            unplug_open: FxHashMap::default(),
            loss: LossTracker::default(),
            stats: Stats::default(),
            last_t: 0,
            finished: false,
            pending: Vec::new(),
            verify_requests: BTreeMap::new(),
            drift: Vec::new(),
            drift_open: BTreeMap::new(),
            pud_keys: Default::default(),
            pud_heads: BTreeMap::new(),
            in_audit: false,
            evict_retry_at: 0,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Change the page cap (`--max-pages`); it applies from the next event.
    pub fn set_max_pages(&mut self, max_pages: usize) {
        self.cfg.max_pages = max_pages.max(1);
    }

    /// Change the findings cap (`--max-findings`): later findings are only
    /// counted (`Stats::findings_dropped`).
    pub fn set_max_findings(&mut self, max_findings: usize) {
        self.cfg.max_findings = max_findings;
    }

    /// Register device memory known before any event (trace header).
    pub fn add_device(&mut self, dev: &Device) {
        self.pgmaps.push(Pgmap {
            id: Hex(0),
            name: dev.name.clone(),
            ty: dev.pgmap_type,
            ranges: vec![(dev.pfn_start, dev.pfn_end)],
            state: PgmapState::Live,
        });
    }

    /// Feed one event.
    pub fn apply(&mut self, ev: &Event) {
        self.stats.events += 1;
        self.loss.observe(ev.cpu, ev.seq, ev.t);
        self.last_t = self.last_t.max(ev.t);
        // The per-page loops below run over 2^order pages: a corrupt trace
        // must not make them run for ever or overflow.
        // A PUD (order 18) is the one larger order: it keeps no per-page
        // state, so no loop runs over its pages.
        if !valid_order(ev.order) || ev.pfn >= MAX_PFN || ev.pfn_end >= MAX_PFN {
            self.stats.invalid_events += 1;
            return;
        }
        match ev.kind {
            EventKind::Map => self.on_map(ev, false),
            EventKind::AttachMap => self.on_map(ev, true),
            EventKind::GupGet => self.on_gup_get(ev),
            EventKind::GupPut => self.on_release(ev, true),
            EventKind::RefPut => self.on_release(ev, false),
            EventKind::Free => self.on_free(ev),
            EventKind::Unmap => self.on_unmap(ev),
            EventKind::MmExit => self.on_mm_exit(ev),
            EventKind::PgmapAdd => self.on_pgmap_add(ev),
            EventKind::PgmapRemove => self.on_pgmap_remove(ev),
            EventKind::PgmapRemoved => self.on_pgmap_removed(ev),
            EventKind::DaxKill => self.stats.dax_kills += 1,
            EventKind::HolderNotify => self.stats.holder_notifications += 1,
            EventKind::PmdSplit => self.on_pmd_split(ev),
            EventKind::Remap => self.on_remap(ev),
            EventKind::CopyRange => self.on_copy_range(ev),
            EventKind::TaskNew => self.on_task_new(ev),
            EventKind::GupRefused => self.stats.gup_refused += 1,
            EventKind::AuditMap => self.on_audit_map(ev),
            EventKind::AuditUnmap => self.on_audit_unmap(ev),
            EventKind::Audit => self.on_audit(ev),
        }
        if self.pages.len() > self.cfg.max_pages && self.pages.len() >= self.evict_retry_at {
            self.evict();
            self.evict_retry_at = self.pages.len() + (self.cfg.max_pages / 10).max(1);
        }
    }

    /// Feed a loss record (the kernel's drop counters).
    pub fn apply_loss(&mut self, loss: &Loss) {
        self.loss
            .reported(loss.cpu, loss.count, loss.first_t, loss.last_t);
    }

    /// End of the trace at `end_t`: open gaps become losses, pins still held
    /// become findings.
    pub fn finish(&mut self, end_t: u64) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.loss.finish();
        let end_t = end_t.max(self.last_t);
        for p in std::mem::take(&mut self.pending) {
            let why = if self.cfg.verify {
                "the recording ended before its address space was audited"
            } else {
                "the recording did not audit page tables"
            };
            self.settle(p, Status::Unconfirmed, why);
        }
        let held: Vec<((u64, u64), Holder)> = self
            .holders
            .iter()
            .filter(|(_, h)| h.pins > 0)
            .map(|(k, h)| (*k, h.clone()))
            .collect();
        for ((pfn, mm), h) in held {
            let status = self.status_since(h.first_t, end_t);
            let explanation = || {
                format!(
                    "{} still held {} pin(s) on pfn {pfn:#x} at the end of the trace, taken {:.3}s before",
                    describe_proc(h.pid, &h.comm),
                    h.pins,
                    end_t.saturating_sub(h.first_t) as f64 / 1e9,
                )
            };
            self.raise(Raise {
                rule: RuleId::PinLeak,
                severity: Some(Severity::Info),
                key: (RuleId::PinLeak, pfn, mm, 0, 1),
                pfn,
                order: 0,
                mm: Hex(mm),
                vaddr: Hex(0),
                pid: h.pid,
                comm: h.comm,
                t: end_t,
                status,
                at_attach: false,
                explanation,
            });
        }
    }

    /// Findings raised since the last call (for live printing).
    pub fn take_new_findings(&mut self) -> &[Finding] {
        let new = &self.findings[self.drained..];
        self.drained = self.findings.len();
        new
    }

    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn lost(&self) -> u64 {
        self.loss.total()
    }

    pub fn loss(&self) -> &LossTracker {
        &self.loss
    }

    pub fn model(&self) -> RefcountModel {
        self.cfg.model
    }

    pub fn pgmaps(&self) -> &[Pgmap] {
        &self.pgmaps
    }

    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    pub fn mapping_count(&self) -> usize {
        self.mappings.len()
    }

    /// Live shadow mappings: `((mm, vaddr), mapping)`.
    pub fn mappings(&self) -> impl Iterator<Item = (&(u64, u64), &Mapping)> {
        self.mappings.iter()
    }

    /// Outstanding GUP references: `((pfn, mm), holder)`.
    pub fn holders(&self) -> impl Iterator<Item = (&(u64, u64), &Holder)> {
        self.holders.iter()
    }

    /// Mappings of one page (including PMDs covering it).
    pub fn mappings_of(&self, pfn: u64) -> Vec<((u64, u64), Mapping)> {
        self.mappings
            .iter()
            .filter(|(_, m)| m.pfn <= pfn && pfn < m.pfn + (1 << m.order))
            .map(|(k, m)| (*k, m.clone()))
            .collect()
    }

    /// Holders of GUP references on one page.
    pub fn holders_of(&self, pfn: u64) -> impl Iterator<Item = (u64, &Holder)> {
        self.holders
            .range((pfn, 0)..=(pfn, u64::MAX))
            .map(|(&(_, mm), h)| (mm, h))
    }

    pub fn page(&self, pfn: u64) -> Option<PageView<'_>> {
        self.pages.get(&pfn).map(|p| self.view(pfn, p))
    }

    pub fn pages(&self) -> impl Iterator<Item = PageView<'_>> {
        self.pages.iter().map(|(&pfn, p)| self.view(pfn, p))
    }

    fn view<'a>(&'a self, pfn: u64, p: &'a Page) -> PageView<'a> {
        let pgmap = self.pgmap_at(p.pgmap);
        let bias = idle_bias(self.cfg.model, pgmap.map_or(PgmapType::Unknown, |g| g.ty));
        let (a, b) = p
            .timeline
            .as_deref()
            .map_or((&[][..], &[][..]), |t| t.as_slices());
        PageView {
            pfn,
            raw_ref: p.raw_ref,
            logical_ref: p.raw_ref.map(|r| r.wrapping_sub(bias)),
            mapcount: p.mapcount,
            pins: p.pins,
            gets: p.gets,
            first_t: p.first_t,
            last_t: p.last_t,
            pgmap,
            memmap_gone: p.page_flags & PAGE_MEMMAP_GONE != 0,
            at_attach: p.page_flags & PAGE_AT_ATTACH != 0,
            timeline: a,
            timeline_tail: b,
        }
    }

    fn pgmap_at(&self, idx: u16) -> Option<&Pgmap> {
        idx.checked_sub(1).and_then(|i| self.pgmaps.get(i as usize))
    }

    fn status_since(&self, t0: u64, t1: u64) -> Status {
        if self.loss.any_between(t0, t1) {
            Status::Uncertain
        } else {
            Status::Definite
        }
    }

    // ------------------------------------------------------------ pages --

    /// Index (+1) of the pgmap of `pfn`, learning from the event's pgmap id.
    fn resolve_pgmap(&mut self, id: Hex, pfn: u64) -> u16 {
        if id.0 != 0
            && let Some(i) = self.pgmaps.iter().position(|g| g.id == id)
        {
            return (i + 1) as u16;
        }
        match self.pgmaps.iter().position(|g| g.contains(pfn)) {
            Some(i) => {
                if id.0 != 0 && self.pgmaps[i].id.0 == 0 {
                    self.pgmaps[i].id = id;
                }
                (i + 1) as u16
            }
            None => 0,
        }
    }

    fn page_type(&self, pfn: u64) -> PgmapType {
        self.pages
            .get(&pfn)
            .and_then(|p| self.pgmap_at(p.pgmap))
            .map_or(PgmapType::Unknown, |g| g.ty)
    }

    fn bias(&self, pfn: u64) -> i32 {
        idle_bias(self.cfg.model, self.page_type(pfn))
    }

    /// Record `ev` on page `pfn`: refcount, time, pgmap, timeline.
    fn touch(&mut self, pfn: u64, ev: &Event, gup: Option<GupLabel>) {
        let pgmap = if ev.pgmap.0 != 0 || !self.pages.contains_key(&pfn) {
            self.resolve_pgmap(ev.pgmap, pfn)
        } else {
            0
        };
        let len = self.cfg.timeline_len;
        let page = self.pages.entry(pfn).or_insert_with(|| Page {
            first_t: ev.t,
            ..Page::default()
        });
        if pgmap != 0 {
            page.pgmap = pgmap;
        }
        page.last_t = ev.t;
        if let Some(r) = ev.ref_after.or(ev.ref_before) {
            page.raw_ref = Some(r);
        }
        let observed = ev.ref_after.or(ev.ref_before);
        if ev.flags.has(flags::MEMMAP_UNREADABLE) {
            page.page_flags |= PAGE_MEMMAP_GONE;
        }
        if ev.flags.has(flags::AT_ATTACH) || ev.kind == EventKind::AttachMap {
            page.page_flags |= PAGE_AT_ATTACH;
        }
        let entry = TimelineEntry::from_event(ev, gup);
        if len > 0 {
            let tl = page
                .timeline
                .get_or_insert_with(|| Box::new(VecDeque::with_capacity(4)));
            if tl.len() >= len {
                tl.pop_front();
                self.stats.timeline_evicted += 1;
            }
            tl.push_back(entry.clone());
        }
        if let Some(ids) = self.unplug_open.get(&pfn) {
            for &id in ids {
                let f = &mut self.findings[id];
                // Bounded: the interesting part is the first events after removal.
                if f.timeline.len() < 4 * len.max(16) {
                    f.timeline.push(entry.clone());
                }
            }
        }
        if let Some(r) = observed {
            self.reconcile_gets(pfn, r);
        }
    }

    /// FOLL_GET references we believe outstanding, that an observed
    /// refcount proves released (their put was inline: no event).
    fn reconcile_gets(&mut self, pfn: u64, raw: i32) {
        let bias = self.bias(pfn);
        let pin_bias = self.cfg.gup.pin_bias;
        let Some(page) = self.pages.get_mut(&pfn) else {
            return;
        };
        if page.gets == 0 {
            return;
        }
        // Wrapping, as in release builds: refcounts come from the kernel
        // or a trace file, and a corrupt one must not panic.
        let floor = bias.wrapping_add((page.pins as i32).wrapping_mul(pin_bias));
        let gets_possible = raw.wrapping_sub(floor).max(0) as u32;
        if gets_possible >= page.gets {
            return;
        }
        let mut stale = page.gets - gets_possible;
        page.gets = gets_possible;
        self.stats.gets_reconciled += u64::from(stale);
        for h in self
            .holders
            .range_mut((pfn, 0)..=(pfn, u64::MAX))
            .map(|(_, h)| h)
        {
            let take = h.gets.min(stale);
            h.gets -= take;
            stale -= take;
        }
        self.holders.retain(|_, h| h.pins > 0 || h.gets > 0);
    }

    fn timeline_of(&self, pfn: u64) -> Vec<TimelineEntry> {
        self.pages
            .get(&pfn)
            .and_then(|p| p.timeline.as_deref())
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    // --------------------------------------------------------- findings --

    fn raise<F: FnOnce() -> String>(&mut self, r: Raise<F>) -> Option<usize> {
        let wait = r.rule.needs_page_table() && !self.in_audit;
        if wait && self.pending.iter().any(|p| p.key == r.key) {
            return None;
        }
        match self.dedupe.entry(r.key) {
            Entry::Occupied(e) => {
                let f = &mut self.findings[*e.get()];
                f.occurrences += 1;
                return None;
            }
            Entry::Vacant(v) => {
                if self.findings.len() >= self.cfg.max_findings {
                    self.stats.findings_dropped += 1;
                    return None;
                }
                v.insert(self.findings.len());
            }
        }
        let id = self.findings.len();
        let timeline = self.timeline_of(r.pfn);
        let finding = Finding {
            id: id as u64,
            rule: r.rule,
            severity: r
                .severity
                .unwrap_or_else(|| r.rule.severity(self.cfg.model)),
            status: r.status,
            pfn: r.pfn,
            order: r.order,
            mm: r.mm,
            vaddr: r.vaddr,
            pid: r.pid,
            comm: r.comm,
            t_ns: r.t,
            explanation: (r.explanation)(),
            at_attach: r.at_attach,
            occurrences: 1,
            timeline,
        };
        if wait {
            // Not reported (or counted) until the page table confirms it.
            self.dedupe.remove(&r.key);
            let pid = finding.pid;
            if self.cfg.verify {
                self.verify_requests.insert(finding.mm.0, pid);
            }
            self.pending.push(Pending {
                key: r.key,
                finding,
                contradicted: false,
            });
            if !self.cfg.verify {
                let p = self.pending.pop().expect("just pushed");
                return self.settle(
                    p,
                    Status::Unconfirmed,
                    "the recording did not audit page tables",
                );
            }
            return None;
        }
        self.open_unplug(&finding, id);
        self.findings.push(finding);
        Some(id)
    }

    /// A mapped_after_unplug finding collects every later event on its pages.
    /// A PUD's pages are one folio whose events name its head (GUP events
    /// are reported on the folio's head pfn): the head stands for all.
    fn open_unplug(&mut self, f: &Finding, id: usize) {
        if f.rule == RuleId::MappedAfterUnplug {
            let pages = if f.order == PUD_ORDER {
                1
            } else {
                1u64 << f.order
            };
            for p in f.pfn..f.pfn + pages {
                self.unplug_open.entry(p).or_default().push(id);
            }
        }
    }

    /// Report a finding that waited for the page table: `status`
    /// `Unconfirmed` says why it could not be checked.
    fn settle(&mut self, p: Pending, status: Status, why: &str) -> Option<usize> {
        let Pending {
            key, mut finding, ..
        } = p;
        if self.findings.len() >= self.cfg.max_findings {
            self.stats.findings_dropped += 1;
            return None;
        }
        if let Entry::Occupied(e) = self.dedupe.entry(key) {
            self.findings[*e.get()].occurrences += 1;
            return None;
        }
        let id = self.findings.len();
        finding.id = id as u64;
        if status == Status::Unconfirmed {
            // Events lost around it (uncertain) is the stronger caveat.
            if finding.status == Status::Definite {
                finding.status = Status::Unconfirmed;
            }
            finding
                .explanation
                .push_str(&format!(" Not confirmed against the page table: {why}."));
        } else if finding.status == Status::Definite {
            finding.explanation.push_str(
                " Confirmed: the kernel's page table still mapped it when refscope read it.",
            );
        }
        self.open_unplug(&finding, id);
        self.dedupe.insert(key, id);
        self.findings.push(finding);
        Some(id)
    }

    // --------------------------------------------------------- mappings --

    fn on_map(&mut self, ev: &Event, at_attach: bool) {
        let pfn = ev.pfn;
        self.touch(pfn, ev, None);
        if ev.failed() {
            return;
        }
        if !at_attach && !self.in_audit && !self.drift_open.is_empty() {
            let va = ev.vaddr.0;
            self.explain_late(DriftKind::Missing, ev.mm.0, va, va + 1, ev.t, Some(pfn));
        }
        let key = (ev.mm.0, ev.vaddr.0);
        let mapping = Mapping {
            pfn,
            order: ev.order,
            t: ev.t,
            pid: ev.pid,
            comm: ev.comm,
            at_attach,
        };
        let new = match self.mappings.get(&key) {
            // Same page again (write upgrade, or seen by the snapshot and a
            // probe): not a new install.
            Some(m) if m.pfn == pfn && m.order == ev.order => false,
            Some(_) => {
                self.stats.mappings_replaced += 1;
                if let Some(old) = self.remove_mapping(key) {
                    self.unmap_pages(&old);
                }
                true
            }
            None => true,
        };
        if new {
            self.map_pages(&mapping, ev.t);
            self.insert_mapping(key, mapping);
            self.stats.mappings_installed += 1;
        }

        let ty = self.page_type(pfn);
        let bias = idle_bias(self.cfg.model, ty);
        // A return probe still sees the fault path's temporary reference.
        let transient = if ev.ref_after.is_some() && !at_attach {
            transient_install_refs(self.cfg.model, ty)
        } else {
            0
        };
        if let Some(raw) = ev.ref_after.or(ev.ref_before)
            && raw.wrapping_sub(bias).wrapping_sub(transient) <= 0
        {
            let what = match ev.order {
                0 => "PTE",
                PUD_ORDER => "PUD",
                _ => "PMD",
            };
            let explanation = || {
                format!(
                    "{} installed a {what} at {} for pfn {pfn:#x} while its _refcount was {raw} \
                 (logical {}, idle bias {bias}{}): the mapping holds no page reference{}.",
                    describe_proc(ev.pid, &ev.comm),
                    ev.vaddr,
                    raw.wrapping_sub(bias).wrapping_sub(transient),
                    if transient > 0 {
                        ", minus the fault's temporary reference"
                    } else {
                        ""
                    },
                    if at_attach {
                        " (present when refscope attached)"
                    } else {
                        ""
                    },
                )
            };
            self.raise(Raise {
                rule: RuleId::ZeroRefMapping,
                severity: None,
                key: (
                    RuleId::ZeroRefMapping,
                    pfn,
                    ev.mm.0,
                    ev.vaddr.0,
                    ev.order as u64,
                ),
                pfn,
                order: ev.order,
                mm: ev.mm,
                vaddr: ev.vaddr,
                pid: ev.pid,
                comm: ev.comm,
                t: ev.t,
                status: Status::Definite,
                at_attach,
                explanation,
            });
        }

        let removing = self
            .pages
            .get(&pfn)
            .and_then(|p| self.pgmap_at(p.pgmap))
            .filter(|g| g.state != PgmapState::Live)
            .map(|g| (g.name.clone(), g.state));
        if let Some((name, state)) = removing {
            let audited = self.in_audit;
            let explanation = || {
                if audited {
                    return format!(
                        "The page table of {} maps pfn {pfn:#x} at {} (read by the shadow audit: refscope's hooks missed this mapping) while its device {} is being removed.",
                        describe_proc(ev.pid, &ev.comm),
                        ev.vaddr,
                        display_name(&name),
                    );
                }
                format!(
                    "{} mapped pfn {pfn:#x} at {} after removal of its device {} had {}.",
                    describe_proc(ev.pid, &ev.comm),
                    ev.vaddr,
                    display_name(&name),
                    if state == PgmapState::Removed {
                        "completed"
                    } else {
                        "started"
                    },
                )
            };
            self.raise(Raise {
                rule: RuleId::MappedAfterUnplug,
                severity: None,
                key: (RuleId::MappedAfterUnplug, pfn, ev.mm.0, ev.vaddr.0, ev.t),
                pfn,
                order: ev.order,
                mm: ev.mm,
                vaddr: ev.vaddr,
                pid: ev.pid,
                comm: ev.comm,
                t: ev.t,
                status: Status::Definite,
                at_attach,
                explanation,
            });
        }
    }

    /// Count one more mapping of every page `m` covers. A PMD maps 512
    /// pages of the head's device: they share its pgmap (and so its idle
    /// bias). A PUD is counted once, at its head ([`Analyzer::pud_heads`]).
    fn map_pages(&mut self, m: &Mapping, t: u64) {
        let pfn = m.pfn;
        if m.order == PUD_ORDER {
            *self.pud_heads.entry(pfn).or_default() += 1;
            if let Some(page) = self.pages.get_mut(&pfn) {
                page.page_flags &= !PAGE_FREED_REPORTED;
            }
            return;
        }
        let pgmap = self.pages.get(&pfn).map_or(0, |p| p.pgmap);
        for p in pfn..pfn + (1u64 << m.order) {
            let page = self.pages.entry(p).or_insert_with(|| Page {
                first_t: t,
                last_t: t,
                ..Page::default()
            });
            if page.pgmap == 0 {
                page.pgmap = pgmap;
            }
            page.mapcount += 1;
            page.page_flags &= !PAGE_FREED_REPORTED;
        }
    }

    /// Decrement the mapcount of every page `m` covers.
    fn unmap_pages(&mut self, m: &Mapping) {
        if m.order == PUD_ORDER {
            if let Some(n) = self.pud_heads.get_mut(&m.pfn) {
                *n -= 1;
                if *n == 0 {
                    self.pud_heads.remove(&m.pfn);
                }
            }
        } else {
            for p in m.pfn..m.pfn + (1u64 << m.order) {
                if let Some(page) = self.pages.get_mut(&p) {
                    page.mapcount = page.mapcount.saturating_sub(1);
                }
            }
        }
        self.stats.mappings_removed += 1;
    }

    /// The only ways into and out of `mappings`: they keep `pud_keys`.
    fn insert_mapping(&mut self, key: (u64, u64), m: Mapping) -> Option<Mapping> {
        if m.order == PUD_ORDER {
            self.pud_keys.insert(key);
        }
        let old = self.mappings.insert(key, m);
        if let Some(o) = &old
            && o.order == PUD_ORDER
            && self.mappings.get(&key).is_none_or(|n| n.order != PUD_ORDER)
        {
            self.pud_keys.remove(&key);
        }
        old
    }

    fn remove_mapping(&mut self, key: (u64, u64)) -> Option<Mapping> {
        let old = self.mappings.remove(&key);
        if old.as_ref().is_some_and(|m| m.order == PUD_ORDER) {
            self.pud_keys.remove(&key);
        }
        old
    }

    /// Keys of the shadow mappings of `mm` that overlap `[start, end)`.
    fn overlapping(&self, mm: u64, start: u64, end: u64) -> Vec<(u64, u64)> {
        let covers = |va: u64, order: u8| va.saturating_add(4096u64 << order) > start;
        let lo = start.saturating_sub(MAX_MAPPING_BYTES - 1);
        let mut hits: Vec<(u64, u64)> = self
            .mappings
            .range((mm, lo)..(mm, end.max(lo)))
            .filter(|((_, va), m)| covers(*va, m.order))
            .map(|(k, _)| *k)
            .collect();
        let lo = start.saturating_sub(PUD_BYTES - 1);
        let before = hits.len();
        hits.extend(
            self.pud_keys
                .range((mm, lo)..(mm, end.max(lo)))
                .filter(|&&(_, va)| covers(va, PUD_ORDER)),
        );
        if hits.len() > before {
            hits.sort_unstable();
            hits.dedup();
        }
        hits
    }

    fn on_unmap(&mut self, ev: &Event) {
        let (mm, start, end) = (ev.mm.0, ev.vaddr.0, ev.vaddr_end.0);
        if !self.drift_open.is_empty() {
            self.explain_late(DriftKind::Stale, mm, start, end, ev.t, None);
        }
        for key in self.overlapping(mm, start, end) {
            if let Some(m) = self.remove_mapping(key) {
                self.unmap_pages(&m);
                let mut e = ev.clone();
                e.pfn = m.pfn;
                e.order = m.order;
                e.vaddr = Hex(key.1);
                e.ref_before = None;
                e.ref_after = None;
                self.touch(m.pfn, &e, None);
            }
        }
    }

    /// A DAX huge PMD or PUD was cleared by a split (it is refaulted at a
    /// smaller size). The event's order says which (0 in older traces: a
    /// PMD); only a mapping of that size at that address is cleared.
    fn on_pmd_split(&mut self, ev: &Event) {
        if !self.drift_open.is_empty() {
            let (mm, start, end) = (ev.mm.0, ev.vaddr.0, ev.vaddr_end.0);
            self.explain_late(DriftKind::Stale, mm, start, end, ev.t, None);
        }
        let key = (ev.mm.0, ev.vaddr.0);
        let order = if ev.order == 0 { PMD_ORDER } else { ev.order };
        if self.mappings.get(&key).is_some_and(|m| m.order == order)
            && let Some(m) = self.remove_mapping(key)
        {
            self.unmap_pages(&m);
            let mut e = ev.clone();
            e.pfn = m.pfn;
            e.order = m.order;
            self.touch(m.pfn, &e, None);
        }
    }

    /// mremap moved the page tables of `[vaddr, vaddr_end)` to `new_vaddr`.
    fn on_remap(&mut self, ev: &Event) {
        let (mm, start, end) = (ev.mm.0, ev.vaddr.0, ev.vaddr_end.0);
        let moved: Vec<(u64, Mapping)> = self
            .mappings
            .range((mm, start)..(mm, end.max(start)))
            .map(|((_, va), m)| (*va, m.clone()))
            .collect();
        for (va, m) in moved {
            self.remove_mapping((mm, va));
            let new_va = ev.new_vaddr.0.wrapping_add(va - start);
            if let Some(old) = self.insert_mapping((mm, new_va), m) {
                self.unmap_pages(&old);
            }
            self.stats.mappings_moved += 1;
        }
    }

    /// fork copied the present PTEs of `[vaddr, vaddr_end)` from `src_mm`.
    /// PTEs and PUDs, not PMDs: `copy_huge_pmd` never copies a DAX PMD
    /// (devmap on 6.x, a file folio on 7.x; the child refaults it), so PMD
    /// mappings stay the parent's alone, while `copy_huge_pud` copies a
    /// device-dax PUD. The copy runs in the parent's context: the copies
    /// carry the parent's pid until `task_new` names the child.
    fn on_copy_range(&mut self, ev: &Event) {
        let (src, dst) = (ev.src_mm.0, ev.mm.0);
        let copied: Vec<(u64, Mapping)> = self
            .mappings
            .range((src, ev.vaddr.0)..(src, ev.vaddr_end.0.max(ev.vaddr.0)))
            .filter(|(_, m)| m.order == 0 || m.order == PUD_ORDER)
            .map(|((_, va), m)| (*va, m.clone()))
            .collect();
        for (va, m) in copied {
            let copy = Mapping {
                t: ev.t,
                pid: ev.pid,
                comm: ev.comm,
                ..m
            };
            if copy.order == PUD_ORDER {
                *self.pud_heads.entry(copy.pfn).or_default() += 1;
            } else if let Some(page) = self.pages.get_mut(&copy.pfn) {
                page.mapcount += 1;
            }
            if let Some(old) = self.insert_mapping((dst, va), copy) {
                self.unmap_pages(&old);
            }
            self.stats.mappings_copied += 1;
        }
    }

    /// A new process owns `mm`, which fork filled with copies made in its
    /// parent's context: from now on they are the child's.
    fn on_task_new(&mut self, ev: &Event) {
        let mm = ev.mm.0;
        for (_, m) in self.mappings.range_mut((mm, 0)..=(mm, u64::MAX)) {
            if m.pid != ev.pid || m.comm != ev.comm {
                m.pid = ev.pid;
                m.comm = ev.comm;
                self.stats.mappings_reattributed += 1;
            }
        }
    }

    // ------------------------------------------------------------ audit --

    /// The page table maps what the shadow did not: take it in.
    fn on_audit_map(&mut self, ev: &Event) {
        let hint = self.missing_hint(ev);
        self.note_drift(ev, DriftKind::Missing, hint);
        // Install-time rules do not apply (the install was not seen); a
        // mapping of a device being removed is confirmed by the page table.
        self.in_audit = true;
        let mut e = ev.clone();
        e.ref_before = None;
        e.ref_after = None;
        self.on_map(&e, false);
        self.in_audit = false;
    }

    fn missing_hint(&self, ev: &Event) -> &'static str {
        let elsewhere: Vec<u64> = self
            .mappings_of(ev.pfn)
            .into_iter()
            .map(|((mm, _), _)| mm)
            .collect();
        if elsewhere.contains(&ev.mm.0) {
            "moved within the address space by a path refscope did not see (remap)"
        } else if !elsewhere.is_empty() {
            "copied from another address space by a path refscope did not see (fork)"
        } else {
            "installed by a path refscope did not see (map_pte, map_pmd)"
        }
    }

    /// The shadow had what the page table does not: drop it.
    fn on_audit_unmap(&mut self, ev: &Event) {
        let key = (ev.mm.0, ev.vaddr.0);
        let Some(m) = self.mappings.get(&key).cloned() else {
            return;
        };
        let entry = ev.arg_flags.0;
        let hint = if entry == 0 {
            "cleared by a path refscope did not see (unmap, pmd split, exit)"
        } else {
            "replaced in place by a path refscope did not see (copy-on-write, migration: cow)"
        };
        let mut e = ev.clone();
        e.pid = m.pid;
        e.comm = m.comm;
        e.pfn = m.pfn;
        e.order = m.order;
        self.note_drift(&e, DriftKind::Stale, hint);
        self.remove_mapping(key);
        self.unmap_pages(&m);
        self.touch(m.pfn, &e, None);
        for p in &mut self.pending {
            if p.finding.mm == ev.mm && p.finding.vaddr == ev.vaddr {
                // The page table contradicts it: withdrawn at the audit.
                p.contradicted = true;
            }
        }
    }

    fn note_drift(&mut self, ev: &Event, kind: DriftKind, hint: &'static str) {
        // With events lost, the missed event is most likely among them.
        let hint = if self.lost() > 0 {
            "its event may be among those lost (the ring buffer was full); else a path refscope did not see"
        } else {
            hint
        };
        match kind {
            DriftKind::Missing => self.stats.drift_missing += 1,
            DriftKind::Stale => self.stats.drift_stale += 1,
        }
        if self.drift.len() < MAX_DRIFT_KEPT {
            self.drift_open
                .insert((ev.mm.0, ev.vaddr.0), self.drift.len());
            self.drift.push(Drift {
                t: ev.t,
                kind,
                mm: ev.mm,
                pid: ev.pid,
                comm: ev.comm,
                vaddr: ev.vaddr,
                pfn: ev.pfn,
                order: ev.order,
                entry: if kind == DriftKind::Stale {
                    ev.arg_flags
                } else {
                    Hex(0)
                },
                hint,
                late: false,
            });
        }
    }

    /// An event of `kind`'s cause at `t` for `[start, end)` of `mm`: a
    /// divergence there found by a later page-table read was this event
    /// arriving late, not a missed path.
    fn explain_late(
        &mut self,
        kind: DriftKind,
        mm: u64,
        start: u64,
        end: u64,
        t: u64,
        pfn: Option<u64>,
    ) {
        let keys: Vec<(u64, u64)> = self
            .drift_open
            .range((mm, start)..(mm, end.max(start)))
            .filter(|(_, i)| {
                let d = &self.drift[**i];
                d.kind == kind && t < d.t && pfn.is_none_or(|p| p == d.pfn)
            })
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            let Some(i) = self.drift_open.remove(&k) else {
                continue;
            };
            let d = &mut self.drift[i];
            d.late = true;
            d.hint = "its event reached refscope after the page table was read: the shadow was behind, no path was missed";
            match kind {
                DriftKind::Missing => self.stats.drift_missing -= 1,
                DriftKind::Stale => self.stats.drift_stale -= 1,
            }
            self.stats.drift_late += 1;
        }
    }

    /// An address space was audited (its corrections came first): settle
    /// the findings that waited for it. Its `t` is when the page table was
    /// read: a finding raised later (its event drained while the table was
    /// read) waits for the next audit, which it has requested, since the
    /// read may predate what it accuses (a copy-on-write replacing the PTE
    /// just before the free that raised it).
    fn on_audit(&mut self, ev: &Event) {
        self.stats.audits += 1;
        let mm = ev.mm;
        let gone = ev.failed();
        let (mine, rest): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.finding.mm == mm && (gone || p.finding.t_ns <= ev.t));
        self.pending = rest;
        for p in mine {
            if p.contradicted {
                self.stats.findings_withdrawn += 1;
                continue;
            }
            let still = self
                .mappings
                .get(&(mm.0, p.finding.vaddr.0))
                .is_some_and(|m| m.pfn <= p.finding.pfn && p.finding.pfn < m.pfn + (1 << m.order));
            if gone {
                self.settle(
                    p,
                    Status::Unconfirmed,
                    "the process was gone before its page table could be read",
                );
            } else if still {
                let status = p.finding.status;
                self.settle(p, status, "");
            } else {
                self.settle(
                    p,
                    Status::Unconfirmed,
                    "it was unmapped before its page table could be read",
                );
            }
        }
    }

    /// Address spaces whose page table must be read before findings about
    /// them can be reported (with a pid holding each), since the last call.
    pub fn take_verify_requests(&mut self) -> Vec<(u64, u32)> {
        std::mem::take(&mut self.verify_requests)
            .into_iter()
            .collect()
    }

    /// Findings waiting for their address space's audit.
    pub fn pending_findings(&self) -> usize {
        self.pending.len()
    }

    /// Divergences the audit found (the first [`MAX_DRIFT_KEPT`]).
    pub fn drift(&self) -> &[Drift] {
        &self.drift
    }

    /// The shadow's mappings in address space `mm`, by address.
    pub fn mappings_in(&self, mm: u64) -> impl Iterator<Item = (u64, &Mapping)> {
        self.mappings
            .range((mm, 0)..=(mm, u64::MAX))
            .map(|(&(_, va), m)| (va, m))
    }

    fn on_mm_exit(&mut self, ev: &Event) {
        let mm = ev.mm.0;
        let mut range = ev.clone();
        range.vaddr = Hex(0);
        range.vaddr_end = Hex(u64::MAX);
        self.on_unmap(&range);

        let held: Vec<((u64, u64), Holder)> = self
            .holders
            .iter()
            .filter(|((_, hmm), _)| *hmm == mm)
            .map(|(k, h)| (*k, h.clone()))
            .collect();
        for ((pfn, hmm), h) in held {
            self.holders.remove(&(pfn, hmm));
            // FOLL_GET references can be dropped by inline folio_put_refs
            // on every kernel (e.g. 6.1's __bio_release_pages): only pins,
            // whose release always goes through gup_put_folio or
            // unpin_user_page, are evidence of a leak.
            if h.pins == 0 {
                continue;
            }
            let explanation = || {
                format!(
                    "{} exited still holding {} pin(s) on pfn {pfn:#x}, taken {:.3}s before.",
                    describe_proc(h.pid, &h.comm),
                    h.pins,
                    ev.t.saturating_sub(h.first_t) as f64 / 1e9,
                )
            };
            let status = self.status_since(h.first_t, ev.t);
            self.raise(Raise {
                rule: RuleId::PinLeak,
                severity: None,
                key: (RuleId::PinLeak, pfn, hmm, 0, 0),
                pfn,
                order: 0,
                mm: Hex(hmm),
                vaddr: Hex(0),
                pid: h.pid,
                comm: h.comm,
                t: ev.t,
                status,
                at_attach: false,
                explanation,
            });
        }
    }

    // -------------------------------------------------------------- GUP --

    fn on_gup_get(&mut self, ev: &Event) {
        let pfn = ev.pfn;
        let kind = self.cfg.gup.decode(ev.arg_flags.0);
        let label = GupLabel::new(kind.pin, kind.longterm);
        self.touch(pfn, ev, Some(label));
        if ev.failed() {
            return;
        }
        self.stats.gup_refs += 1;
        let refs = ev.refs.max(1) as u32;
        let ty = self.page_type(pfn);
        let bias = idle_bias(self.cfg.model, ty);
        let delta = if kind.pin {
            ev.refs.max(1).wrapping_mul(self.cfg.gup.pin_bias)
        } else {
            ev.refs.max(1)
        };
        let before = ev
            .ref_before
            .or_else(|| ev.ref_after.map(|a| a.wrapping_sub(delta)));
        if let Some(b) = before
            && b.wrapping_sub(bias) <= 0
        {
            let explanation = || {
                format!(
                    "{} took a {} on pfn {pfn:#x} whose _refcount was {b} before the call (logical {}, idle bias {bias}).",
                    describe_proc(ev.pid, &ev.comm),
                    label.as_str().replace('_', " "),
                    b.wrapping_sub(bias),
                )
            };
            self.raise(Raise {
                rule: RuleId::PinOnIdlePage,
                severity: None,
                key: (RuleId::PinOnIdlePage, pfn, ev.mm.0, 0, 0),
                pfn,
                order: ev.order,
                mm: ev.mm,
                vaddr: Hex(0),
                pid: ev.pid,
                comm: ev.comm,
                t: ev.t,
                status: Status::Definite,
                at_attach: false,
                explanation,
            });
        }
        if kind.longterm && ty == PgmapType::FsDax {
            let explanation = || {
                format!(
                    "{} obtained a FOLL_LONGTERM {} on FS-DAX pfn {pfn:#x}.",
                    describe_proc(ev.pid, &ev.comm),
                    if kind.pin { "pin" } else { "reference" },
                )
            };
            self.raise(Raise {
                rule: RuleId::LongtermPinFsdax,
                severity: None,
                key: (RuleId::LongtermPinFsdax, pfn, ev.mm.0, 0, 0),
                pfn,
                order: ev.order,
                mm: ev.mm,
                vaddr: Hex(0),
                pid: ev.pid,
                comm: ev.comm,
                t: ev.t,
                status: Status::Definite,
                at_attach: false,
                explanation,
            });
        }
        let h = self
            .holders
            .entry((pfn, ev.mm.0))
            .or_insert_with(|| Holder {
                pid: ev.pid,
                comm: ev.comm,
                pins: 0,
                gets: 0,
                longterm: false,
                first_t: ev.t,
            });
        h.longterm |= kind.longterm;
        let page = self.pages.entry(pfn).or_default();
        if kind.pin {
            h.pins = h.pins.saturating_add(refs);
            page.pins = page.pins.saturating_add(refs);
        } else {
            h.gets = h.gets.saturating_add(refs);
            page.gets = page.gets.saturating_add(refs);
        }
    }

    /// `gup_put_folio` (`gup = true`: flags say pin or get) or a devmap put
    /// (a FOLL_GET reference, or one GUP did not take).
    fn on_release(&mut self, ev: &Event, gup: bool) {
        let pfn = ev.pfn;
        let pin = gup && self.cfg.gup.decode(ev.arg_flags.0).pin;
        let label = gup.then(|| GupLabel::new(pin, false));
        self.touch(pfn, ev, label);
        let refs = ev.refs.max(1) as u32;
        // A devmap put with no GUP reference to match is normal (other
        // get_page users); an unpin with no pin is not.
        if !self.release(pfn, ev.mm.0, pin, refs) && gup {
            self.stats.unmatched_releases += 1;
        }
        self.check_count(ev);
    }

    /// Release `refs` pins or gets on `pfn`, preferring the holder `mm`.
    /// Returns false when nothing matched.
    fn release(&mut self, pfn: u64, mm: u64, pin: bool, refs: u32) -> bool {
        let mut left = refs;
        let mut keys: Vec<u64> = self.holders_of(pfn).map(|(hmm, _)| hmm).collect();
        keys.sort_by_key(|&hmm| hmm != mm);
        for hmm in keys {
            if left == 0 {
                break;
            }
            let Some(h) = self.holders.get_mut(&(pfn, hmm)) else {
                continue;
            };
            let have = if pin { &mut h.pins } else { &mut h.gets };
            let take = (*have).min(left);
            *have -= take;
            left -= take;
            if h.pins == 0 && h.gets == 0 {
                self.holders.remove(&(pfn, hmm));
            }
        }
        let released = refs - left;
        if let Some(page) = self.pages.get_mut(&pfn) {
            if pin {
                page.pins = page.pins.saturating_sub(released);
            } else {
                page.gets = page.gets.saturating_sub(released);
            }
        }
        released > 0
    }

    /// After a put: was the page released, or did its count underflow?
    fn check_count(&mut self, ev: &Event) {
        let pfn = ev.pfn;
        let Some(after) = ev.ref_after else { return };
        let bias = self.bias(pfn);
        let released = match self.cfg.model {
            RefcountModel::IdleOne => after < bias,
            RefcountModel::Refcounted => after <= 0,
        };
        if !released {
            return;
        }
        if self.mapped(pfn) {
            self.freed_while_mapped(pfn, ev, format!("its _refcount fell to {after}"));
        } else if after < bias || after < 0 {
            let explanation = || {
                format!(
                    "{} dropped pfn {pfn:#x}'s _refcount to {after}, below its idle value {bias}.",
                    describe_proc(ev.pid, &ev.comm),
                )
            };
            self.raise(Raise {
                rule: RuleId::RefcountUnderflow,
                severity: None,
                key: (RuleId::RefcountUnderflow, pfn, 0, 0, 0),
                pfn,
                order: 0,
                mm: ev.mm,
                vaddr: Hex(0),
                pid: ev.pid,
                comm: ev.comm,
                t: ev.t,
                status: Status::Definite,
                at_attach: false,
                explanation,
            });
        }
    }

    fn mapped(&self, pfn: u64) -> bool {
        self.pages.get(&pfn).is_some_and(|p| p.mapcount > 0) || self.pud_covers(pfn)
    }

    /// A PUD mapping covers `pfn`.
    fn pud_covers(&self, pfn: u64) -> bool {
        !self.pud_heads.is_empty()
            && self
                .pud_heads
                .range(pfn.saturating_sub(PUD_PAGES - 1)..=pfn)
                .next()
                .is_some()
    }

    fn on_free(&mut self, ev: &Event) {
        let pfn = ev.pfn;
        self.touch(pfn, ev, None);
        // Whatever references we believed outstanding are gone now.
        let keys: Vec<u64> = self.holders_of(pfn).map(|(mm, _)| mm).collect();
        for mm in keys {
            self.holders.remove(&(pfn, mm));
        }
        if let Some(page) = self.pages.get_mut(&pfn) {
            page.pins = 0;
            page.gets = 0;
        }
        if self.mapped(pfn) {
            self.freed_while_mapped(pfn, ev, format!("{} ran", ev.hook.function()));
        }
    }

    fn freed_while_mapped(&mut self, pfn: u64, ev: &Event, how: String) {
        let Some(page) = self.pages.get_mut(&pfn) else {
            return;
        };
        if page.page_flags & PAGE_FREED_REPORTED != 0 {
            return;
        }
        page.page_flags |= PAGE_FREED_REPORTED;
        for ((mm, vaddr), m) in self.mappings_of(pfn) {
            let explanation = || {
                format!(
                    "pfn {pfn:#x} was released ({how}, in {}) while {} still mapped it at {:#x} (installed {:.3}s before).",
                    describe_proc(ev.pid, &ev.comm),
                    describe_proc(m.pid, &m.comm),
                    vaddr,
                    ev.t.saturating_sub(m.t) as f64 / 1e9,
                )
            };
            let status = self.status_since(m.t, ev.t);
            self.raise(Raise {
                rule: RuleId::FreedWhileMapped,
                severity: None,
                key: (RuleId::FreedWhileMapped, pfn, mm, vaddr, m.t),
                pfn,
                order: m.order,
                mm: Hex(mm),
                vaddr: Hex(vaddr),
                pid: m.pid,
                comm: m.comm,
                t: ev.t,
                status,
                at_attach: m.at_attach,
                explanation,
            });
        }
    }

    // ---------------------------------------------------------- devices --

    fn on_pgmap_add(&mut self, ev: &Event) {
        let range = (ev.pfn, ev.pfn_end);
        let ty = PgmapType::from_kernel(ev.arg_flags.0);
        if let Some(g) = self.pgmaps.iter_mut().find(|g| {
            (ev.pgmap.0 != 0 && g.id == ev.pgmap) || (g.id.0 == 0 && g.ranges.contains(&range))
        }) {
            g.id = ev.pgmap;
            g.ty = ty;
            g.state = PgmapState::Live;
            if !g.ranges.contains(&range) {
                g.ranges.push(range);
            }
            return;
        }
        self.pgmaps.push(Pgmap {
            id: ev.pgmap,
            name: String::new(),
            ty,
            ranges: vec![range],
            state: PgmapState::Live,
        });
    }

    fn find_pgmap(&mut self, ev: &Event) -> usize {
        let range = (ev.pfn, ev.pfn_end);
        if let Some(i) = self.pgmaps.iter().position(|g| {
            (ev.pgmap.0 != 0 && g.id == ev.pgmap)
                || g.ranges
                    .iter()
                    .any(|&(a, b)| a < range.1.max(range.0.saturating_add(1)) && range.0 < b)
        }) {
            if self.pgmaps[i].id.0 == 0 {
                self.pgmaps[i].id = ev.pgmap;
            }
            return i;
        }
        self.pgmaps.push(Pgmap {
            id: ev.pgmap,
            name: String::new(),
            ty: PgmapType::from_kernel(ev.arg_flags.0),
            ranges: vec![range],
            state: PgmapState::Live,
        });
        self.pgmaps.len() - 1
    }

    fn on_pgmap_remove(&mut self, ev: &Event) {
        let i = self.find_pgmap(ev);
        self.pgmaps[i].state = PgmapState::Removing;
        let name = self.pgmaps[i].name.clone();
        let (lo, hi) = (ev.pfn, ev.pfn_end);
        let in_range = |pfn: u64| lo <= pfn && pfn < hi;

        let stale: Vec<((u64, u64), Mapping)> = self
            .mappings
            .iter()
            .filter(|(_, m)| in_range(m.pfn) || (lo > m.pfn && lo < m.pfn + (1 << m.order)))
            .map(|(k, m)| (*k, m.clone()))
            .collect();
        let refcounted = self.cfg.model == RefcountModel::Refcounted;
        for ((mm, vaddr), m) in stale {
            let mut e = ev.clone();
            e.pfn = m.pfn;
            self.touch(m.pfn, &e, None);
            let explanation = || {
                let who = describe_proc(m.pid, &m.comm);
                let mut s = format!(
                    "memunmap_pages started for device {} (pfns {lo:#x}-{:#x}) while {who} still mapped pfn {:#x} at {vaddr:#x}.",
                    display_name(&name),
                    hi.saturating_sub(1),
                    m.pfn,
                );
                if refcounted {
                    // docs/kernel-bugs.md: 7.3.4 oopses in __zap_vma_range.
                    s.push_str(&format!(
                        " On this kernel the mapping holds a reference on a page whose memmap is being freed: when {who} unmaps it or exits, the kernel will touch freed memory (7.3.4 oopses in __zap_vma_range)."
                    ));
                }
                s
            };
            let status = self.status_since(m.t, ev.t);
            self.raise(Raise {
                rule: RuleId::MappedAfterUnplug,
                severity: None,
                key: (RuleId::MappedAfterUnplug, m.pfn, mm, vaddr, i as u64),
                pfn: m.pfn,
                order: m.order,
                mm: Hex(mm),
                vaddr: Hex(vaddr),
                pid: m.pid,
                comm: m.comm,
                t: ev.t,
                status,
                at_attach: m.at_attach,
                explanation,
            });
        }

        let pinned: Vec<((u64, u64), Holder)> = self
            .holders
            .range((lo, 0)..(hi.max(lo), 0))
            .filter(|(_, h)| h.pins > 0)
            .map(|(k, h)| (*k, h.clone()))
            .collect();
        for ((pfn, mm), h) in pinned {
            let explanation = || {
                format!(
                    "memunmap_pages started for device {} while {} held {} pin(s) on pfn {pfn:#x}.",
                    display_name(&name),
                    describe_proc(h.pid, &h.comm),
                    h.pins,
                )
            };
            let status = self.status_since(h.first_t, ev.t);
            self.raise(Raise {
                rule: RuleId::PinnedAtUnplug,
                severity: None,
                key: (RuleId::PinnedAtUnplug, pfn, mm, 0, i as u64),
                pfn,
                order: 0,
                mm: Hex(mm),
                vaddr: Hex(0),
                pid: h.pid,
                comm: h.comm,
                t: ev.t,
                status,
                at_attach: false,
                explanation,
            });
        }
    }

    fn on_pgmap_removed(&mut self, ev: &Event) {
        if let Some(g) = self
            .pgmaps
            .iter_mut()
            .find(|g| ev.pgmap.0 != 0 && g.id == ev.pgmap)
        {
            g.state = PgmapState::Removed;
        }
    }

    /// Drop the least recently used idle pages down to 90% of the cap.
    fn evict(&mut self) {
        let target = self.cfg.max_pages / 10 * 9;
        let excess = self.pages.len().saturating_sub(target);
        let mut idle: Vec<(u64, u64)> = self
            .pages
            .iter()
            .filter(|(pfn, p)| {
                p.mapcount == 0
                    && p.pins == 0
                    && p.gets == 0
                    && !self.unplug_open.contains_key(pfn)
                    && !self.pud_covers(**pfn)
            })
            .map(|(&pfn, p)| (p.last_t, pfn))
            .collect();
        let n = excess.min(idle.len());
        if n == 0 {
            return;
        }
        if n < idle.len() {
            idle.select_nth_unstable(n);
        }
        for &(_, pfn) in &idle[..n] {
            self.pages.remove(&pfn);
        }
        self.stats.pages_evicted += n as u64;
    }
}

/// Arguments of [`Analyzer::raise`].
/// `explanation` is only called for a finding that is kept: most raises
/// repeat a known finding (or come past the cap), and formatting was most
/// of the hot path's cost.
struct Raise<F: FnOnce() -> String> {
    rule: RuleId,
    /// Overrides the rule's default severity.
    severity: Option<Severity>,
    key: DedupeKey,
    pfn: u64,
    order: u8,
    mm: Hex,
    vaddr: Hex,
    pid: u32,
    comm: Comm,
    t: u64,
    status: Status,
    at_attach: bool,
    explanation: F,
}

fn describe_proc(pid: u32, comm: &Comm) -> String {
    if comm.is_empty() {
        format!("pid {pid}")
    } else {
        format!("{comm} (pid {pid})")
    }
}

fn display_name(name: &str) -> &str {
    if name.is_empty() { "(unnamed)" } else { name }
}

/// Ignore `HookId` being unused outside tests in some builds.
const _: HookId = HookId::InsertPfn;

#[cfg(test)]
mod tests;
