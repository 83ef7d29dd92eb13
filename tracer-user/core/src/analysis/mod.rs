//! Turning the event stream into per-page state, a shadow of live PTE, PMD
//! and PUD mappings, and findings.
//!
//! [`Analyzer::apply`] takes one event at a time (time comes from the event);
//! the live recorder and `refscope report` call it the same way. This file
//! holds the state and the dispatch; each concern has its own file: the
//! shadow page table (`shadow`), GUP holders and frees (`gup`), device page
//! maps (`device`), per-page state (`pages`), the findings store (`raise`)
//! and what the shadow audit reports (`drift`). A rule's detection and its
//! explanation sit together in the handler of the event that triggers it.

mod device;
mod drift;
mod finding;
mod gup;
pub mod lifetimes;
mod loss;
mod pages;
mod raise;
mod rules;
mod shadow;

use std::collections::{BTreeMap, HashMap, VecDeque, hash_map::Entry};

use drift::Pending;
pub use drift::{Drift, DriftKind};
pub use finding::{Finding, GupLabel, TimelineEntry};
use lifetimes::End;
pub use lifetimes::{Change, MapLife, PinLife};
pub use loss::{LossTracker, REORDER_WINDOW};
use raise::{Raise, describe_proc, display_name};
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
pub struct Settings {
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

impl Settings {
    pub fn new(model: RefcountModel) -> Self {
        Settings {
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
    cfg: Settings,
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
    /// Mapping and GUP-reference lifetimes, when asked for.
    life: Option<Box<lifetimes::LifeLog>>,
}

impl Analyzer {
    pub fn new(cfg: Settings) -> Self {
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
            life: None,
        }
    }

    pub fn settings(&self) -> &Settings {
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
            EventKind::Unmap => self.on_unmap(ev, End::Unmap),
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
        // The count after the call, against the state after the event.
        if let Some(after) = ev.ref_after
            && matches!(
                ev.kind,
                EventKind::Map
                    | EventKind::AttachMap
                    | EventKind::GupGet
                    | EventKind::GupPut
                    | EventKind::RefPut
            )
        {
            self.reconcile_gets(ev.pfn, after);
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
        if let Some(l) = &mut self.life {
            l.finish();
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

    /// The time of the latest event applied.
    pub fn last_t(&self) -> u64 {
        self.last_t
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
}

/// Ignore `HookId` being unused outside tests in some builds.
const _: HookId = HookId::InsertPfn;

#[cfg(test)]
mod tests;
