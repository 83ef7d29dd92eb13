//! Device lifecycle.

use super::*;

/// Ranges of a pgmap reported per event (`struct dev_pagemap::ranges`).
const MAX_PGMAP_RANGES: u32 = 4;

/// Report each range of `pgmap` as `kind`; `add` also puts it in the filter.
#[inline(always)]
fn pgmap_ranges(hook: HookId, kind: EventKind, pgmap: u64, ret: i64, kprobe: bool, add: bool) {
    let ty = read_u32(pgmap + conf!(pgmap_type_off) as u64).unwrap_or(u32::MAX);
    let nr = read_u32(pgmap + conf!(pgmap_nr_range_off) as u64).unwrap_or(0);
    let ranges = pgmap + conf!(pgmap_range_off) as u64;
    for i in 0..MAX_PGMAP_RANGES {
        if i >= nr {
            break;
        }
        let base = ranges + 16 * i as u64;
        let (Some(start), Some(end)) = (read_u64(base), read_u64(base + 8)) else {
            break;
        };
        // `struct range` is inclusive: [start, end].
        let (pfn, pfn_end) = (start >> 12, (end + 1) >> 12);
        if add {
            add_device_range(pfn, pfn_end);
        }
        let mut ev = new_event(kind, hook, kprobe);
        ev.pgmap = pgmap;
        ev.pfn = pfn;
        ev.pfn_end = pfn_end;
        ev.arg_flags = ty as u64;
        ev.ret = ret;
        ev.refs = i as i32;
        submit(ev);
    }
}

/// `memremap_pages(pgmap, nid)` returned.
#[inline(always)]
pub fn memremap_exit(args: Option<&Args>, ret: u64, kprobe: bool) {
    let stashed;
    let a = match args {
        Some(a) => a,
        None => {
            let Some(s) = stash_take(HookId::MemremapPages) else {
                return;
            };
            stashed = s.args;
            &stashed
        }
    };
    if is_err_ptr(ret) {
        return;
    }
    pgmap_ranges(
        HookId::MemremapPages,
        EventKind::PgmapAdd,
        a[0],
        0,
        kprobe,
        true,
    );
}

/// Entry half used only to give kretprobes their arguments.
#[inline(always)]
pub fn stash_args(hook: HookId, a: &Args) {
    stash_put(
        hook,
        &Stash {
            args: *a,
            ref_before: REF_UNKNOWN,
            flags: 0,
        },
    );
}

/// `memunmap_pages(pgmap)` starts: mappings of these pages are now stale.
#[inline(always)]
pub fn memunmap_entry(a: &Args, kprobe: bool) {
    if kprobe {
        stash_args(HookId::MemunmapPages, a);
    }
    pgmap_ranges(
        HookId::MemunmapPages,
        EventKind::PgmapRemove,
        a[0],
        0,
        kprobe,
        false,
    );
}

/// `memunmap_pages(pgmap)` returned: the struct pages are gone.
#[inline(always)]
pub fn memunmap_exit(args: Option<&Args>, kprobe: bool) {
    let pgmap = match args {
        Some(a) => a[0],
        None => {
            let Some(s) = stash_take(HookId::MemunmapPages) else {
                return;
            };
            s.args[0]
        }
    };
    let mut ev = new_event(EventKind::PgmapRemoved, HookId::MemunmapPages, kprobe);
    ev.pgmap = pgmap;
    submit(ev);
}

/// `kill_dax(dax_dev)` and `dax_holder_notify_failure(dax_dev, off, len, flags)`.
#[inline(always)]
pub fn dax_entry(hook: HookId, kind: EventKind, a: &Args, kprobe: bool) {
    let mut ev: Event = new_event(kind, hook, kprobe);
    ev.page = a[0];
    if let HookId::DaxHolderNotifyFailure = hook {
        ev.vaddr = a[1];
        ev.vaddr_end = a[1].wrapping_add(a[2]);
        ev.arg_flags = a[3];
    }
    submit(ev);
}
