//! What each hooked kernel function means, independent of how it is attached.
//!
//! Every hook has an entry half and a return half. fentry/fexit and
//! kprobe/kretprobe wrappers in `main.rs` call them with the function's
//! arguments; a return probe that has no arguments (kretprobe) gets them
//! from the stash its entry probe left. Userspace decides which halves to
//! attach (see `HookSpec` in tracer-user): hooks that need the refcount
//! before the call always attach both.

use aya_ebpf::EbpfContext;
use refscope_common::{
    Event, EventKind, GUP_PIN_COUNTING_BIAS, HookId, REF_UNKNOWN, STASH_ARGS, Stash, flags, pfn_t,
    pmc_caller_addrs,
};

use crate::{
    emit::{
        current_comm, new_event, stash_present, stash_put, stash_take, submit, submit_with_stack,
    },
    kernel::{
        add_device_range, compound_head, conf, current_mm, current_passes_filter, is_device_pfn,
        is_err_ptr, is_tracked_mm, page_to_pfn, pfn_to_page, pgmap_of, read_u32, read_u64,
        refcount, track_mm, untrack_mm, vma_mm, vmf_vma_address,
    },
};

pub type Args = [u64; STASH_ARGS];

/// `VM_FAULT_NOPAGE`: what the vmf_insert_* family returns on success.
const VM_FAULT_NOPAGE: u64 = 0x100;

// ---------------------------------------------------------------------------
// Map: a PTE or PMD now points at a device page.
// ---------------------------------------------------------------------------

/// Where a map hook finds the address space and virtual address.
#[derive(Clone, Copy)]
pub enum Addr {
    /// `(struct vm_area_struct *vma, unsigned long addr, ...)`.
    VmaAddr,
    /// `(struct vm_fault *vmf, ...)`.
    Vmf,
}

/// Where a map hook finds the page.
#[derive(Clone, Copy)]
pub enum Target {
    /// A `pfn_t` (6.x) or `unsigned long pfn` (7.x) argument at this index.
    Pfn(usize),
    /// A `struct page *` or `struct folio *` argument at this index.
    Page(usize),
}

/// How a map hook reports success.
#[derive(Clone, Copy)]
pub enum Ret {
    /// `vm_fault_t`: `VM_FAULT_NOPAGE` on success.
    VmFault,
    /// `int`: 0 on success.
    Int,
}

/// Where a map hook says the mapping is writable.
#[derive(Clone, Copy)]
pub enum Write {
    Arg(usize),
    Always,
    Never,
}

#[derive(Clone, Copy)]
pub struct MapSpec {
    pub hook: HookId,
    pub addr: Addr,
    pub target: Target,
    pub ret: Ret,
    pub write: Write,
    pub order: u8,
}

/// `(pfn, page, devmap)` of a map hook's target, if it is a device page.
#[inline(always)]
fn map_target(spec: &MapSpec, a: &Args) -> Option<(u64, u64, bool)> {
    let (pfn, page, devmap) = match spec.target {
        Target::Pfn(i) => {
            let raw = a[i];
            let pfn = raw & !pfn_t::FLAGS_MASK;
            let devmap = raw & (pfn_t::PFN_DEV | pfn_t::PFN_MAP) == pfn_t::PFN_DEV | pfn_t::PFN_MAP;
            (pfn, pfn_to_page(pfn)?, devmap)
        }
        Target::Page(i) => (page_to_pfn(a[i])?, a[i], false),
    };
    is_device_pfn(pfn).then_some((pfn, page, devmap))
}

/// Entry half of a map hook (only attached for kretprobes: the fexit half has
/// the arguments itself).
#[inline(always)]
pub fn map_entry(spec: &MapSpec, a: &Args) {
    if map_target(spec, a).is_none() || !current_passes_filter(&current_comm()) {
        return;
    }
    stash_put(
        spec.hook,
        &Stash {
            args: *a,
            ref_before: REF_UNKNOWN,
            flags: 0,
        },
    );
}

/// Return half of a map hook. `args` is `None` for a kretprobe.
#[inline(always)]
pub fn map_exit(spec: &MapSpec, args: Option<&Args>, ret: Option<u64>, kprobe: bool) {
    let stashed;
    let a = match args {
        Some(a) => a,
        None => {
            let Some(s) = stash_take(spec.hook) else {
                return;
            };
            stashed = s.args;
            &stashed
        }
    };
    let Some((pfn, page, devmap)) = map_target(spec, a) else {
        return;
    };
    let comm = current_comm();
    if args.is_some() && !current_passes_filter(&comm) {
        return;
    }
    let (vma, mut vaddr) = match spec.addr {
        Addr::VmaAddr => (a[0], a[1]),
        Addr::Vmf => vmf_vma_address(a[0]),
    };
    if spec.order > 0 {
        vaddr &= !((4096u64 << spec.order) - 1);
    }
    let mm = vma_mm(vma);
    let head = compound_head(page);

    let mut ev = new_event(EventKind::Map, spec.hook, kprobe, comm);
    ev.mm = mm;
    ev.vaddr = vaddr;
    ev.pfn = pfn;
    ev.page = page;
    ev.pgmap = pgmap_of(head);
    ev.order = spec.order;
    ev.ref_after = refcount(head);
    if ev.ref_after == REF_UNKNOWN {
        ev.flags |= flags::MEMMAP_UNREADABLE;
    } else {
        ev.flags |= flags::REF_AFTER;
    }
    if devmap {
        ev.flags |= flags::PFN_DEVMAP;
    }
    let write = match spec.write {
        Write::Arg(i) => a[i] & 0xff != 0,
        Write::Always => true,
        Write::Never => false,
    };
    if write {
        ev.flags |= flags::WRITE;
    }
    match ret {
        Some(r) => {
            ev.ret = r as i64;
            let ok = match spec.ret {
                Ret::VmFault => r & 0xffff_ffff == VM_FAULT_NOPAGE,
                Ret::Int => r as i32 == 0,
            };
            if !ok {
                ev.flags |= flags::FAILED;
            }
        }
        None => ev.flags |= flags::NO_RETURN,
    }
    if !track_mm(mm, 0) {
        ev.flags |= flags::MM_TABLE_FULL;
    }
    submit(ev);
}

// ---------------------------------------------------------------------------
// GUP: references and pins taken and released.
// ---------------------------------------------------------------------------

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

/// `(pfn, head)` of a `struct page *`/`folio *` argument, if a device page:
/// the folio's head and its pfn. The kernel counts GUP references and pins
/// per folio (`_refcount`, `_pincount` of the head), and puts name the folio
/// (`gup_put_folio`), so a get on a tail page of a large folio (a device-dax
/// PMD or PUD) is reported on the head, where its put will be.
#[inline(always)]
fn device_page(page: u64) -> Option<(u64, u64)> {
    let pfn = page_to_pfn(page)?;
    if !is_device_pfn(pfn) {
        return None;
    }
    let head = compound_head(page);
    if head == page {
        return Some((pfn, head));
    }
    Some((page_to_pfn(head).unwrap_or(pfn), head))
}

#[inline(always)]
pub fn grab_entry(spec: &GrabSpec, a: &Args) {
    let Some((_, head)) = device_page(a[0]) else {
        return;
    };
    if !current_passes_filter(&current_comm()) {
        return;
    }
    stash_put(
        spec.hook,
        &Stash {
            args: *a,
            ref_before: refcount(head),
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
        if device_page(a[0]).is_none() {
            return;
        }
    }
    // The entry's stash; if it is gone (the LRU stash evicted it, or the
    // insert failed) an fexit still has the arguments: the event goes out
    // without its entry refcount rather than not at all.
    let (stash_args, ref_before) = match (stash_take(spec.hook), args) {
        (Some(s), _) => (s.args, s.ref_before),
        (None, Some(a)) if current_passes_filter(&current_comm()) => (*a, REF_UNKNOWN),
        _ => return,
    };
    let a = &stash_args;
    let Some((pfn, head)) = device_page(a[0]) else {
        return;
    };

    let mut ev = new_event(EventKind::GupGet, spec.hook, kprobe, current_comm());
    ev.mm = current_mm();
    ev.pfn = pfn;
    ev.page = a[0];
    ev.pgmap = pgmap_of(head);
    ev.arg_flags = a[spec.flags];
    ev.refs = match spec.refs {
        Some(i) => a[i] as i32,
        None => 1,
    };
    ev.ref_before = ref_before;
    ev.ref_after = refcount(head);
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
    let Some((_, head)) = device_page(a[0]) else {
        return;
    };
    for &outer in spec.nested_in {
        if stash_present(outer) {
            return;
        }
    }
    stash_put(
        spec.hook,
        &Stash {
            args: *a,
            ref_before: refcount(head),
            flags: 0,
        },
    );
}

#[inline(always)]
pub fn put_exit(spec: &PutSpec, args: Option<&Args>, ret: Option<u64>, kprobe: bool) {
    if let Some(a) = args
        && device_page(a[0]).is_none()
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
    let Some((pfn, head)) = device_page(a[0]) else {
        return;
    };
    let mut ev = new_event(spec.kind, spec.hook, kprobe, current_comm());
    ev.mm = current_mm();
    ev.pfn = pfn;
    ev.page = a[0];
    ev.pgmap = pgmap_of(head);
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
    ev.ref_after = refcount(head);
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
    let Some((pfn, head)) = device_page(a[0]) else {
        return;
    };
    let mut ev = new_event(EventKind::Free, hook, kprobe, current_comm());
    ev.mm = current_mm();
    ev.pfn = pfn;
    ev.page = a[0];
    ev.pgmap = pgmap_of(head);
    ev.ref_before = refcount(head);
    ev.flags |= if ev.ref_before == REF_UNKNOWN {
        flags::MEMMAP_UNREADABLE
    } else {
        flags::REF_BEFORE
    };
    submit(ev);
}

// Silence "unused" for the pin bias when only some hooks are compiled in.
const _: i32 = GUP_PIN_COUNTING_BIAS;

// ---------------------------------------------------------------------------
// Unmap and address-space teardown.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
pub struct UnmapSpec {
    pub hook: HookId,
    pub vma: usize,
    pub start: usize,
    pub end: usize,
}

/// A range of a tracked address space is being zapped. Reported at entry,
/// before any page of it is released, so userspace drops the shadow
/// mappings before it sees the frees they cause.
#[inline(always)]
pub fn unmap_entry(spec: &UnmapSpec, a: &Args, kprobe: bool) {
    let mm = vma_mm(a[spec.vma]);
    if !is_tracked_mm(mm) {
        return;
    }
    let mut ev = new_event(EventKind::Unmap, spec.hook, kprobe, current_comm());
    ev.mm = mm;
    ev.vaddr = a[spec.start];
    ev.vaddr_end = a[spec.end];
    submit(ev);
}

/// `exit_mmap(mm)`: the address space is going away.
#[inline(always)]
pub fn exit_mmap_entry(a: &Args, kprobe: bool) {
    let mm = a[0];
    if !is_tracked_mm(mm) {
        return;
    }
    let mut ev = new_event(EventKind::MmExit, HookId::ExitMmap, kprobe, current_comm());
    ev.mm = mm;
    submit(ev);
    untrack_mm(mm);
}

// ---------------------------------------------------------------------------
// Paths that change mappings outside insert and unmap.
// ---------------------------------------------------------------------------

/// `__split_huge_pmd(vma, pmd, address, freeze[, folio])` and
/// `__split_huge_pud(vma, pud, address)`: on a DAX VMA the huge entry
/// (`4096 << order` bytes) is cleared (and refaulted at a smaller size
/// later), outside the unmap path.
#[inline(always)]
pub fn split_huge_entry(a: &Args, kprobe: bool, hook: HookId, order: u8) {
    let mm = vma_mm(a[0]);
    if !is_tracked_mm(mm) {
        return;
    }
    let mut ev = new_event(EventKind::PmdSplit, hook, kprobe, current_comm());
    ev.mm = mm;
    ev.order = order;
    ev.vaddr = a[2] & !((4096u64 << order) - 1);
    ev.vaddr_end = ev.vaddr + (4096u64 << order);
    submit(ev);
}

/// The arguments of a return-reported hook: the fexit's own, or the stash
/// its kprobe left.
#[inline(always)]
fn args_or_stash(hook: HookId, args: Option<&Args>) -> Option<Args> {
    match args {
        Some(a) => Some(*a),
        None => stash_take(hook).map(|s| s.args),
    }
}

/// `move_page_tables` returned: `ret` bytes were moved (mremap).
/// 6.x: `(vma, old_addr, new_vma, new_addr, len, ...)`, plain values the
/// function only copies. 7.x: `(struct pagetable_move_control *pmc)`, whose
/// `old_addr`/`new_addr` the function realigns and advances while it moves:
/// at return they are the end of the range, not its start. The caller's
/// addresses are derived from the fields it never writes (`old_end`,
/// `len_in`) and the lockstep of the two it does ([`pmc_caller_addrs`]
/// says why this is exact on every return path).
#[inline(always)]
pub fn move_page_tables_exit(args: Option<&Args>, ret: u64, kprobe: bool) {
    let Some(a) = args_or_stash(HookId::MovePageTables, args) else {
        return;
    };
    let (vma, old, new) = if conf!(move_pmc) != 0 {
        let pmc = a[0];
        let field = |off: u32| read_u64(pmc + off as u64);
        let (Some(vma), Some(old_addr), Some(new_addr), Some(old_end), Some(len_in)) = (
            field(conf!(pmc_old_off)),
            field(conf!(pmc_old_addr_off)),
            field(conf!(pmc_new_addr_off)),
            field(conf!(pmc_old_end_off)),
            field(conf!(pmc_len_in_off)),
        ) else {
            return;
        };
        let (old, new) = pmc_caller_addrs(old_addr, new_addr, old_end, len_in);
        (vma, old, new)
    } else {
        (a[0], a[1], a[3])
    };
    let mm = vma_mm(vma);
    if ret == 0 || !is_tracked_mm(mm) {
        return;
    }
    let mut ev = new_event(
        EventKind::Remap,
        HookId::MovePageTables,
        kprobe,
        current_comm(),
    );
    ev.mm = mm;
    ev.vaddr = old;
    ev.vaddr_end = old.wrapping_add(ret);
    ev.aux = new;
    ev.ret = ret as i64;
    submit(ev);
}

/// `copy_page_range(dst_vma, src_vma)` returned (fork): when the source
/// VMA has anonymous pages, or the child's VMA has a flag that makes fork
/// copy page tables (`vma_needs_copy`: uffd-wp, guard regions, PFNMAP,
/// MIXEDMAP; `copy_on_fork_mask`), its present PTEs, DAX ones included,
/// were copied.
#[inline(always)]
pub fn copy_page_range_exit(args: Option<&Args>, ret: u64, kprobe: bool) {
    let Some(a) = args_or_stash(HookId::CopyPageRange, args) else {
        return;
    };
    let (dst, src) = (a[0], a[1]);
    let src_mm = vma_mm(src);
    if ret as i32 != 0 || !is_tracked_mm(src_mm) {
        return;
    }
    if read_u64(src + conf!(vma_anon_vma_off) as u64).unwrap_or(0) == 0
        && read_u64(dst + conf!(vma_flags_off) as u64).unwrap_or(0) & conf!(copy_on_fork_mask) == 0
    {
        // Other file mappings are not copied: the child refaults.
        return;
    }
    let mut ev = new_event(
        EventKind::CopyRange,
        HookId::CopyPageRange,
        kprobe,
        current_comm(),
    );
    ev.mm = vma_mm(dst);
    ev.aux = src_mm;
    ev.vaddr = read_u64(src + conf!(vma_start_off) as u64).unwrap_or(0);
    ev.vaddr_end = read_u64(src + conf!(vma_end_off) as u64).unwrap_or(0);
    if !track_mm(ev.mm, 0) {
        ev.flags |= flags::MM_TABLE_FULL;
    }
    submit(ev);
}

/// `S_DAX` in `inode.i_flags` (include/linux/fs.h: `1 << 13` on every
/// kernel with CONFIG_FS_DAX since 4.x; a macro, so not in BTF).
const S_DAX: u32 = 1 << 13;

/// `{page,folio}_add_new_anon_rmap(page|folio, vma, address[, flags])`: a
/// new anonymous page is being mapped at `address`. When the VMA maps a DAX
/// file (private, so copy-on-write), whatever device PTE was there has just
/// been cleared (`wp_page_copy` clears it, then maps the copy; a fault that
/// lost a race never gets here): report the end of that mapping. One hook
/// covers the copy-on-write of every kernel (`wp_page_copy` is inlined on
/// 6.12 and 7.x) and uprobes' page replacement too.
#[inline(always)]
pub fn anon_rmap_entry(a: &Args, hook: HookId, kprobe: bool) {
    let vma = a[1];
    let mm = vma_mm(vma);
    // Cheapest test first: this runs on every anonymous fault.
    if !is_tracked_mm(mm) {
        return;
    }
    let file = read_u64(vma + conf!(vma_file_off) as u64).unwrap_or(0);
    if file == 0 {
        return;
    }
    let inode = read_u64(file + conf!(file_inode_off) as u64).unwrap_or(0);
    if inode == 0 || read_u32(inode + conf!(inode_flags_off) as u64).unwrap_or(0) & S_DAX == 0 {
        return;
    }
    let mut ev = new_event(EventKind::Unmap, hook, kprobe, current_comm());
    ev.mm = mm;
    ev.vaddr = a[2] & !4095;
    ev.vaddr_end = ev.vaddr + 4096;
    submit(ev);
}

/// `wake_up_new_task(p)`: a new task starts. When it is a new process (not
/// a thread) with an address space of its own that fork filled with device
/// mappings (`copy_page_range` tracked it), say whose it is: the copies were
/// made in the parent's context, before the child had a pid.
#[inline(always)]
pub fn wake_up_new_task_entry(a: &Args, kprobe: bool) {
    let task = a[0];
    let mm = read_u64(task + conf!(task_mm_off) as u64).unwrap_or(0);
    // Cheapest test first: most new tasks have an mm nobody tracks.
    if !is_tracked_mm(mm) || mm == current_mm() {
        // vfork and CLONE_VM share the parent's mm: nothing changes hands.
        return;
    }
    let tgid = read_u32(task + conf!(task_tgid_off) as u64).unwrap_or(0);
    let pid = read_u32(task + conf!(task_pid_off) as u64).unwrap_or(0);
    if tgid == 0 || pid != tgid {
        return;
    }
    let mut ev = new_event(
        EventKind::TaskNew,
        HookId::WakeUpNewTask,
        kprobe,
        current_comm(),
    );
    ev.mm = mm;
    ev.tgid = tgid;
    ev.tid = pid;
    submit(ev);
}

/// `check_vma_flags(vma, gup_flags)` returned: report FOLL_LONGTERM
/// refusals (-EOPNOTSUPP) in tracked address spaces.
#[inline(always)]
pub fn check_vma_flags_exit(args: Option<&Args>, ret: u64, kprobe: bool) {
    const EOPNOTSUPP: i32 = 95;
    let Some(a) = args_or_stash(HookId::CheckVmaFlags, args) else {
        return;
    };
    if ret as i32 != -EOPNOTSUPP || a[1] & u64::from(conf!(foll_longterm)) == 0 {
        return;
    }
    let mm = vma_mm(a[0]);
    if !is_tracked_mm(mm) {
        return;
    }
    let mut ev = new_event(
        EventKind::GupRefused,
        HookId::CheckVmaFlags,
        kprobe,
        current_comm(),
    );
    ev.mm = mm;
    ev.vaddr = read_u64(a[0] + conf!(vma_start_off) as u64).unwrap_or(0);
    ev.vaddr_end = read_u64(a[0] + conf!(vma_end_off) as u64).unwrap_or(0);
    ev.arg_flags = a[1];
    ev.ret = ret as i32 as i64;
    ev.flags |= flags::FAILED;
    submit(ev);
}

// ---------------------------------------------------------------------------
// Device lifecycle.
// ---------------------------------------------------------------------------

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
        let mut ev = new_event(kind, hook, kprobe, current_comm());
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
    let mut ev = new_event(
        EventKind::PgmapRemoved,
        HookId::MemunmapPages,
        kprobe,
        current_comm(),
    );
    ev.pgmap = pgmap;
    submit(ev);
}

/// `kill_dax(dax_dev)` and `dax_holder_notify_failure(dax_dev, off, len, flags)`.
#[inline(always)]
pub fn dax_entry(hook: HookId, kind: EventKind, a: &Args, kprobe: bool) {
    let mut ev: Event = new_event(kind, hook, kprobe, current_comm());
    ev.page = a[0];
    if let HookId::DaxHolderNotifyFailure = hook {
        ev.vaddr = a[1];
        ev.vaddr_end = a[1].wrapping_add(a[2]);
        ev.arg_flags = a[3];
    }
    submit(ev);
}
