//! Map: a PTE, PMD or PUD now points at a device page.

use super::*;

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
    if map_target(spec, a).is_none() || !current_passes_filter() {
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
    if args.is_some() && !current_passes_filter() {
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
    let folio = folio_of(page);

    let mut ev = new_event(EventKind::Map, spec.hook, kprobe);
    ev.mm = mm;
    ev.vaddr = vaddr;
    ev.pfn = pfn;
    ev.page = page;
    ev.pgmap = folio.pgmap;
    ev.order = spec.order;
    ev.ref_after = folio.refcount;
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
