//! Host-side throughput of what `refscope record` does with each
//! ring-buffer record, on one core (issue 9; `cargo xtask bench` runs this
//! and puts the numbers in docs/benchmarks.md):
//!
//! - `decode`: `abi::decode` + `abi::to_event`, kernel addresses hashed with
//!   a keyed SipHash as `AddrMapper` does, GUP stack frames symbolised by a
//!   binary search over a sorted symbol table (as `Kallsyms::symbolize`);
//! - `analyze`: `Analyzer::apply` over already decoded events;
//! - `decode+analyze`: both, the figure the issue's goal is about;
//! - `record`: decode + analyze + the JSONL line of every event and of
//!   every new finding (to `io::sink`), i.e. the whole userspace pipeline
//!   of `refscope record` short of the `write(2)`.
//!
//! The input is a synthetic record stream shaped like the guest benchmark's
//! workloads (see `Stream`): processes map windows of device pages, pin an
//! eighth of them with FOLL_PIN and release the pins, unmap, and now and
//! then exit, under both refcount models. Every iteration (200,000 records)
//! starts with an empty analyzer (`BatchSize::PerIteration`; it also keeps
//! criterion's `--profile-time`, used for profiling, working), so
//! page-table growth and findings are part of the cost.
//!
//! ```text
//! cargo bench -p refscope-core --bench analysis
//! ```

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasher, RandomState},
    hint::black_box,
    io,
};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use refscope_common::{Event as RawEvent, EventKind, HookId, flags};
use refscope_core::{
    abi,
    analysis::{Analyzer, Settings},
    event::Event,
    model::{GupFlagBits, PgmapType, RefcountModel},
    trace::{Device, Header, TraceWriter},
};

/// Records per benchmark iteration.
const RECORDS: usize = 200_000;
const PFN_BASE: u64 = 0x10_0000;
/// Device pages (1 GiB of 4 KiB pages).
const DEVICE_PAGES: u64 = 1 << 18;
/// Pages a process maps per round (the guest's fault-bench maps 4096).
const WINDOW: u64 = 512;
const PROCS: u64 = 8;
/// Rounds of a process before it exits and a new one takes its place.
const ROUNDS_PER_PROC: u64 = 4;
const PGMAP: u64 = 0xffff_8880_0f00_0000;
const KERNEL_TEXT: u64 = 0xffff_ffff_8100_0000;
/// Symbols in the fake kernel symbol table (a Debian kernel has ~150k, of
/// which ~60k are text).
const SYMBOLS: u64 = 60_000;

struct Stream {
    model: RefcountModel,
    gup: GupFlagBits,
    t: u64,
    seq: u64,
    records: Vec<Vec<u8>>,
    /// Threads and stacks already announced (the kernel's `TASKS` and
    /// `STACKS` maps): what crosses once.
    announced: HashSet<u32>,
    stacks: HashSet<u64>,
}

/// Distinct GUP call paths in the stream (a host has a handful: the
/// syscalls and drivers that pin).
const CALL_PATHS: u64 = 4;

impl Stream {
    fn raw(&mut self, kind: EventKind, hook: HookId, pid: u32) -> RawEvent {
        self.t += 700;
        self.seq += 1;
        let mut e = RawEvent::new(kind, hook);
        e.ts_ns = self.t;
        e.seq = self.seq;
        e.tgid = pid;
        e.tid = pid;
        e.comm[..14].copy_from_slice(b"refscope-workl");
        e
    }

    fn push(&mut self, e: &RawEvent) {
        self.push_records(e, &[], 0);
    }

    /// `e`'s record as the kernel sends it: after the announcement of its
    /// thread and of its stack, when those are new.
    fn push_records(&mut self, e: &RawEvent, frames: &[u64], path: u64) {
        let mut recs = abi::encode(e, frames).into_iter();
        let task = recs.next().expect("an announcement");
        if self.announced.insert(e.tid) {
            self.records.push(task);
        }
        if !frames.is_empty() {
            let stack = recs.next().expect("a stack record");
            if self.stacks.insert(path) {
                self.records.push(stack);
            }
        }
        self.records.extend(recs);
    }

    fn push_with_stack(&mut self, mut e: RawEvent, seed: u64) {
        e.flags |= flags::HAS_STACK;
        // A GUP stack is ~10 frames deep (process_vm_readv ->
        // pin_user_pages_remote -> __get_user_pages -> follow_page_pte ...).
        let path = seed % CALL_PATHS;
        let frames: Vec<u64> = (0..10)
            .map(|i| KERNEL_TEXT + ((path + i * 7919) % SYMBOLS) * 256 + 0x2a)
            .collect();
        self.push_records(&e, &frames, path);
    }

    fn generate(model: RefcountModel, n: usize) -> Vec<Vec<u8>> {
        let mut s = Stream {
            model,
            gup: GupFlagBits::default(),
            t: 1_000_000_000,
            seq: 0,
            records: Vec::with_capacity(n + 4096),
            announced: HashSet::new(),
            stacks: HashSet::new(),
        };
        // `_refcount` of a mapped page, and at the map hook's return (6.15+
        // FS-DAX holds a transient reference around the install; see
        // `model::transient_install_refs`): idle 1 and no reference for the
        // mapping before 6.15, idle 0 plus one per mapping after.
        let (mapped, at_install) = match model {
            RefcountModel::IdleOne => (1, 1),
            RefcountModel::Refcounted => (1, 2),
        };
        let mut round = 0u64;
        while s.records.len() < n {
            let slot = round % PROCS;
            let generation = round / (PROCS * ROUNDS_PER_PROC);
            let pid = (1000 + slot + generation * PROCS) as u32;
            let mm = 0xffff_8880_1000_0000 + u64::from(pid) * 0x1000;
            let va = 0x7f00_0000_0000 + slot * (WINDOW << 12);
            let first = PFN_BASE + (round * WINDOW * 3) % (DEVICE_PAGES - WINDOW);
            // Map every page of the window (one PTE fault each).
            for i in 0..WINDOW {
                let pfn = first + i;
                let mut e = match model {
                    RefcountModel::IdleOne => s.raw(EventKind::Map, HookId::InsertPfn, pid),
                    RefcountModel::Refcounted => s.raw(EventKind::Map, HookId::InsertPage, pid),
                };
                e.mm = mm;
                e.vaddr = va + (i << 12);
                e.pfn = pfn;
                e.pgmap = PGMAP;
                e.page = 0xffff_ea00_0000_0000 + pfn * 64;
                e.ref_after = at_install;
                e.flags = flags::REF_AFTER | flags::WRITE;
                s.push(&e);
            }
            // Pin an eighth of them and release the pins (process_vm_readv).
            for i in (0..WINDOW).step_by(8) {
                let pfn = first + i;
                let mut g = s.raw(EventKind::GupGet, HookId::TryGrabFolio, pid);
                g.mm = mm;
                g.pfn = pfn;
                g.page = 0xffff_ea00_0000_0000 + pfn * 64;
                g.refs = 1;
                g.arg_flags = s.gup.foll_pin;
                g.ref_before = mapped;
                g.ref_after = mapped + s.gup.pin_bias;
                g.flags = flags::REF_BEFORE | flags::REF_AFTER;
                s.push_with_stack(g, pfn);
                let mut p = s.raw(EventKind::GupPut, HookId::GupPutFolio, pid);
                p.mm = mm;
                p.pfn = pfn;
                p.page = g.page;
                p.refs = 1;
                p.arg_flags = s.gup.foll_pin;
                p.ref_before = mapped + s.gup.pin_bias;
                p.ref_after = mapped;
                p.flags = flags::REF_BEFORE | flags::REF_AFTER;
                s.push(&p);
            }
            // Unmap the window; on the refcounted model every page then goes
            // back to its driver.
            let mut u = s.raw(EventKind::Unmap, HookId::UnmapPageRange, pid);
            u.mm = mm;
            u.vaddr = va;
            u.vaddr_end = va + (WINDOW << 12);
            s.push(&u);
            if s.model == RefcountModel::Refcounted {
                for i in 0..WINDOW {
                    let mut f = s.raw(EventKind::Free, HookId::FreeZoneDeviceFolio, pid);
                    f.pfn = first + i;
                    f.page = 0xffff_ea00_0000_0000 + f.pfn * 64;
                    f.ref_before = 0;
                    f.flags = flags::REF_BEFORE;
                    s.push(&f);
                }
            }
            if (round + 1) % (PROCS * ROUNDS_PER_PROC) >= PROCS * (ROUNDS_PER_PROC - 1) {
                let mut x = s.raw(EventKind::MmExit, HookId::ExitMmap, pid);
                x.mm = mm;
                s.push(&x);
            }
            round += 1;
        }
        s.records.truncate(n);
        s.records
    }
}

fn analyzer(model: RefcountModel) -> Analyzer {
    let mut a = Analyzer::new(Settings::new(model));
    a.add_device(&Device {
        name: "pfn0.0".into(),
        mode: "fsdax".into(),
        pfn_start: PFN_BASE,
        pfn_end: PFN_BASE + DEVICE_PAGES,
        pgmap_type: PgmapType::FsDax,
    });
    a
}

/// Userspace's decoder, as `session::Pipeline::on_record` drives it.
struct Decoder {
    key: RandomState,
    symbols: Vec<(u64, u32)>,
    names: Vec<String>,
}

impl Decoder {
    fn new() -> Self {
        Decoder {
            key: RandomState::new(),
            symbols: (0..SYMBOLS)
                .map(|i| (KERNEL_TEXT + i * 256, i as u32))
                .collect(),
            names: (0..SYMBOLS)
                .map(|i| format!("kernel_function_{i}"))
                .collect(),
        }
    }

    fn id(&self, addr: u64) -> u64 {
        self.key.hash_one(addr) | 1
    }

    fn symbolize(&self, addr: u64) -> Option<String> {
        let i = self.symbols.partition_point(|&(a, _)| a <= addr);
        let &(start, idx) = self.symbols.get(i.checked_sub(1)?)?;
        let name = self.names.get(idx as usize)?;
        Some(format!("{name}+{:#x}", addr - start))
    }

    fn decode(&self, s: &mut Session, bytes: &[u8]) -> Option<Event> {
        let raw = s.abi.decode(bytes).ok()??;
        let stack = if raw.stack == 0 {
            Vec::new()
        } else {
            let abi = &s.abi;
            s.stacks
                .entry(raw.stack)
                .or_insert_with(|| {
                    abi.frames(raw.stack)
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|&a| self.symbolize(a))
                        .collect()
                })
                .clone()
        };
        Some(abi::to_event(&raw.event, |a| self.id(a), stack))
    }
}

/// The decoder's tables (threads, stacks) and the symbolised stacks: one
/// per recording, so one per iteration.
#[derive(Default)]
struct Session {
    abi: abi::Decoder,
    stacks: HashMap<u32, Vec<String>>,
}

fn benches(c: &mut Criterion) {
    let dec = Decoder::new();
    for (model, name) in [
        (RefcountModel::IdleOne, "idle_one"),
        (RefcountModel::Refcounted, "refcounted"),
    ] {
        let records = Stream::generate(model, RECORDS);
        let mut session = Session::default();
        let events: Vec<Event> = records
            .iter()
            .filter_map(|r| dec.decode(&mut session, r))
            .collect();
        let announcements = records.iter().filter(|r| r[1] >= 0xf0).count();
        assert_eq!(
            events.len() + announcements,
            records.len(),
            "every record decodes"
        );
        let header = Header::synthetic(model);

        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(records.len() as u64));
        g.sample_size(10);
        g.bench_function("decode", |b| {
            b.iter(|| {
                let mut s = Session::default();
                for r in &records {
                    black_box(dec.decode(&mut s, r));
                }
            });
        });
        g.bench_function("analyze", |b| {
            b.iter_batched(
                || analyzer(model),
                |mut a| {
                    for e in &events {
                        a.apply(e);
                    }
                    a
                },
                BatchSize::PerIteration,
            );
        });
        g.bench_function("decode+analyze", |b| {
            b.iter_batched(
                || (analyzer(model), Session::default()),
                |(mut a, mut s)| {
                    for r in &records {
                        if let Some(e) = dec.decode(&mut s, r) {
                            a.apply(&e);
                        }
                    }
                    a
                },
                BatchSize::PerIteration,
            );
        });
        g.bench_function("record", |b| {
            b.iter_batched(
                || {
                    (
                        analyzer(model),
                        TraceWriter::new(io::sink(), &header).expect("sink"),
                        Session::default(),
                    )
                },
                |(mut a, mut w, mut s)| {
                    for r in &records {
                        if let Some(e) = dec.decode(&mut s, r) {
                            a.apply(&e);
                            w.event(&e).expect("sink");
                            for f in a.take_new_findings() {
                                w.finding(f).expect("sink");
                            }
                        }
                    }
                    (a, w)
                },
                BatchSize::PerIteration,
            );
        });
        g.finish();
    }
}

criterion_group!(analysis, benches);
criterion_main!(analysis);
