//! The audit over a fake page table, `/proc` and ring buffer, feeding a
//! real analysis.

use std::{collections::VecDeque, io};

use refscope_core::{
    analysis::{Analyzer, DriftKind, RuleId, Settings, Status},
    model::{PgmapType, RefcountModel},
    trace::Device,
};

use super::*;
use crate::pagetable::{PAGE_PROTNONE, PFN_MASK};
use crate::snapshot::{PageRef, PageReq};

const DEV: u64 = 0x140000;
const MM: u64 = 0xffff_8880_0000_4000;
const PID: u32 = 42;
const VA: u64 = 0x7f00_0000_0000;
const PRESENT_RW: u64 = 0x67;

#[derive(Debug, thiserror::Error)]
#[error("fake kernel error")]
struct FakeError;

/// The kernel: task mms, and one page table (address -> leaf entry; PMD
/// leaves at 2 MiB-aligned addresses in `pmds`).
#[derive(Default)]
struct FakeKernel {
    mms: HashMap<u32, u64>,
    tracked: Vec<u64>,
    ptes: BTreeMap<u64, u64>,
    pmds: BTreeMap<u64, u64>,
    /// 1 GiB leaves, at 1 GiB-aligned addresses.
    puds: BTreeMap<u64, u64>,
    walks: usize,
}

impl KernelReads for FakeKernel {
    type Error = FakeError;
    fn task_mms(&mut self) -> Result<HashMap<u32, u64>, FakeError> {
        Ok(self.mms.clone())
    }
    fn read_pages(&mut self, _: u64, _: &[PageReq], _: &mut Vec<PageRef>) -> Result<(), FakeError> {
        unreachable!("the audit never reads struct pages")
    }
    fn track_mm(&mut self, mm: u64, _: u64) -> Result<(), FakeError> {
        self.tracked.push(mm);
        Ok(())
    }
}

impl PageTables for FakeKernel {
    type Error = FakeError;
    fn walk(&mut self, mm: u64, vas: &[u64], out: &mut Vec<Block>) -> Result<(), FakeError> {
        assert_eq!(mm, MM, "walks the process's own page table");
        self.walks += 1;
        for &va in vas {
            assert_eq!(va % PMD_SIZE, 0, "2 MiB-aligned blocks");
            if let Some(&e) = self.puds.get(&(va & !(PUD_SIZE - 1))) {
                out.push(Block::Pud(e));
                continue;
            }
            if let Some(&e) = self.pmds.get(&va) {
                out.push(Block::Pmd(e));
                continue;
            }
            let mut t = Box::new([0u64; PT_ENTRIES]);
            let mut any = false;
            for (&a, &e) in self.ptes.range(va..va + PMD_SIZE) {
                t[((a - va) >> PAGE_SHIFT) as usize] = e;
                any = true;
            }
            out.push(if any { Block::Ptes(t) } else { Block::None });
        }
        Ok(())
    }
}

struct FakeProc {
    maps: String,
    /// The clock when the page table is read (after every event by default).
    now: u64,
}

impl Procfs for FakeProc {
    fn pids(&mut self) -> io::Result<Vec<u32>> {
        Ok(vec![PID])
    }
    fn comm(&mut self, _: u32) -> io::Result<String> {
        Ok("workload".into())
    }
    fn maps(&mut self, _: u32) -> io::Result<String> {
        Ok(self.maps.clone())
    }
    fn pagemap(&mut self, _: u32, _: u64, _: &mut [u64]) -> io::Result<()> {
        unreachable!("the audit reads page tables, not pagemap")
    }
    fn huge_ranges(&mut self, _: u32, _: u64, _: u64) -> io::Result<Option<Vec<(u64, u64)>>> {
        Ok(None)
    }
    fn dax_capable(&mut self, major: u32, _: u32) -> bool {
        major == 0x103
    }
    fn now(&mut self) -> u64 {
        self.now
    }
}

/// The recording: events waiting in the "ring buffer", and the analysis.
struct Rec {
    an: Analyzer,
    ring: VecDeque<Event>,
    /// Events that reach the ring buffer only during the audit's pause.
    late: Vec<Event>,
    /// Syncs that find a record still being written at the head of the
    /// ring buffer (nothing after it can be read).
    busy_syncs: usize,
    written: Vec<Event>,
    t: u64,
}

impl Rec {
    fn new(verify: bool) -> Self {
        let mut cfg = Settings::new(RefcountModel::Refcounted);
        cfg.verify = verify;
        let mut an = Analyzer::new(cfg);
        an.add_device(&Device {
            name: "pfn0.0".into(),
            mode: "fsdax".into(),
            pfn_start: DEV,
            pfn_end: DEV + 0x10000,
            pgmap_type: PgmapType::FsDax,
        });
        Rec {
            an,
            ring: VecDeque::new(),
            late: Vec::new(),
            busy_syncs: 0,
            written: Vec::new(),
            t: 100,
        }
    }

    fn ev(&mut self, kind: EventKind, hook: HookId) -> Event {
        self.t += 10;
        let mut e = Event::new(kind, hook);
        e.t = self.t;
        e.pid = PID;
        e.mm = Hex(MM);
        e
    }

    /// A probe's event: `va` mapped to `pfn`.
    fn map_ev(&mut self, va: u64, pfn: u64) -> Event {
        let mut e = self.ev(EventKind::Map, HookId::InsertPfn);
        e.vaddr = Hex(va);
        e.pfn = pfn;
        e.ref_after = Some(2);
        e
    }

    /// A probe saw `va` mapped to `pfn` (applied now).
    fn map(&mut self, va: u64, pfn: u64) {
        let e = self.map_ev(va, pfn);
        self.an.apply(&e);
    }

    fn kinds(&self) -> Vec<EventKind> {
        self.written.iter().map(|e| e.kind).collect()
    }
}

impl Recording for Rec {
    fn sync(&mut self) -> bool {
        if self.busy_syncs > 0 {
            self.busy_syncs -= 1;
            return false;
        }
        while let Some(e) = self.ring.pop_front() {
            self.an.apply(&e);
        }
        true
    }
    fn mm_id(&self, mm: u64) -> u64 {
        mm
    }
    fn shadow(&self, mm_id: u64) -> BTreeMap<u64, (u64, u8)> {
        shadow_of(&self.an, mm_id)
    }
    fn devices(&self) -> Vec<(u64, u64)> {
        devices_of(&self.an)
    }
    fn emit(&mut self, ev: &Event) {
        self.an.apply(ev);
        self.written.push(ev.clone());
    }
    fn pause(&mut self) {
        self.ring.extend(self.late.drain(..));
    }
    fn verify_requests(&mut self) -> Vec<(u64, u32)> {
        self.an.take_verify_requests()
    }
}

fn pte(pfn: u64) -> u64 {
    (pfn << PAGE_SHIFT) | PRESENT_RW
}

fn setup(pages: u64) -> (FakeKernel, FakeProc) {
    let mut k = FakeKernel::default();
    k.mms.insert(PID, MM);
    for i in 0..pages {
        k.ptes.insert(VA + i * PAGE_SIZE, pte(DEV + i));
    }
    let p = FakeProc {
        maps: format!(
            "{:x}-{:x} rw-s 00000000 103:00 12 /mnt/dax/f\n",
            VA,
            VA + 64 * PAGE_SIZE
        ),
        now: u64::MAX / 2,
    };
    (k, p)
}

fn all() -> Scope {
    Scope::All {
        pids: Vec::new(),
        comm: None,
    }
}

fn audit(k: &mut FakeKernel, p: &mut FakeProc, r: &mut Rec, scope: &Scope) -> Summary {
    run(k, p, r, scope, refscope_common::audit_reason::PERIODIC, 1).unwrap()
}

#[test]
fn a_shadow_that_agrees_shows_no_drift_and_reads_the_table_once() {
    let (mut k, mut p) = setup(4);
    let mut r = Rec::new(true);
    for i in 0..4 {
        r.map(VA + i * PAGE_SIZE, DEV + i);
    }
    let s = audit(&mut k, &mut p, &mut r, &all());
    assert_eq!((s.compared, s.missing, s.stale), (4, 0, 0));
    assert_eq!(k.walks, 1, "no second read without disagreement");
    assert_eq!(r.kinds(), [EventKind::Audit]);
    assert_eq!(r.an.stats().drift(), 0);
    assert_eq!(r.an.stats().audits, 1);
}

#[test]
fn a_missed_install_and_a_missed_replacement_are_drift_and_corrected() {
    // The probes saw pages 0..3 mapped; the kernel also mapped page 3
    // (missed install) and replaced page 1 by an anonymous page (missed
    // copy-on-write).
    let (mut k, mut p) = setup(4);
    k.ptes.insert(VA + PAGE_SIZE, pte(0x5000));
    let mut r = Rec::new(true);
    for i in 0..3 {
        r.map(VA + i * PAGE_SIZE, DEV + i);
    }
    let s = audit(&mut k, &mut p, &mut r, &all());
    assert_eq!((s.missing, s.stale), (1, 1));
    assert_eq!(k.walks, 2, "disagreements are read twice");
    assert_eq!(
        r.kinds(),
        [EventKind::AuditUnmap, EventKind::AuditMap, EventKind::Audit]
    );
    let st = r.an.stats();
    assert_eq!((st.drift_missing, st.drift_stale), (1, 1));
    let d = r.an.drift();
    assert_eq!(d[0].kind, DriftKind::Stale);
    assert_eq!(d[0].vaddr, Hex(VA + PAGE_SIZE));
    assert_eq!(d[0].entry, Hex(pte(0x5000)));
    assert!(d[0].hint.contains("cow"), "{}", d[0].hint);
    assert_eq!(d[1].kind, DriftKind::Missing);
    assert_eq!(d[1].pfn, DEV + 3);
    assert_eq!(k.tracked, [MM], "its unmaps must be reported from now on");
    // Corrected: a second audit agrees.
    let s = audit(&mut k, &mut p, &mut r, &all());
    assert_eq!((s.missing, s.stale), (0, 0));
    assert_eq!(r.an.stats().drift(), 2);
}

#[test]
fn a_change_whose_event_arrives_while_the_table_is_read_is_not_drift() {
    // Page 4 is mapped by a fault that finishes while the table is read;
    // its event reaches the ring buffer only after the first comparison.
    let (mut k, mut p) = setup(5);
    let mut r = Rec::new(true);
    for i in 0..4 {
        r.map(VA + i * PAGE_SIZE, DEV + i);
    }
    let e = r.map_ev(VA + 4 * PAGE_SIZE, DEV + 4);
    r.late.push(e);
    let s = audit(&mut k, &mut p, &mut r, &all());
    assert_eq!(k.walks, 2, "the disagreement was read again");
    assert_eq!((s.missing, s.stale), (0, 0));
    assert_eq!(r.an.stats().drift(), 0);
    assert_eq!(r.an.mapping_count(), 5);
}

#[test]
fn an_unconfirmed_accusation_is_withdrawn_and_a_confirmed_one_is_definite() {
    // Two pages mapped; the device goes away. The kernel still maps page 0
    // (a real mapped_after_unplug) but page 1 was replaced by a
    // copy-on-write refscope did not see.
    let (mut k, mut p) = setup(2);
    k.ptes.insert(VA + PAGE_SIZE, pte(0x5000));
    let mut r = Rec::new(true);
    r.map(VA, DEV);
    r.map(VA + PAGE_SIZE, DEV + 1);
    let mut e = r.ev(EventKind::PgmapRemove, HookId::MemunmapPages);
    e.pfn = DEV;
    e.pfn_end = DEV + 0x10000;
    r.an.apply(&e);
    assert!(
        r.an.findings().is_empty(),
        "accusations wait for the page table"
    );
    let req = r.an.take_verify_requests();
    assert_eq!(req, vec![(MM, PID)]);
    audit(&mut k, &mut p, &mut r, &Scope::Only(req));
    let f = r.an.findings();
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].rule, RuleId::MappedAfterUnplug);
    assert_eq!(f[0].vaddr, Hex(VA));
    assert_eq!(f[0].status, Status::Definite);
    assert!(f[0].explanation.contains("Confirmed"));
    assert_eq!(r.an.stats().findings_withdrawn, 1);
    assert_eq!(r.an.stats().drift_stale, 1);
}

#[test]
fn a_finding_raised_while_the_table_is_read_waits_for_a_later_read() {
    // Copy-on-write replaced the device PTE by an anonymous page, then
    // dropped the device page (a free refscope sees; the replacement it
    // does not). The table was read just before the replacement, and the
    // free's event is drained while it is read: that read cannot confirm
    // the free happened while the page was mapped.
    let (mut k, mut p) = setup(1);
    let mut r = Rec::new(true);
    r.map(VA, DEV);
    p.now = r.t + 5;
    let mut e = r.ev(EventKind::Free, HookId::FreeZoneDeviceFolio);
    e.pfn = DEV;
    e.ref_before = Some(0);
    r.ring.push_back(e);
    audit(&mut k, &mut p, &mut r, &all());
    assert!(r.an.findings().is_empty(), "{:#?}", r.an.findings());
    assert_eq!(r.an.pending_findings(), 1, "still waiting");
    let req = r.an.take_verify_requests();
    assert_eq!(req, vec![(MM, PID)], "and asking for a read after it");
    // The next read sees the replacement: the accusation is withdrawn.
    k.ptes.insert(VA, pte(0x5000));
    p.now = u64::MAX / 2;
    audit(&mut k, &mut p, &mut r, &Scope::Only(req));
    assert!(r.an.findings().is_empty(), "{:#?}", r.an.findings());
    assert_eq!(r.an.stats().findings_withdrawn, 1);
    assert_eq!(r.an.pending_findings(), 0);
}

#[test]
fn a_mapping_only_the_page_table_knows_is_reported_after_unplug() {
    let (mut k, mut p) = setup(2);
    let mut r = Rec::new(true);
    r.map(VA, DEV);
    let mut e = r.ev(EventKind::PgmapRemove, HookId::MemunmapPages);
    e.pfn = DEV;
    e.pfn_end = DEV + 0x10000;
    r.an.apply(&e);
    let req = r.an.take_verify_requests();
    audit(&mut k, &mut p, &mut r, &Scope::Only(req));
    let mut got: Vec<(u64, Status)> =
        r.an.findings()
            .iter()
            .filter(|f| f.rule == RuleId::MappedAfterUnplug)
            .map(|f| (f.vaddr.0, f.status))
            .collect();
    got.sort_by_key(|x| x.0);
    assert_eq!(
        got,
        [(VA, Status::Definite), (VA + PAGE_SIZE, Status::Definite)]
    );
    assert_eq!(r.an.stats().drift_missing, 1);
}

#[test]
fn a_process_gone_before_the_audit_leaves_its_findings_unconfirmed() {
    let (mut k, mut p) = setup(1);
    let mut r = Rec::new(true);
    r.map(VA, DEV);
    let mut e = r.ev(EventKind::PgmapRemove, HookId::MemunmapPages);
    e.pfn = DEV;
    e.pfn_end = DEV + 0x10000;
    r.an.apply(&e);
    let req = r.an.take_verify_requests();
    k.mms.clear();
    audit(&mut k, &mut p, &mut r, &Scope::Only(req));
    assert_eq!(k.walks, 0);
    let f = r.an.findings();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].status, Status::Unconfirmed);
    assert!(f[0].explanation.contains("gone"), "{}", f[0].explanation);
}

#[test]
fn pmd_leaves_and_prot_none_entries_are_read_as_the_kernel_means_them() {
    let pmd_pfn = DEV + 512;
    // A PMD leaf: bit 12 is PAT, not address.
    assert_eq!(
        leaf_pfn((pmd_pfn << PAGE_SHIFT) | 0x80 | 0x1000 | 1, true),
        Some(pmd_pfn)
    );
    // PROT_NONE: not present to the MMU, pfn stored inverted.
    let inv = !(DEV << PAGE_SHIFT) & PFN_MASK;
    assert_eq!(leaf_pfn(inv | PAGE_PROTNONE, false), Some(DEV));
    // Swap and migration entries map nothing.
    assert_eq!(leaf_pfn(0x1234_5000, false), None);

    let (mut k, mut p) = setup(0);
    k.pmds
        .insert(VA, (pmd_pfn << PAGE_SHIFT) | 0x80 | PRESENT_RW);
    p.maps = format!(
        "{:x}-{:x} rw-s 00000000 103:00 12 /mnt/dax/f\n",
        VA,
        VA + PMD_SIZE
    );
    let mut r = Rec::new(true);
    let mut e = r.ev(EventKind::Map, HookId::VmfInsertPfnPmd);
    e.vaddr = Hex(VA);
    e.pfn = pmd_pfn;
    e.order = PMD_ORDER;
    e.ref_after = Some(2);
    r.an.apply(&e);
    let s = audit(&mut k, &mut p, &mut r, &all());
    assert_eq!((s.compared, s.missing, s.stale), (1, 0, 0));
}

#[test]
fn an_unmap_held_behind_a_record_being_written_is_not_drift() {
    // Page 1 was unmapped: its PTE is clear and its unmap event is in the
    // ring buffer, behind a record another CPU is still writing.
    let (mut k, mut p) = setup(4);
    let mut r = Rec::new(true);
    for i in 0..4 {
        r.map(VA + i * PAGE_SIZE, DEV + i);
    }
    k.ptes.remove(&(VA + PAGE_SIZE));
    let mut e = r.ev(EventKind::Unmap, HookId::ZapVmaRange);
    e.vaddr = Hex(VA + PAGE_SIZE);
    e.vaddr_end = Hex(VA + 2 * PAGE_SIZE);
    r.ring.push_back(e);
    r.busy_syncs = usize::MAX;
    let s = audit(&mut k, &mut p, &mut r, &all());
    assert_eq!(s.stale, 0, "the shadow was behind, not wrong");
    assert_eq!(s.unsynced, [(MM, PID)], "to be audited again");
    assert!(
        r.written.is_empty(),
        "no drift, no closing: {:?}",
        r.kinds()
    );
    assert_eq!(r.an.stats().drift(), 0);
    // Once the record is written, the next pass agrees.
    r.busy_syncs = 0;
    let s = audit(&mut k, &mut p, &mut r, &Scope::Only(s.unsynced.clone()));
    assert_eq!((s.compared, s.stale, s.missing), (3, 0, 0));
    assert!(s.unsynced.is_empty());
    assert_eq!(r.kinds(), [EventKind::Audit]);
    assert_eq!(r.an.stats().drift(), 0);
}

#[test]
fn a_record_being_written_during_the_second_read_stops_the_comparison_too() {
    // Disagreement at the first read (a fault finishing: its event comes
    // during the pause); the ring buffer is held after the second read.
    let (mut k, mut p) = setup(4);
    let mut r = Rec::new(true);
    for i in 0..3 {
        r.map(VA + i * PAGE_SIZE, DEV + i);
    }
    let e = r.map_ev(VA + 3 * PAGE_SIZE, DEV + 3);
    r.late.push(e);
    // Syncs: before the read, after it, before the second read pass; the
    // one after the second read finds the ring buffer held.
    r.busy_syncs = 0;
    struct Nth<'a>(&'a mut Rec, usize);
    impl Recording for Nth<'_> {
        fn sync(&mut self) -> bool {
            self.1 += 1;
            self.1 != 4 && self.0.sync()
        }
        fn mm_id(&self, mm: u64) -> u64 {
            self.0.mm_id(mm)
        }
        fn shadow(&self, id: u64) -> BTreeMap<u64, (u64, u8)> {
            self.0.shadow(id)
        }
        fn devices(&self) -> Vec<(u64, u64)> {
            self.0.devices()
        }
        fn emit(&mut self, ev: &Event) {
            self.0.emit(ev)
        }
        fn pause(&mut self) {
            self.0.pause()
        }
        fn verify_requests(&mut self) -> Vec<(u64, u32)> {
            self.0.verify_requests()
        }
    }
    let mut n = Nth(&mut r, 0);
    let s = run(
        &mut k,
        &mut p,
        &mut n,
        &all(),
        refscope_common::audit_reason::PERIODIC,
        1,
    )
    .unwrap();
    assert_eq!(n.1, 4, "a barrier around each read");
    assert_eq!(k.walks, 2);
    assert_eq!((s.missing, s.stale), (0, 0));
    assert_eq!(s.unsynced, [(MM, PID)]);
    assert!(r.written.is_empty(), "{:?}", r.kinds());
}

#[test]
fn a_divergence_an_older_event_explains_later_is_late_not_drift() {
    // The audit reads at t=1000: page 1 is gone from the table, page 3 is
    // in it; the shadow does not know either (their events are late).
    let (mut k, mut p) = setup(4);
    p.now = 1000;
    k.ptes.remove(&(VA + PAGE_SIZE));
    let mut r = Rec::new(true);
    for i in 0..3 {
        r.map(VA + i * PAGE_SIZE, DEV + i);
    }
    let s = audit(&mut k, &mut p, &mut r, &all());
    assert_eq!((s.missing, s.stale), (1, 1));
    assert_eq!(r.an.stats().drift(), 2);
    // An unmap of page 1 from after the read explains nothing (the page
    // table had already lost it)...
    let mut late_unmap = r.ev(EventKind::Unmap, HookId::ZapVmaRange);
    late_unmap.vaddr = Hex(VA + PAGE_SIZE);
    late_unmap.vaddr_end = Hex(VA + 2 * PAGE_SIZE);
    let mut after = late_unmap.clone();
    after.t = 2000;
    r.an.apply(&after);
    // ...nor does an install of another page at page 3's address.
    let mut install = r.ev(EventKind::Map, HookId::InsertPfn);
    install.vaddr = Hex(VA + 3 * PAGE_SIZE);
    install.pfn = DEV + 9;
    r.an.apply(&install);
    assert_eq!(r.an.stats().drift(), 2);
    assert_eq!(r.an.stats().drift_late, 0);
    // The events from before the read, arriving now, explain both.
    r.an.apply(&late_unmap);
    let mut install = install.clone();
    install.pfn = DEV + 3;
    r.an.apply(&install);
    let st = r.an.stats();
    assert_eq!((st.drift(), st.drift_late), (0, 2));
    assert!(r.an.drift().iter().all(|d| d.late), "{:?}", r.an.drift());
    assert!(r.an.drift()[0].hint.contains("behind"));
}

#[test]
fn a_1g_device_mapping_the_probes_missed_is_taken_into_the_shadow_once() {
    // device-dax with align=1G: one PUD leaf over a 1 GiB VMA.
    let (mut k, mut p) = setup(0);
    let va = 0x7f00_4000_0000;
    assert_eq!(va % PUD_SIZE, 0);
    k.puds.insert(va, (DEV << PAGE_SHIFT) | PRESENT_RW | 0x80);
    p.maps = format!(
        "{:x}-{:x} rw-s 00000000 103:00 7 /dev/dax0.0\n",
        va,
        va + PUD_SIZE
    );
    let mut r = Rec::new(true);
    for (pass, missing) in [(0, 1), (1, 0)] {
        let s = audit(&mut k, &mut p, &mut r, &all());
        assert_eq!(
            s.pud_leaves, 1,
            "pass {pass}: one leaf, read through 512 blocks"
        );
        assert_eq!(
            s.blocks, 1,
            "pass {pass}: the leaf, not the 511 blocks behind it"
        );
        assert_eq!(s.missing, missing, "pass {pass}");
    }
    assert_eq!(r.an.stats().drift_missing, 1);
    let d = &r.an.drift()[0];
    assert_eq!((d.vaddr, d.pfn, d.order), (Hex(va), DEV, PUD_ORDER));
    assert_eq!(
        shadow_of(&r.an, MM),
        BTreeMap::from([(va, (DEV, PUD_ORDER))]),
        "one order-18 mapping, as the probes would have recorded it"
    );
}

#[test]
fn a_1g_device_mapping_the_probes_saw_agrees_with_the_page_table() {
    let (mut k, mut p) = setup(0);
    let va = 0x7f00_4000_0000;
    k.puds.insert(va, (DEV << PAGE_SHIFT) | PRESENT_RW | 0x80);
    p.maps = format!(
        "{:x}-{:x} rw-s 00000000 103:00 7 /dev/dax0.0\n",
        va,
        va + PUD_SIZE
    );
    let mut r = Rec::new(true);
    let mut e = r.map_ev(va, DEV);
    e.order = PUD_ORDER;
    e.hook = HookId::VmfInsertFolioPud;
    r.an.apply(&e);
    let s = audit(&mut k, &mut p, &mut r, &all());
    assert_eq!((s.compared, s.missing, s.stale), (1, 0, 0));
    // Cleared behind the probes' back: one stale divergence, and gone.
    k.puds.clear();
    let s = audit(&mut k, &mut p, &mut r, &all());
    assert_eq!((s.missing, s.stale), (0, 1));
    assert!(shadow_of(&r.an, MM).is_empty());
}
