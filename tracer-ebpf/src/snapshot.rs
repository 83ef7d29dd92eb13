//! The attach-time snapshot's two one-shot programs (issue: mappings that
//! existed before refscope attached). Neither is attached to a kernel
//! function; userspace runs them on demand:
//!
//! - `snapshot_tasks` (`iter/task`): read through a BPF iterator link, it
//!   writes one [`SnapTask`] per task, so userspace learns the `mm_struct`
//!   pointer of each process and can give the mappings it finds in
//!   `/proc/PID/pagemap` the address-space id probe events use.
//! - `snapshot_refs` (raw tracepoint, run with `BPF_PROG_TEST_RUN`): reads the
//!   `_refcount` (of the folio head) and `pgmap` of up to [`SNAP_BATCH`]
//!   pages listed in `SNAP_PAGES`, with the same BTF-derived offsets as the
//!   probes, through `bpf_probe_read_kernel` only; on request it also walks
//!   a process's page table to tell a PMD mapping from 512 PTEs (for
//!   kernels without `PAGEMAP_SCAN`).
//! - `walk_tables` (raw tracepoint, run with `BPF_PROG_TEST_RUN`): copies
//!   the page tables of up to [`PT_WALK_BATCH`] 2 MiB blocks of one address
//!   space (listed in `PT_WALK`), for the shadow audit.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_probe_read_kernel as probe_read_raw, bpf_seq_write},
    },
    macros::{map, raw_tracepoint},
    maps::Array,
    programs::RawTracePointContext,
};
use refscope_common::{
    PT_ENTRIES, PT_WALK_BATCH, PtWalk, REF_UNKNOWN, SNAP_BATCH, SnapBatch, SnapTask, pt_level,
    snap_huge,
};

use crate::kernel::{compound_head, conf, pfn_to_page, pgmap_of, read_u32, read_u64, refcount};

abi_name!(SNAP_PAGES, refscope_common::maps::SNAP_PAGES);
/// The refcount batch (one entry), written and read back by userspace.
#[map]
static SNAP_PAGES: Array<SnapBatch> = Array::with_max_entries(1, 0);

abi_name!(snapshot_refs, refscope_common::programs::SNAPSHOT_REFS);
#[raw_tracepoint(tracepoint = "refscope_snapshot")]
pub fn snapshot_refs(_ctx: RawTracePointContext) -> i32 {
    let Some(batch) = SNAP_PAGES.get_ptr_mut(0) else {
        return 1;
    };
    let b = batch;
    // SAFETY (all accesses below): `b` points to the single element of our
    // own array map, and `i < SNAP_BATCH` keeps every index in bounds (raw
    // pointer accesses: a bounds check's panic path is a program the
    // verifier refuses).
    let n = unsafe { (*b).count } as usize;
    let mm = unsafe { (*b).mm };
    let mut i = 0;
    while i < SNAP_BATCH && i < n {
        unsafe {
            let pfn = *(&raw const (*b).pfns).cast::<u64>().add(i);
            let walk = *(&raw const (*b).walk).cast::<u64>().add(i);
            let (r, pgmap) = match pfn_to_page(pfn) {
                Some(page) => (refcount(compound_head(page)), pgmap_of(page)),
                None => (REF_UNKNOWN, 0),
            };
            *(&raw mut (*b).refs).cast::<i32>().add(i) = r;
            *(&raw mut (*b).pgmaps).cast::<u64>().add(i) = pgmap;
            *(&raw mut (*b).huge).cast::<u32>().add(i) = if walk != 0 && mm != 0 {
                pmd_leaf(mm, walk)
            } else {
                snap_huge::UNKNOWN
            };
        }
        i += 1;
    }
    0
}

abi_name!(PT_WALK, refscope_common::maps::PT_WALK);
/// The page-table reader's batch (one entry), written and read back by
/// userspace.
#[map]
static PT_WALK: Array<PtWalk> = Array::with_max_entries(1, 0);

abi_name!(walk_tables, refscope_common::programs::WALK_TABLES);
#[raw_tracepoint(tracepoint = "refscope_walk")]
pub fn walk_tables(_ctx: RawTracePointContext) -> i32 {
    let Some(w) = PT_WALK.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY (all accesses below): `w` points to the single element of our
    // own array map, and `i < PT_WALK_BATCH` keeps every index in bounds.
    let n = unsafe { (*w).count } as usize;
    let mm = unsafe { (*w).mm };
    let top = page_offset_base().and_then(|pob| {
        let pgd = read_u64(mm + conf!(mm_pgd_off) as u64)?;
        let l5_sym = conf!(pgtable_l5_sym);
        Some((pob, pgd, l5_sym != 0 && read_u32(l5_sym).unwrap_or(0) != 0))
    });
    let mut i = 0;
    while i < PT_WALK_BATCH && i < n {
        unsafe {
            let va = *(&raw const (*w).va).cast::<u64>().add(i);
            let (level, entry, table) = match top {
                Some((pob, pgd, l5)) if mm != 0 => walk_to_pmd(pgd, va, pob, l5),
                _ => (pt_level::UNKNOWN, 0, 0),
            };
            let mut level = level;
            if level == pt_level::PTES {
                let dst = (&raw mut (*w).ptes).cast::<[u64; PT_ENTRIES]>().add(i);
                if probe_read_raw(dst.cast(), (PT_ENTRIES * 8) as u32, table as *const c_void) != 0
                {
                    level = pt_level::UNKNOWN;
                }
            }
            *(&raw mut (*w).level).cast::<u32>().add(i) = level;
            *(&raw mut (*w).entry).cast::<u64>().add(i) = entry;
        }
        i += 1;
    }
    0
}

/// Walk `va` down to its PMD entry: `(pt_level, entry, PTE table)`.
#[inline(always)]
fn walk_to_pmd(pgd: u64, va: u64, pob: u64, l5: bool) -> (u32, u64, u64) {
    let mut table = pgd;
    if l5 {
        table = match step(table, va, 48, pob) {
            Ok(t) => t,
            Err(v) => return (level_of(v), 0, 0),
        };
    }
    table = match step(table, va, 39, pob) {
        Ok(t) => t,
        Err(v) => return (level_of(v), 0, 0),
    };
    let Some(pud) = read_u64(table + ((va >> 30) & 511) * 8) else {
        return (pt_level::UNKNOWN, 0, 0);
    };
    if pud & (PAGE_PRESENT | PAGE_PROTNONE) == 0 {
        return (pt_level::NONE, pud, 0);
    }
    if pud & PAGE_PSE != 0 {
        return (pt_level::PUD, pud, 0);
    }
    table = next_table(pud, pob);
    match read_u64(table + ((va >> 21) & 511) * 8) {
        None => (pt_level::UNKNOWN, 0, 0),
        Some(e) if e & (PAGE_PRESENT | PAGE_PROTNONE) == 0 => (pt_level::NONE, e, 0),
        Some(e) if e & PAGE_PSE != 0 => (pt_level::PMD, e, 0),
        Some(e) => (pt_level::PTES, e, next_table(e, pob)),
    }
}

/// [`step`]'s answers as [`pt_level`] values.
#[inline(always)]
fn level_of(huge: u32) -> u32 {
    if huge == snap_huge::NOT_PMD {
        pt_level::NONE
    } else {
        pt_level::UNKNOWN
    }
}

/// x86-64 page-table entry bits.
const PAGE_PRESENT: u64 = 1 << 0;
const PAGE_PSE: u64 = 1 << 7;
/// A PROT_NONE leaf: present to the kernel, not to the MMU (its pfn bits
/// are stored inverted).
const PAGE_PROTNONE: u64 = 1 << 8;
/// Physical address bits of an entry (`PTE_PFN_MASK`, 52-bit physical).
const PFN_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The direct map's base (`page_offset_base`).
#[inline(always)]
fn page_offset_base() -> Option<u64> {
    let sym = conf!(page_offset_base_sym);
    if sym == 0 {
        let fixed = conf!(page_offset_fixed);
        return (fixed != 0).then_some(fixed);
    }
    read_u64(sym)
}

/// The table an upper-level entry points to, through the direct map.
#[inline(always)]
fn next_table(entry: u64, pob: u64) -> u64 {
    pob + (entry & PFN_MASK)
}

/// One upper level: the next table, or the answer when there is none.
#[inline(always)]
fn step(table: u64, va: u64, shift: u64, pob: u64) -> Result<u64, u32> {
    match read_u64(table + ((va >> shift) & 511) * 8) {
        None => Err(snap_huge::UNKNOWN),
        Some(e) if e & PAGE_PRESENT == 0 => Err(snap_huge::NOT_PMD),
        Some(e) => Ok(next_table(e, pob)),
    }
}

/// Whether a PMD leaf maps `va` in `mm` ([`snap_huge`]). Every read is a
/// probe read: the tables may change (or go) under us; a torn answer only
/// affects how one mapping found by the snapshot is classified.
#[inline(always)]
fn pmd_leaf(mm: u64, va: u64) -> u32 {
    let Some(pob) = page_offset_base() else {
        return snap_huge::UNKNOWN;
    };
    let Some(mut table) = read_u64(mm + conf!(mm_pgd_off) as u64) else {
        return snap_huge::UNKNOWN;
    };
    let l5_sym = conf!(pgtable_l5_sym);
    let l5 = l5_sym != 0 && read_u32(l5_sym).unwrap_or(0) != 0;
    // pgd (5-level only), then pgd/p4d, then pud: each must point to a
    // table.
    if l5 {
        table = match step(table, va, 48, pob) {
            Ok(t) => t,
            Err(v) => return v,
        };
    }
    table = match step(table, va, 39, pob) {
        Ok(t) => t,
        Err(v) => return v,
    };
    let Some(pud) = read_u64(table + ((va >> 30) & 511) * 8) else {
        return snap_huge::UNKNOWN;
    };
    if pud & PAGE_PRESENT == 0 || pud & PAGE_PSE != 0 {
        // Nothing, or a 1 GiB leaf (device-dax can map PUDs): not a PMD.
        return snap_huge::NOT_PMD;
    }
    table = next_table(pud, pob);
    match read_u64(table + ((va >> 21) & 511) * 8) {
        Some(e) if e & PAGE_PRESENT != 0 && e & PAGE_PSE != 0 => snap_huge::PMD,
        Some(_) => snap_huge::NOT_PMD,
        None => snap_huge::UNKNOWN,
    }
}

/// `struct bpf_iter_meta` (include/linux/bpf.h): only `seq` is used.
#[repr(C)]
struct IterMeta {
    seq: *mut c_void,
}

/// `struct bpf_iter__task`: `meta` at 0, `task` at 8 (stable UAPI-like
/// layout of the iterator context).
#[repr(C)]
struct IterTaskCtx {
    meta: *const IterMeta,
    task: *const c_void,
}

abi_name!(snapshot_tasks, refscope_common::programs::SNAPSHOT_TASKS);
/// The task iterator. aya-ebpf has no `#[iter]` macro: the section name is
/// what makes it an iterator program (`iter/task`).
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn snapshot_tasks(ctx: *mut c_void) -> i32 {
    let ctx = ctx as *const IterTaskCtx;
    // The task as a plain integer: the verifier forbids arithmetic with
    // run-time offsets on a typed BTF pointer, and the offsets come from
    // userspace.
    // SAFETY: a probe read of our own context; it fails cleanly.
    let task =
        unsafe { bpf_probe_read_kernel(&raw const (*ctx).task) }.unwrap_or(core::ptr::null());
    let task = task as u64;
    if task == 0 {
        // The iterator's final call (no task).
        return 0;
    }
    let rec = SnapTask {
        tgid: read_u32(task + conf!(task_tgid_off) as u64).unwrap_or(0),
        pid: read_u32(task + conf!(task_pid_off) as u64).unwrap_or(0),
        mm: read_u64(task + conf!(task_mm_off) as u64).unwrap_or(0),
    };
    if rec.mm == 0 || rec.tgid != rec.pid {
        // Kernel threads have no mm; the leader's record covers the threads.
        return 0;
    }
    // SAFETY: typed loads of the iterator context and its meta, as C
    // iterator programs do (`ctx->meta->seq`); the verifier tracks them as
    // BTF pointers, which `bpf_seq_write` requires.
    unsafe {
        let meta = (*ctx).meta;
        if meta.is_null() {
            return 0;
        }
        let seq = (*meta).seq;
        bpf_seq_write(
            seq.cast(),
            (&raw const rec).cast(),
            size_of::<SnapTask>() as u32,
        );
    }
    0
}
