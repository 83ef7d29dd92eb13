//! Synthetic but realistic traces, for the live view's tests, its demo
//! without a DAX host (`cargo run --example synth_trace`), and load tests.
//!
//! The scenario, on a 6.15+ (refcounted) kernel with one FS-DAX namespace:
//! `fio` maps every page of a file on the device and does O_DIRECT I/O that
//! pins and unpins some of them; a few events are lost on one CPU; `fio`
//! unmaps everything (the pages are freed) and exits. Meanwhile
//! `rdma_reg` takes a FOLL_LONGTERM pin on an FS-DAX page and exits without
//! releasing it, and `stale_map` maps one page ([`Synth::bad_pfn`]) and
//! keeps it mapped while the namespace is destroyed: `memunmap_pages` runs
//! under its mapping (the one bad page), and its later unmap finds the
//! memmap gone.

use std::io::{self, Write};

use refscope_common::{EventKind, HookId, flags};
use refscope_core::{
    event::{Comm, Event, Flags, Hex},
    model::{GupFlagBits, PgmapType, RefcountModel},
    trace::{AttachedFunction, Clock, Device, Header, HookStatus, Loss, TraceWriter},
};

/// Monotonic time of the start of the trace (1000 s after boot).
pub const T0: u64 = 1_000_000_000_000;
/// First pfn of the synthetic namespace (5 GiB).
pub const BASE_PFN: u64 = 0x140000;
/// Page offset of the page `stale_map` keeps mapped across the unplug.
const BAD_OFFSET: u64 = 0x2a;
/// Page offset of the page `rdma_reg` pins long-term.
const LONGTERM_OFFSET: u64 = 0x101;
/// The namespace's `struct dev_pagemap` id.
const PGMAP: u64 = 0xffff_8880_0c3a_0000;
const FSDAX: u64 = 3;
const MS: u64 = 1_000_000;

/// What to generate.
#[derive(Clone, Debug)]
pub struct Synth {
    /// Pages `fio` maps (the namespace has a few more).
    pub pages: u64,
    /// Pages `fio` pins for O_DIRECT I/O (each pinned and unpinned once).
    pub pinned: u64,
}

impl Default for Synth {
    fn default() -> Self {
        Synth {
            pages: 4096,
            pinned: 256,
        }
    }
}

/// One record of the trace after the header.
pub enum Item<'a> {
    Event(&'a Event),
    Loss(&'a Loss),
}

struct Proc {
    pid: u32,
    comm: Comm,
    mm: u64,
    cpu: u32,
}

/// Builds events with per-CPU sequence numbers.
struct Gen<'s> {
    seq: [u64; 4],
    sink: &'s mut dyn FnMut(Item<'_>),
}

impl Gen<'_> {
    fn ev(&mut self, p: &Proc, t: u64, kind: EventKind, hook: HookId) -> Event {
        let cpu = p.cpu as usize % self.seq.len();
        self.seq[cpu] += 1;
        let mut e = Event::new(kind, hook);
        e.t = t;
        e.cpu = cpu as u32;
        e.seq = self.seq[cpu];
        e.pid = p.pid;
        e.tid = p.pid;
        e.comm = p.comm;
        e.mm = Hex(p.mm);
        e
    }

    fn emit(&mut self, e: &Event) {
        (self.sink)(Item::Event(e));
    }

    /// A PTE install by the FS-DAX fault path: the fexit sees the mapping's
    /// reference plus the fault's temporary one.
    fn map(&mut self, p: &Proc, t: u64, pfn: u64, vaddr: u64, ref_after: i32) {
        let mut e = self.ev(p, t, EventKind::Map, HookId::VmfInsertPageMkwrite);
        e.vaddr = Hex(vaddr);
        e.pfn = pfn;
        e.page = Hex(page_id(pfn));
        e.pgmap = Hex(PGMAP);
        e.ref_after = Some(ref_after);
        e.flags = Flags(flags::REF_AFTER | flags::WRITE);
        self.emit(&e);
    }

    fn gup(&mut self, p: &Proc, t: u64, pfn: u64, get: bool, longterm: bool, before: i32) {
        let bits = GupFlagBits::default();
        let (kind, hook) = if get {
            (EventKind::GupGet, HookId::TryGrabFolio)
        } else {
            (EventKind::GupPut, HookId::GupPutFolio)
        };
        let mut e = self.ev(p, t, kind, hook);
        e.pfn = pfn;
        e.page = Hex(page_id(pfn));
        e.pgmap = Hex(PGMAP);
        e.refs = 1;
        let mut f = bits.foll_pin | bits.foll_write;
        if longterm {
            f |= bits.foll_longterm;
        }
        e.arg_flags = Hex(f);
        e.ref_before = Some(before);
        e.ref_after = Some(if get {
            before + bits.pin_bias
        } else {
            before - bits.pin_bias
        });
        e.flags = Flags(flags::REF_BEFORE | flags::REF_AFTER);
        if get {
            e.stack = vec![
                "try_grab_folio+0x1d".into(),
                "follow_page_pte+0x1b2".into(),
                "__get_user_pages+0x1a0".into(),
                "__gup_longterm_locked+0x6c".into(),
                "pin_user_pages_fast+0x3e".into(),
                if longterm {
                    "ib_umem_get+0x1c9".into()
                } else {
                    "iov_iter_extract_pages+0xd6".into()
                },
            ];
            e.flags.0 |= flags::HAS_STACK;
        }
        self.emit(&e);
    }

    fn unmap(&mut self, p: &Proc, t: u64, start: u64, end: u64, memmap_gone: bool) {
        let mut e = self.ev(p, t, EventKind::Unmap, HookId::UnmapPageRange);
        e.vaddr = Hex(start);
        e.vaddr_end = Hex(end);
        if memmap_gone {
            e.flags = Flags(flags::MEMMAP_UNREADABLE);
        }
        self.emit(&e);
    }

    fn free(&mut self, p: &Proc, t: u64, pfn: u64) {
        let mut e = self.ev(p, t, EventKind::Free, HookId::FreeZoneDeviceFolio);
        e.pfn = pfn;
        e.page = Hex(page_id(pfn));
        e.pgmap = Hex(PGMAP);
        e.ref_before = Some(0);
        e.flags = Flags(flags::REF_BEFORE);
        self.emit(&e);
    }

    fn exit(&mut self, p: &Proc, t: u64) {
        let e = self.ev(p, t, EventKind::MmExit, HookId::ExitMmap);
        self.emit(&e);
    }
}

fn page_id(pfn: u64) -> u64 {
    // vmemmap base + pfn * sizeof(struct page), as with raw addresses.
    0xffff_ea00_0000_0000 + pfn * 64
}

fn proc(pid: u32, comm: &str, mm: u64, cpu: u32) -> Proc {
    Proc {
        pid,
        comm: Comm::from_bytes(comm.as_bytes()),
        mm,
        cpu,
    }
}

fn attached(logical: &str, functions: &[(&str, &str)], skipped: &[&str]) -> HookStatus {
    HookStatus {
        logical: logical.into(),
        functions: functions
            .iter()
            .map(|(f, a)| AttachedFunction {
                function: (*f).into(),
                attach: (*a).into(),
            })
            .collect(),
        skipped: skipped.iter().map(|s| (*s).into()).collect(),
    }
}

impl Synth {
    /// The page left mapped across the device removal.
    pub fn bad_pfn(&self) -> u64 {
        BASE_PFN + BAD_OFFSET
    }

    /// The page pinned long-term by `rdma_reg`.
    pub fn longterm_pfn(&self) -> u64 {
        BASE_PFN + LONGTERM_OFFSET
    }

    /// Pages in the namespace.
    pub fn device_pages(&self) -> u64 {
        (self.pages + 0x200).next_multiple_of(0x200)
    }

    /// Monotonic time of the end of the trace.
    pub fn end_t(&self) -> u64 {
        T0 + 9_000 * MS
    }

    /// The header of a trace from a Debian 6.16 kernel.
    pub fn header(&self) -> Header {
        let mut h = Header::synthetic(RefcountModel::Refcounted);
        h.kernel_release = "6.16.12+deb13-cloud-amd64".into();
        h.refcount_model_source = "btf: vmf_insert_page_mkwrite present".into();
        h.hostname = "dax-test".into();
        h.clock = Clock {
            monotonic_ns: T0,
            realtime_ns: 1_780_000_000_000_000_000,
        };
        h.ringbuf_bytes = 16 << 20;
        h.command = vec![
            "refscope".into(),
            "record".into(),
            "-o".into(),
            "t.jsonl".into(),
        ];
        h.devices = vec![Device {
            name: "pfn1.0".into(),
            mode: "fsdax".into(),
            pfn_start: BASE_PFN,
            pfn_end: BASE_PFN + self.device_pages(),
            pgmap_type: PgmapType::FsDax,
        }];
        h.hooks = vec![
            attached(
                "map_pte",
                &[
                    ("vmf_insert_page_mkwrite", "fentry+fexit"),
                    ("vm_insert_page", "fentry+fexit"),
                ],
                &["insert_pfn: not in this kernel"],
            ),
            attached("map_pmd", &[("vmf_insert_folio_pmd", "fentry+fexit")], &[]),
            attached(
                "gup_get",
                &[
                    ("try_grab_folio", "fentry+fexit"),
                    ("try_grab_folio_fast", "fentry+fexit"),
                ],
                &[],
            ),
            attached("gup_put", &[("gup_put_folio", "fentry+fexit")], &[]),
            attached(
                "ref_put",
                &[],
                &["__put_devmap_managed_folio_refs: not in this kernel"],
            ),
            attached("free", &[("free_zone_device_folio", "fentry")], &[]),
            attached("unmap", &[("unmap_page_range", "fentry")], &[]),
            attached("mm_exit", &[("exit_mmap", "fentry")], &[]),
            attached(
                "pgmap",
                &[
                    ("memremap_pages", "fexit"),
                    ("memunmap_pages", "kprobe+kretprobe"),
                ],
                &["memunmap_pages: not in available_filter_functions (notrace)"],
            ),
            attached(
                "dax",
                &[
                    ("kill_dax", "fentry"),
                    ("dax_holder_notify_failure", "fentry"),
                ],
                &[],
            ),
        ];
        h
    }

    /// Generate the records after the header, in time order.
    pub fn generate(&self, sink: &mut dyn FnMut(Item<'_>)) {
        let mut g = Gen { seq: [0; 4], sink };
        let mut fio = proc(4242, "fio", 0xffff_8881_0a2b_3c00, 0);
        let rdma = proc(6100, "rdma_reg", 0xffff_8881_0d00_1800, 2);
        let stale = proc(7777, "stale_map", 0xffff_8881_0e11_4400, 3);
        let ndctl = proc(2718, "ndctl", 0xffff_8881_0f00_0000, 1);
        let fio_va = 0x7f3a_0000_0000u64;
        let n = self.pages.max(1);
        let bad = self.bad_pfn();

        // 0.1 s .. 3.1 s: fio faults its file in (skipping the bad page,
        // which stale_map maps later), pinning some pages for O_DIRECT.
        let step = (3_000 * MS / n).max(1);
        let pin_every = n.checked_div(self.pinned).map_or(u64::MAX, |k| k.max(1));
        let mut lost = false;
        let mut t = T0 + 100 * MS;
        for i in 0..n {
            let pfn = BASE_PFN + i;
            t += step;
            if pfn == bad {
                continue;
            }
            // fio's two I/O threads run on CPUs 0 and 1.
            fio.cpu = (i % 2) as u32;
            g.map(&fio, t, pfn, fio_va + i * 4096, 2);
            if i % pin_every == pin_every / 2 {
                g.gup(&fio, t + step / 4, pfn, true, false, 1);
                g.gup(&fio, t + step / 2, pfn, false, false, 1025);
            }
            // At 2 s the ring buffer overflows on CPU 1 for a moment.
            if !lost && t >= T0 + 2_000 * MS {
                lost = true;
                g.seq[1] += 3;
                (g.sink)(Item::Loss(&Loss {
                    cpu: 1,
                    count: 3,
                    first_t: t,
                    last_t: t + 40_000,
                }));
            }
        }
        // rdma_reg registers a memory region on a page of the same file:
        // a second mapping, then a long-term pin.
        let lt = self.longterm_pfn();
        let t = T0 + 3_300 * MS;
        g.map(&rdma, t, lt, 0x7f10_0000_1000, 3);
        g.gup(&rdma, t + MS, lt, true, true, 2);
        // stale_map maps the bad page and keeps it.
        g.map(&stale, T0 + 3_500 * MS, bad, 0x7f55_dead_0000, 2);
        // rdma_reg exits without deregistering: the pin leaks.
        g.exit(&rdma, T0 + 3_800 * MS);

        // 4 s .. 5 s: fio unmaps its file; each page's last reference goes.
        let step = (1_000 * MS / n).max(1);
        let mut t = T0 + 4_000 * MS;
        let chunk = 512;
        let mut i = 0;
        while i < n {
            let end = (i + chunk).min(n);
            t += step;
            g.unmap(&fio, t, fio_va + i * 4096, fio_va + end * 4096, false);
            for j in i..end {
                let pfn = BASE_PFN + j;
                // The bad page is stale_map's; the long-term pin keeps
                // the other one.
                if pfn != bad && pfn != lt {
                    g.free(&fio, t + 1, pfn);
                }
            }
            t += step * (end - i);
            i = end;
        }
        g.exit(&fio, T0 + 5_200 * MS);

        // 6 s: `ndctl destroy-namespace`: kill_dax, then memunmap_pages
        // while stale_map still maps the bad page.
        let t = T0 + 6_000 * MS;
        let mut e = g.ev(&ndctl, t, EventKind::DaxKill, HookId::KillDax);
        e.mm = Hex(0);
        g.emit(&e);
        let mut e = g.ev(
            &ndctl,
            t + MS,
            EventKind::PgmapRemove,
            HookId::MemunmapPages,
        );
        e.mm = Hex(0);
        e.pgmap = Hex(PGMAP);
        e.pfn = BASE_PFN;
        e.pfn_end = BASE_PFN + self.device_pages();
        e.arg_flags = Hex(FSDAX);
        e.flags = Flags(flags::KPROBE);
        g.emit(&e);
        let mut e = g.ev(
            &ndctl,
            t + 40 * MS,
            EventKind::PgmapRemoved,
            HookId::MemunmapPages,
        );
        e.mm = Hex(0);
        e.pgmap = Hex(PGMAP);
        e.pfn = BASE_PFN;
        e.pfn_end = BASE_PFN + self.device_pages();
        e.arg_flags = Hex(FSDAX);
        e.flags = Flags(flags::KPROBE);
        g.emit(&e);

        // 8 s: stale_map finally unmaps: the memmap is gone.
        g.unmap(
            &stale,
            T0 + 8_000 * MS,
            0x7f55_dead_0000,
            0x7f55_dead_1000,
            true,
        );
        g.exit(&stale, T0 + 8_001 * MS);
    }

    /// Write the whole trace (header, records, footer).
    pub fn write<W: Write>(&self, out: W) -> io::Result<W> {
        let mut w = TraceWriter::new(out, &self.header())?;
        let mut err = None;
        self.generate(&mut |item| {
            if err.is_some() {
                return;
            }
            let r = match item {
                Item::Event(e) => w.event(e),
                Item::Loss(l) => w.loss(l),
            };
            if let Err(e) = r {
                err = Some(e);
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        w.finish(self.end_t(), "signal")
    }
}
