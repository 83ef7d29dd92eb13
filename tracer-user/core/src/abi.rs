//! Decoding ring-buffer records (the ABI in `refscope_common`, records in
//! `refscope_common::wire`) into [`Event`]s. Defensive: every record is
//! length-checked and read unaligned; a record from another ABI version is
//! rejected, not guessed.
//!
//! Decoding is stateful: threads and kernel stacks cross the ring buffer
//! once ([`wire::TaskRec`], [`wire::StackRec`]) and later records name them,
//! so a [`Decoder`] keeps those tables, and widens the 32-bit per-CPU
//! sequence numbers back to 64 bits.

use std::{collections::HashMap, mem::size_of};

use refscope_common::{
    ABI_VERSION, COMM_LEN, Event as RawEvent, EventKind, HookId, REF_UNKNOWN, STACK_DEPTH, flags,
    wire::{self, GupRec, Head, MapRec, RangeRec, Shape, StackRec, TaskRec, WideRec, kinds},
};
use rustc_hash::FxBuildHasher;
use thiserror::Error;

use crate::event::{Attach, Comm, Event, FLAG_NAMES, Flags, Hex};

/// The flag bits a trace can hold (those with a name).
const KNOWN_FLAGS: u32 = {
    let mut mask = 0;
    let mut i = 0;
    while i < FLAG_NAMES.len() {
        mask |= FLAG_NAMES[i].0;
        i += 1;
    }
    mask
};

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than its kind's record.
    #[error("record of {0} bytes is shorter than its kind's ({1} bytes)")]
    Short(usize, usize),
    /// Written by eBPF programs of another ABI version.
    #[error("record has ABI version {0}, this refscope decodes version {ABI_VERSION}")]
    Version(u8),
    /// Unknown event kind.
    #[error("record has unknown event kind {0}")]
    Kind(u8),
    /// Unknown hook id.
    #[error("record has unknown hook id {0}")]
    Hook(u8),
}

/// A decoded event record: the kernel's event (process and command filled
/// in from the thread's announcement) and the key of its stack (0: none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    pub event: RawEvent,
    pub stack: u32,
}

/// What the decoder knows of a thread from its last announcement.
#[derive(Clone, Copy, Debug)]
struct Task {
    tgid: u32,
    mm: u64,
    comm: [u8; COMM_LEN],
}

type FxHashMap<K, V> = HashMap<K, V, FxBuildHasher>;

/// Ring-buffer records to raw events, with the tables the records refer to.
#[derive(Debug, Default)]
pub struct Decoder {
    tasks: FxHashMap<u32, Task>,
    stacks: FxHashMap<u32, Vec<u64>>,
    /// Last full sequence number seen per CPU.
    seqs: Vec<u64>,
    /// Events of threads never announced (their announcement was lost).
    pub unannounced: u64,
}

/// `T` read from the start of `bytes`, if long enough.
fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short(bytes.len(), size_of::<T>()));
    }
    // SAFETY: length checked; every wire type is repr(C) plain data valid
    // for any bit pattern; read_unaligned copes with any alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The frames of the stack announced under `key`.
    pub fn frames(&self, key: u32) -> Option<&[u64]> {
        self.stacks.get(&key).map(Vec::as_slice)
    }

    /// Decode one ring-buffer record: `Ok(None)` for an announcement (a
    /// thread or a stack, now in the tables), `Ok(Some)` for an event.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Option<RawRecord>, DecodeError> {
        let head: Head = read(bytes)?;
        if u16::from(head.version) != ABI_VERSION {
            return Err(DecodeError::Version(head.version));
        }
        match head.kind {
            kinds::TASK => {
                let t: TaskRec = read(bytes)?;
                self.tasks.insert(
                    head.tid,
                    Task {
                        tgid: t.tgid,
                        mm: t.mm,
                        comm: t.comm,
                    },
                );
                return Ok(None);
            }
            kinds::STACK => {
                let s: StackRec = read(bytes)?;
                let n = (s.nr_frames as usize).min(STACK_DEPTH);
                self.stacks.insert(s.key, s.frames[..n].to_vec());
                return Ok(None);
            }
            _ => {}
        }
        let kind = EventKind::from_raw(head.kind).ok_or(DecodeError::Kind(head.kind))?;
        HookId::from_raw(head.hook).ok_or(DecodeError::Hook(head.hook))?;
        let mut ev = RawEvent::new(
            kind,
            HookId::from_raw(head.hook).unwrap_or(HookId::InsertPfn),
        );
        ev.flags = u32::from(head.flags);
        ev.order = head.order;
        ev.cpu = u32::from(head.cpu);
        ev.seq = self.widen(head.cpu, head.seq);
        ev.tid = head.tid;
        ev.ts_ns = head.ts_ns;
        let task = self.tasks.get(&head.tid).copied();
        let mut stack = 0;
        match wire::shape_of(kind) {
            Shape::Map => {
                let r: MapRec = read(bytes)?;
                ev.ret = i64::from(r.ret);
                ev.ref_after = r.ref_after;
                ev.mm = r.mm;
                ev.vaddr = r.vaddr;
                ev.pfn = r.pfn;
                ev.pgmap = r.pgmap;
            }
            Shape::Gup => {
                let r: GupRec = read(bytes)?;
                ev.ref_before = r.ref_before;
                ev.ref_after = r.ref_after;
                ev.refs = r.refs;
                ev.arg_flags = u64::from(r.gup_flags);
                ev.pfn = r.pfn;
                ev.pgmap = r.pgmap;
                ev.ret = i64::from(r.ret);
                ev.mm = task.map_or(0, |t| t.mm);
                stack = r.stack;
            }
            Shape::Range => {
                let r: RangeRec = read(bytes)?;
                ev.ret = r.ret;
                ev.mm = r.mm;
                ev.vaddr = r.vaddr;
                ev.vaddr_end = r.vaddr_end;
                ev.aux = r.aux;
            }
            Shape::Wide => {
                let r: WideRec = read(bytes)?;
                ev.tgid = r.tgid;
                ev.ref_before = r.ref_before;
                ev.ref_after = r.ref_after;
                ev.refs = r.refs;
                ev.comm = r.comm;
                ev.mm = r.mm;
                ev.vaddr = r.vaddr;
                ev.vaddr_end = r.vaddr_end;
                ev.pfn = r.pfn;
                ev.pfn_end = r.pfn_end;
                ev.page = r.page;
                ev.pgmap = r.pgmap;
                ev.arg_flags = r.arg_flags;
                ev.ret = r.ret;
                ev.aux = r.aux;
                return Ok(Some(RawRecord { event: ev, stack }));
            }
        }
        match task {
            Some(t) => {
                ev.tgid = t.tgid;
                ev.comm = t.comm;
            }
            None => {
                // The announcement was lost with a full ring buffer: the
                // thread's id stands in for its process's.
                self.unannounced += 1;
                ev.tgid = head.tid;
            }
        }
        Ok(Some(RawRecord { event: ev, stack }))
    }

    /// The full per-CPU sequence number of a record's low 32 bits: the
    /// value nearest the last one seen on that CPU.
    fn widen(&mut self, cpu: u16, low: u32) -> u64 {
        let cpu = cpu as usize;
        if self.seqs.len() <= cpu {
            self.seqs.resize(cpu + 1, 0);
        }
        let last = self.seqs[cpu];
        let mut full = (last & !0xffff_ffff) | u64::from(low);
        if full + (1 << 31) < last {
            full += 1 << 32;
        } else if full > last + (1 << 31) && full >= 1 << 32 {
            full -= 1 << 32;
        }
        self.seqs[cpu] = self.seqs[cpu].max(full);
        full
    }
}

/// Encode `ev` as the eBPF programs would (tests, benchmarks, fuzz seeds):
/// the records announcing its thread and, if `frames` is not empty, its
/// stack, then its own record.
pub fn encode(ev: &RawEvent, frames: &[u64]) -> Vec<Vec<u8>> {
    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: T is one of the wire's plain-data structs.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }
    let mut out = Vec::new();
    let mut head = Head::of(ev);
    head.kind = kinds::TASK;
    head.hook = 0;
    let kind = EventKind::from_raw(ev.kind).unwrap_or(EventKind::Map);
    out.push(bytes_of(&TaskRec {
        head,
        tgid: ev.tgid,
        _pad: 0,
        mm: ev.mm,
        comm: ev.comm,
    }));
    let mut stack = 0;
    if !frames.is_empty() {
        let mut f = [0u64; STACK_DEPTH];
        let n = frames.len().min(STACK_DEPTH);
        f[..n].copy_from_slice(&frames[..n]);
        stack = wire::stack_key(&f, n);
        let mut head = Head::of(ev);
        head.kind = kinds::STACK;
        out.push(bytes_of(&StackRec {
            head,
            key: stack,
            nr_frames: n as u32,
            frames: f,
        }));
    }
    out.push(match wire::shape_of(kind) {
        Shape::Map => bytes_of(&MapRec::of(ev)),
        Shape::Gup => bytes_of(&GupRec::of(ev, stack)),
        Shape::Range => bytes_of(&RangeRec::of(ev)),
        Shape::Wide => bytes_of(&WideRec::of(ev)),
    });
    out
}

/// Turn a decoded event into a trace event. `id` maps kernel addresses
/// (mm, struct page, pgmap) to the ids written in traces (hashed unless
/// raw addresses were asked for); `stack` is its kernel stack, symbolised.
pub fn to_event(r: &RawEvent, mut id: impl FnMut(u64) -> u64, stack: Vec<String>) -> Event {
    // Both were validated by `decode`.
    let kind = EventKind::from_raw(r.kind).unwrap_or(EventKind::Map);
    let hook = HookId::from_raw(r.hook).unwrap_or(HookId::InsertPfn);
    let known = |v: i32| (v != REF_UNKNOWN).then_some(v);
    Event {
        t: r.ts_ns,
        cpu: r.cpu,
        seq: r.seq,
        kind,
        hook,
        attach: if hook == HookId::Snapshot {
            Attach::Snapshot
        } else if hook == HookId::Audit {
            Attach::Audit
        } else if r.flags & flags::KPROBE != 0 {
            Attach::Kprobe
        } else {
            Attach::Fentry
        },
        pid: r.tgid,
        tid: r.tid,
        comm: Comm::from_bytes(&r.comm),
        mm: Hex(if r.mm == 0 { 0 } else { id(r.mm) }),
        vaddr: Hex(r.vaddr),
        vaddr_end: Hex(r.vaddr_end),
        pfn: r.pfn,
        pfn_end: r.pfn_end,
        order: r.order,
        page: Hex(if r.page == 0 { 0 } else { id(r.page) }),
        pgmap: Hex(if r.pgmap == 0 { 0 } else { id(r.pgmap) }),
        ref_before: known(r.ref_before),
        ref_after: known(r.ref_after),
        refs: r.refs,
        arg_flags: Hex(r.arg_flags),
        // HAS_STACK is a transport detail; the stack itself is in `stack`.
        // Bits without a name cannot be written to a trace: dropped, so the
        // live analysis sees what a report of the trace sees.
        flags: Flags(r.flags & KNOWN_FLAGS & !flags::HAS_STACK),
        ret: r.ret,
        stack,
        src_mm: Hex(match kind {
            EventKind::CopyRange if r.aux != 0 => id(r.aux),
            _ => 0,
        }),
        new_vaddr: Hex(if kind == EventKind::Remap { r.aux } else { 0 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: EventKind, hook: HookId, i: usize) -> RawEvent {
        let mut k = RawEvent::new(kind, hook);
        k.flags = flags::REF_BEFORE | flags::REF_AFTER | flags::WRITE;
        k.ts_ns = 1_000 + i as u64;
        k.seq = 7 + i as u64;
        k.cpu = 1;
        k.tgid = 4242;
        k.tid = 4243;
        k.ref_before = 1;
        k.ref_after = 1025;
        k.refs = 3;
        k.comm = *b"workload\0\0\0\0\0\0\0\0";
        k.mm = 0xffff_8880_1234_5600;
        k.vaddr = 0x7f00_0000_1000;
        k.vaddr_end = 0x7f00_0000_2000;
        k.pfn = 0x48c00 + i as u64;
        k.pfn_end = 0x50000;
        k.page = 0xffff_ea00_0123_0000;
        k.pgmap = 0xffff_8880_dead_0000;
        k.arg_flags = 0x80000;
        k.ret = -95;
        k.order = 9;
        k.aux = 0x7f00_0010_0000;
        k
    }

    fn decode_all(d: &mut Decoder, recs: &[Vec<u8>]) -> Vec<RawRecord> {
        recs.iter().filter_map(|b| d.decode(b).unwrap()).collect()
    }

    /// Encode every kind as the kernel side would, decode it as userspace
    /// does, and compare what the kind's record carries: a layout change
    /// breaks this.
    #[test]
    fn every_kind_round_trips_through_the_abi() {
        let mut d = Decoder::new();
        for (i, &kind) in EventKind::ALL.iter().enumerate() {
            let hook = HookId::ALL[i % HookId::ALL.len()];
            let k = sample(kind, hook, i);
            let got = decode_all(&mut d, &encode(&k, &[]));
            assert_eq!(got.len(), 1, "{kind:?}: one event after its announcement");
            let r = &got[0];
            assert_eq!(r.stack, 0);
            let e = &r.event;
            assert_eq!((e.kind, e.hook), (kind as u8, hook as u8));
            assert_eq!((e.ts_ns, e.seq, e.cpu), (k.ts_ns, k.seq, 1));
            assert_eq!((e.tgid, e.tid, e.comm), (4242, 4243, k.comm), "{kind:?}");
            assert_eq!((e.flags, e.order), (k.flags, 9));
            let shape = wire::shape_of(kind);
            let (mm, pfn, pgmap) = match shape {
                Shape::Range => (k.mm, 0, 0),
                _ => (k.mm, k.pfn, k.pgmap),
            };
            assert_eq!((e.mm, e.pfn, e.pgmap), (mm, pfn, pgmap), "{kind:?}");
            match shape {
                Shape::Map => {
                    assert_eq!((e.vaddr, e.ref_after, e.ret), (k.vaddr, 1025, -95));
                    assert_eq!(e.ref_before, REF_UNKNOWN, "a map reads no count before");
                }
                Shape::Gup => {
                    assert_eq!((e.ref_before, e.ref_after, e.refs), (1, 1025, 3));
                    assert_eq!((e.arg_flags, e.ret), (0x80000, -95));
                }
                Shape::Range => {
                    assert_eq!(
                        (e.vaddr, e.vaddr_end, e.aux, e.ret),
                        (k.vaddr, k.vaddr_end, k.aux, -95)
                    );
                }
                Shape::Wide => {
                    let mut want = k;
                    want.version = e.version;
                    assert_eq!(*e, want, "a wide record carries everything");
                }
            }
            let ev = to_event(e, |a| a ^ 0x5555, Vec::new());
            assert_eq!(ev.kind, kind);
            assert_eq!(ev.comm.as_str(), "workload");
            assert_eq!(
                ev.mm,
                Hex(k.mm ^ 0x5555),
                "addresses go through the id mapper"
            );
            match kind {
                EventKind::CopyRange => assert_eq!(ev.src_mm, Hex(k.aux ^ 0x5555)),
                EventKind::Remap => assert_eq!(ev.new_vaddr, Hex(k.aux)),
                _ => assert_eq!((ev.src_mm, ev.new_vaddr), (Hex(0), Hex(0))),
            }
        }
    }

    /// Map, unmap and GUP records stay within 64 bytes; the record sizes
    /// are what crosses the ring buffer.
    #[test]
    fn hot_records_are_at_most_64_bytes() {
        for kind in [
            EventKind::Map,
            EventKind::Unmap,
            EventKind::GupGet,
            EventKind::GupPut,
        ] {
            let recs = encode(&sample(kind, HookId::InsertPfn, 0), &[]);
            assert!(recs.last().unwrap().len() <= 64, "{kind:?}");
        }
    }

    #[test]
    fn threads_are_announced_once_and_follow_exec() {
        let mut d = Decoder::new();
        let mut k = sample(EventKind::GupGet, HookId::TryGrabFolio, 0);
        let recs = encode(&k, &[]);
        assert_eq!(d.decode(&recs[0]), Ok(None), "the announcement");
        // The event alone (as the kernel sends it once announced).
        let r = d.decode(&recs[1]).unwrap().unwrap();
        assert_eq!((r.event.tgid, r.event.mm), (4242, k.mm));
        // exec: a new address space and command, announced again.
        k.mm = 0xffff_8880_0000_1000;
        k.comm = *b"newprog\0\0\0\0\0\0\0\0\0";
        let r = decode_all(&mut d, &encode(&k, &[]));
        assert_eq!((r[0].event.mm, r[0].event.comm), (k.mm, k.comm));
        // A thread whose announcement was lost: counted, its id stands in.
        let mut other = sample(EventKind::Map, HookId::InsertPfn, 0);
        other.tid = 99;
        let recs = encode(&other, &[]);
        let r = d.decode(recs.last().unwrap()).unwrap().unwrap();
        assert_eq!((r.event.tgid, r.event.comm), (99, [0; COMM_LEN]));
        assert_eq!(d.unannounced, 1);
    }

    #[test]
    fn stacks_cross_once_and_are_found_by_key() {
        let mut d = Decoder::new();
        let mut k = sample(EventKind::GupGet, HookId::TryGrabFolio, 0);
        k.flags |= flags::HAS_STACK;
        let recs = encode(&k, &[0x10, 0x20, 0x30]);
        assert_eq!(recs.len(), 3, "task, stack, event");
        let got = decode_all(&mut d, &recs);
        let key = got[0].stack;
        assert_ne!(key, 0);
        assert_eq!(d.frames(key), Some(&[0x10, 0x20, 0x30][..]));
        let e = to_event(&got[0].event, |a| a, vec!["try_grab_folio+0x1".into()]);
        assert_eq!(e.stack, vec!["try_grab_folio+0x1"]);
        assert!(!e.flags.has(flags::HAS_STACK));
        let mut f = [0u64; STACK_DEPTH];
        f[..3].copy_from_slice(&[0x10, 0x20, 0x30]);
        let mut g = f;
        g[1] = 0x21;
        assert_ne!(wire::stack_key(&f, 3), wire::stack_key(&g, 3));
        assert_ne!(wire::stack_key(&f, 3), wire::stack_key(&f, 2));
    }

    #[test]
    fn sequence_numbers_are_widened_per_cpu() {
        let mut d = Decoder::new();
        assert_eq!(d.widen(0, 5), 5);
        assert_eq!(d.widen(0, u32::MAX), u64::from(u32::MAX));
        assert_eq!(d.widen(0, 2), (1 << 32) + 2, "wrapped");
        assert_eq!(
            d.widen(0, u32::MAX - 1),
            u64::from(u32::MAX) - 1,
            "late, from before the wrap"
        );
        assert_eq!(d.widen(1, 7), 7, "another CPU counts alone");
    }

    #[test]
    fn bad_records_are_rejected() {
        let mut d = Decoder::new();
        assert_eq!(d.decode(&[0; 10]), Err(DecodeError::Short(10, 24)));
        let ev = RawEvent::new(EventKind::Map, HookId::InsertPfn);
        let mut rec = encode(&ev, &[]).pop().unwrap();
        assert_eq!(d.decode(&rec[..40]), Err(DecodeError::Short(40, 64)));
        rec[0] = 3;
        assert_eq!(d.decode(&rec), Err(DecodeError::Version(3)));
        rec[0] = ABI_VERSION as u8;
        rec[1] = 200;
        assert_eq!(d.decode(&rec), Err(DecodeError::Kind(200)));
        rec[1] = EventKind::Map as u8;
        rec[2] = 0;
        assert_eq!(d.decode(&rec), Err(DecodeError::Hook(0)));
        rec[2] = HookId::InsertPfn as u8;
        let raw = d.decode(&rec).unwrap().unwrap();
        let e = to_event(&raw.event, |a| a, Vec::new());
        assert_eq!(
            (e.ref_before, e.ref_after),
            (None, None),
            "REF_UNKNOWN decodes to None"
        );
    }
}
