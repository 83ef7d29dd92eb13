//! Decoding ring-buffer records (the ABI in `refscope_common`) into
//! [`Event`]s. Defensive: every record is length-checked and read
//! unaligned; a record from another ABI version is rejected, not guessed.

use std::mem::size_of;

use refscope_common::{
    ABI_VERSION, Event as RawEvent, EventKind, EventWithStack, HookId, REF_UNKNOWN, STACK_DEPTH,
    flags,
};
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
    /// Shorter than the fixed event header.
    #[error("record of {0} bytes is shorter than an event ({min} bytes)", min = size_of::<RawEvent>())]
    Short(usize),
    /// Written by eBPF programs of another ABI version.
    #[error("record has ABI version {0}, this refscope decodes version {ABI_VERSION}")]
    Version(u16),
    /// Unknown event kind.
    #[error("record has unknown event kind {0}")]
    Kind(u8),
    /// Unknown hook id.
    #[error("record has unknown hook id {0}")]
    Hook(u8),
    /// The stack flag is set but the record has no room for the stack.
    #[error("record of {0} bytes claims a stack but is shorter than {min} bytes", min = size_of::<EventWithStack>())]
    ShortStack(usize),
}

/// A decoded record: the kernel's event and its stack (if any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    pub event: RawEvent,
    pub frames: Vec<u64>,
}

/// Decode one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<RawRecord, DecodeError> {
    if bytes.len() < size_of::<RawEvent>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: length checked; RawEvent is repr(C) plain data valid for any
    // bit pattern; read_unaligned copes with any alignment.
    let event: RawEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    if event.version != ABI_VERSION {
        return Err(DecodeError::Version(event.version));
    }
    EventKind::from_raw(event.kind).ok_or(DecodeError::Kind(event.kind))?;
    HookId::from_raw(event.hook).ok_or(DecodeError::Hook(event.hook))?;
    let mut frames = Vec::new();
    if event.flags & flags::HAS_STACK != 0 {
        if bytes.len() < size_of::<EventWithStack>() {
            return Err(DecodeError::ShortStack(bytes.len()));
        }
        // SAFETY: as above, for the larger record.
        let rec: EventWithStack = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let n = (rec.nr_frames as usize).min(STACK_DEPTH);
        frames.extend(rec.frames[..n].iter().copied().filter(|&f| f != 0));
    }
    Ok(RawRecord { event, frames })
}

/// Turn a decoded record into a trace event. `id` maps kernel addresses
/// (mm, struct page, pgmap) to the ids written in traces (hashed unless
/// raw addresses were asked for); `symbolize` names stack frames (`None`
/// drops the frame: BPF programs and trampolines are not worth showing,
/// and a kernel address is never written raw).
pub fn to_event(
    raw: &RawRecord,
    mut id: impl FnMut(u64) -> u64,
    symbolize: impl Fn(u64) -> Option<String>,
) -> Event {
    let r = &raw.event;
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
        stack: raw.frames.iter().filter_map(|&a| symbolize(a)).collect(),
        src_mm: Hex(match kind {
            EventKind::CopyRange if r.aux != 0 => id(r.aux),
            _ => 0,
        }),
        new_vaddr: Hex(if kind == EventKind::Remap { r.aux } else { 0 }),
    }
}

#[cfg(test)]
mod tests {
    use refscope_common::{EventWithStack, STACK_DEPTH};

    use super::*;

    /// The bytes the ring buffer would hand us for `v`.
    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: T is one of the ABI's plain-data structs.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    /// Encode every kind as the kernel side would, decode it as userspace
    /// does, and compare field by field: a layout change breaks this.
    #[test]
    fn every_kind_round_trips_through_the_abi() {
        for (i, &kind) in EventKind::ALL.iter().enumerate() {
            let hook = HookId::ALL[i % HookId::ALL.len()];
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
            let raw = decode(&bytes_of(&k)).unwrap();
            assert_eq!(raw.event, k);
            let ev = to_event(&raw, |a| a ^ 0x5555, |_| None);
            assert_eq!(ev.kind, kind);
            assert_eq!(ev.hook, hook);
            assert_eq!((ev.t, ev.seq, ev.cpu), (k.ts_ns, k.seq, 1));
            assert_eq!((ev.pid, ev.tid), (4242, 4243));
            assert_eq!(ev.comm.as_str(), "workload");
            assert_eq!(
                ev.mm,
                Hex(k.mm ^ 0x5555),
                "addresses go through the id mapper"
            );
            assert_eq!(ev.page, Hex(k.page ^ 0x5555));
            assert_eq!(ev.pgmap, Hex(k.pgmap ^ 0x5555));
            assert_eq!((ev.vaddr, ev.vaddr_end), (Hex(k.vaddr), Hex(k.vaddr_end)));
            assert_eq!((ev.pfn, ev.pfn_end, ev.order), (k.pfn, 0x50000, 9));
            assert_eq!(
                (ev.ref_before, ev.ref_after, ev.refs),
                (Some(1), Some(1025), 3)
            );
            assert_eq!((ev.arg_flags, ev.ret), (Hex(0x80000), -95));
            assert!(ev.flags.has(flags::WRITE));
            assert!(ev.stack.is_empty());
            match kind {
                EventKind::CopyRange => assert_eq!(ev.src_mm, Hex(k.aux ^ 0x5555)),
                EventKind::Remap => assert_eq!(ev.new_vaddr, Hex(k.aux)),
                _ => assert_eq!((ev.src_mm, ev.new_vaddr), (Hex(0), Hex(0))),
            }
        }
    }

    #[test]
    fn stacks_are_decoded_and_symbolized() {
        let mut ev = RawEvent::new(EventKind::GupGet, HookId::TryGrabFolio);
        ev.flags = flags::HAS_STACK;
        let mut rec = EventWithStack {
            event: ev,
            nr_frames: 3,
            _pad: 0,
            frames: [0; STACK_DEPTH],
        };
        rec.frames[..3].copy_from_slice(&[0x10, 0x20, 0x30]);
        let raw = decode(&bytes_of(&rec)).unwrap();
        assert_eq!(raw.frames, vec![0x10, 0x20, 0x30]);
        let e = to_event(
            &raw,
            |a| a,
            |a| (a == 0x20).then(|| "try_grab_folio+0x1".into()),
        );
        assert_eq!(e.stack, vec!["try_grab_folio+0x1"]);
        assert!(!e.flags.has(flags::HAS_STACK));
        // Truncated stack record.
        let b = bytes_of(&rec);
        assert_eq!(decode(&b[..200]), Err(DecodeError::ShortStack(200)));
    }

    #[test]
    fn bad_records_are_rejected() {
        assert_eq!(decode(&[0; 10]), Err(DecodeError::Short(10)));
        let mut ev = RawEvent::new(EventKind::Map, HookId::InsertPfn);
        ev.version = 99;
        assert_eq!(decode(&bytes_of(&ev)), Err(DecodeError::Version(99)));
        let mut ev = RawEvent::new(EventKind::Map, HookId::InsertPfn);
        ev.kind = 200;
        assert_eq!(decode(&bytes_of(&ev)), Err(DecodeError::Kind(200)));
        let mut ev = RawEvent::new(EventKind::Map, HookId::InsertPfn);
        ev.hook = 0;
        assert_eq!(decode(&bytes_of(&ev)), Err(DecodeError::Hook(0)));
        let ev = RawEvent::new(EventKind::Map, HookId::InsertPfn);
        let raw = decode(&bytes_of(&ev)).unwrap();
        let e = to_event(&raw, |a| a, |_| None);
        assert_eq!(
            (e.ref_before, e.ref_after),
            (None, None),
            "REF_UNKNOWN decodes to None"
        );
    }
}
