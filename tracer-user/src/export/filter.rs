//! `--pid`, `--pfn-range`, `--since/--until` and `--rule`.
//!
//! Filters choose what is *written*; the analysis always sees the whole
//! trace, so refcounts, lifetimes and findings are those of the full trace.
//! An event is selected when it is in the time window, concerns a selected
//! page and is by the selected process, where
//! - a page event (map, GUP, put, free) concerns its page(s);
//! - an unmap or mm_exit (no page of its own) concerns the pages of the
//!   mappings and references it ended, and is "by" their owners too;
//! - a put or free that ended another process's reference is "by" that
//!   process too (so its pins end in the export);
//! - device events (pgmap add/remove, dax_kill, holder_notify) concern the
//!   pages of their pfn range and are kept whatever `--pid`.

use std::collections::HashSet;

use refscope_common::EventKind;
use refscope_core::event::Event;

use refscope_core::analysis::Change;

/// What to keep.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub pid: Option<u32>,
    /// Inclusive.
    pub pfn_range: Option<(u64, u64)>,
    /// Absolute monotonic ns: `[since, until)`.
    pub since: Option<u64>,
    pub until: Option<u64>,
    /// Pages with a finding of the `--rule` rules (from a first pass).
    pub pages: Option<HashSet<u64>>,
}

/// Whether an event kind is about one page (or a PMD's pages).
pub fn is_page_kind(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::Map
            | EventKind::AttachMap
            | EventKind::AuditMap
            | EventKind::AuditUnmap
            | EventKind::GupGet
            | EventKind::GupPut
            | EventKind::RefPut
            | EventKind::Free
    )
}

/// Whether an event kind is about a whole device.
pub fn is_device_kind(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::PgmapAdd
            | EventKind::PgmapRemove
            | EventKind::PgmapRemoved
            | EventKind::DaxKill
            | EventKind::HolderNotify
    )
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.pid.is_none()
            && self.pfn_range.is_none()
            && self.since.is_none()
            && self.until.is_none()
            && self.pages.is_none()
    }

    pub fn has_page_filter(&self) -> bool {
        self.pfn_range.is_some() || self.pages.is_some()
    }

    pub fn time_ok(&self, t: u64) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }

    pub fn pid_ok(&self, pid: u32) -> bool {
        self.pid.is_none_or(|p| p == pid)
    }

    /// Whether any of `[pfn, pfn + n)` is selected.
    pub fn pages_ok(&self, pfn: u64, n: u64) -> bool {
        let last = pfn.saturating_add(n.max(1) - 1);
        if let Some((lo, hi)) = self.pfn_range
            && (last < lo || pfn > hi)
        {
            return false;
        }
        match &self.pages {
            None => true,
            Some(set) => (pfn..=last).any(|p| set.contains(&p)),
        }
    }

    pub fn page_ok(&self, pfn: u64) -> bool {
        self.pages_ok(pfn, 1)
    }

    /// Whether a lifetime on `pfn` (`order`) owned by `pid` is shown.
    pub fn life_ok(&self, pfn: u64, order: u8, pid: u32) -> bool {
        self.pid_ok(pid) && self.pages_ok(pfn, 1u64 << order.min(20))
    }

    /// Whether `ev` is selected, given the lifetime `changes` it made.
    pub fn event_ok(&self, ev: &Event, changes: &[Change]) -> bool {
        if !self.time_ok(ev.t) {
            return false;
        }
        if self.is_empty() {
            return true;
        }
        if is_device_kind(ev.kind) {
            return ev.pfn == 0 || self.pages_ok(ev.pfn, ev.pfn_end.saturating_sub(ev.pfn));
        }
        // Lifetimes this event ended or moved that the filter shows.
        let touches_shown = changes.iter().any(|c| match c {
            Change::MapEnd(m, _) | Change::MapMoved { life: m, .. } => {
                self.life_ok(m.pfn, m.order, m.pid)
            }
            Change::PinEnd(p, _) => self.life_ok(p.pfn, 0, p.pid),
            Change::MapBegin(_) | Change::PinBegin(_) => false,
        });
        if is_page_kind(ev.kind) {
            let page = self.pages_ok(ev.pfn, ev.nr_pages());
            return page && (self.pid_ok(ev.pid) || touches_shown);
        }
        match ev.kind {
            EventKind::Unmap
            | EventKind::MmExit
            | EventKind::PmdSplit
            | EventKind::Remap
            | EventKind::CopyRange => {
                touches_shown
                    || changes.iter().any(|c| match c {
                        Change::MapBegin(m) => self.life_ok(m.pfn, m.order, m.pid),
                        _ => false,
                    })
                    || (!self.has_page_filter() && self.pid_ok(ev.pid))
            }
            // Events without a page (gup_refused): by pid only.
            _ => !self.has_page_filter() && self.pid_ok(ev.pid),
        }
    }
}

#[cfg(test)]
mod tests {
    use refscope_common::HookId;
    use refscope_core::{
        analysis::{Analyzer, Settings},
        event::Hex,
        model::RefcountModel,
    };

    use super::*;

    /// Apply `e`; its lifetime changes in `out`.
    fn apply(an: &mut Analyzer, e: &Event, out: &mut Vec<Change>) {
        out.clear();
        an.apply(e);
        an.take_changes(out);
    }

    fn ev(kind: EventKind, t: u64, pid: u32, pfn: u64) -> Event {
        let mut e = Event::new(kind, HookId::InsertPfn);
        e.t = t;
        e.pid = pid;
        e.mm = Hex(u64::from(pid) * 0x100);
        e.pfn = pfn;
        e
    }

    #[test]
    fn pfn_range_is_inclusive_and_pmds_intersect() {
        let f = Filter {
            pfn_range: Some((0x100, 0x1ff)),
            ..Filter::default()
        };
        assert!(f.page_ok(0x100) && f.page_ok(0x1ff));
        assert!(!f.page_ok(0xff) && !f.page_ok(0x200));
        // A PMD at 0x0 covers 0x0..0x200.
        assert!(f.pages_ok(0, 512));
        assert!(!f.pages_ok(0x200, 512));
    }

    #[test]
    fn unmaps_follow_the_mappings_they_end() {
        let f = Filter {
            pid: Some(7),
            ..Filter::default()
        };
        let mut l = Analyzer::new(Settings::new(RefcountModel::Refcounted));
        l.track_lifetimes();
        let mut m = ev(EventKind::Map, 1, 7, 0x100);
        m.vaddr = Hex(0x1000);
        let mut out = Vec::new();
        apply(&mut l, &m, &mut out);
        assert!(f.event_ok(&m, &out));
        // pid 8 maps too: not selected.
        let mut m8 = ev(EventKind::Map, 2, 8, 0x100);
        m8.vaddr = Hex(0x1000);
        apply(&mut l, &m8, &mut out);
        assert!(!f.event_ok(&m8, &out));
        // An unmap by another pid (a kernel thread, say) of pid 7's mm.
        let mut u = ev(EventKind::Unmap, 3, 99, 0);
        u.mm = Hex(0x700);
        u.vaddr = Hex(0x1000);
        u.vaddr_end = Hex(0x2000);
        apply(&mut l, &u, &mut out);
        assert_eq!(out.len(), 1);
        assert!(f.event_ok(&u, &out), "it ended pid 7's mapping");
        // The same unmap of pid 8's mm: not selected.
        u.mm = Hex(0x800);
        apply(&mut l, &u, &mut out);
        assert_eq!(out.len(), 1);
        assert!(!f.event_ok(&u, &out));
    }

    #[test]
    fn time_window_is_half_open() {
        let f = Filter {
            since: Some(10),
            until: Some(20),
            ..Filter::default()
        };
        assert!(!f.time_ok(9) && f.time_ok(10) && f.time_ok(19) && !f.time_ok(20));
        let e = ev(EventKind::Free, 15, 1, 0x100);
        assert!(f.event_ok(&e, &[]));
    }

    #[test]
    fn rule_pages_select_pages() {
        let f = Filter {
            pages: Some([0x105u64].into_iter().collect()),
            ..Filter::default()
        };
        assert!(f.page_ok(0x105) && !f.page_ok(0x106));
        let mut add = ev(EventKind::PgmapAdd, 1, 0, 0x100);
        add.pfn_end = 0x200;
        assert!(f.event_ok(&add, &[]));
        add.pfn = 0x200;
        add.pfn_end = 0x300;
        assert!(!f.event_ok(&add, &[]));
    }
}
