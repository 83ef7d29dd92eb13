//! Getting events to userspace: the ring buffer, per-CPU sequence numbers,
//! loss accounting, and the entry-to-return argument stash.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_get_stack,
        bpf_ktime_get_ns,
    },
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};
use refscope_common::{
    DropStats, Event, EventKind, HookId, STACK_DEPTH, Stash, flags, stash_key,
    wire::{
        GupRec, Head, MapRec, RangeRec, Shape, StackRec, TaskRec, WideRec, kinds, shape_of,
        stack_key,
    },
};

use crate::kernel::{conf, current_mm};

abi_name!(EVENTS, refscope_common::maps::EVENTS);
/// The event stream. Its size is set by userspace at load (`--ringbuf-size`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Per-CPU event sequence numbers (index 0). Incremented for every event,
/// delivered or dropped, so userspace sees loss as a gap too.
#[map]
static SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

abi_name!(DROPS, refscope_common::maps::DROPS);
/// Per-CPU loss accounting (index 0), read by userspace.
#[map]
pub static DROPS: PerCpuArray<DropStats> = PerCpuArray::with_max_entries(1, 0);

/// Threads announced to the reader ([`announce_task`]): thread id to the
/// address space it had then. LRU: an evicted thread is announced again.
#[map]
static TASKS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(32768, 0);

/// Kernel stacks announced to the reader, by key ([`stack_of`]).
#[map]
static STACKS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(8192, 0);

/// Per-CPU room to build a stack record in (too large for the BPF stack).
#[map]
static SCRATCH: PerCpuArray<StackRec> = PerCpuArray::with_max_entries(1, 0);

/// Arguments and entry refcounts saved for the return probe, keyed by
/// `stash_key(tid, hook)`. LRU, so a return probe that never ran (kretprobe
/// maxactive exhausted) cannot leak entries forever.
#[map]
static STASH: LruHashMap<u64, Stash> = LruHashMap::with_max_entries(16384, 0);

/// The current thread id.
#[inline(always)]
pub fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// The current command name (zeroed if unavailable).
#[inline(always)]
pub fn current_comm() -> [u8; 16] {
    bpf_get_current_comm().unwrap_or([0; 16])
}

#[inline(always)]
pub fn stash_put(hook: HookId, stash: &Stash) {
    let _ = STASH.insert(stash_key(current_tid(), hook), stash, 0);
}

/// Remove and return the stash of `hook` on this thread.
#[inline(always)]
pub fn stash_take(hook: HookId) -> Option<Stash> {
    let key = stash_key(current_tid(), hook);
    // SAFETY: lookup in our own map; the value is copied out before removal.
    let stash = unsafe { STASH.get(key) }.copied()?;
    let _ = STASH.remove(key);
    Some(stash)
}

/// Whether `hook` is in progress on this thread (its entry probe stashed).
#[inline(always)]
pub fn stash_present(hook: HookId) -> bool {
    // SAFETY: lookup in our own map.
    unsafe { STASH.get(stash_key(current_tid(), hook)) }.is_some()
}

/// A new event of `kind` from `hook`, with the thread and process ids
/// filled in (the command name crosses once per thread: [`announce_task`]).
#[inline(always)]
pub fn new_event(kind: EventKind, hook: HookId, kprobe: bool) -> Event {
    let mut ev = Event::new(kind, hook);
    let pid_tgid = bpf_get_current_pid_tgid();
    ev.tgid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;
    if kprobe {
        ev.flags |= flags::KPROBE;
    }
    ev
}

#[inline(always)]
fn stamp(ev: &mut Event) {
    // SAFETY: helpers without preconditions.
    unsafe {
        ev.cpu = bpf_get_smp_processor_id();
        ev.ts_ns = bpf_ktime_get_ns();
    }
    if let Some(seq) = SEQ.get_ptr_mut(0) {
        // SAFETY: our CPU's slot of our own per-CPU array.
        unsafe {
            *seq += 1;
            ev.seq = *seq;
        }
    }
}

#[inline(always)]
fn count_drop(ev: &Event) {
    if let Some(drops) = DROPS.get_ptr_mut(0) {
        // SAFETY: our CPU's slot of our own per-CPU array.
        unsafe {
            (*drops).dropped += 1;
            if (*drops).first_ts == 0 {
                (*drops).first_ts = ev.ts_ns;
            }
            (*drops).last_ts = ev.ts_ns;
            (*drops).last_seq = ev.seq;
        }
    }
}

/// The ring buffer's wakeup flag for the record with per-CPU sequence
/// number `seq`: one record in `wakeup_every` wakes the reader, the others
/// do not (it polls on its own clock too).
#[inline(always)]
fn wake_flags(seq: u64) -> u64 {
    let every = conf!(wakeup_every) as u64;
    if every == 0 {
        0
    } else if seq & (every - 1) == 0 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Write `rec` to the ring buffer; false when it is full.
#[inline(always)]
fn put<T: 'static>(rec: T, wake: u64) -> bool {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(rec);
            entry.submit(wake);
            true
        }
        None => false,
    }
}

/// Announce the current thread (process id, command, address space `mm`,
/// its `current->mm`) unless
/// the reader already has it: once per thread, and again after its address
/// space changed (exec). Marked as sent only once it is in the ring.
#[inline(always)]
fn announce_task(ev: &Event, mm: u64) {
    // SAFETY: lookup in our own map; the value is copied out.
    if unsafe { TASKS.get(ev.tid) }.copied() == Some(mm) {
        return;
    }
    let rec = TaskRec {
        head: Head {
            kind: kinds::TASK,
            hook: 0,
            order: 0,
            flags: 0,
            seq: 0,
            ..Head::of(ev)
        },
        tgid: ev.tgid,
        _pad: 0,
        mm,
        comm: current_comm(),
    };
    if put(rec, BPF_RB_NO_WAKEUP as u64) {
        let _ = TASKS.insert(ev.tid, mm, 0);
    }
}

/// Send `ev` as the record of its kind, or count it as dropped. `stack` is
/// the key of its kernel stack ([`stack_of`]), 0 for none.
#[inline(always)]
fn send(mut ev: Event, stack: u32) {
    stamp(&mut ev);
    let shape = shape_of(EventKind::from_raw(ev.kind).unwrap_or(EventKind::Map));
    // A GUP-shaped event's mm is the caller's, already read (and not sent:
    // the reader takes it from the announcement); others read it here.
    let mm = if shape == Shape::Gup {
        ev.mm
    } else {
        current_mm()
    };
    announce_task(&ev, mm);
    let wake = wake_flags(ev.seq);
    let sent = match shape {
        Shape::Map => put(MapRec::of(&ev), wake),
        Shape::Gup => put(GupRec::of(&ev, stack), wake),
        Shape::Range => put(RangeRec::of(&ev), wake),
        Shape::Wide => {
            if ev.comm[0] == 0 {
                ev.comm = current_comm();
            }
            put(WideRec::of(&ev), wake)
        }
    };
    if !sent {
        count_drop(&ev);
    }
}

/// Send `ev`, or count it as dropped.
#[inline(always)]
pub fn submit(ev: Event) {
    send(ev, 0);
}

/// Send `ev` with the kernel stack of the probed call: the stack crosses
/// once ([`StackRec`]), the event carries its key.
#[inline(always)]
pub fn submit_with_stack<C: EbpfContext>(ctx: &C, mut ev: Event) {
    let key = stack_of(ctx, &ev);
    if key != 0 {
        ev.flags |= flags::HAS_STACK;
    }
    send(ev, key);
}

/// The key of the current kernel stack, announced first if new; 0 when it
/// could not be read.
#[inline(always)]
fn stack_of<C: EbpfContext>(ctx: &C, ev: &Event) -> u32 {
    let Some(rec) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: our CPU's slot of our own per-CPU array, used only here (a
    // program does not nest with itself on one CPU: the kernel's recursion
    // guard skips it).
    let rec = unsafe { &mut *rec };
    let frames = &raw mut rec.frames;
    // SAFETY: `frames` is STACK_DEPTH u64s of our own map value.
    let bytes = unsafe { bpf_get_stack(ctx.as_ptr(), frames.cast(), (STACK_DEPTH * 8) as u32, 0) };
    if bytes <= 0 {
        return 0;
    }
    let n = bytes as u32 / 8;
    // Zero what the helper did not write: the key hashes `n` frames only,
    // and no stale memory goes out.
    for i in 0..STACK_DEPTH {
        if i as u32 >= n {
            rec.frames[i] = 0;
        }
    }
    let key = stack_key(&rec.frames, n as usize);
    // SAFETY: lookup in our own map.
    if unsafe { STACKS.get(key) }.is_some() {
        return key;
    }
    rec.head = Head {
        kind: kinds::STACK,
        hook: ev.hook,
        order: 0,
        flags: 0,
        seq: 0,
        ..Head::of(ev)
    };
    rec.key = key;
    rec.nr_frames = n;
    let Some(mut entry) = EVENTS.reserve::<StackRec>(0) else {
        return 0;
    };
    entry.write(*rec);
    entry.submit(BPF_RB_NO_WAKEUP as u64);
    let _ = STACKS.insert(key, 1, 0);
    key
}
