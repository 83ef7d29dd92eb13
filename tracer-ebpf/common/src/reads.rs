//! What userspace asks the kernel side to read for it, outside the event
//! stream: the attach snapshot's task records and refcount batches, and
//! the shadow audit's page-table walks (each run once per batch with
//! `BPF_PROG_TEST_RUN` or read through an iterator).

use core::mem::size_of;

/// One record of the attach-time snapshot's task iterator (`iter/task`):
/// which address space a process has, so mappings found in
/// `/proc/PID/pagemap` get the same address-space id as probe events.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapTask {
    pub tgid: u32,
    pub pid: u32,
    /// `task->mm` (0 for kernel threads).
    pub mm: u64,
}

const _: () = assert!(size_of::<SnapTask>() == 16);

/// Pages per refcount batch of the attach-time snapshot.
pub const SNAP_BATCH: usize = 128;

/// The attach-time snapshot's page batch (the single entry of the
/// `SNAP_PAGES` array map): userspace writes `count` pfns, runs the
/// `snapshot_refs` program once (`BPF_PROG_TEST_RUN`), and reads back each
/// page's `_refcount` (of its folio head) and `pgmap` pointer. Where
/// `walk[i]` is a virtual address of address space `mm`, the program also
/// walks `mm`'s page table there and says in `huge[i]` whether a PMD leaf
/// maps it (kernels without `PAGEMAP_SCAN`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapBatch {
    pub count: u32,
    pub _pad: u32,
    pub mm: u64,
    pub pfns: [u64; SNAP_BATCH],
    pub walk: [u64; SNAP_BATCH],
    pub pgmaps: [u64; SNAP_BATCH],
    /// `_refcount`, or [`REF_UNKNOWN`] when the struct page is unreadable.
    pub refs: [i32; SNAP_BATCH],
    /// [`snap_huge`] values.
    pub huge: [u32; SNAP_BATCH],
}

const _: () = assert!(size_of::<SnapBatch>() == 16 + 32 * SNAP_BATCH);

/// [`SnapBatch::huge`] values.
pub mod snap_huge {
    /// Not asked, or the walk could not read the page table.
    pub const UNKNOWN: u32 = 0;
    /// A PMD leaf maps the address.
    pub const PMD: u32 = 1;
    /// The PMD entry points to a page table (PTEs), or nothing is mapped.
    pub const NOT_PMD: u32 = 2;
}

impl SnapBatch {
    pub const fn zeroed() -> Self {
        SnapBatch {
            count: 0,
            _pad: 0,
            mm: 0,
            pfns: [0; SNAP_BATCH],
            walk: [0; SNAP_BATCH],
            pgmaps: [0; SNAP_BATCH],
            refs: [0; SNAP_BATCH],
            huge: [0; SNAP_BATCH],
        }
    }
}

/// Why an address space was audited ([`crate::EventKind::Audit`]'s `arg_flags`).
pub mod audit_reason {
    /// The periodic audit (`--audit-interval`).
    pub const PERIODIC: u64 = 1;
    /// The last audit, before detaching.
    pub const FINAL: u64 = 2;
    /// To confirm a finding against the page table before reporting it.
    pub const VERIFY: u64 = 3;
}

/// Page tables copied per run of the page-table reader.
pub const PT_WALK_BATCH: usize = 8;
/// Entries of one x86-64 page table.
pub const PT_ENTRIES: usize = 512;

/// The page-table reader's batch (the single entry of the `PT_WALK` array
/// map), used by the shadow audit to compare refscope's shadow with the
/// kernel's own page tables: userspace writes `count` 2 MiB-aligned
/// addresses of address space `mm`, runs the `walk_tables` program once
/// (`BPF_PROG_TEST_RUN`), and reads back, per address, how far the walk
/// got ([`pt_level`]), the PMD (or PUD) entry, and, when the PMD points to
/// a page table, its 512 PTEs. Probe reads only: nothing in the kernel is
/// touched beyond the page tables themselves (never a `struct page`, which
/// may be gone after `memunmap_pages`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PtWalk {
    pub count: u32,
    pub _pad: u32,
    pub mm: u64,
    pub va: [u64; PT_WALK_BATCH],
    /// [`pt_level`] values.
    pub level: [u32; PT_WALK_BATCH],
    /// The PUD entry (level `PUD`) or PMD entry (levels `PMD`, `PTES`).
    pub entry: [u64; PT_WALK_BATCH],
    pub ptes: [[u64; PT_ENTRIES]; PT_WALK_BATCH],
}

const _: () = assert!(size_of::<PtWalk>() == 16 + PT_WALK_BATCH * (8 + 4 + 8 + 8 * PT_ENTRIES));

/// [`PtWalk::level`] values.
pub mod pt_level {
    /// Not walked, or a table could not be read.
    pub const UNKNOWN: u32 = 0;
    /// Nothing is mapped: an upper-level entry or the PMD entry is empty.
    pub const NONE: u32 = 1;
    /// A 1 GiB leaf (`entry` is the PUD entry).
    pub const PUD: u32 = 2;
    /// A 2 MiB leaf (`entry` is the PMD entry).
    pub const PMD: u32 = 3;
    /// The PMD entry points to a page table, copied to `ptes`.
    pub const PTES: u32 = 4;
}

impl PtWalk {
    pub const fn zeroed() -> Self {
        PtWalk {
            count: 0,
            _pad: 0,
            mm: 0,
            va: [0; PT_WALK_BATCH],
            level: [0; PT_WALK_BATCH],
            entry: [0; PT_WALK_BATCH],
            ptes: [[0; PT_ENTRIES]; PT_WALK_BATCH],
        }
    }
}
