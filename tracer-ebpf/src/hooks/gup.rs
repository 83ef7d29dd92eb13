//! GUP: references and pins taken and released.

use super::*;

/// How a GUP grab function reports success.
#[derive(Clone, Copy)]
pub enum GrabRet {
    /// `bool`: true on success (6.1 `try_grab_page`).
    Bool,
    /// `struct folio *`: NULL on failure (`try_grab_folio_fast`).
    Ptr,
    /// `try_grab_folio`: a folio pointer on 6.1, an int (0 = success) later;
    /// userspace sets `Config::try_grab_folio_returns_ptr`.
    PtrOrInt,
}

#[derive(Clone, Copy)]
pub struct GrabSpec {
    pub hook: HookId,
    /// Index of the `refs` argument, or `None` when it is always 1.
    pub refs: Option<usize>,
    pub flags: usize,
    pub ret: GrabRet,
}

/// `(pfn, folio)` of a `struct page *`/`folio *` argument, if a device page:
/// the folio's head and its pfn. The kernel counts GUP references and pins
/// per folio (`_refcount`, `_pincount` of the head), and puts name the folio
/// (`gup_put_folio`), so a get on a tail page of a large folio (a device-dax
/// PMD or PUD) is reported on the head, where its put will be.
#[inline(always)]
fn device_page(page: u64) -> Option<(u64, Folio)> {
    let pfn = device_pfn(page)?;
    let folio = folio_of(page);
    if folio.head == page {
        return Some((pfn, folio));
    }
    Some((page_to_pfn(folio.head).unwrap_or(pfn), folio))
}

/// The pfn of `page` if it is a device page: arithmetic only, no read.
#[inline(always)]
fn device_pfn(page: u64) -> Option<u64> {
    let pfn = page_to_pfn(page)?;
    is_device_pfn(pfn).then_some(pfn)
}

#[inline(always)]
pub fn grab_entry(spec: &GrabSpec, a: &Args) {
    let Some((_, folio)) = device_page(a[0]) else {
        return;
    };
    if !current_passes_filter() {
        return;
    }
    stash_put(
        spec.hook,
        &Stash {
            args: *a,
            ref_before: folio.refcount,
            flags: 0,
        },
    );
}

#[inline(always)]
pub fn grab_exit<C: EbpfContext>(
    ctx: &C,
    spec: &GrabSpec,
    args: Option<&Args>,
    ret: u64,
    kprobe: bool,
) {
    if let Some(a) = args {
        // Cheap rejection of the common case (non-device pages) before the
        // stash lookup.
        if device_pfn(a[0]).is_none() {
            return;
        }
    }
    // The entry's stash; if it is gone (the LRU stash evicted it, or the
    // insert failed) an fexit still has the arguments: the event goes out
    // without its entry refcount rather than not at all.
    let (stash_args, ref_before) = match (stash_take(spec.hook), args) {
        (Some(s), _) => (s.args, s.ref_before),
        (None, Some(a)) if current_passes_filter() => (*a, REF_UNKNOWN),
        _ => return,
    };
    let a = &stash_args;
    let Some((pfn, folio)) = device_page(a[0]) else {
        return;
    };

    let mut ev = new_event(EventKind::GupGet, spec.hook, kprobe);
    ev.mm = current_mm();
    ev.pfn = pfn;
    ev.page = a[0];
    ev.pgmap = folio.pgmap;
    ev.arg_flags = a[spec.flags];
    ev.refs = match spec.refs {
        Some(i) => a[i] as i32,
        None => 1,
    };
    ev.ref_before = ref_before;
    ev.ref_after = folio.refcount;
    ev.flags |= ref_flags(ev.ref_before, ev.ref_after);
    ev.ret = ret as i64;
    let ok = match spec.ret {
        GrabRet::Bool => ret & 0xff != 0,
        GrabRet::Ptr => !is_err_ptr(ret),
        GrabRet::PtrOrInt => {
            if conf!(try_grab_folio_returns_ptr) != 0 {
                !is_err_ptr(ret)
            } else {
                ret as i32 == 0
            }
        }
    };
    if !ok {
        ev.flags |= flags::FAILED;
    }
    if !track_mm(ev.mm, 0) {
        ev.flags |= flags::MM_TABLE_FULL;
    }
    if conf!(stack_on_gup) != 0 {
        submit_with_stack(ctx, ev);
    } else {
        submit(ev);
    }
}

#[inline(always)]
fn ref_flags(before: i32, after: i32) -> u32 {
    let mut f = 0;
    if before != REF_UNKNOWN {
        f |= flags::REF_BEFORE;
    }
    if after != REF_UNKNOWN {
        f |= flags::REF_AFTER;
    } else {
        f |= flags::MEMMAP_UNREADABLE;
    }
    f
}

/// Where a put hook finds its reference count.
#[derive(Clone, Copy)]
pub enum Refs {
    Arg(usize),
    One,
}

/// Where a put hook finds its GUP flags.
#[derive(Clone, Copy)]
pub enum PutFlags {
    Arg(usize),
    /// `unpin_user_page(page)`: always one FOLL_PIN reference.
    FollPin,
    None,
}

/// Hooks that drop references: `gup_put_folio(folio, refs, flags)` (unpin and
/// FOLL_GET put of GUP'd pages), `unpin_user_page(page)` (7.x inlines
/// `gup_put_folio` there) and `__put_devmap_managed_*_refs(page, refs)`.
#[derive(Clone, Copy)]
pub struct PutSpec {
    pub hook: HookId,
    pub kind: EventKind,
    pub refs: Refs,
    pub flags: PutFlags,
    /// Skip calls nested inside these hooks: the inner put is the same
    /// operation, already reported by the outer one.
    pub nested_in: &'static [HookId],
}

#[inline(always)]
pub fn put_entry(spec: &PutSpec, a: &Args) {
    if device_pfn(a[0]).is_none() {
        return;
    }
    for &outer in spec.nested_in {
        if stash_present(outer) {
            return;
        }
    }
    stash_put(
        spec.hook,
        &Stash {
            args: *a,
            ref_before: folio_of(a[0]).refcount,
            flags: 0,
        },
    );
}

#[inline(always)]
pub fn put_exit(spec: &PutSpec, args: Option<&Args>, ret: Option<u64>, kprobe: bool) {
    if let Some(a) = args
        && device_pfn(a[0]).is_none()
    {
        return;
    }
    // As in `grab_exit`: without the stash an fexit still reports the put,
    // unless the entry skipped it on purpose (nested in another hooked put).
    let (stash_args, ref_before) = match (stash_take(spec.hook), args) {
        (Some(s), _) => (s.args, s.ref_before),
        (None, Some(a)) if !spec.nested_in.iter().any(|&o| stash_present(o)) => (*a, REF_UNKNOWN),
        _ => return,
    };
    let a = &stash_args;
    let Some((pfn, folio)) = device_page(a[0]) else {
        return;
    };
    let mut ev = new_event(spec.kind, spec.hook, kprobe);
    ev.mm = current_mm();
    ev.pfn = pfn;
    ev.page = a[0];
    ev.pgmap = folio.pgmap;
    ev.refs = match spec.refs {
        Refs::Arg(i) => a[i] as i32,
        Refs::One => 1,
    };
    ev.arg_flags = match spec.flags {
        PutFlags::Arg(i) => a[i],
        PutFlags::FollPin => u64::from(conf!(foll_pin)),
        PutFlags::None => 0,
    };
    ev.ref_before = ref_before;
    ev.ref_after = folio.refcount;
    ev.flags |= ref_flags(ev.ref_before, ev.ref_after);
    match ret {
        Some(r) => ev.ret = r as i64,
        None => ev.flags |= flags::NO_RETURN,
    }
    submit(ev);
}

/// `free_zone_device_{page,folio}(page)`: the page went back to its driver.
#[inline(always)]
pub fn free_entry(hook: HookId, a: &Args, kprobe: bool) {
    let Some((pfn, folio)) = device_page(a[0]) else {
        return;
    };
    let mut ev = new_event(EventKind::Free, hook, kprobe);
    ev.mm = current_mm();
    ev.pfn = pfn;
    ev.page = a[0];
    ev.pgmap = folio.pgmap;
    ev.ref_before = folio.refcount;
    ev.flags |= if ev.ref_before == REF_UNKNOWN {
        flags::MEMMAP_UNREADABLE
    } else {
        flags::REF_BEFORE
    };
    submit(ev);
}

// Silence "unused" for the pin bias when only some hooks are compiled in.
const _: i32 = GUP_PIN_COUNTING_BIAS;
