//! Getting events to userspace: the ring buffer, per-CPU sequence numbers,
//! loss accounting, and the entry-to-return argument stash.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_get_stack,
        bpf_ktime_get_ns,
    },
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};
use refscope_common::{
    DropStats, Event, EventKind, EventWithStack, HookId, STACK_DEPTH, Stash, flags, stash_key,
};

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

/// A new event of `kind` from `hook`, with the process fields filled in.
#[inline(always)]
pub fn new_event(kind: EventKind, hook: HookId, kprobe: bool, comm: [u8; 16]) -> Event {
    let mut ev = Event::new(kind, hook);
    let pid_tgid = bpf_get_current_pid_tgid();
    ev.tgid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;
    ev.comm = comm;
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

/// Send `ev`, or count it as dropped.
#[inline(always)]
pub fn submit(mut ev: Event) {
    stamp(&mut ev);
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            entry.write(ev);
            entry.submit(0);
        }
        None => count_drop(&ev),
    }
}

/// Send `ev` followed by the kernel stack of the probed call.
#[inline(always)]
pub fn submit_with_stack<C: EbpfContext>(ctx: &C, mut ev: Event) {
    stamp(&mut ev);
    ev.flags |= flags::HAS_STACK;
    let Some(mut entry) = EVENTS.reserve::<EventWithStack>(0) else {
        count_drop(&ev);
        return;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points to reserved ring buffer memory of the right size;
    // every field is written before submit.
    unsafe {
        (*rec).event = ev;
        (*rec)._pad = 0;
        let frames = &raw mut (*rec).frames;
        let bytes = bpf_get_stack(
            ctx.as_ptr(),
            frames.cast(),
            (STACK_DEPTH * 8) as u32,
            0, // kernel stack
        );
        let n = if bytes > 0 { bytes as u32 / 8 } else { 0 };
        (*rec).nr_frames = n;
        // Zero what the helper did not write so no stale ring memory leaks.
        for i in 0..STACK_DEPTH {
            if i as u32 >= n {
                (*rec).frames[i] = 0;
            }
        }
    }
    entry.submit(0);
}
