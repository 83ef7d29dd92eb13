//! Rule tests on synthetic event sequences, positive and negative, under
//! both refcount models.

use refscope_common::{EventKind, HookId, PUD_ORDER, flags};

use super::*;
use crate::{event::Flags, model::GupFlagBits};

const FSDAX: u64 = 3;
const BASE: u64 = 0x48000;
const MM_A: u64 = 0xa000;
const MM_B: u64 = 0xb000;
const VA: u64 = 0x7f00_0000_0000;

/// Builds events with increasing time and per-CPU sequence numbers.
struct Trace {
    t: u64,
    seq: u64,
    an: Analyzer,
}

impl Trace {
    fn new(model: RefcountModel) -> Self {
        let mut an = Analyzer::new(Settings::new(model));
        an.add_device(&Device {
            name: "pfn0.0".into(),
            mode: "fsdax".into(),
            pfn_start: BASE,
            pfn_end: BASE + 0x20000,
            pgmap_type: PgmapType::FsDax,
        });
        Trace {
            t: 1000,
            seq: 0,
            an,
        }
    }

    fn ev(&mut self, kind: EventKind, hook: HookId) -> Event {
        self.t += 10;
        self.seq += 1;
        let mut e = Event::new(kind, hook);
        e.t = self.t;
        e.seq = self.seq;
        e.pid = 100;
        e.comm = Comm::from_bytes(b"workload");
        e
    }

    fn apply(&mut self, e: Event) {
        self.an.apply(&e);
    }

    /// Findings that accuse a mapping wait for the audit of its address
    /// space (as in a recording, which audits).
    fn verifying(model: RefcountModel) -> Self {
        let mut t = Trace::new(model);
        t.an.cfg.verify = true;
        t
    }

    /// The audit of `mm` found nothing to correct.
    fn audited(&mut self, mm: u64) {
        let mut e = self.ev(EventKind::Audit, HookId::Audit);
        e.mm = Hex(mm);
        self.apply(e);
    }

    fn map(&mut self, mm: u64, vaddr: u64, pfn: u64, order: u8, ref_after: i32) {
        let hook = match order {
            0 => HookId::InsertPfn,
            PUD_ORDER => HookId::VmfInsertPfnPud,
            _ => HookId::VmfInsertPfnPmd,
        };
        let mut e = self.ev(EventKind::Map, hook);
        e.mm = Hex(mm);
        e.vaddr = Hex(vaddr);
        e.pfn = pfn;
        e.order = order;
        e.ref_after = Some(ref_after);
        e.flags = Flags(flags::REF_AFTER);
        self.apply(e);
    }

    fn gup(&mut self, kind: EventKind, mm: u64, pfn: u64, pin: bool, before: i32, after: i32) {
        let bits = GupFlagBits::default();
        let hook = if kind == EventKind::GupGet {
            HookId::TryGrabFolio
        } else {
            HookId::GupPutFolio
        };
        let mut e = self.ev(kind, hook);
        e.mm = Hex(mm);
        e.pfn = pfn;
        e.refs = 1;
        e.arg_flags = Hex(if pin { bits.foll_pin } else { bits.foll_get });
        e.ref_before = Some(before);
        e.ref_after = Some(after);
        self.apply(e);
    }

    fn put(&mut self, pfn: u64, after: i32) {
        let mut e = self.ev(EventKind::RefPut, HookId::PutDevmapManagedFolioRefs);
        e.pfn = pfn;
        e.refs = 1;
        e.ref_before = Some(after + 1);
        e.ref_after = Some(after);
        self.apply(e);
    }

    fn unmap(&mut self, mm: u64, start: u64, end: u64) {
        let mut e = self.ev(EventKind::Unmap, HookId::UnmapPageRange);
        e.mm = Hex(mm);
        e.vaddr = Hex(start);
        e.vaddr_end = Hex(end);
        self.apply(e);
    }

    fn exit(&mut self, mm: u64) {
        let mut e = self.ev(EventKind::MmExit, HookId::ExitMmap);
        e.mm = Hex(mm);
        self.apply(e);
    }

    fn free(&mut self, pfn: u64) {
        let mut e = self.ev(EventKind::Free, HookId::FreeZoneDeviceFolio);
        e.pfn = pfn;
        e.ref_before = Some(0);
        self.apply(e);
    }

    fn pgmap_remove(&mut self) {
        self.pgmap_remove_at(BASE, BASE + 0x20000);
    }

    fn pgmap_remove_at(&mut self, pfn: u64, pfn_end: u64) {
        let mut e = self.ev(EventKind::PgmapRemove, HookId::MemunmapPages);
        e.pgmap = Hex(0xdead);
        e.pfn = pfn;
        e.pfn_end = pfn_end;
        e.arg_flags = Hex(FSDAX);
        self.apply(e);
    }

    fn count(&self, rule: RuleId) -> usize {
        self.an.findings().iter().filter(|f| f.rule == rule).count()
    }

    fn only(&self, rule: RuleId) -> &Finding {
        let f: Vec<_> = self
            .an
            .findings()
            .iter()
            .filter(|f| f.rule == rule)
            .collect();
        assert_eq!(
            f.len(),
            1,
            "expected one {rule}, got {:#?}",
            self.an.findings()
        );
        f[0]
    }

    fn serious(&self) -> Vec<&Finding> {
        self.an
            .findings()
            .iter()
            .filter(|f| f.severity >= Severity::Warning)
            .collect()
    }
}

// ------------------------------------------------------- zero_ref_mapping --

#[test]
fn pre_615_mapping_of_idle_page_is_a_warning_once_per_install() {
    let mut t = Trace::new(RefcountModel::IdleOne);
    for i in 0..4 {
        t.map(MM_A, VA + i * 4096, BASE + i, 0, 1);
    }
    // Write-upgrade of the same PTE is not a new install.
    t.map(MM_A, VA, BASE, 0, 1);
    assert_eq!(t.count(RuleId::ZeroRefMapping), 4);
    let f = &t.an.findings()[0];
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.status, Status::Definite);
    assert_eq!(f.pfn, BASE);
    assert_eq!(f.vaddr, Hex(VA));
    assert_eq!(f.mm, Hex(MM_A));
    assert_eq!(f.pid, 100);
    assert!(!f.timeline.is_empty(), "evidence is the page's timeline");
    assert_eq!(
        t.an.findings()
            .iter()
            .find(|f| f.pfn == BASE)
            .unwrap()
            .occurrences,
        2
    );
}

#[test]
fn pre_615_mapping_of_referenced_page_is_fine() {
    let mut t = Trace::new(RefcountModel::IdleOne);
    t.map(MM_A, VA, BASE, 0, 2); // someone holds a reference
    assert_eq!(t.count(RuleId::ZeroRefMapping), 0);
}

#[test]
fn refcounted_mapping_holding_a_reference_is_fine_and_zero_is_an_error() {
    let mut t = Trace::new(RefcountModel::Refcounted);
    t.map(MM_A, VA, BASE, 0, 2); // mapping ref + fault's temporary ref
    assert!(t.an.findings().is_empty());
    // Only the fault's temporary reference: the mapping took none.
    t.map(MM_A, VA + 4096, BASE + 1, 0, 1);
    let f = t.only(RuleId::ZeroRefMapping);
    assert_eq!(f.severity, Severity::Error);
    assert!(
        f.explanation.contains("temporary reference"),
        "{}",
        f.explanation
    );
}

#[test]
fn refcounted_device_dax_idles_at_one() {
    let mut t = Trace::new(RefcountModel::Refcounted);
    t.an.add_device(&Device {
        name: "dax0.0".into(),
        mode: "devdax".into(),
        pfn_start: 0x100000,
        pfn_end: 0x110000,
        pgmap_type: PgmapType::Generic,
    });
    t.map(MM_A, VA, 0x100000, 0, 2); // idle 1 + the mapping's reference
    assert!(t.an.findings().is_empty());
    t.map(MM_A, VA + 4096, 0x100001, 0, 1); // idle only: no reference taken
    assert_eq!(t.only(RuleId::ZeroRefMapping).pfn, 0x100001);
}

#[test]
fn pmd_mapping_covers_512_pages_and_one_unmap_drops_it() {
    let mut t = Trace::new(RefcountModel::IdleOne);
    t.map(MM_A, VA, BASE, 9, 1);
    assert_eq!(t.count(RuleId::ZeroRefMapping), 1);
    assert_eq!(t.only(RuleId::ZeroRefMapping).order, 9);
    assert_eq!(t.an.page(BASE + 511).unwrap().mapcount, 1);
    assert_eq!(
        t.an.page(BASE + 511).unwrap().pgmap.map(|g| g.ty),
        Some(PgmapType::FsDax),
        "subpages know their device (and so their idle bias)"
    );
    assert!(t.an.page(BASE + 512).is_none_or(|p| p.mapcount == 0));
    // An unmap of a range inside the PMD removes the whole PMD.
    t.unmap(MM_A, VA + 0x1000, VA + 0x2000);
    assert_eq!(t.an.mapping_count(), 0);
    assert_eq!(t.an.page(BASE + 300).unwrap().mapcount, 0);
}

#[test]
fn failed_inserts_do_not_map() {
    let mut t = Trace::new(RefcountModel::IdleOne);
    let mut e = t.ev(EventKind::Map, HookId::InsertPfn);
    e.mm = Hex(MM_A);
    e.vaddr = Hex(VA);
    e.pfn = BASE;
    e.ref_after = Some(1);
    e.flags = Flags(flags::FAILED);
    t.apply(e);
    assert_eq!(t.an.mapping_count(), 0);
    assert!(t.an.findings().is_empty());
}

// ----------------------------------------------------- freed_while_mapped --

#[test]
fn refcounted_free_while_mapped_is_an_error_and_after_unmap_is_not() {
    let mut t = Trace::verifying(RefcountModel::Refcounted);
    t.map(MM_A, VA, BASE, 0, 2);
    t.map(MM_A, VA + 4096, BASE + 1, 0, 2);
    t.unmap(MM_A, VA + 4096, VA + 8192);
    t.free(BASE + 1); // unmapped first: normal
    assert_eq!(t.count(RuleId::FreedWhileMapped), 0);
    t.free(BASE); // still mapped: bug
    assert_eq!(t.count(RuleId::FreedWhileMapped), 0, "waits for the audit");
    assert_eq!(t.an.take_verify_requests(), vec![(MM_A, 100)]);
    t.audited(MM_A);
    let f = t.only(RuleId::FreedWhileMapped);
    assert_eq!(f.severity, Severity::Error);
    assert_eq!(f.status, Status::Definite);
    assert_eq!(f.vaddr, Hex(VA));
    // Reported once per release, not again for the same free path.
    t.free(BASE);
    assert_eq!(t.count(RuleId::FreedWhileMapped), 1);
}

#[test]
fn pre_615_drop_below_idle_while_mapped_is_freed_while_mapped() {
    let mut t = Trace::new(RefcountModel::IdleOne);
    t.map(MM_A, VA, BASE, 0, 1);
    // Returning to idle (1) while mapped is the design: no finding.
    t.gup(EventKind::GupGet, MM_B, BASE, false, 1, 2);
    t.put(BASE, 1);
    assert_eq!(t.count(RuleId::FreedWhileMapped), 0);
    // Below idle while mapped is a release.
    t.put(BASE, 0);
    assert_eq!(t.count(RuleId::FreedWhileMapped), 1);
}

#[test]
fn pre_615_underflow_unmapped_is_refcount_underflow() {
    let mut t = Trace::new(RefcountModel::IdleOne);
    t.put(BASE + 5, 0);
    let f = t.only(RuleId::RefcountUnderflow);
    assert_eq!(f.severity, Severity::Error);
    assert_eq!(t.count(RuleId::FreedWhileMapped), 0);
}

#[test]
fn fork_two_address_spaces_map_one_page() {
    let mut t = Trace::new(RefcountModel::Refcounted);
    t.map(MM_A, VA, BASE, 0, 2);
    t.map(MM_B, VA, BASE, 0, 3);
    assert_eq!(t.an.page(BASE).unwrap().mapcount, 2);
    t.exit(MM_B);
    assert_eq!(t.an.page(BASE).unwrap().mapcount, 1);
    t.free(BASE);
    let f = t.only(RuleId::FreedWhileMapped);
    assert_eq!(f.mm, Hex(MM_A), "the remaining mapping is the parent's");
    t.exit(MM_A);
    assert_eq!(t.an.mapping_count(), 0);
}

// ---------------------------------------------------- mapped_after_unplug --

#[test]
fn unplug_with_remaining_mappings_one_finding_each() {
    for model in [RefcountModel::IdleOne, RefcountModel::Refcounted] {
        let mut t = Trace::new(model);
        let r = if model == RefcountModel::IdleOne {
            1
        } else {
            2
        };
        for i in 0..3 {
            t.map(MM_A, VA + i * 4096, BASE + i, 0, r);
        }
        t.map(MM_A, VA + 0x10000, BASE + 10, 0, r);
        t.unmap(MM_A, VA + 0x10000, VA + 0x11000);
        t.pgmap_remove();
        assert_eq!(t.count(RuleId::MappedAfterUnplug), 3, "{model:?}");
        let f =
            t.an.findings()
                .iter()
                .find(|f| f.rule == RuleId::MappedAfterUnplug)
                .unwrap();
        assert_eq!(f.severity, Severity::Error);
        // Later events on the page are added to the finding.
        let before = f.timeline.len();
        t.exit(MM_A);
        let f =
            t.an.findings()
                .iter()
                .find(|f| f.rule == RuleId::MappedAfterUnplug)
                .unwrap();
        assert_eq!(f.timeline.len(), before + 1);
        assert_eq!(f.timeline.last().unwrap().kind, EventKind::MmExit);
    }
}

#[test]
fn unplug_without_mappings_is_clean_and_mapping_after_removal_is_flagged() {
    let mut t = Trace::new(RefcountModel::IdleOne);
    t.map(MM_A, VA, BASE, 0, 1);
    t.unmap(MM_A, VA, VA + 4096);
    t.pgmap_remove();
    assert_eq!(t.count(RuleId::MappedAfterUnplug), 0);
    t.map(MM_A, VA, BASE, 0, 1);
    assert_eq!(t.count(RuleId::MappedAfterUnplug), 1);
}

#[test]
fn pins_outstanding_at_unplug() {
    let mut t = Trace::new(RefcountModel::IdleOne);
    t.gup(EventKind::GupGet, MM_B, BASE, true, 1, 1025);
    t.pgmap_remove();
    assert_eq!(t.count(RuleId::PinnedAtUnplug), 1);
}

// ------------------------------------------------------- pin_on_idle_page --

#[test]
fn pin_on_idle_page_is_info_before_615_and_error_after() {
    let mut t = Trace::new(RefcountModel::IdleOne);
    t.map(MM_A, VA, BASE, 0, 1);
    t.gup(EventKind::GupGet, MM_B, BASE, true, 1, 1025);
    let f = t.only(RuleId::PinOnIdlePage);
    assert_eq!(f.severity, Severity::Info);
    assert!(t.serious().iter().all(|f| f.rule == RuleId::ZeroRefMapping));

    let mut t = Trace::new(RefcountModel::Refcounted);
    t.map(MM_A, VA, BASE, 0, 2);
    t.gup(EventKind::GupGet, MM_B, BASE, true, 1, 1025); // mapped: count >= 1
    assert_eq!(t.count(RuleId::PinOnIdlePage), 0);
    t.gup(EventKind::GupGet, MM_B, BASE + 7, false, 0, 1);
    assert_eq!(t.only(RuleId::PinOnIdlePage).severity, Severity::Error);
}

#[test]
fn pin_before_estimated_from_after_when_entry_missing() {
    let mut t = Trace::new(RefcountModel::IdleOne);
    let mut e = t.ev(EventKind::GupGet, HookId::TryGrabFolio);
    e.pfn = BASE;
    e.refs = 1;
    e.arg_flags = Hex(GupFlagBits::default().foll_pin);
    e.ref_after = Some(1025);
    t.apply(e);
    assert_eq!(t.count(RuleId::PinOnIdlePage), 1);
}

// --------------------------------------------------------------- pin_leak --

#[test]
fn pins_released_are_not_leaks_and_held_at_exit_are() {
    let mut t = Trace::new(RefcountModel::IdleOne);
    t.map(MM_A, VA, BASE, 0, 1);
    t.gup(EventKind::GupGet, MM_B, BASE, true, 1, 1025);
    t.gup(EventKind::GupPut, MM_B, BASE, true, 1025, 1);
    t.exit(MM_B);
    assert_eq!(t.count(RuleId::PinLeak), 0);

    t.gup(EventKind::GupGet, MM_B, BASE + 1, true, 1, 1025);
    t.exit(MM_B);
    let f = t.only(RuleId::PinLeak);
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.pfn, BASE + 1);
}

#[test]
fn pins_held_at_trace_end_are_info() {
    let mut t = Trace::new(RefcountModel::Refcounted);
    t.gup(EventKind::GupGet, MM_B, BASE, true, 1, 1025);
    t.an.finish(t.t + 1);
    assert_eq!(t.only(RuleId::PinLeak).severity, Severity::Info);
}

#[test]
fn foll_get_release_through_devmap_put_before_615() {
    let mut t = Trace::new(RefcountModel::IdleOne);
    t.gup(EventKind::GupGet, MM_B, BASE, false, 1, 2);
    t.put(BASE, 1);
    t.exit(MM_B);
    t.an.finish(t.t);
    assert_eq!(t.count(RuleId::PinLeak), 0);
    assert_eq!(t.an.page(BASE).unwrap().gets, 0);
}

#[test]
fn foll_get_released_inline_is_reconciled_from_the_refcount_and_never_a_leak() {
    // 6.1's __bio_release_pages drops O_DIRECT references with an inline
    // folio_put_refs: no put event; the next reading shows them gone.
    let mut t = Trace::new(RefcountModel::IdleOne);
    t.map(MM_A, VA, BASE, 0, 1);
    t.gup(EventKind::GupGet, MM_A, BASE, false, 1, 2);
    assert_eq!(t.an.page(BASE).unwrap().gets, 1);
    t.map(MM_B, VA, BASE, 0, 1); // refcount back to 1
    assert_eq!(t.an.page(BASE).unwrap().gets, 0);
    assert_eq!(t.an.stats().gets_reconciled, 1);
    t.gup(EventKind::GupGet, MM_A, BASE + 1, false, 1, 2);
    t.exit(MM_A);
    t.an.finish(t.t);
    assert_eq!(t.count(RuleId::PinLeak), 0);
}

#[test]
fn each_refcount_is_compared_with_the_state_it_describes() {
    // A pin and a get, then the pin's release: its count after the call
    // (2: idle 1 + the get) is the state after the unpin. Compared with the
    // state before it (the pin still counted) it would look like the get
    // had gone inline, and the get's own put would match nothing.
    let mut t = Trace::new(RefcountModel::IdleOne);
    t.map(MM_A, VA, BASE, 0, 1);
    t.gup(EventKind::GupGet, MM_A, BASE, true, 1, 1025);
    t.gup(EventKind::GupGet, MM_A, BASE, false, 1025, 1026);
    t.gup(EventKind::GupPut, MM_A, BASE, true, 1026, 2);
    assert_eq!(t.an.stats().gets_reconciled, 0);
    assert_eq!(t.an.page(BASE).unwrap().gets, 1);
    t.put(BASE, 1);
    assert_eq!(t.an.page(BASE).unwrap().gets, 0);
    assert_eq!(t.an.stats().unmatched_releases, 0);
    assert_eq!(t.an.stats().gets_reconciled, 0);
    // A count before the call is the state before the event: a get seen
    // with only its entry count is not reconciled away by that count.
    let mut e = t.ev(EventKind::GupGet, HookId::TryGrabFolio);
    e.mm = Hex(MM_A);
    e.pfn = BASE;
    e.refs = 1;
    e.arg_flags = Hex(GupFlagBits::default().foll_get);
    e.ref_before = Some(1);
    t.apply(e);
    assert_eq!(t.an.page(BASE).unwrap().gets, 1);
    assert_eq!(t.an.stats().gets_reconciled, 0);
}

#[test]
fn a_reconciled_get_is_first_one_whose_holder_exited() {
    // MM_A takes a get and exits with it (nothing put it: still on the
    // page); MM_B takes one. A refcount with room for one get left proves
    // one gone: the exited holder's, not MM_B's.
    let mut t = Trace::new(RefcountModel::IdleOne);
    t.an.track_lifetimes();
    t.map(MM_B, VA, BASE, 0, 1);
    t.gup(EventKind::GupGet, MM_A, BASE, false, 1, 2);
    t.exit(MM_A);
    t.gup(EventKind::GupGet, MM_B, BASE, false, 2, 3);
    t.map(MM_B, VA + 0x1000, BASE, 0, 2);
    assert_eq!(t.an.stats().gets_reconciled, 1);
    assert_eq!(t.an.page(BASE).unwrap().gets, 1);
    let held: Vec<u64> = t.an.holders().map(|(&(_, mm), _)| mm).collect();
    assert_eq!(held, [MM_B]);
    let live: Vec<u64> = t.an.live_pins().iter().map(|p| p.mm).collect();
    assert_eq!(live, [MM_B]);
}

#[test]
fn foll_get_after_615_is_not_reported_as_leaked() {
    // folio_put is inline on 6.15+: the release of a FOLL_GET is invisible
    // until the page is freed, so an outstanding get is not evidence.
    let mut t = Trace::new(RefcountModel::Refcounted);
    t.map(MM_A, VA, BASE, 0, 2);
    t.gup(EventKind::GupGet, MM_B, BASE, false, 1, 2);
    t.exit(MM_B);
    t.an.finish(t.t);
    assert_eq!(t.count(RuleId::PinLeak), 0);
}

// ------------------------------------------------------ longterm on fsdax --

#[test]
fn longterm_pin_on_fsdax_is_an_error() {
    let mut t = Trace::new(RefcountModel::Refcounted);
    let bits = GupFlagBits::default();
    let mut e = t.ev(EventKind::GupGet, HookId::TryGrabFolio);
    e.pfn = BASE;
    e.mm = Hex(MM_B);
    e.refs = 1;
    e.arg_flags = Hex(bits.foll_pin | bits.foll_longterm);
    e.ref_before = Some(1);
    e.ref_after = Some(1025);
    t.apply(e);
    assert_eq!(t.only(RuleId::LongtermPinFsdax).severity, Severity::Error);
}

// ------------------------------------------------------------ loss windows --

#[test]
fn losses_make_dependent_findings_uncertain_but_direct_observations_stay_definite() {
    let mut t = Trace::new(RefcountModel::Refcounted);
    t.map(MM_A, VA, BASE, 0, 0); // direct observation: definite
    t.map(MM_A, VA + 4096, BASE + 1, 0, 2);
    // The kernel lost events here: perhaps the unmap of VA + 4096.
    t.seq += 5;
    t.an.apply_loss(&Loss {
        cpu: 0,
        count: 5,
        first_t: t.t + 1,
        last_t: t.t + 2,
    });
    t.free(BASE + 1);
    let f = t.only(RuleId::FreedWhileMapped);
    assert_eq!(f.status, Status::Uncertain, "a lost unmap could explain it");
    assert_eq!(t.only(RuleId::ZeroRefMapping).status, Status::Definite);
    assert_eq!(t.an.lost(), 5);
}

#[test]
fn a_sequence_gap_alone_marks_uncertainty() {
    let mut t = Trace::new(RefcountModel::Refcounted);
    t.map(MM_A, VA, BASE, 0, 2);
    t.seq += 3; // three events never arrived
    t.free(BASE);
    assert_eq!(t.only(RuleId::FreedWhileMapped).status, Status::Uncertain);
    t.an.finish(t.t);
    assert_eq!(t.an.lost(), 3);
}

#[test]
fn mappings_installed_after_a_loss_are_definite() {
    let mut t = Trace::verifying(RefcountModel::Refcounted);
    t.seq += 3;
    t.map(MM_A, VA, BASE, 0, 2); // reveals the gap
    for i in 0..(REORDER_WINDOW as u64 + 2) {
        t.map(MM_B, VA + i * 4096, BASE + 100 + i, 0, 2);
    }
    t.free(BASE);
    t.audited(MM_A);
    // The gap ended when the mapping was installed; nothing lost since.
    assert_eq!(t.only(RuleId::FreedWhileMapped).status, Status::Definite);
}

// ------------------------------------------------- splits, mremap, fork --

#[test]
fn a_pmd_split_drops_the_huge_mapping_only() {
    let mut t = Trace::new(RefcountModel::IdleOne);
    t.map(MM_A, VA, BASE, 9, 1);
    t.map(MM_A, VA + 0x200000, BASE + 512, 0, 1);
    let mut e = t.ev(EventKind::PmdSplit, HookId::SplitHugePmd);
    e.mm = Hex(MM_A);
    e.vaddr = Hex(VA + 0x200000); // a PTE-mapped range: nothing to drop
    t.apply(e.clone());
    assert_eq!(t.an.mapping_count(), 2);
    e.vaddr = Hex(VA);
    t.apply(e);
    assert_eq!(t.an.mapping_count(), 1);
    assert_eq!(t.an.page(BASE + 100).unwrap().mapcount, 0);
}

#[test]
fn mremap_moves_mappings_so_later_unmaps_and_frees_are_right() {
    let mut t = Trace::new(RefcountModel::Refcounted);
    t.map(MM_A, VA, BASE, 0, 2);
    t.map(MM_A, VA + 4096, BASE + 1, 0, 2);
    let mut e = t.ev(EventKind::Remap, HookId::MovePageTables);
    e.mm = Hex(MM_A);
    e.vaddr = Hex(VA);
    e.vaddr_end = Hex(VA + 8192);
    e.new_vaddr = Hex(0x5000_0000_0000);
    t.apply(e);
    assert_eq!(t.an.stats().mappings_moved, 2);
    t.unmap(MM_A, 0x5000_0000_0000, 0x5000_0000_2000);
    t.free(BASE);
    t.free(BASE + 1);
    assert_eq!(
        t.count(RuleId::FreedWhileMapped),
        0,
        "{:#?}",
        t.an.findings()
    );
}

#[test]
fn fork_copies_private_mappings_into_the_child() {
    let mut t = Trace::new(RefcountModel::Refcounted);
    t.map(MM_A, VA, BASE, 0, 2);
    t.fork_copy(MM_A, MM_B);
    assert_eq!(t.an.page(BASE).unwrap().mapcount, 2);
    t.exit(MM_A);
    t.free(BASE);
    let f = t.only(RuleId::FreedWhileMapped);
    assert_eq!(f.mm, Hex(MM_B), "the child's copy still maps it");
}

impl Trace {
    /// fork copied `[VA, VA + 2 MiB)` of `from` into `to` (parent's context).
    fn fork_copy(&mut self, from: u64, to: u64) {
        let mut e = self.ev(EventKind::CopyRange, HookId::CopyPageRange);
        e.mm = Hex(to);
        e.src_mm = Hex(from);
        e.vaddr = Hex(VA);
        e.vaddr_end = Hex(VA + 0x20_0000);
        self.apply(e);
    }

    /// The child with address space `mm` got its pid.
    fn task_new(&mut self, mm: u64, pid: u32) {
        let mut e = self.ev(EventKind::TaskNew, HookId::WakeUpNewTask);
        e.mm = Hex(mm);
        e.pid = pid;
        self.apply(e);
    }
}

#[test]
fn fork_copies_are_the_childs_once_it_has_a_pid() {
    let mut t = Trace::new(RefcountModel::IdleOne);
    t.map(MM_A, VA, BASE, 0, 1);
    t.map(MM_A, VA + 0x1000, BASE + 1, 0, 1);
    t.fork_copy(MM_A, MM_B);
    t.task_new(MM_B, 200);
    assert_eq!(t.an.stats().mappings_reattributed, 2);
    t.pgmap_remove();
    let mut by_pid: Vec<(u64, u32)> =
        t.an.findings()
            .iter()
            .filter(|f| f.rule == RuleId::MappedAfterUnplug)
            .map(|f| (f.mm.0, f.pid))
            .collect();
    by_pid.sort_unstable();
    // Each address space's mappings name the process that holds them.
    assert_eq!(by_pid, [(MM_A, 100), (MM_A, 100), (MM_B, 200), (MM_B, 200)]);
    // A thread or vfork child never gets here (the kernel side filters
    // them); an unknown mm changes nothing.
    t.task_new(0xc000, 300);
    assert_eq!(t.an.stats().mappings_reattributed, 2);
}

#[test]
fn fork_does_not_copy_dax_pmds() {
    // copy_huge_pmd leaves DAX PMDs to be refaulted by the child.
    let mut t = Trace::new(RefcountModel::Refcounted);
    t.map(MM_A, VA, BASE, 9, 2);
    t.fork_copy(MM_A, MM_B);
    assert_eq!(t.an.stats().mappings_copied, 0);
    assert_eq!(t.an.page(BASE).unwrap().mapcount, 1);
    t.pgmap_remove();
    assert!(
        t.an.findings()
            .iter()
            .filter(|f| f.rule == RuleId::MappedAfterUnplug)
            .all(|f| f.mm == Hex(MM_A)),
        "{:#?}",
        t.an.findings()
    );
}

#[test]
fn refused_longterm_pins_are_counted() {
    let mut t = Trace::new(RefcountModel::Refcounted);
    let mut e = t.ev(EventKind::GupRefused, HookId::CheckVmaFlags);
    e.mm = Hex(MM_A);
    e.ret = -95;
    t.apply(e);
    assert_eq!(t.an.stats().gup_refused, 1);
    assert!(t.an.findings().is_empty());
}

// ------------------------------------------------------------ bookkeeping --

#[test]
fn timeline_is_bounded_and_evictions_counted() {
    let mut cfg = Settings::new(RefcountModel::IdleOne);
    cfg.timeline_len = 4;
    let mut t = Trace::new(RefcountModel::IdleOne);
    t.an = Analyzer::new(cfg);
    for _ in 0..10 {
        t.gup(EventKind::GupGet, MM_B, BASE, false, 1, 2);
        t.put(BASE, 1);
    }
    assert_eq!(t.an.page(BASE).unwrap().timeline().count(), 4);
    assert_eq!(t.an.stats().timeline_evicted, 16);
}

#[test]
fn idle_pages_are_evicted_past_the_cap_but_mapped_ones_stay() {
    let mut cfg = Settings::new(RefcountModel::Refcounted);
    cfg.max_pages = 100;
    let mut t = Trace::new(RefcountModel::Refcounted);
    t.an = Analyzer::new(cfg);
    t.map(MM_A, VA, BASE, 0, 2);
    for i in 1..300 {
        t.put(BASE + i, 1);
    }
    assert!(t.an.page_count() <= 100);
    assert!(t.an.stats().pages_evicted >= 200);
    assert!(t.an.page(BASE).is_some(), "mapped pages are never evicted");
}

#[test]
fn a_table_full_of_mapped_pages_is_not_rescanned_on_every_event() {
    let mut cfg = Settings::new(RefcountModel::Refcounted);
    cfg.max_pages = 100;
    let mut t = Trace::new(RefcountModel::Refcounted);
    t.an = Analyzer::new(cfg);
    for i in 0..150 {
        t.map(MM_A, VA + i * 4096, BASE + i, 0, 2);
    }
    assert_eq!(t.an.page_count(), 150, "mapped pages are never evicted");
    assert_eq!(t.an.stats().pages_evicted, 0);
    // Idle pages beyond that are evicted once the table has grown by a
    // tenth of the cap since the last (fruitless) try, not on each event.
    for i in 0..30 {
        t.put(BASE + 1000 + i, 1);
    }
    assert!(t.an.stats().pages_evicted > 0);
    assert!(t.an.page_count() < 180);
}

#[test]
fn new_findings_are_drained_once() {
    let mut t = Trace::new(RefcountModel::IdleOne);
    t.map(MM_A, VA, BASE, 0, 1);
    assert_eq!(t.an.take_new_findings().len(), 1);
    assert_eq!(t.an.take_new_findings().len(), 0);
    t.map(MM_A, VA + 4096, BASE + 1, 0, 1);
    assert_eq!(t.an.take_new_findings().len(), 1);
}

#[test]
fn attach_time_mappings_are_marked() {
    let mut t = Trace::new(RefcountModel::IdleOne);
    let mut e = t.ev(EventKind::AttachMap, HookId::Snapshot);
    e.seq = 0;
    e.mm = Hex(MM_A);
    e.vaddr = Hex(VA);
    e.pfn = BASE;
    e.ref_after = Some(1);
    t.apply(e);
    let f = t.only(RuleId::ZeroRefMapping);
    assert!(f.at_attach);
    // The same mapping seen again by a probe is not a second install.
    t.map(MM_A, VA, BASE, 0, 1);
    assert_eq!(t.count(RuleId::ZeroRefMapping), 1);
    assert_eq!(t.an.stats().mappings_installed, 1);
}

#[test]
fn mapped_after_unplug_says_what_the_holder_s_exit_will_do_on_refcounted_kernels() {
    for (model, warns) in [
        (RefcountModel::Refcounted, true),
        (RefcountModel::IdleOne, false),
    ] {
        let mut t = Trace::new(model);
        t.map(MM_A, VA, BASE, 0, 2);
        t.pgmap_remove();
        let f = t.only(RuleId::MappedAfterUnplug);
        assert_eq!(
            f.explanation.contains("will touch freed memory"),
            warns,
            "{model:?}: {}",
            f.explanation
        );
        assert!(
            f.explanation.contains("workload (pid 100)"),
            "{}",
            f.explanation
        );
    }
}

// ------------------------------------------------------------ audit --

#[test]
fn audit_corrections_are_drift_and_name_the_likely_cause() {
    let mut t = Trace::verifying(RefcountModel::Refcounted);
    t.map(MM_A, VA, BASE, 0, 2);
    // The page table no longer maps it: a path refscope missed.
    let mut e = t.ev(EventKind::AuditUnmap, HookId::Audit);
    e.mm = Hex(MM_A);
    e.vaddr = Hex(VA);
    e.pfn = BASE;
    t.apply(e);
    assert_eq!(t.an.mapping_count(), 0);
    assert_eq!(t.an.stats().drift_stale, 1);
    assert!(t.an.drift()[0].hint.contains("cleared"));
    // After a loss, the lost events are the likely cause.
    t.seq += 5;
    let mut e = t.ev(EventKind::AuditMap, HookId::Audit);
    e.mm = Hex(MM_A);
    e.vaddr = Hex(VA + 4096);
    e.pfn = BASE + 1;
    t.apply(e);
    assert_eq!(t.an.stats().drift_missing, 1);
    assert_eq!(t.an.mapping_count(), 1);
    assert!(
        t.an.drift()[1].hint.contains("lost"),
        "{}",
        t.an.drift()[1].hint
    );
    // No install-time rule fires for a mapping whose install was not seen.
    assert_eq!(t.count(RuleId::ZeroRefMapping), 0);
}

// ------------------------------------------------------- 1 GiB (PUD) maps --

/// A device-dax device with `align=1G`: its first pfn is PUD-aligned.
const DAX1G: u64 = 0x40_0000;
const GIB: u64 = 1 << 30;

impl Trace {
    fn with_1g_device(model: RefcountModel) -> Self {
        let mut t = Trace::new(model);
        t.an.add_device(&Device {
            name: "dax1.0".into(),
            mode: "devdax".into(),
            pfn_start: DAX1G,
            pfn_end: DAX1G + 2 * PUD_PAGES,
            pgmap_type: PgmapType::Generic,
        });
        t
    }

    fn split(&mut self, mm: u64, vaddr: u64, order: u8) {
        let hook = if order == PUD_ORDER {
            HookId::SplitHugePud
        } else {
            HookId::SplitHugePmd
        };
        let mut e = self.ev(EventKind::PmdSplit, hook);
        e.mm = Hex(mm);
        e.vaddr = Hex(vaddr);
        e.vaddr_end = Hex(vaddr + (4096 << order));
        e.order = order;
        self.apply(e);
    }
}

#[test]
fn a_pud_mapping_is_one_mapping_that_keeps_no_per_page_state() {
    let mut t = Trace::with_1g_device(RefcountModel::Refcounted);
    let pages_before = t.an.page_count();
    t.map(MM_A, GIB, DAX1G, PUD_ORDER, 2);
    assert_eq!(t.an.mapping_count(), 1);
    assert_eq!(t.an.stats().invalid_events, 0);
    assert!(
        t.an.page_count() <= pages_before + 1,
        "a 1 GiB mapping must not create 262144 page entries"
    );
    // Any page under it is mapped: freeing one is freed_while_mapped.
    t.free(DAX1G + 12345);
    let f = t.only(RuleId::FreedWhileMapped);
    assert_eq!((f.mm, f.vaddr, f.order), (Hex(MM_A), Hex(GIB), PUD_ORDER));
    // A page past its end is not.
    t.free(DAX1G + PUD_PAGES);
    assert_eq!(t.count(RuleId::FreedWhileMapped), 1);
}

#[test]
fn an_unmap_inside_a_pud_mapping_drops_it_however_far_from_its_start() {
    let mut t = Trace::with_1g_device(RefcountModel::Refcounted);
    t.map(MM_A, GIB, DAX1G, PUD_ORDER, 2);
    // PTEs of another device right below it must stay.
    t.map(MM_A, GIB - 4096, BASE, 0, 2);
    t.unmap(MM_A, GIB + 900 * (1 << 20), GIB + 901 * (1 << 20));
    assert_eq!(
        t.an.mapping_count(),
        1,
        "{:#?}",
        t.an.mappings_in(MM_A).collect::<Vec<_>>()
    );
    t.free(DAX1G + 7);
    assert_eq!(
        t.count(RuleId::FreedWhileMapped),
        0,
        "{:#?}",
        t.an.findings()
    );
}

#[test]
fn a_pud_split_drops_the_pud_and_a_pmd_split_there_does_not() {
    let mut t = Trace::with_1g_device(RefcountModel::Refcounted);
    t.map(MM_A, GIB, DAX1G, PUD_ORDER, 2);
    t.split(MM_A, GIB, 9);
    assert_eq!(t.an.mapping_count(), 1, "a PMD split is not a PUD split");
    t.split(MM_A, GIB, PUD_ORDER);
    assert_eq!(t.an.mapping_count(), 0);
    t.free(DAX1G);
    assert_eq!(t.count(RuleId::FreedWhileMapped), 0);
}

#[test]
fn fork_copies_a_pud_mapping_and_mremap_moves_it() {
    let mut t = Trace::with_1g_device(RefcountModel::Refcounted);
    t.map(MM_A, GIB, DAX1G, PUD_ORDER, 2);
    let mut e = t.ev(EventKind::CopyRange, HookId::CopyPageRange);
    e.mm = Hex(MM_B);
    e.src_mm = Hex(MM_A);
    e.vaddr = Hex(GIB);
    e.vaddr_end = Hex(2 * GIB);
    t.apply(e);
    assert_eq!(t.an.stats().mappings_copied, 1, "copy_huge_pud copies it");
    let mut e = t.ev(EventKind::Remap, HookId::MovePageTables);
    e.mm = Hex(MM_B);
    e.vaddr = Hex(GIB);
    e.vaddr_end = Hex(2 * GIB);
    e.new_vaddr = Hex(4 * GIB);
    t.apply(e);
    t.exit(MM_A);
    // The child still maps it, at the new address; an unmap there ends it.
    t.pgmap_remove_at(DAX1G, DAX1G + 2 * PUD_PAGES);
    let f = t.only(RuleId::MappedAfterUnplug);
    assert_eq!((f.mm, f.vaddr, f.pfn), (Hex(MM_B), Hex(4 * GIB), DAX1G));
    t.unmap(MM_B, 4 * GIB + 4096, 4 * GIB + 8192);
    assert_eq!(t.an.mapping_count(), 0);
}

#[test]
fn the_audit_takes_a_pud_leaf_into_the_shadow_and_drops_a_stale_one() {
    let mut t = Trace::with_1g_device(RefcountModel::Refcounted);
    let mut e = t.ev(EventKind::AuditMap, HookId::Audit);
    e.mm = Hex(MM_A);
    e.vaddr = Hex(GIB);
    e.pfn = DAX1G;
    e.order = PUD_ORDER;
    t.apply(e);
    assert_eq!(t.an.mapping_count(), 1);
    assert_eq!(t.an.stats().invalid_events, 0);
    let mut e = t.ev(EventKind::AuditUnmap, HookId::Audit);
    e.mm = Hex(MM_A);
    e.vaddr = Hex(GIB);
    t.apply(e);
    assert_eq!(t.an.mapping_count(), 0);
    t.free(DAX1G + 1);
    assert_eq!(t.count(RuleId::FreedWhileMapped), 0);
    assert_eq!(t.an.drift().len(), 2);
}

#[test]
fn orders_between_a_pmd_and_a_pud_are_invalid() {
    let mut t = Trace::with_1g_device(RefcountModel::Refcounted);
    t.map(MM_A, GIB, DAX1G, 10, 2);
    t.map(MM_A, GIB, DAX1G, 19, 2);
    assert_eq!(t.an.stats().invalid_events, 2);
    assert_eq!(t.an.mapping_count(), 0);
}
