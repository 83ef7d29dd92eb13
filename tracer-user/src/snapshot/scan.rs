//! Reading one process's device VMAs for the snapshot: `/proc/PID/pagemap`
//! chunk by chunk, read twice around the refcount reads and kept only where
//! both reads agree, with PMD candidates confirmed in the page table (or by
//! `PAGEMAP_SCAN`) and 1 GiB leaves found by a page-table walk; each
//! mapping found becomes an `attach_map` event for the sink.

use std::collections::HashSet;

use refscope_common::{
    COMM_LEN, Event as RawEvent, EventKind, HookId, PMD_ORDER, PUD_ORDER, flags,
};

use super::{
    CHUNK_PAGES, HugeMethod, KernelReads, Options, PAGE_SHIFT, PAGE_SIZE, PM_PFN_MASK, PM_PRESENT,
    PMD_PAGES, PMD_SIZE, PUD_PAGES_SHIFT, PUD_SHIFT, PUD_SIZE, PageRef, PageReq, Procfs, Sink,
    SnapshotError, Summary, Vma,
};

/// One mapping found in a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Found {
    vaddr: u64,
    pfn: u64,
    order: u8,
    /// A PMD candidate to check in the page table.
    walk: bool,
}

/// One process's scan: its VMAs read chunk by chunk.
pub(super) struct Scan<'a> {
    pub(super) pid: u32,
    pub(super) mm: u64,
    pub(super) comm: [u8; COMM_LEN],
    pub(super) opts: &'a Options,
    pub(super) sum: &'a mut Summary,
}

impl Scan<'_> {
    fn in_device(&self, pfn: u64) -> bool {
        self.opts.ranges.iter().any(|&(a, b)| a <= pfn && pfn < b)
    }

    pub(super) fn vma<K: KernelReads, P: Procfs, S: Sink>(
        &mut self,
        kernel: &mut K,
        proc: &mut P,
        sink: &mut S,
        vma: &Vma,
    ) -> Result<(), SnapshotError<K::Error>> {
        let pid = self.pid;
        let mut first = Vec::new();
        let mut second = Vec::new();
        let puds = self.pud_leaves(kernel, proc, sink, vma)?;
        // Chunks aligned to CHUNK_PAGES (so to PMDs), clipped to the VMA.
        let mut vpn = vma.start >> PAGE_SHIFT;
        let end_vpn = vma.end >> PAGE_SHIFT;
        while vpn < end_vpn {
            if puds.contains(&(vpn >> PUD_PAGES_SHIFT)) {
                // Read from the page table instead (`pud_leaves`).
                vpn = ((vpn >> PUD_PAGES_SHIFT) + 1) << PUD_PAGES_SHIFT;
                continue;
            }
            let next = ((vpn / CHUNK_PAGES) + 1) * CHUNK_PAGES;
            let n = (next.min(end_vpn) - vpn) as usize;
            sink.drain();
            let t = proc.now();
            first.resize(n, 0);
            proc.pagemap(pid, vpn, &mut first)
                .map_err(|err| SnapshotError::Pagemap { pid, err })?;
            let found = self.mappings(proc, vma, vpn, &first)?;
            if !found.is_empty() {
                let found = self.read(kernel, &found)?;
                second.resize(n, 0);
                proc.pagemap(pid, vpn, &mut second)
                    .map_err(|err| SnapshotError::Pagemap { pid, err })?;
                for (f, r) in &found {
                    let i = ((f.vaddr >> PAGE_SHIFT) - vpn) as usize;
                    let last = i + (1usize << f.order) - 1;
                    if first[i] != second[i] || first[last] != second[last] {
                        self.sum.changed += 1;
                        continue;
                    }
                    self.sum.mappings += 1;
                    self.sum.pages += 1 << f.order;
                    self.sum.pmd_mappings += u64::from(f.order > 0);
                    sink.emit(&self.event(f, r, t));
                }
            }
            vpn += n as u64;
        }
        Ok(())
    }

    /// The 1 GiB (PUD) device mappings of `vma`, read from the kernel's page
    /// table and emitted; returns the GiB numbers (`vpn >> 18`) they cover,
    /// which the pagemap scan then skips: reading pagemap there would split
    /// each PUD, changing the process's page table to look at it.
    fn pud_leaves<K: KernelReads, P: Procfs, S: Sink>(
        &mut self,
        kernel: &mut K,
        proc: &mut P,
        sink: &mut S,
        vma: &Vma,
    ) -> Result<HashSet<u64>, SnapshotError<K::Error>> {
        let mut puds = HashSet::new();
        let first = vma.start.div_ceil(PUD_SIZE);
        let last = vma.end / PUD_SIZE;
        for g in first..last {
            let va = g * PUD_SIZE;
            let Some(entry) = kernel
                .pud_leaf(self.mm, va)
                .map_err(SnapshotError::Kernel)?
            else {
                continue;
            };
            let Some(pfn) = crate::pagetable::leaf_pfn(entry, true).filter(|&p| self.in_device(p))
            else {
                continue;
            };
            sink.drain();
            let t = proc.now();
            let mut refs = Vec::with_capacity(1);
            kernel
                .read_pages(self.mm, &[PageReq { pfn, walk: 0 }], &mut refs)
                .map_err(SnapshotError::Kernel)?;
            let f = Found {
                vaddr: va,
                pfn,
                order: PUD_ORDER,
                walk: false,
            };
            let r = refs.pop().unwrap_or(PageRef {
                raw: None,
                pgmap: 0,
                pmd: None,
            });
            self.sum.mappings += 1;
            self.sum.pages += 1 << PUD_ORDER;
            self.sum.pud_mappings += 1;
            sink.emit(&self.event(&f, &r, t));
            puds.insert(va >> PUD_SHIFT);
        }
        Ok(puds)
    }

    /// Read the pages of `found` from the kernel; PMD candidates nobody
    /// vouched for yet are checked in the page table, and those that turn
    /// out to be 512 PTEs are split (and their pages read).
    fn read<K: KernelReads>(
        &mut self,
        kernel: &mut K,
        found: &[Found],
    ) -> Result<Vec<(Found, PageRef)>, SnapshotError<K::Error>> {
        let reqs: Vec<PageReq> = found
            .iter()
            .map(|f| PageReq {
                pfn: f.pfn,
                walk: if f.walk { f.vaddr } else { 0 },
            })
            .collect();
        let mut refs = Vec::with_capacity(reqs.len());
        kernel
            .read_pages(self.mm, &reqs, &mut refs)
            .map_err(SnapshotError::Kernel)?;
        let mut out = Vec::with_capacity(found.len());
        let mut split = Vec::new();
        for (f, r) in found.iter().zip(refs) {
            if !f.walk {
                out.push((*f, r));
                continue;
            }
            self.sum.huge_method = HugeMethod::PageTableWalk;
            match r.pmd {
                Some(true) => out.push((*f, r)),
                None => {
                    self.sum.pmd_unverified += 1;
                    out.push((*f, r));
                }
                Some(false) => split.extend((0..PMD_PAGES).map(|k| Found {
                    vaddr: f.vaddr + k * PAGE_SIZE,
                    pfn: f.pfn + k,
                    order: 0,
                    walk: false,
                })),
            }
        }
        if !split.is_empty() {
            let reqs: Vec<PageReq> = split
                .iter()
                .map(|f| PageReq {
                    pfn: f.pfn,
                    walk: 0,
                })
                .collect();
            let mut refs = Vec::with_capacity(reqs.len());
            kernel
                .read_pages(self.mm, &reqs, &mut refs)
                .map_err(SnapshotError::Kernel)?;
            out.extend(split.into_iter().zip(refs));
            out.sort_by_key(|(f, _)| f.vaddr);
        }
        Ok(out)
    }

    /// Mappings of device pages in one chunk of pagemap entries.
    fn mappings<K: std::error::Error, P: Procfs>(
        &mut self,
        proc: &mut P,
        vma: &Vma,
        vpn: u64,
        entries: &[u64],
    ) -> Result<Vec<Found>, SnapshotError<K>> {
        let mut found = Vec::new();
        let mut huge: Option<Option<Vec<(u64, u64)>>> = None;
        let mut i = 0;
        while i < entries.len() {
            let e = entries[i];
            if e & PM_PRESENT == 0 {
                i += 1;
                continue;
            }
            let pfn = e & PM_PFN_MASK;
            if pfn == 0 {
                return Err(SnapshotError::PfnsHidden(self.pid));
            }
            if !self.in_device(pfn) {
                i += 1;
                continue;
            }
            let vaddr = (vpn + i as u64) << PAGE_SHIFT;
            if pmd_candidate(vaddr, vma, &entries[i..]) {
                let h = match &mut huge {
                    Some(h) => h,
                    None => {
                        let chunk_end = (vpn + entries.len() as u64) << PAGE_SHIFT;
                        let r = proc
                            .huge_ranges(self.pid, vpn << PAGE_SHIFT, chunk_end)
                            .map_err(|err| SnapshotError::Pagemap { pid: self.pid, err })?;
                        huge.insert(r)
                    }
                };
                // With PAGEMAP_SCAN the kernel says; without, the page
                // table is read along with the refcounts.
                let (is_pmd, walk) = match h {
                    Some(ranges) => {
                        self.sum.huge_method = HugeMethod::PagemapScan;
                        let pmd = ranges
                            .iter()
                            .any(|&(a, b)| a <= vaddr && vaddr + PMD_SIZE <= b);
                        (pmd, false)
                    }
                    None => (true, true),
                };
                if is_pmd {
                    found.push(Found {
                        vaddr,
                        pfn,
                        order: PMD_ORDER,
                        walk,
                    });
                    i += PMD_PAGES as usize;
                    continue;
                }
            }
            found.push(Found {
                vaddr,
                pfn,
                order: 0,
                walk: false,
            });
            i += 1;
        }
        Ok(found)
    }

    fn event(&mut self, f: &Found, r: &PageRef, t: u64) -> RawEvent {
        let mut ev = RawEvent::new(EventKind::AttachMap, HookId::Snapshot);
        ev.flags = flags::AT_ATTACH;
        ev.ts_ns = t;
        ev.tgid = self.pid;
        ev.tid = self.pid;
        ev.comm = self.comm;
        ev.mm = self.mm;
        ev.vaddr = f.vaddr;
        ev.pfn = f.pfn;
        ev.order = f.order;
        ev.pgmap = r.pgmap;
        match r.raw {
            Some(raw) => {
                ev.ref_before = raw;
                ev.flags |= flags::REF_BEFORE;
            }
            None => {
                ev.flags |= flags::MEMMAP_UNREADABLE;
                self.sum.unreadable += 1;
            }
        }
        ev
    }
}

/// Whether the entries from a 2 MiB-aligned `vaddr` on could be one PMD
/// mapping: the whole 2 MiB inside the VMA, every page present, mapping
/// 512 contiguous pfns starting 2 MiB-aligned.
fn pmd_candidate(vaddr: u64, vma: &Vma, entries: &[u64]) -> bool {
    if !vaddr.is_multiple_of(PMD_SIZE)
        || vaddr + PMD_SIZE > vma.end
        || entries.len() < PMD_PAGES as usize
    {
        return false;
    }
    let pfn0 = entries[0] & PM_PFN_MASK;
    if !pfn0.is_multiple_of(PMD_PAGES) {
        return false;
    }
    entries[..PMD_PAGES as usize]
        .iter()
        .enumerate()
        .all(|(k, &e)| e & PM_PRESENT != 0 && e & PM_PFN_MASK == pfn0 + k as u64)
}
