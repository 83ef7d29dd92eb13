//! What crosses the ring buffer (ABI version 4): compact records.
//!
//! The programs build an [`Event`] on their stack and encode it as the
//! smallest record its kind needs ([`shape_of`]); userspace decodes the
//! record back into an [`Event`]. What repeats from one event to the next
//! crosses once:
//! - **tasks**: a [`TaskRec`] announces a thread's process id, command name
//!   and address space the first time the thread appears and again whenever
//!   its address space changes (exec). Records after it carry the thread id
//!   only; userspace keeps the table.
//! - **kernel stacks**: a [`StackRec`] carries the frames of a stack the
//!   first time it is seen (keyed by a hash of its frames); GUP records carry
//!   that key.
//!
//! An announcement is marked as sent only once it is in the ring buffer,
//! so a lost announcement is sent again with the thread's (or stack's) next
//! event. Every record starts with a [`Head`]; records are 8-byte aligned.

use core::mem::size_of;

use crate::{COMM_LEN, Event, EventKind, STACK_DEPTH};

/// Wire-only record kinds (outside [`EventKind`]'s values).
pub mod kinds {
    /// A [`super::TaskRec`].
    pub const TASK: u8 = 0xf0;
    /// A [`super::StackRec`].
    pub const STACK: u8 = 0xf1;
}

/// The start of every record: 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// [`crate::ABI_VERSION`] (low byte).
    pub version: u8,
    /// [`EventKind`] as `u8`, or one of [`kinds`].
    pub kind: u8,
    /// [`crate::HookId`] as `u8` (0 for wire-only records).
    pub hook: u8,
    /// Folio/mapping order (0 = PTE, 9 = PMD, 18 = PUD on x86-64).
    pub order: u8,
    /// [`crate::flags`] bits (the kernel sets only the low 16).
    pub flags: u16,
    pub cpu: u16,
    /// Low 32 bits of the per-CPU sequence number; userspace widens it.
    pub seq: u32,
    /// Thread id; its process, command and address space are in the last
    /// [`TaskRec`] for it.
    pub tid: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
}

const _: () = assert!(size_of::<Head>() == 24);

/// A thread announced: its process, command and address space.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskRec {
    pub head: Head,
    pub tgid: u32,
    pub _pad: u32,
    /// `current->mm` (0 for a kernel thread without one).
    pub mm: u64,
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(size_of::<TaskRec>() == 56);

/// A kernel stack announced, under the key GUP records carry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackRec {
    pub head: Head,
    /// [`stack_key`] of the frames (never 0).
    pub key: u32,
    /// Valid entries in `frames`.
    pub nr_frames: u32,
    pub frames: [u64; STACK_DEPTH],
}

const _: () = assert!(size_of::<StackRec>() == 32 + 8 * STACK_DEPTH);

/// [`EventKind::Map`]: 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapRec {
    pub head: Head,
    /// The insert's return value (`vm_fault_t` or int).
    pub ret: i32,
    pub ref_after: i32,
    /// The VMA's address space.
    pub mm: u64,
    pub vaddr: u64,
    pub pfn: u64,
    pub pgmap: u64,
}

const _: () = assert!(size_of::<MapRec>() == 64);

/// GUP gets and puts, devmap reference drops, frees: 64 bytes. The address
/// space is the thread's (its [`TaskRec`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GupRec {
    pub head: Head,
    pub ref_before: i32,
    pub ref_after: i32,
    pub refs: i32,
    /// GUP flags (an `unsigned int` in the kernel).
    pub gup_flags: u32,
    pub pfn: u64,
    pub pgmap: u64,
    /// [`stack_key`] of the kernel stack announced in a [`StackRec`], or 0.
    pub stack: u32,
    /// The return value, 32 bits (a pointer return is 0 on success and its
    /// error code on failure).
    pub ret: i32,
}

const _: () = assert!(size_of::<GupRec>() == 64);

/// Address ranges of an address space: unmap, exit, split, remap, fork
/// copy. 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeRec {
    pub head: Head,
    pub ret: i64,
    pub mm: u64,
    pub vaddr: u64,
    pub vaddr_end: u64,
    /// As [`Event::aux`].
    pub aux: u64,
}

const _: () = assert!(size_of::<RangeRec>() == 64);

/// Every other kind (device events, refusals, new processes: rare): all
/// fields, including the process and command (a new process's own, for
/// [`EventKind::TaskNew`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WideRec {
    pub head: Head,
    pub tgid: u32,
    pub ref_before: i32,
    pub ref_after: i32,
    pub refs: i32,
    pub comm: [u8; COMM_LEN],
    pub mm: u64,
    pub vaddr: u64,
    pub vaddr_end: u64,
    pub pfn: u64,
    pub pfn_end: u64,
    pub page: u64,
    pub pgmap: u64,
    pub arg_flags: u64,
    pub ret: i64,
    pub aux: u64,
}

const _: () = assert!(size_of::<WideRec>() == 136);

/// Which record a kind travels in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Map,
    Gup,
    Range,
    Wide,
}

/// The record of `kind`.
pub const fn shape_of(kind: EventKind) -> Shape {
    match kind {
        EventKind::Map => Shape::Map,
        EventKind::GupGet | EventKind::GupPut | EventKind::RefPut | EventKind::Free => Shape::Gup,
        EventKind::Unmap
        | EventKind::MmExit
        | EventKind::PmdSplit
        | EventKind::Remap
        | EventKind::CopyRange => Shape::Range,
        _ => Shape::Wide,
    }
}

/// The key of a kernel stack: a 32-bit FNV-1a hash of its `nr` frames
/// (the rest of `frames` must be zero), never 0. Branch-free over all
/// `STACK_DEPTH` slots: a loop that stopped at `nr` would give the verifier
/// of older kernels (6.1) one path per frame count to explore, each with
/// its own hash state, past its instruction limit.
pub fn stack_key(frames: &[u64; STACK_DEPTH], nr: usize) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ nr as u64;
    let mut i = 0;
    while i < STACK_DEPTH {
        h ^= frames[i];
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    let k = (h ^ (h >> 32)) as u32;
    if k == 0 { 1 } else { k }
}

impl Head {
    /// The head of `ev` (its kind, hook, order, flags, cpu, seq, tid, time).
    #[inline(always)]
    pub fn of(ev: &Event) -> Head {
        Head {
            version: crate::ABI_VERSION as u8,
            kind: ev.kind,
            hook: ev.hook,
            order: ev.order,
            flags: ev.flags as u16,
            cpu: ev.cpu as u16,
            seq: ev.seq as u32,
            tid: ev.tid,
            ts_ns: ev.ts_ns,
        }
    }
}

impl MapRec {
    #[inline(always)]
    pub fn of(ev: &Event) -> Self {
        MapRec {
            head: Head::of(ev),
            ret: ev.ret as i32,
            ref_after: ev.ref_after,
            mm: ev.mm,
            vaddr: ev.vaddr,
            pfn: ev.pfn,
            pgmap: ev.pgmap,
        }
    }
}

impl GupRec {
    #[inline(always)]
    pub fn of(ev: &Event, stack: u32) -> Self {
        GupRec {
            head: Head::of(ev),
            ref_before: ev.ref_before,
            ref_after: ev.ref_after,
            refs: ev.refs,
            gup_flags: ev.arg_flags as u32,
            pfn: ev.pfn,
            pgmap: ev.pgmap,
            stack,
            ret: ev.ret as i32,
        }
    }
}

impl RangeRec {
    #[inline(always)]
    pub fn of(ev: &Event) -> Self {
        RangeRec {
            head: Head::of(ev),
            ret: ev.ret,
            mm: ev.mm,
            vaddr: ev.vaddr,
            vaddr_end: ev.vaddr_end,
            aux: ev.aux,
        }
    }
}

impl WideRec {
    #[inline(always)]
    pub fn of(ev: &Event) -> Self {
        WideRec {
            head: Head::of(ev),
            tgid: ev.tgid,
            ref_before: ev.ref_before,
            ref_after: ev.ref_after,
            refs: ev.refs,
            comm: ev.comm,
            mm: ev.mm,
            vaddr: ev.vaddr,
            vaddr_end: ev.vaddr_end,
            pfn: ev.pfn,
            pfn_end: ev.pfn_end,
            page: ev.page,
            pgmap: ev.pgmap,
            arg_flags: ev.arg_flags,
            ret: ev.ret,
            aux: ev.aux,
        }
    }
}

/// The kernel-side flag bits fit the head's 16 bits.
const _: () = assert!(crate::flags::NO_RETURN < 1 << 16);
