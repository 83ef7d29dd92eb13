//! A synthetic refscope trace of any number of events, for the export tests
//! and benchmarks (docs/export.md): processes map pages of an FS-DAX and a
//! device-dax device (PTEs and PMDs, hot pages shared between processes),
//! pin and get them through GUP, release them, unmap, fork, mremap and exit
//! (some leaving pins behind), with rarer events (frees of mapped pages,
//! FOLL_LONGTERM pins on FS-DAX, removal of the device-dax device at the
//! end, a loss record) so every finding rule has instances.
//!
//! Deterministic for a given seed; memory is bounded by the live state.
//! (`synth_trace` is the live view's fixed demo scenario.)
//!
//! ```text
//! cargo run --release --example synth_events -- --events 10000000 --seed 1 -o big.jsonl
//! ```

use std::{
    collections::HashMap,
    fs::File,
    io::{BufWriter, Write},
    process::ExitCode,
};

use refscope_common::{EventKind, HookId, flags};
use refscope_core::{
    event::{Comm, Event, Flags, Hex},
    model::{GupFlagBits, PgmapType, RefcountModel, idle_bias},
    trace::{Clock, Device, Header, Loss, TraceWriter},
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

const FSDAX: (u64, u64) = (0x10_0000, 0x14_0000);
const DEVDAX: (u64, u64) = (0x20_0000, 0x20_8000);
const PROCS: usize = 48;
const MAX_MAPS: usize = 128;

struct Mapping {
    vaddr: u64,
    pfn: u64,
    order: u8,
}

struct Pin {
    pfn: u64,
    pin: bool,
}

struct Proc {
    pid: u32,
    mm: u64,
    comm: Comm,
    maps: Vec<Mapping>,
    pins: Vec<Pin>,
    next_slot: u64,
}

struct Gen {
    rng: Rng,
    model: RefcountModel,
    gup: GupFlagBits,
    t: u64,
    seq: [u64; 4],
    /// Raw `_refcount` of pages that differ from idle.
    refs: HashMap<u64, i32>,
    procs: Vec<Proc>,
    next_pid: u32,
    devdax_removed: bool,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: synth_events [--events N] [--seed S] [--model idle_one|refcounted] [-o FILE]"
    );
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let mut events: u64 = 100_000;
    let mut seed: u64 = 1;
    let mut model = RefcountModel::IdleOne;
    let mut out: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next();
        match (a.as_str(), v) {
            ("--events", Some(v)) => match v.replace('_', "").parse() {
                Ok(n) => events = n,
                Err(_) => return usage(),
            },
            ("--seed", Some(v)) => match v.parse() {
                Ok(n) => seed = n,
                Err(_) => return usage(),
            },
            ("--model", Some(v)) => {
                model = match v.as_str() {
                    "idle_one" => RefcountModel::IdleOne,
                    "refcounted" => RefcountModel::Refcounted,
                    _ => return usage(),
                }
            }
            ("-o", Some(v)) => out = Some(v),
            _ => return usage(),
        }
    }
    let result = match &out {
        Some(path) => File::create(path)
            .map_err(|e| format!("cannot create {path}: {e}"))
            .and_then(|f| run(BufWriter::with_capacity(1 << 20, f), events, seed, model)),
        None => run(
            BufWriter::with_capacity(1 << 20, std::io::stdout().lock()),
            events,
            seed,
            model,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("synth_events: {e}");
            ExitCode::FAILURE
        }
    }
}

fn header(model: RefcountModel) -> Header {
    let mut h = Header::synthetic(model);
    h.kernel_release = match model {
        RefcountModel::IdleOne => "6.1.0-synthetic".into(),
        RefcountModel::Refcounted => "6.16.0-synthetic".into(),
    };
    h.clock = Clock {
        monotonic_ns: 1_000_000_000_000,
        realtime_ns: 1_764_000_000_000_000_000,
    };
    h.devices = vec![
        Device {
            name: "pfn0.0".into(),
            mode: "fsdax".into(),
            pfn_start: FSDAX.0,
            pfn_end: FSDAX.1,
            pgmap_type: PgmapType::FsDax,
        },
        Device {
            name: "dax1.0".into(),
            mode: "devdax".into(),
            pfn_start: DEVDAX.0,
            pfn_end: DEVDAX.1,
            pgmap_type: PgmapType::Generic,
        },
    ];
    h.command = vec!["synth_events".into()];
    h
}

fn run<W: Write>(out: W, n: u64, seed: u64, model: RefcountModel) -> Result<(), String> {
    let h = header(model);
    let mut w = TraceWriter::new(out, &h).map_err(|e| e.to_string())?;
    let mut g = Gen {
        rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
        model,
        gup: h.gup_flags,
        t: h.clock.monotonic_ns + 1_000_000,
        seq: [0; 4],
        refs: HashMap::new(),
        procs: Vec::new(),
        next_pid: 1000,
        devdax_removed: false,
    };
    for _ in 0..PROCS {
        let p = g.spawn();
        g.procs.push(p);
    }
    let mut buf = Vec::new();
    let mut written = 0u64;
    let mut loss_written = false;
    while written < n {
        buf.clear();
        g.step(&mut buf, n - written, written);
        for ev in &buf {
            if written >= n {
                break;
            }
            w.event(ev).map_err(|e| e.to_string())?;
            written += 1;
        }
        if !loss_written && written >= n / 2 && n >= 1000 {
            loss_written = true;
            let t = g.t;
            w.loss(&Loss {
                cpu: 1,
                count: 3,
                first_t: t,
                last_t: t + 500,
            })
            .map_err(|e| e.to_string())?;
        }
    }
    w.finish(g.t + 1000, "signal").map_err(|e| e.to_string())?;
    Ok(())
}

impl Gen {
    fn spawn(&mut self) -> Proc {
        let pid = self.next_pid;
        self.next_pid += 1;
        let names = [
            "fio",
            "postgres",
            "dd",
            "qemu-system-x86",
            "rdma_bench",
            "java",
        ];
        Proc {
            pid,
            mm: 0xffff_8880_0000_0000 | (u64::from(pid) << 12),
            comm: Comm::from_bytes(names[pid as usize % names.len()].as_bytes()),
            maps: Vec::new(),
            pins: Vec::new(),
            next_slot: 0,
        }
    }

    fn ev(&mut self, kind: EventKind, hook: HookId, pi: usize) -> Event {
        self.t += 50 + self.rng.below(2000);
        let cpu = self.rng.below(4) as usize;
        self.seq[cpu] += 1;
        let p = &self.procs[pi];
        let mut e = Event::new(kind, hook);
        e.t = self.t;
        e.cpu = cpu as u32;
        e.seq = self.seq[cpu];
        e.pid = p.pid;
        e.tid = p.pid;
        e.comm = p.comm;
        e.mm = Hex(p.mm);
        e
    }

    fn bias(&self, pfn: u64) -> i32 {
        let ty = if (FSDAX.0..FSDAX.1).contains(&pfn) {
            PgmapType::FsDax
        } else {
            PgmapType::Generic
        };
        idle_bias(self.model, ty)
    }

    fn raw(&self, pfn: u64) -> i32 {
        self.refs
            .get(&pfn)
            .copied()
            .unwrap_or_else(|| self.bias(pfn))
    }

    fn set_raw(&mut self, pfn: u64, v: i32) {
        if v == self.bias(pfn) {
            self.refs.remove(&pfn);
        } else {
            self.refs.insert(pfn, v);
        }
    }

    /// References a mapping holds under this model.
    fn map_ref(&self) -> i32 {
        match self.model {
            RefcountModel::IdleOne => 0,
            RefcountModel::Refcounted => 1,
        }
    }

    fn step(&mut self, out: &mut Vec<Event>, left: u64, written: u64) {
        // Near the end: remove the device-dax device with mappings alive.
        if !self.devdax_removed && left < 40 && written > 1000 {
            self.devdax_removed = true;
            let mut e = self.ev(EventKind::PgmapRemove, HookId::MemunmapPages, 0);
            e.pfn = DEVDAX.0;
            e.pfn_end = DEVDAX.1;
            e.arg_flags = Hex(4);
            e.pgmap = Hex(0xd0d0);
            out.push(e);
            let mut e = self.ev(EventKind::PgmapRemoved, HookId::MemunmapPages, 0);
            e.pfn = DEVDAX.0;
            e.pfn_end = DEVDAX.1;
            e.pgmap = Hex(0xd0d0);
            out.push(e);
            return;
        }
        let pi = self.rng.below(self.procs.len() as u64) as usize;
        match self.rng.below(1000) {
            0..=399 => self.map(out, pi),
            400..=579 => self.unmap(out, pi),
            580..=719 => self.gup_get(out, pi),
            720..=869 => self.gup_put(out, pi),
            870..=879 => self.exit(out, pi),
            880..=884 => self.fork(out, pi),
            885..=889 => self.mremap(out, pi),
            890..=891 => self.free_mapped(out, pi),
            _ => self.remap_same(out, pi),
        }
    }

    fn map(&mut self, out: &mut Vec<Event>, pi: usize) {
        if self.procs[pi].maps.len() >= MAX_MAPS {
            return self.unmap(out, pi);
        }
        let pmd = self.rng.chance(50);
        let (lo, hi) = if self.rng.chance(800) { FSDAX } else { DEVDAX };
        let pages = hi - lo;
        let (pfn, order) = if pmd {
            (lo + self.rng.below(pages / 512) * 512, 9u8)
        } else {
            // Hot pages: most maps land on a small set, so pages are shared.
            let span = if self.rng.chance(700) { 4096 } else { pages };
            (lo + self.rng.below(span), 0u8)
        };
        let slot = self.procs[pi].next_slot;
        self.procs[pi].next_slot += 1;
        let vaddr = if order > 0 {
            0x7f00_0000_0000 + slot * 0x20_0000
        } else {
            0x7e00_0000_0000 + slot * 0x1000
        };
        let failed = self.rng.chance(5);
        let hook = if order > 0 {
            HookId::VmfInsertPfnPmd
        } else {
            HookId::InsertPfn
        };
        let mut e = self.ev(EventKind::Map, hook, pi);
        e.vaddr = Hex(vaddr);
        e.pfn = pfn;
        e.order = order;
        e.pgmap = Hex(if pfn >= DEVDAX.0 { 0xd0d0 } else { 0xf5da });
        let mut bits = flags::REF_AFTER;
        if self.rng.chance(500) {
            bits |= flags::WRITE;
        }
        if failed {
            bits |= flags::FAILED;
            e.ret = -12;
            e.ref_after = Some(self.raw(pfn));
        } else {
            let v = self.raw(pfn) + self.map_ref();
            self.set_raw(pfn, v);
            e.ref_after = Some(v);
            self.procs[pi].maps.push(Mapping { vaddr, pfn, order });
        }
        e.flags = Flags(bits);
        out.push(e);
    }

    fn unmap(&mut self, out: &mut Vec<Event>, pi: usize) {
        if self.procs[pi].maps.is_empty() {
            return self.map(out, pi);
        }
        let i = self.rng.below(self.procs[pi].maps.len() as u64) as usize;
        let m = self.procs[pi].maps.swap_remove(i);
        let mut e = self.ev(EventKind::Unmap, HookId::UnmapPageRange, pi);
        e.vaddr = Hex(m.vaddr);
        e.vaddr_end = Hex(m.vaddr + (4096 << m.order));
        out.push(e);
        let v = self.raw(m.pfn) - self.map_ref();
        self.set_raw(m.pfn, v);
    }

    fn gup_get(&mut self, out: &mut Vec<Event>, pi: usize) {
        let Some(m) = self.procs[pi].maps.last() else {
            return self.map(out, pi);
        };
        let pfn = m.pfn + self.rng.below(1 << m.order);
        let pin = self.rng.chance(600);
        let longterm = pin && self.rng.chance(20);
        let mut fl = if pin {
            self.gup.foll_pin
        } else {
            self.gup.foll_get
        };
        if longterm {
            fl |= self.gup.foll_longterm;
        }
        let failed = self.rng.chance(10);
        let mut e = self.ev(EventKind::GupGet, HookId::TryGrabFolio, pi);
        e.pfn = pfn;
        e.refs = 1;
        e.arg_flags = Hex(fl);
        let before = self.raw(pfn);
        e.ref_before = Some(before);
        let mut bits = flags::REF_BEFORE | flags::REF_AFTER | flags::HAS_STACK;
        if failed {
            bits |= flags::FAILED;
            e.ref_after = Some(before);
        } else {
            let delta = if pin { self.gup.pin_bias } else { 1 };
            self.set_raw(pfn, before + delta);
            e.ref_after = Some(before + delta);
            self.procs[pi].pins.push(Pin { pfn, pin });
        }
        e.flags = Flags(bits);
        e.stack = vec![
            "try_grab_folio+0x2a".into(),
            "follow_page_pte+0x1b0".into(),
            "__get_user_pages+0x190".into(),
            if pin {
                "pin_user_pages_fast+0x30".into()
            } else {
                "get_user_pages_fast+0x30".into()
            },
        ];
        out.push(e);
    }

    fn gup_put(&mut self, out: &mut Vec<Event>, pi: usize) {
        if self.procs[pi].pins.is_empty() {
            return self.gup_get(out, pi);
        }
        let p = self.procs[pi].pins.remove(0);
        let before = self.raw(p.pfn);
        let (kind, hook, fl, delta) = if p.pin {
            (
                EventKind::GupPut,
                HookId::GupPutFolio,
                self.gup.foll_pin,
                self.gup.pin_bias,
            )
        } else if self.model == RefcountModel::IdleOne {
            (EventKind::RefPut, HookId::PutDevmapManagedFolioRefs, 0, 1)
        } else {
            // 6.15+: folio_put is inline; the put is not seen.
            self.set_raw(p.pfn, before - 1);
            return;
        };
        let mut e = self.ev(kind, hook, pi);
        e.pfn = p.pfn;
        e.refs = 1;
        e.arg_flags = Hex(fl);
        e.ref_before = Some(before);
        e.ref_after = Some(before - delta);
        e.flags = Flags(flags::REF_BEFORE | flags::REF_AFTER);
        self.set_raw(p.pfn, before - delta);
        out.push(e);
    }

    fn exit(&mut self, out: &mut Vec<Event>, pi: usize) {
        // Release most pins first; a few stay (pin_leak).
        while self.procs[pi].pins.len() > usize::from(self.rng.chance(300)) {
            self.gup_put(out, pi);
        }
        let e = self.ev(EventKind::MmExit, HookId::ExitMmap, pi);
        out.push(e);
        let maps = std::mem::take(&mut self.procs[pi].maps);
        for m in maps {
            let v = self.raw(m.pfn) - self.map_ref();
            self.set_raw(m.pfn, v);
        }
        // Leaked pins keep their references.
        self.procs[pi] = self.spawn();
    }

    fn fork(&mut self, out: &mut Vec<Event>, pi: usize) {
        if self.procs[pi].maps.is_empty() {
            return self.map(out, pi);
        }
        // The child takes another process's slot (which exits first).
        let n = self.procs.len();
        let ci = (pi + 1 + self.rng.below(n as u64 - 1) as usize) % n;
        self.exit(out, ci);
        let src = self.procs[pi].mm;
        let m = &self.procs[pi].maps[0];
        let (lo, hi) = (m.vaddr, m.vaddr + (4096 << m.order));
        let (pfn, order) = (m.pfn, m.order);
        let mut e = self.ev(EventKind::CopyRange, HookId::CopyPageRange, ci);
        e.src_mm = Hex(src);
        e.vaddr = Hex(lo);
        e.vaddr_end = Hex(hi);
        out.push(e);
        self.procs[ci].maps.push(Mapping {
            vaddr: lo,
            pfn,
            order,
        });
        let v = self.raw(pfn) + self.map_ref();
        self.set_raw(pfn, v);
    }

    fn mremap(&mut self, out: &mut Vec<Event>, pi: usize) {
        if self.procs[pi].maps.is_empty() {
            return self.map(out, pi);
        }
        let slot = self.procs[pi].next_slot;
        self.procs[pi].next_slot += 1;
        let m = &mut self.procs[pi].maps[0];
        let len = 4096u64 << m.order;
        let old = m.vaddr;
        let new = if m.order > 0 {
            0x7f00_0000_0000 + slot * 0x20_0000
        } else {
            0x7e00_0000_0000 + slot * 0x1000
        };
        m.vaddr = new;
        let mut e = self.ev(EventKind::Remap, HookId::MovePageTables, pi);
        e.vaddr = Hex(old);
        e.vaddr_end = Hex(old + len);
        e.new_vaddr = Hex(new);
        out.push(e);
    }

    fn free_mapped(&mut self, out: &mut Vec<Event>, pi: usize) {
        let Some(m) = self.procs[pi].maps.first() else {
            return self.map(out, pi);
        };
        let pfn = m.pfn;
        let mut e = self.ev(EventKind::Free, HookId::FreeZoneDeviceFolio, pi);
        e.pfn = pfn;
        e.ref_after = Some(0);
        e.flags = Flags(flags::REF_AFTER);
        out.push(e);
        for p in &mut self.procs {
            p.pins.retain(|x| x.pfn != pfn);
        }
        self.set_raw(pfn, 0);
    }

    /// A write fault on a page that is already mapped: same key, same page.
    fn remap_same(&mut self, out: &mut Vec<Event>, pi: usize) {
        let Some(m) = self.procs[pi].maps.last() else {
            return self.map(out, pi);
        };
        let (vaddr, pfn, order) = (m.vaddr, m.pfn, m.order);
        let hook = if order > 0 {
            HookId::VmfInsertPfnPmd
        } else {
            HookId::VmfInsertMixedMkwrite
        };
        let mut e = self.ev(EventKind::Map, hook, pi);
        e.vaddr = Hex(vaddr);
        e.pfn = pfn;
        e.order = order;
        e.ref_after = Some(self.raw(pfn));
        e.flags = Flags(flags::REF_AFTER | flags::WRITE);
        out.push(e);
    }
}
