//! Reading kernel objects: configuration, the device filter, `struct page`.
//!
//! Every struct offset comes from [`Config`], which userspace fills from the
//! running kernel's BTF (rustc emits no CO-RE relocations). Every read of
//! kernel memory goes through `bpf_probe_read_kernel`: a struct page may be
//! gone (after `memunmap_pages`) and the read then fails cleanly.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel},
    macros::map,
    maps::{Array, HashMap},
};
use refscope_common::{Config, MAX_PIDS, MAX_RANGES, PfnRange, REF_UNKNOWN};

abi_name!(CONFIG, refscope_common::maps::CONFIG);
/// Set by userspace before load (read-only data).
#[unsafe(no_mangle)]
pub(crate) static CONFIG: Config = Config::zeroed();

abi_name!(DEVICE_RANGES, refscope_common::maps::DEVICE_RANGES);
/// Device pfn ranges to trace; packed from index 0, `end == 0` ends the list.
/// Userspace seeds it from the namespaces present at start-up; the
/// `memremap_pages` hook appends new pgmaps itself.
#[map]
pub static DEVICE_RANGES: Array<PfnRange> = Array::with_max_entries(MAX_RANGES as u32, 0);

abi_name!(TRACKED_MMS, refscope_common::maps::TRACKED_MMS);
/// Address spaces that have (had) a device page mapped or pinned: only their
/// unmaps and exits are reported, so unrelated processes cost one lookup.
#[map]
pub static TRACKED_MMS: HashMap<u64, u64> = HashMap::with_max_entries(65536, 0);

/// Cached value of the kernel's `vmemmap_base` (KASLR-randomised).
#[unsafe(no_mangle)]
static mut VMEMMAP_BASE: u64 = 0;

/// One field of [`CONFIG`]. The volatile read keeps the compiler from folding
/// the all-zero initialiser into the code: the loader rewrites the data.
macro_rules! conf {
    ($($field:tt)+) => {
        {
            #[allow(unused_unsafe)]
            // SAFETY: a read of our own read-only global.
            let v = unsafe { core::ptr::read_volatile(&raw const crate::kernel::CONFIG.$($field)+) };
            v
        }
    };
}
pub(crate) use conf;

#[inline(always)]
pub fn read_u64(addr: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_kernel never faults; it fails on a bad address.
    unsafe { bpf_probe_read_kernel(addr as *const u64).ok() }
}

#[inline(always)]
pub fn read_i32(addr: u64) -> Option<i32> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(addr as *const i32).ok() }
}

#[inline(always)]
pub fn read_u32(addr: u64) -> Option<u32> {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(addr as *const u32).ok() }
}

/// `vmemmap_base`: the virtual address of `struct page` for pfn 0.
#[inline(always)]
pub fn vmemmap_base() -> Option<u64> {
    // SAFETY: a racy read/write of our own global is harmless: every writer
    // stores the same value.
    unsafe {
        let cached = core::ptr::read_volatile(&raw const VMEMMAP_BASE);
        if cached != 0 {
            return Some(cached);
        }
        let sym = conf!(vmemmap_base_sym);
        let base = if sym == 0 {
            conf!(vmemmap_base_fixed)
        } else {
            read_u64(sym)?
        };
        if base == 0 {
            return None;
        }
        core::ptr::write_volatile(&raw mut VMEMMAP_BASE, base);
        Some(base)
    }
}

#[inline(always)]
pub fn page_to_pfn(page: u64) -> Option<u64> {
    let base = vmemmap_base()?;
    let size = conf!(struct_page_size) as u64;
    if page < base || size == 0 {
        return None;
    }
    Some((page - base) / size)
}

#[inline(always)]
pub fn pfn_to_page(pfn: u64) -> Option<u64> {
    let base = vmemmap_base()?;
    Some(base + pfn * conf!(struct_page_size) as u64)
}

/// Whether `pfn` lies in a traced device range.
#[inline(always)]
pub fn is_device_pfn(pfn: u64) -> bool {
    for i in 0..MAX_RANGES as u32 {
        let Some(range) = DEVICE_RANGES.get(i) else {
            return false;
        };
        if range.end == 0 {
            return false;
        }
        if pfn >= range.start && pfn < range.end {
            return true;
        }
    }
    false
}

/// Add `[start, end)` to the device filter (from the `memremap_pages` hook).
#[inline(always)]
pub fn add_device_range(start: u64, end: u64) {
    for i in 0..MAX_RANGES as u32 {
        let Some(slot) = DEVICE_RANGES.get_ptr_mut(i) else {
            return;
        };
        // SAFETY: the pointer is to an element of our own array map.
        unsafe {
            if (*slot).start == start && (*slot).end == end {
                return;
            }
            if (*slot).end == 0 {
                (*slot).start = start;
                (*slot).end = end;
                return;
            }
        }
    }
}

/// The head page of a compound page (the page itself when not a tail).
#[inline(always)]
pub fn compound_head(page: u64) -> u64 {
    let Some(info) = read_u64(page + conf!(page_compound_off) as u64) else {
        return page;
    };
    head_of(page, info)
}

/// The head of `page`, given its compound word `info`.
#[inline(always)]
fn head_of(page: u64, info: u64) -> u64 {
    if info & 1 == 0 {
        page
    } else if conf!(compound_is_mask) != 0 {
        page & info
    } else {
        info - 1
    }
}

/// `_refcount` of a page (or folio head) pointer, or [`REF_UNKNOWN`].
#[inline(always)]
pub fn refcount(page: u64) -> i32 {
    read_i32(page + conf!(page_refcount_off) as u64).unwrap_or(REF_UNKNOWN)
}

/// `page->pgmap` (ZONE_DEVICE pages), or 0.
#[inline(always)]
pub fn pgmap_of(page: u64) -> u64 {
    read_u64(page + conf!(page_pgmap_off) as u64).unwrap_or(0)
}

/// What the hooks read of a device page's folio: its head page, the head's
/// `_refcount` and `pgmap`.
#[derive(Clone, Copy)]
pub struct Folio {
    pub head: u64,
    pub refcount: i32,
    pub pgmap: u64,
}

/// The first 64 bytes of a `struct page`, where the compound word,
/// `_refcount` and `pgmap` are on every kernel refscope supports
/// (`Config::page_words`).
type PageWords = [u64; 8];

#[inline(always)]
fn read_words(page: u64) -> Option<PageWords> {
    // SAFETY: bpf_probe_read_kernel never faults; it fails on a bad address.
    unsafe { bpf_probe_read_kernel(page as *const PageWords).ok() }
}

/// The 8-byte word at byte offset `off` (< 64) of `w`.
#[inline(always)]
fn word(w: &PageWords, off: u32) -> u64 {
    w[(off as usize >> 3) & 7]
}

/// The folio of `page`: one read of the page's first 64 bytes (and one of
/// its head's, for a tail page) instead of one read per field, when the
/// fields are there; a read per field otherwise.
#[inline(always)]
pub fn folio_of(page: u64) -> Folio {
    if conf!(page_words) == 0 {
        let head = compound_head(page);
        return Folio {
            head,
            refcount: refcount(head),
            pgmap: pgmap_of(head),
        };
    }
    let unreadable = |head| Folio {
        head,
        refcount: REF_UNKNOWN,
        pgmap: 0,
    };
    let Some(mut w) = read_words(page) else {
        return unreadable(page);
    };
    let head = head_of(page, word(&w, conf!(page_compound_off)));
    if head != page {
        match read_words(head) {
            Some(hw) => w = hw,
            None => return unreadable(head),
        }
    }
    let off = conf!(page_refcount_off);
    Folio {
        head,
        refcount: (word(&w, off) >> ((off & 4) * 8)) as u32 as i32,
        pgmap: word(&w, conf!(page_pgmap_off)),
    }
}

/// `vma->vm_mm`.
#[inline(always)]
pub fn vma_mm(vma: u64) -> u64 {
    read_u64(vma + conf!(vma_mm_off) as u64).unwrap_or(0)
}

/// `(vmf->vma, vmf->address)`.
#[inline(always)]
pub fn vmf_vma_address(vmf: u64) -> (u64, u64) {
    (
        read_u64(vmf + conf!(vmf_vma_off) as u64).unwrap_or(0),
        read_u64(vmf + conf!(vmf_address_off) as u64).unwrap_or(0),
    )
}

/// `current->mm` (0 for kernel threads).
#[inline(always)]
pub fn current_mm() -> u64 {
    // SAFETY: the helper returns the current task pointer.
    let task = unsafe { bpf_get_current_task() };
    read_u64(task + conf!(task_mm_off) as u64).unwrap_or(0)
}

/// Whether the current process passes the optional pid/comm filters. The
/// pid filter first (an id already in a register); the command name is read
/// only when a `--comm` filter is set.
#[inline(always)]
pub fn current_passes_filter() -> bool {
    let n = conf!(filter_pid_count) as usize;
    if n > 0 {
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        let mut found = false;
        for i in 0..MAX_PIDS {
            if i < n && conf!(filter_pids[i]) == tgid {
                found = true;
            }
        }
        if !found {
            return false;
        }
    }
    let len = conf!(filter_comm_len) as usize;
    if len > 0 {
        let comm = crate::emit::current_comm();
        #[expect(
            clippy::needless_range_loop,
            reason = "one index into two arrays, a fixed bound the verifier sees"
        )]
        for i in 0..16 {
            if i < len && conf!(filter_comm[i]) != comm[i] {
                return false;
            }
        }
    }
    true
}

/// Remember that `mm` has device pages, so its unmaps and exit are reported.
/// Returns false when the table is full.
#[inline(always)]
pub fn track_mm(mm: u64, now: u64) -> bool {
    if mm == 0 {
        return true;
    }
    // SAFETY: lookup in our own map.
    if unsafe { TRACKED_MMS.get(mm) }.is_some() {
        return true;
    }
    TRACKED_MMS.insert(mm, now, 0).is_ok()
}

#[inline(always)]
pub fn is_tracked_mm(mm: u64) -> bool {
    // SAFETY: lookup in our own map.
    mm != 0 && unsafe { TRACKED_MMS.get(mm) }.is_some()
}

#[inline(always)]
pub fn untrack_mm(mm: u64) {
    let _ = TRACKED_MMS.remove(mm);
}

/// Largest errno a kernel `ERR_PTR` encodes.
const MAX_ERRNO: u64 = 4095;

#[inline(always)]
pub fn is_err_ptr(ptr: u64) -> bool {
    ptr == 0 || ptr >= (0u64).wrapping_sub(MAX_ERRNO)
}
