//! Mapping and GUP-reference lifetimes, as the analysis pairs them: one
//! record per lifetime (what a slice in the Perfetto export is) instead of
//! the counts the analysis keeps. Off unless asked for
//! ([`Analyzer::track_lifetimes`]); then every change the analysis makes
//! to its shadow page table and GUP holders is also emitted as a
//! [`Change`], so exports and the analysis cannot disagree.
//!
//! - A mapping lives from its install (`map`, `attach_map`, `audit_map`,
//!   or the fork that copied it) until the analysis removes it: an
//!   `unmap` range covering it, its address space's exit, a split of its
//!   size, a replacement at its address, or an audit that found it gone.
//!   mremap moves it without ending it.
//! - A GUP reference lives from its `gup_get` until the releases the
//!   analysis assigns to its holder (the releasing address space first,
//!   then the others by address space; oldest first within one) have
//!   given back all its refs, the page is freed, its holder's address
//!   space exits, or (FOLL_GET) an observed refcount proves it gone.
//!
//! State is proportional to the live mappings and references only.

use super::*;

/// A live (or just ended) mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapLife {
    /// Unique within one export.
    pub id: u64,
    pub mm: u64,
    pub vaddr: u64,
    pub pfn: u64,
    pub order: u8,
    /// Install time.
    pub t: u64,
    pub pid: u32,
    pub comm: Comm,
    pub at_attach: bool,
    pub write: bool,
    /// Installed by fork (copy_range) rather than a fault.
    pub copied: bool,
}

/// A live (or just ended) GUP reference or pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinLife {
    /// Unique within one export (also the flow id of the Perfetto export).
    pub id: u64,
    pub pfn: u64,
    pub mm: u64,
    pub t: u64,
    pub pid: u32,
    pub comm: Comm,
    pub label: GupLabel,
    /// Refs taken.
    pub refs: u32,
    /// Refs not yet released.
    pub left: u32,
}

/// Why a lifetime ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Unmap,
    MmExit,
    Replaced,
    PmdSplit,
    /// A gup_put/ref_put gave back its last ref.
    Released,
    /// The page was freed with the reference outstanding.
    Freed,
    /// The holder's address space exited with the reference outstanding.
    HolderExit,
    /// Still live at the end of the trace.
    EndOfTrace,
    /// Still live at the end of the exported time window (`--until`).
    WindowEnd,
    /// An observed refcount proved a FOLL_GET reference gone (its put
    /// was inline, with no event).
    Reconciled,
    /// The shadow audit found the page table no longer maps it.
    Audit,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Unmap => "unmap",
            End::MmExit => "mm_exit",
            End::Replaced => "replaced",
            End::PmdSplit => "pmd_split",
            End::Audit => "audit",
            End::Released => "released",
            End::Freed => "freed",
            End::HolderExit => "holder_exit",
            End::EndOfTrace => "end_of_trace",
            End::WindowEnd => "window_end",
            End::Reconciled => "reconciled",
        }
    }
}

/// What one event did to the lifetimes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    MapBegin(MapLife),
    MapEnd(MapLife, End),
    /// mremap moved a mapping (`vaddr` is the new address).
    MapMoved {
        life: MapLife,
        from: u64,
    },
    PinBegin(PinLife),
    PinEnd(PinLife, End),
}

/// The lifetimes the analysis keeps when asked to.
#[derive(Default)]
pub(super) struct LifeLog {
    next_id: u64,
    /// By (address space, address): a new task's mappings are one range.
    maps: BTreeMap<(u64, u64), MapLife>,
    /// Per page, oldest first.
    pins: FxHashMap<u64, Vec<PinLife>>,
    changes: Vec<Change>,
}

impl LifeLog {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A mapping installed at `key` (a replaced one ended first).
    pub(super) fn map_begin(&mut self, key: (u64, u64), mut life: MapLife) {
        life.id = self.id();
        if let Some(old) = self.maps.insert(key, life.clone()) {
            self.changes.push(Change::MapEnd(old, End::Replaced));
        }
        self.changes.push(Change::MapBegin(life));
    }

    pub(super) fn map_end(&mut self, key: (u64, u64), why: End) {
        if let Some(m) = self.maps.remove(&key) {
            self.changes.push(Change::MapEnd(m, why));
        }
    }

    pub(super) fn map_moved(&mut self, from: (u64, u64), to: (u64, u64)) {
        let Some(mut m) = self.maps.remove(&from) else {
            return;
        };
        m.vaddr = to.1;
        if let Some(old) = self.maps.insert(to, m.clone()) {
            self.changes.push(Change::MapEnd(old, End::Replaced));
        }
        self.changes.push(Change::MapMoved {
            life: m,
            from: from.1,
        });
    }

    /// The mapping at `key`, for a copy made of it.
    pub(super) fn map_at(&self, key: (u64, u64)) -> Option<&MapLife> {
        self.maps.get(&key)
    }

    /// A new process owns `mm`: its mappings are the new owner's.
    pub(super) fn map_owner(&mut self, mm: u64, pid: u32, comm: Comm) {
        for (_, m) in self.maps.range_mut((mm, 0)..=(mm, u64::MAX)) {
            m.pid = pid;
            m.comm = comm;
        }
    }

    pub(super) fn pin_begin(&mut self, mut life: PinLife) {
        life.id = self.id();
        self.pins.entry(life.pfn).or_default().push(life.clone());
        self.changes.push(Change::PinBegin(life));
    }

    /// `refs` of the pin (or get) kind on `pfn` held by `mm` given back,
    /// oldest reference first.
    pub(super) fn pin_release(&mut self, pfn: u64, mm: u64, pin: bool, mut refs: u32, why: End) {
        let Some(list) = self.pins.get_mut(&pfn) else {
            return;
        };
        let mut ended = Vec::new();
        list.retain_mut(|p| {
            if refs == 0 || p.mm != mm || p.label.is_pin() != pin {
                return true;
            }
            let take = p.left.min(refs);
            p.left -= take;
            refs -= take;
            if p.left > 0 {
                return true;
            }
            ended.push(p.clone());
            false
        });
        if list.is_empty() {
            self.pins.remove(&pfn);
        }
        self.changes
            .extend(ended.into_iter().map(|p| Change::PinEnd(p, why)));
    }

    /// Every reference on `pfn` (freed), or of `mm` on any page (exit).
    pub(super) fn pins_end(&mut self, pfn: Option<u64>, mm: Option<u64>, why: End) {
        let mut ended = Vec::new();
        self.pins.retain(|&p, list| {
            if pfn.is_some_and(|f| f != p) {
                return true;
            }
            list.retain(|l| {
                if mm.is_some_and(|m| m != l.mm) {
                    return true;
                }
                ended.push(l.clone());
                false
            });
            !list.is_empty()
        });
        ended.sort_by_key(|p| p.id);
        self.changes
            .extend(ended.into_iter().map(|p| Change::PinEnd(p, why)));
    }

    /// Where the changes of one event start (see [`LifeLog::sort_pin_ends`]).
    pub(super) fn mark(&self) -> usize {
        self.changes.len()
    }

    /// References one release ended, across holders, oldest first.
    pub(super) fn sort_pin_ends(&mut self, since: usize) {
        self.changes[since..].sort_by_key(|c| match c {
            Change::PinEnd(p, _) => p.id,
            _ => 0,
        });
    }

    /// The end of the trace: everything still live ends, oldest first.
    pub(super) fn finish(&mut self) {
        let mut maps: Vec<MapLife> = std::mem::take(&mut self.maps).into_values().collect();
        maps.sort_by_key(|m| m.id);
        self.changes
            .extend(maps.into_iter().map(|m| Change::MapEnd(m, End::EndOfTrace)));
        self.pins_end(None, None, End::EndOfTrace);
    }
}

impl Analyzer {
    /// Keep mapping and GUP-reference lifetimes from now on (before the
    /// first event): [`Analyzer::take_changes`] hands them out.
    pub fn track_lifetimes(&mut self) {
        self.life.get_or_insert_default();
    }

    /// Lifetime changes since the last call, in the order they happened,
    /// appended to `out`.
    pub fn take_changes(&mut self, out: &mut Vec<Change>) {
        if let Some(l) = &mut self.life {
            out.append(&mut l.changes);
        }
    }

    /// Live mappings, by id (with [`Analyzer::track_lifetimes`]).
    pub fn live_maps(&self) -> Vec<&MapLife> {
        let mut v: Vec<&MapLife> = self.life.iter().flat_map(|l| l.maps.values()).collect();
        v.sort_by_key(|m| m.id);
        v
    }

    /// Live GUP references, by id (with [`Analyzer::track_lifetimes`]).
    pub fn live_pins(&self) -> Vec<&PinLife> {
        let mut v: Vec<&PinLife> = self
            .life
            .iter()
            .flat_map(|l| l.pins.values().flatten())
            .collect();
        v.sort_by_key(|p| p.id);
        v
    }
}

#[cfg(test)]
mod tests {
    use refscope_common::HookId;

    use super::*;
    use crate::{event::Flags, model::RefcountModel};

    const PIN: u64 = 0x40000;
    const GET: u64 = 0x04;

    fn ev(kind: EventKind, t: u64, mm: u64, pfn: u64) -> Event {
        let mut e = Event::new(kind, HookId::InsertPfn);
        e.t = t;
        e.mm = Hex(mm);
        e.pfn = pfn;
        e.pid = mm as u32;
        e
    }

    fn map(t: u64, mm: u64, vaddr: u64, pfn: u64, order: u8) -> Event {
        let mut e = ev(EventKind::Map, t, mm, pfn);
        e.vaddr = Hex(vaddr);
        e.order = order;
        e
    }

    fn unmap(t: u64, mm: u64, start: u64, end: u64) -> Event {
        let mut e = ev(EventKind::Unmap, t, mm, 0);
        e.vaddr = Hex(start);
        e.vaddr_end = Hex(end);
        e
    }

    fn gup(kind: EventKind, t: u64, mm: u64, pfn: u64, flags: u64, refs: i32) -> Event {
        let mut e = ev(kind, t, mm, pfn);
        e.arg_flags = Hex(flags);
        e.refs = refs;
        e
    }

    fn run(events: &[Event]) -> (Vec<Change>, Analyzer) {
        let mut an = Analyzer::new(Settings::new(RefcountModel::Refcounted));
        an.track_lifetimes();
        let mut out = Vec::new();
        for e in events {
            an.apply(e);
            an.take_changes(&mut out);
        }
        (out, an)
    }

    fn live_count(an: &Analyzer) -> (usize, usize) {
        (an.live_maps().len(), an.live_pins().len())
    }

    fn summary(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::MapBegin(m) => format!("map+ {} {:#x}", m.id, m.vaddr),
                Change::MapEnd(m, why) => format!("map- {} {}", m.id, why.as_str()),
                Change::MapMoved { life, from } => {
                    format!("move {} {from:#x}->{:#x}", life.id, life.vaddr)
                }
                Change::PinBegin(p) => format!("pin+ {} {}", p.id, p.label.as_str()),
                Change::PinEnd(p, why) => format!("pin- {} {}", p.id, why.as_str()),
            })
            .collect()
    }

    #[test]
    fn mappings_end_at_unmap_exit_or_replacement() {
        let (out, l) = run(&[
            map(1, 7, 0x1000, 0x100, 0),
            map(2, 7, 0x1000, 0x100, 0), // same page again: no new lifetime
            map(3, 7, 0x2000, 0x101, 0),
            map(4, 8, 0x1000, 0x100, 0), // another mm, same page: overlaps
            map(5, 7, 0x1000, 0x102, 0), // replacement at the same address
            unmap(6, 7, 0x2000, 0x3000),
            unmap(7, 7, 0x5000, 0x6000), // covers nothing
            ev(EventKind::MmExit, 8, 8, 0),
        ]);
        assert_eq!(
            summary(&out),
            [
                "map+ 1 0x1000",
                "map+ 2 0x2000",
                "map+ 3 0x1000",
                "map- 1 replaced",
                "map+ 4 0x1000",
                "map- 2 unmap",
                "map- 3 mm_exit",
            ]
        );
        assert_eq!(live_count(&l), (1, 0));
    }

    #[test]
    fn failed_maps_start_nothing_and_unmap_inside_a_pmd_ends_it() {
        let mut failed = map(1, 7, 0x1000, 0x100, 0);
        failed.flags = Flags(flags::FAILED);
        let (out, _) = run(&[
            failed,
            map(2, 7, 0x20_0000, 0x200, 9),
            // A 4 KiB unmap in the middle of the 2 MiB mapping.
            unmap(3, 7, 0x30_0000, 0x30_1000),
        ]);
        assert_eq!(summary(&out), ["map+ 1 0x200000", "map- 1 unmap"]);
    }

    #[test]
    fn a_pud_mapping_ends_at_an_unmap_anywhere_inside_it_or_its_split() {
        const GIB: u64 = 1 << 30;
        let mut split = ev(EventKind::PmdSplit, 5, 7, 0);
        split.vaddr = Hex(4 * GIB);
        split.order = 9;
        let mut pud_split = split.clone();
        pud_split.t = 6;
        pud_split.order = PUD_ORDER;
        let (out, _) = run(&[
            map(1, 7, GIB, 0x40000, PUD_ORDER),
            map(2, 7, GIB - 0x1000, 0x100, 0),
            // 900 MiB into it.
            unmap(3, 7, GIB + (900 << 20), GIB + (901 << 20)),
            map(4, 7, 4 * GIB, 0x80000, PUD_ORDER),
            split,     // a PMD split there: not this mapping
            pud_split, // its own split
        ]);
        assert_eq!(
            summary(&out),
            [
                "map+ 1 0x40000000",
                "map+ 2 0x3ffff000",
                "map- 1 unmap",
                "map+ 3 0x100000000",
                "map- 3 pmd_split",
            ]
        );
    }

    #[test]
    fn pins_pair_with_releases_of_their_kind_oldest_first() {
        let (out, l) = run(&[
            gup(EventKind::GupGet, 1, 7, 0x100, PIN, 1),
            gup(EventKind::GupGet, 2, 7, 0x100, GET, 1),
            gup(EventKind::GupGet, 3, 7, 0x100, PIN | 0x10000, 2),
            // Unpin one: the oldest pin (id 1); the get is untouched.
            gup(EventKind::GupPut, 4, 7, 0x100, PIN, 1),
            // A FOLL_GET put releases the get.
            gup(EventKind::RefPut, 5, 7, 0x100, 0, 1),
            // One of the two refs of pin 3: still live.
            gup(EventKind::GupPut, 6, 7, 0x100, PIN, 1),
            gup(EventKind::GupPut, 7, 7, 0x100, PIN, 1),
            // Nothing left to release: no change.
            gup(EventKind::GupPut, 8, 7, 0x100, PIN, 1),
        ]);
        assert_eq!(
            summary(&out),
            [
                "pin+ 1 pin",
                "pin+ 2 get",
                "pin+ 3 pin_longterm",
                "pin- 1 released",
                "pin- 2 released",
                "pin- 3 released",
            ]
        );
        assert_eq!(live_count(&l), (0, 0));
    }

    #[test]
    fn releases_prefer_the_releasing_mm_and_one_put_can_end_several() {
        let (out, _) = run(&[
            gup(EventKind::GupGet, 1, 8, 0x100, PIN, 1),
            gup(EventKind::GupGet, 2, 7, 0x100, PIN, 1),
            gup(EventKind::GupGet, 3, 7, 0x100, PIN, 1),
            // mm 7 releases one: its own (id 2), though mm 8's is older.
            gup(EventKind::GupPut, 4, 7, 0x100, PIN, 1),
            // mm 7 releases two: its own id 3, then mm 8's id 1.
            gup(EventKind::GupPut, 5, 7, 0x100, PIN, 2),
        ]);
        assert_eq!(
            summary(&out),
            [
                "pin+ 1 pin",
                "pin+ 2 pin",
                "pin+ 3 pin",
                "pin- 2 released",
                "pin- 1 released",
                "pin- 3 released",
            ]
        );
    }

    #[test]
    fn free_exit_and_end_of_trace_end_pins() {
        let (mut out, mut l) = run(&[
            gup(EventKind::GupGet, 1, 7, 0x100, PIN, 1),
            gup(EventKind::GupGet, 2, 8, 0x101, PIN, 1),
            gup(EventKind::GupGet, 3, 9, 0x102, GET, 1),
            map(4, 9, 0x1000, 0x102, 0),
            ev(EventKind::Free, 5, 0, 0x100),
            ev(EventKind::MmExit, 6, 8, 0),
        ]);
        l.finish(7);
        l.take_changes(&mut out);
        assert_eq!(
            summary(&out),
            [
                "pin+ 1 pin",
                "pin+ 2 pin",
                "pin+ 3 get",
                "map+ 4 0x1000",
                "pin- 1 freed",
                "pin- 2 holder_exit",
                "map- 4 end_of_trace",
                "pin- 3 end_of_trace",
            ]
        );
    }

    #[test]
    fn remap_moves_and_fork_copies() {
        let mut mv = ev(EventKind::Remap, 3, 7, 0);
        mv.vaddr = Hex(0x1000);
        mv.vaddr_end = Hex(0x3000);
        mv.new_vaddr = Hex(0x10_0000);
        let mut fork = ev(EventKind::CopyRange, 4, 9, 0);
        fork.src_mm = Hex(7);
        fork.vaddr = Hex(0x10_0000);
        fork.vaddr_end = Hex(0x10_2000);
        let (out, l) = run(&[
            map(1, 7, 0x1000, 0x100, 0),
            map(2, 7, 0x2000, 0x101, 0),
            mv,
            fork,
            unmap(5, 7, 0x10_0000, 0x10_1000),
        ]);
        assert_eq!(
            summary(&out),
            [
                "map+ 1 0x1000",
                "map+ 2 0x2000",
                "move 1 0x1000->0x100000",
                "move 2 0x2000->0x101000",
                "map+ 3 0x100000",
                "map+ 4 0x101000",
                "map- 1 unmap",
            ]
        );
        assert_eq!(live_count(&l), (3, 0));
    }
}

/// The lifetimes are the analysis' own changes: over random event
/// sequences (every kind that changes the shadow or a reference, mappings
/// of every size, refcounts that reconcile FOLL_GET references), the
/// mappings the change stream leaves live are the shadow's, and the
/// references still live are the holders' counts, after every event.
#[cfg(test)]
mod agrees_with_the_analysis {
    use std::collections::{BTreeMap, BTreeSet};

    use refscope_common::HookId;

    use super::*;
    use crate::{
        event::Flags,
        model::{GupFlagBits, PgmapType, RefcountModel},
        trace::Device,
    };

    const DEV: u64 = 0x40_0000;
    const GIB: u64 = 1 << 30;
    const MMS: [u64; 3] = [0xa000, 0xb000, 0xc000];

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// An address in a small window of 4 GiB, aligned for `order`.
    fn addr(r: &mut Rng, order: u8) -> u64 {
        let unit = 4096u64 << order;
        GIB + r.below(4 * GIB / unit) * unit
    }

    fn order(r: &mut Rng) -> u8 {
        [0, 0, 0, PMD_ORDER, PUD_ORDER][r.below(5) as usize]
    }

    fn event(r: &mut Rng, t: u64) -> Event {
        let kinds = [
            EventKind::Map,
            EventKind::Map,
            EventKind::Map,
            EventKind::AttachMap,
            EventKind::Unmap,
            EventKind::Unmap,
            EventKind::PmdSplit,
            EventKind::Remap,
            EventKind::CopyRange,
            EventKind::TaskNew,
            EventKind::MmExit,
            EventKind::AuditMap,
            EventKind::AuditUnmap,
            EventKind::GupGet,
            EventKind::GupGet,
            EventKind::GupPut,
            EventKind::RefPut,
            EventKind::Free,
        ];
        let kind = kinds[r.below(kinds.len() as u64) as usize];
        let mut e = Event::new(kind, HookId::InsertPfn);
        e.t = t;
        e.seq = t;
        e.mm = Hex(MMS[r.below(3) as usize]);
        e.pid = 100 + r.below(4) as u32;
        let o = order(r);
        match kind {
            EventKind::Map | EventKind::AttachMap | EventKind::AuditMap => {
                e.order = o;
                e.vaddr = Hex(addr(r, o));
                let unit = 1u64 << o;
                e.pfn = DEV + r.below((4 << 18) / unit) * unit;
                if r.below(8) == 0 {
                    e.flags = Flags(flags::FAILED);
                }
            }
            EventKind::AuditUnmap => e.vaddr = Hex(addr(r, o)),
            EventKind::GupGet | EventKind::GupPut | EventKind::RefPut | EventKind::Free => {
                // A few pages, so gets, puts and frees meet; sometimes an
                // observed refcount lower than the references believed
                // held (the analysis reconciles FOLL_GET references).
                e.pfn = DEV + r.below(4);
                if r.below(4) == 0 {
                    e.ref_after = Some(r.below(3) as i32);
                }
                e.refs = 1 + r.below(3) as i32;
                let bits = GupFlagBits::default();
                e.arg_flags = Hex(if r.below(2) == 0 {
                    bits.foll_pin
                } else {
                    bits.foll_get
                });
                if r.below(8) == 0 {
                    e.flags = Flags(flags::FAILED);
                }
            }
            EventKind::PmdSplit => {
                e.order = if o == 0 { PMD_ORDER } else { o };
                e.vaddr = Hex(addr(r, e.order));
            }
            EventKind::Unmap | EventKind::Remap | EventKind::CopyRange => {
                let a = addr(r, 0);
                let b = addr(r, 0);
                // Mostly ordered ranges, sometimes backwards (corrupt).
                let (lo, hi) = if r.below(16) == 0 {
                    (a.max(b), a.min(b))
                } else {
                    (a.min(b), a.max(b) + 4096 * r.below(3))
                };
                e.vaddr = Hex(lo);
                e.vaddr_end = Hex(hi);
                e.new_vaddr = Hex(addr(r, o));
                e.src_mm = Hex(MMS[r.below(3) as usize]);
            }
            _ => {}
        }
        e
    }

    type Live = BTreeSet<(u64, u64, u64, u8, u32)>;

    fn analysis_live(an: &Analyzer) -> Live {
        an.mappings()
            .map(|(&(mm, va), m)| (mm, va, m.pfn, m.order, m.pid))
            .collect()
    }

    /// The mappings the change stream leaves live, by key.
    fn fold(live: &mut BTreeMap<(u64, u64), MapLife>, changes: &[Change]) {
        for c in changes {
            match c {
                Change::MapBegin(m) => {
                    let old = live.insert((m.mm, m.vaddr), m.clone());
                    assert!(old.is_none(), "a begin over a live mapping without its end");
                }
                Change::MapEnd(m, _) => {
                    let gone = live.remove(&(m.mm, m.vaddr));
                    assert_eq!(
                        gone.map(|g| g.id),
                        Some(m.id),
                        "an end of a mapping not live"
                    );
                }
                Change::MapMoved { life, from } => {
                    let gone = live.remove(&(life.mm, *from));
                    assert_eq!(
                        gone.map(|g| g.id),
                        Some(life.id),
                        "a move of a mapping not live"
                    );
                    live.insert((life.mm, life.vaddr), life.clone());
                }
                Change::PinBegin(_) | Change::PinEnd(..) => {}
            }
        }
    }

    /// The stream's live mappings. A new task's reattribution of fork's
    /// copies is no change of its own: the pid comes from the live
    /// lifetimes (and is what their ends carry).
    fn stream_live(an: &Analyzer, live: &BTreeMap<(u64, u64), MapLife>) -> Live {
        let pids: BTreeMap<u64, u32> = an.live_maps().iter().map(|m| (m.id, m.pid)).collect();
        live.values()
            .map(|m| {
                (
                    m.mm,
                    m.vaddr,
                    m.pfn,
                    m.order,
                    pids.get(&m.id).copied().unwrap_or(u32::MAX),
                )
            })
            .collect()
    }

    /// Outstanding references by (pfn, mm): (pins, gets).
    type Held = BTreeMap<(u64, u64), (u32, u32)>;

    fn analysis_held(an: &Analyzer) -> Held {
        an.holders()
            .map(|(&(pfn, mm), h)| ((pfn, mm), (h.pins, h.gets)))
            .filter(|(_, n)| *n != (0, 0))
            .collect()
    }

    fn lifetimes_held(an: &Analyzer) -> Held {
        let mut held = Held::new();
        for p in an.live_pins() {
            let n = held.entry((p.pfn, p.mm)).or_default();
            if p.label.is_pin() {
                n.0 += p.left;
            } else {
                n.1 += p.left;
            }
        }
        held.retain(|_, n| *n != (0, 0));
        held
    }

    #[test]
    fn live_mappings_and_references_are_the_same_after_every_event() {
        for seed in 1..=200u64 {
            let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut an = Analyzer::new(Settings::new(RefcountModel::Refcounted));
            an.add_device(&Device {
                name: "dax0.0".into(),
                mode: "devdax".into(),
                pfn_start: DEV,
                pfn_end: DEV + (4 << 18),
                pgmap_type: PgmapType::Generic,
            });
            an.track_lifetimes();
            let mut live = BTreeMap::new();
            let mut out = Vec::new();
            let mut trail = Vec::new();
            for t in 1..=300 {
                let e = event(&mut r, t);
                trail.push(format!(
                    "{:?} mm {:#x} [{:#x}, {:#x}) -> {:#x} o{} from {:#x}",
                    e.kind, e.mm.0, e.vaddr.0, e.vaddr_end.0, e.new_vaddr.0, e.order, e.src_mm.0
                ));
                an.apply(&e);
                out.clear();
                an.take_changes(&mut out);
                fold(&mut live, &out);
                let (a, x) = (analysis_held(&an), lifetimes_held(&an));
                assert!(
                    a == x,
                    "seed {seed}, event {t}: references: holders {a:?}, lifetimes {x:?}; last events:\n{}",
                    trail[trail.len().saturating_sub(6)..].join("\n")
                );
                let (a, x) = (analysis_live(&an), stream_live(&an, &live));
                assert!(
                    a == x,
                    "seed {seed}, event {t}: only in the shadow {:x?}, only in the change stream {:x?}; last events:\n{}",
                    a.difference(&x).collect::<Vec<_>>(),
                    x.difference(&a).collect::<Vec<_>>(),
                    trail[trail.len().saturating_sub(6)..].join("\n")
                );
            }
            an.finish(301);
            out.clear();
            an.take_changes(&mut out);
            fold(&mut live, &out);
            assert!(live.is_empty(), "seed {seed}: mappings never ended");
            assert!(
                an.live_pins().is_empty(),
                "seed {seed}: references never ended"
            );
        }
    }
}
