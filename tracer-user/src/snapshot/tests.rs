//! The snapshot over a fake `/proc` and kernel.

use std::collections::BTreeMap;

use refscope_common::{EventKind, flags};

use super::*;

const DEV_PFN: u64 = 0x140000;
const MM: u64 = 0xffff_8880_0000_4000;

#[derive(Debug, thiserror::Error)]
#[error("fake kernel error")]
struct FakeError;

#[derive(Default)]
struct FakeKernel {
    mms: HashMap<u32, u64>,
    refs: HashMap<u64, i32>,
    /// Virtual addresses a PMD leaf maps (the fake page table); None: the
    /// walk fails.
    pmds: Option<Vec<u64>>,
    tracked: Vec<u64>,
    walked: usize,
    /// 1 GiB leaves: virtual address -> page-table entry.
    puds: HashMap<u64, u64>,
}

impl KernelReads for FakeKernel {
    type Error = FakeError;
    fn task_mms(&mut self) -> Result<HashMap<u32, u64>, FakeError> {
        Ok(self.mms.clone())
    }
    fn read_pages(
        &mut self,
        mm: u64,
        reqs: &[PageReq],
        out: &mut Vec<PageRef>,
    ) -> Result<(), FakeError> {
        assert!(self.mms.values().any(|&m| m == mm), "the process's mm");
        out.extend(reqs.iter().map(|r| {
            PageRef {
                raw: self.refs.get(&r.pfn).copied(),
                pgmap: 0xabc,
                pmd: (r.walk != 0)
                    .then(|| {
                        self.walked += 1;
                        self.pmds.as_ref().map(|p| p.contains(&r.walk))
                    })
                    .flatten(),
            }
        }));
        Ok(())
    }
    fn track_mm(&mut self, mm: u64, _now: u64) -> Result<(), FakeError> {
        self.tracked.push(mm);
        Ok(())
    }
    fn pud_leaf(&mut self, _mm: u64, va: u64) -> Result<Option<u64>, FakeError> {
        Ok(self.puds.get(&va).copied())
    }
}

/// A process: its maps text and its page table (vpn -> pagemap entry).
#[derive(Default, Clone)]
struct FakeProc {
    comm: String,
    maps: String,
    ptes: BTreeMap<u64, u64>,
}

#[derive(Default)]
struct Fake {
    procs: BTreeMap<u32, FakeProc>,
    /// Entries removed after the first pagemap read of each chunk.
    vanish_after_first_read: Vec<(u32, u64)>,
    reads: usize,
    /// Every page pagemap was read for.
    read_vpns: Vec<u64>,
    huge: Option<Vec<(u64, u64)>>,
    dax_devs: Vec<(u32, u32)>,
}

impl Procfs for Fake {
    fn pids(&mut self) -> io::Result<Vec<u32>> {
        Ok(self.procs.keys().copied().collect())
    }
    fn comm(&mut self, pid: u32) -> io::Result<String> {
        Ok(self.procs[&pid].comm.clone())
    }
    fn maps(&mut self, pid: u32) -> io::Result<String> {
        self.procs
            .get(&pid)
            .map(|p| p.maps.clone())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }
    fn pagemap(&mut self, pid: u32, vpn: u64, out: &mut [u64]) -> io::Result<()> {
        self.reads += 1;
        self.read_vpns.extend(vpn..vpn + out.len() as u64);
        let p = &self.procs[&pid];
        for (i, o) in out.iter_mut().enumerate() {
            *o = p.ptes.get(&(vpn + i as u64)).copied().unwrap_or(0);
        }
        if self.reads % 2 == 1 {
            for (pid, v) in std::mem::take(&mut self.vanish_after_first_read) {
                self.procs.get_mut(&pid).unwrap().ptes.remove(&v);
            }
        }
        Ok(())
    }
    fn huge_ranges(&mut self, _: u32, _: u64, _: u64) -> io::Result<Option<Vec<(u64, u64)>>> {
        Ok(self.huge.clone())
    }
    fn dax_capable(&mut self, major: u32, minor: u32) -> bool {
        self.dax_devs.contains(&(major, minor))
    }
    fn now(&mut self) -> u64 {
        1000
    }
}

#[derive(Default)]
struct Collect {
    events: Vec<RawEvent>,
    drains: usize,
}

impl Sink for Collect {
    fn drain(&mut self) {
        self.drains += 1;
    }
    fn emit(&mut self, ev: &RawEvent) {
        self.events.push(*ev);
    }
}

fn present(pfn: u64) -> u64 {
    PM_PRESENT | pfn
}

fn opts() -> Options {
    Options {
        ranges: vec![(DEV_PFN, DEV_PFN + 0x10000)],
        self_pid: 1,
        ..Options::default()
    }
}

/// pid 100 maps 4 DAX pages of /mnt/dax/f (dev 259:0 = 103:00 in hex) at
/// 0x7f0000000000, pages 1 and 3 touched in reverse, plus a libc mapping.
fn fixture() -> (FakeKernel, Fake) {
    let mut k = FakeKernel::default();
    k.mms.insert(100, MM);
    k.mms.insert(200, MM + 0x1000);
    for i in 0..1024 {
        k.refs.insert(DEV_PFN + i, 1);
    }
    let mut f = Fake {
        dax_devs: vec![(259, 0)],
        ..Fake::default()
    };
    let base = 0x7f00_0000_0000u64 >> 12;
    let mut p = FakeProc {
        comm: "pte-touch".into(),
        maps: "7f0000000000-7f0000004000 rw-s 00000000 103:00 12 /mnt/dax/f\n\
               7f1000000000-7f1000001000 r-xp 00000000 08:01 99 /usr/lib/libc.so.6\n"
            .into(),
        ..FakeProc::default()
    };
    p.ptes.insert(base + 1, present(DEV_PFN + 7));
    p.ptes.insert(base + 3, present(DEV_PFN + 5));
    // libc: RAM pfn, and its device is not DAX-capable anyway.
    p.ptes.insert(0x7f10_0000_0000 >> 12, present(0x1234));
    f.procs.insert(100, p);
    f.procs.insert(
        200,
        FakeProc {
            comm: "bash".into(),
            maps: "55550000-55551000 r-xp 00000000 08:01 5 /usr/bin/bash\n".into(),
            ..FakeProc::default()
        },
    );
    (k, f)
}

#[test]
fn existing_pte_mappings_become_attach_map_events() {
    let (mut k, mut f) = fixture();
    let mut sink = Collect::default();
    let sum = run(&mut k, &mut f, &mut sink, &opts(), |_| true).unwrap();
    let got: Vec<(u64, u64, u8, i32)> = sink
        .events
        .iter()
        .map(|e| (e.vaddr, e.pfn, e.order, e.ref_before))
        .collect();
    assert_eq!(
        got,
        vec![
            (0x7f00_0000_1000, DEV_PFN + 7, 0, 1),
            (0x7f00_0000_3000, DEV_PFN + 5, 0, 1)
        ]
    );
    for e in &sink.events {
        assert_eq!(EventKind::from_raw(e.kind), Some(EventKind::AttachMap));
        assert_eq!(e.mm, MM);
        assert_eq!(e.tgid, 100);
        assert_eq!(&e.comm[..9], b"pte-touch");
        assert_eq!(e.pgmap, 0xabc);
        assert_ne!(e.flags & flags::AT_ATTACH, 0);
        assert_ne!(e.flags & flags::REF_BEFORE, 0);
    }
    assert_eq!(k.tracked, vec![MM], "only the process with DAX mappings");
    assert!(
        sink.drains >= 1,
        "the ring buffer is drained before reading"
    );
    assert_eq!(sum.mappings, 2);
    assert_eq!(sum.processes, 2);
    assert_eq!(sum.processes_mapping, 1);
    assert_eq!(sum.huge_method, HugeMethod::None);
}

#[test]
fn filters_skip_other_processes() {
    let (mut k, mut f) = fixture();
    let mut sink = Collect::default();
    let mut o = opts();
    o.comm = Some("fio".into());
    run(&mut k, &mut f, &mut sink, &o, |_| true).unwrap();
    assert!(sink.events.is_empty());
    let mut o = opts();
    o.pids = vec![200];
    run(&mut k, &mut f, &mut sink, &o, |_| true).unwrap();
    assert!(sink.events.is_empty());
    let mut o = opts();
    o.comm = Some("pte-".into());
    run(&mut k, &mut f, &mut sink, &o, |_| true).unwrap();
    assert_eq!(
        sink.events.len(),
        2,
        "comm is a prefix match, like the kernel filter"
    );
}

#[test]
fn an_entry_that_changes_during_the_snapshot_is_not_reported() {
    let (mut k, mut f) = fixture();
    f.vanish_after_first_read = vec![(100, (0x7f00_0000_0000u64 >> 12) + 3)];
    let mut sink = Collect::default();
    let sum = run(&mut k, &mut f, &mut sink, &opts(), |_| true).unwrap();
    assert_eq!(sink.events.len(), 1);
    assert_eq!(sink.events[0].vaddr, 0x7f00_0000_1000);
    assert_eq!(sum.changed, 1);
}

fn pmd_fixture(huge: Option<Vec<(u64, u64)>>) -> (FakeKernel, Fake) {
    let (k, mut f) = fixture();
    let base = 0x7f20_0000_0000u64;
    let p = f.procs.get_mut(&100).unwrap();
    p.maps = format!(
        "{:x}-{:x} rw-s 00000000 103:00 13 /mnt/dax/huge\n",
        base,
        base + 2 * PMD_SIZE
    );
    p.ptes.clear();
    // First 2 MiB: 512 contiguous aligned pfns. Second: 512 pages, but the
    // pfns are not contiguous (PTEs).
    for i in 0..512 {
        p.ptes.insert((base >> 12) + i, present(DEV_PFN + 512 + i));
        p.ptes.insert(
            ((base + PMD_SIZE) >> 12) + i,
            present(DEV_PFN + 2 * (i % 256)),
        );
    }
    f.huge = huge;
    (k, f)
}

#[test]
fn pmd_mappings_are_told_from_ptes() {
    let base = 0x7f20_0000_0000u64;
    // The kernel says which block is a PMD: PAGEMAP_SCAN (6.7+), or the
    // page table (before).
    for (huge, pmds, method) in [
        (
            Some(vec![(base, base + PMD_SIZE)]),
            None,
            HugeMethod::PagemapScan,
        ),
        (None, Some(vec![base]), HugeMethod::PageTableWalk),
    ] {
        let (mut k, mut f) = pmd_fixture(huge);
        k.pmds = pmds;
        let mut sink = Collect::default();
        let sum = run(&mut k, &mut f, &mut sink, &opts(), |_| true).unwrap();
        assert_eq!(sum.pmd_mappings, 1, "{method:?}");
        assert_eq!(sum.mappings, 1 + 512);
        assert_eq!(sum.pages, 1024);
        assert_eq!(sum.huge_method, method);
        assert_eq!(sink.events[0].order, PMD_ORDER);
        assert_eq!(sink.events[0].vaddr, base);
        assert_eq!(sink.events[0].pfn, DEV_PFN + 512);
        assert!(sink.events[1..].iter().all(|e| e.order == 0));
    }
    // The contiguous, aligned block is PTE-mapped (MADV_NOHUGEPAGE, say):
    // 1024 PTEs, whether PAGEMAP_SCAN or the page table says so.
    for (huge, pmds) in [(Some(vec![]), None), (None, Some(vec![]))] {
        let (mut k, mut f) = pmd_fixture(huge);
        k.pmds = pmds;
        let mut sink = Collect::default();
        let sum = run(&mut k, &mut f, &mut sink, &opts(), |_| true).unwrap();
        assert_eq!((sum.pmd_mappings, sum.mappings), (0, 1024));
        let vaddrs: Vec<u64> = sink.events.iter().map(|e| e.vaddr).collect();
        assert!(vaddrs.windows(2).all(|w| w[0] < w[1]), "in address order");
        assert_eq!(sink.events[0].pfn, DEV_PFN + 512);
        assert_eq!(sink.events[0].ref_before, 1, "split pages are read too");
    }
    // The page table could not be read: contiguity decides, and it is said.
    let (mut k, mut f) = pmd_fixture(None);
    let mut sink = Collect::default();
    let sum = run(&mut k, &mut f, &mut sink, &opts(), |_| true).unwrap();
    assert_eq!((sum.pmd_mappings, sum.pmd_unverified), (1, 1));
    assert_eq!(k.walked, 1, "only the candidate is walked");
}

#[test]
fn hidden_pfns_are_an_error_that_says_why() {
    let (mut k, mut f) = fixture();
    let base = 0x7f00_0000_0000u64 >> 12;
    f.procs.get_mut(&100).unwrap().ptes.insert(base, PM_PRESENT);
    let err = run(&mut k, &mut f, &mut Collect::default(), &opts(), |_| true).unwrap_err();
    assert!(err.to_string().contains("CAP_SYS_ADMIN"), "{err}");
}

#[test]
fn unreadable_struct_pages_are_flagged() {
    let (mut k, mut f) = fixture();
    k.refs.clear();
    let mut sink = Collect::default();
    let sum = run(&mut k, &mut f, &mut sink, &opts(), |_| true).unwrap();
    assert_eq!(sum.unreadable, 2);
    assert!(
        sink.events
            .iter()
            .all(|e| e.flags & flags::MEMMAP_UNREADABLE != 0 && e.flags & flags::REF_BEFORE == 0)
    );
}

#[test]
fn maps_lines_select_dax_files_and_devdax() {
    let maps = "\
7f0000000000-7f0000200000 rw-s 00000000 103:00 12 /mnt/dax/a file\n\
7f1000000000-7f1000200000 rw-s 00000000 00:05 77 /dev/dax0.0\n\
7f2000000000-7f2000001000 rw-p 00000000 00:00 0 \n\
7f3000000000-7f3000001000 r--p 00000000 08:01 3 /usr/lib/x.so\n\
7f4000000000-7f4000001000 rw-s 00000000 00:05 78 /dev/daxctl\n\
garbage\n";
    let v = device_vmas(maps, |maj, min| (maj, min) == (0x103, 0));
    assert_eq!(
        v,
        vec![
            Vma {
                start: 0x7f00_0000_0000,
                end: 0x7f00_0020_0000
            },
            Vma {
                start: 0x7f10_0000_0000,
                end: 0x7f10_0020_0000
            }
        ]
    );
}

#[test]
fn a_1g_mapping_is_read_from_the_page_table_and_never_from_pagemap() {
    // device-dax with align=1G: a 2 GiB VMA, the first GiB PUD-mapped, a
    // PTE in the second. A pagemap read of the first GiB would split the
    // PUD (the kernel's pagewalk clears it to look at it).
    let va = 0x7f00_4000_0000u64;
    let pud_pfn = 0x4_0000u64;
    let mut k = FakeKernel::default();
    k.mms.insert(100, MM);
    k.refs.insert(pud_pfn, 2);
    k.refs.insert(pud_pfn + (1 << 18), 1);
    k.puds.insert(va, (pud_pfn << 12) | 0x80 | 0x3);
    let mut f = Fake::default();
    let mut p = FakeProc {
        comm: "qemu".into(),
        maps: format!(
            "{:x}-{:x} rw-s 00000000 00:06 7 /dev/dax0.0\n",
            va,
            va + 2 * PUD_SIZE
        ),
        ..FakeProc::default()
    };
    p.ptes
        .insert((va + PUD_SIZE) >> 12, present(pud_pfn + (1 << 18)));
    f.procs.insert(100, p);
    let o = Options {
        ranges: vec![(pud_pfn, pud_pfn + (2 << 18))],
        self_pid: 1,
        ..Options::default()
    };
    let mut sink = Collect::default();
    let sum = run(&mut k, &mut f, &mut sink, &o, |_| true).unwrap();
    let got: Vec<(u64, u64, u8, i32)> = sink
        .events
        .iter()
        .map(|e| (e.vaddr, e.pfn, e.order, e.ref_before))
        .collect();
    assert_eq!(
        got,
        [
            (va, pud_pfn, PUD_ORDER, 2),
            (va + PUD_SIZE, pud_pfn + (1 << 18), 0, 1),
        ]
    );
    assert_eq!((sum.pud_mappings, sum.mappings), (1, 2));
    let first_gib = va >> 12..(va + PUD_SIZE) >> 12;
    assert!(
        !f.read_vpns.iter().any(|v| first_gib.contains(v)),
        "pagemap was read over the PUD"
    );
    assert!(f.read_vpns.contains(&((va + PUD_SIZE) >> 12)));
}
