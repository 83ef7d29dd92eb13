//! The event ABI between refscope's eBPF programs and its userspace.
//!
//! This crate is the only place these types are declared. The eBPF programs
//! (`tracer-ebpf`) fill them in the kernel; `refscope` (`tracer-user`) decodes
//! the bytes it reads from the ring buffer and writes the configuration and
//! filter maps with them.
//!
//! Rules for every type here:
//! - `#[repr(C)]`, `Copy`, fixed-size arrays for strings, integers instead of
//!   `bool`, explicit `_pad` fields so no byte is implicit padding (uninitialised
//!   padding leaks kernel stack and upsets the verifier);
//! - a compile-time size assertion, so a layout change is a build error on both
//!   sides at once;
//! - every record starts with `version` and `kind`, so a reader can reject what
//!   it does not understand.
#![no_std]

use core::mem::size_of;

/// Bumped on any change to the layout or meaning of the types in this crate.
pub const ABI_VERSION: u16 = 4;

/// Length of `task_struct::comm`.
pub const COMM_LEN: usize = 16;
/// Kernel stack frames captured for events that carry a stack.
pub const STACK_DEPTH: usize = 16;
/// Maximum number of device pfn ranges the in-kernel filter checks.
pub const MAX_RANGES: usize = 32;
/// Maximum number of pids in the in-kernel pid filter.
pub const MAX_PIDS: usize = 8;
/// Arguments saved between an entry probe and its return probe.
pub const STASH_ARGS: usize = 6;

/// Sentinel for a refcount that was not read.
pub const REF_UNKNOWN: i32 = i32::MIN;

macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident : $repr:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[repr($repr)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The variant with this wire value.
            pub const fn from_raw(raw: $repr) -> Option<Self> {
                match raw {
                    $( $value => Some($name::$variant), )+
                    _ => None,
                }
            }

            /// The stable name used in traces, reports and the CLI.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// Inverse of [`Self::as_str`].
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $( $text => Some($name::$variant), )+
                    _ => None,
                }
            }
        }
    };
}

named_enum! {
    /// What happened to a page (or an address range, or a device).
    pub enum EventKind: u8 {
        /// A PTE (order 0) or PMD (order 9) was installed for a device page.
        Map = 1 => "map",
        /// GUP took a reference (FOLL_GET) or a pin (FOLL_PIN) on a device page.
        GupGet = 2 => "gup_get",
        /// GUP released a reference or pin (`gup_put_folio`: unpin_user_page(s) et al.).
        GupPut = 3 => "gup_put",
        /// A reference was dropped on the devmap put path (pre-6.15 kernels:
        /// every FS-DAX put goes through `__put_devmap_managed_*_refs`).
        RefPut = 4 => "ref_put",
        /// The page was released to its driver: `free_zone_device_{page,folio}`.
        Free = 5 => "free",
        /// `[vaddr, vaddr_end)` of address space `mm` is being torn down.
        Unmap = 6 => "unmap",
        /// Address space `mm` is being destroyed (`exit_mmap`).
        MmExit = 7 => "mm_exit",
        /// A pgmap was created (`memremap_pages` returned): `[pfn, pfn_end)`.
        PgmapAdd = 8 => "pgmap_add",
        /// `memunmap_pages` started for a pgmap: its memmap is about to go.
        PgmapRemove = 9 => "pgmap_remove",
        /// `memunmap_pages` returned: the struct pages of the pgmap are gone.
        PgmapRemoved = 10 => "pgmap_removed",
        /// `kill_dax`: the dax device is dying (pmem unbind).
        DaxKill = 11 => "dax_kill",
        /// `dax_holder_notify_failure`: the filesystem holder was told.
        HolderNotify = 12 => "holder_notify",
        /// A huge PMD (`order` 9; 0 in traces before PUDs were followed) or
        /// PUD (`order` 18) at `vaddr` of `mm` is split (on DAX: cleared, to
        /// be refaulted at a smaller size) outside the unmap path; the name
        /// stays `pmd_split` for the trace format's sake.
        PmdSplit = 13 => "pmd_split",
        /// mremap moved `[vaddr, vaddr_end)` of `mm` to `aux` without
        /// unmapping or refaulting.
        Remap = 14 => "remap",
        /// fork copied the present PTEs of `[vaddr, vaddr_end)` from address
        /// space `aux` into `mm` (private mappings with anonymous pages).
        CopyRange = 15 => "copy_range",
        /// GUP refused a FOLL_LONGTERM pin (`check_vma_flags` returned
        /// -EOPNOTSUPP): `arg_flags` are the GUP flags, `vaddr` the VMA start.
        GupRefused = 16 => "gup_refused",
        /// A new process (`tgid`, not a thread) starts with address space
        /// `mm`, which fork filled with copies of device mappings
        /// (`wake_up_new_task`): the copies belong to it, not to the parent
        /// whose context the copy ran in.
        TaskNew = 17 => "task_new",
        /// Userspace only: a mapping that existed when refscope attached.
        AttachMap = 32 => "attach_map",
        /// Userspace only: the shadow audit found `pfn` (order `order`)
        /// mapped at `vaddr` of `mm` in the kernel's page table, and the
        /// shadow did not have it (a path refscope did not see installed it).
        AuditMap = 33 => "audit_map",
        /// Userspace only: the shadow had `pfn` mapped at `vaddr` of `mm`,
        /// and the kernel's page table does not (a path refscope did not
        /// see removed or replaced it); `arg_flags` is the entry found there.
        AuditUnmap = 34 => "audit_unmap",
        /// Userspace only: one address space audited (after its
        /// `audit_map`/`audit_unmap` corrections): `ret` mappings compared,
        /// `refs` divergences found, `arg_flags` why ([`audit_reason`]);
        /// flag `FAILED` when the process was gone before its page table
        /// could be read.
        Audit = 35 => "audit",
    }
}

pub mod hooks;
pub use hooks::{HOOKS, Halves, HookDef, HookId, Prog, def_of, maps, programs};

mod reads;
pub use reads::*;

pub mod wire;

/// Bits of [`Event::flags`].
pub mod flags {
    /// `ref_before` holds a value read at function entry.
    pub const REF_BEFORE: u32 = 1 << 0;
    /// `ref_after` holds a value read at function return.
    pub const REF_AFTER: u32 = 1 << 1;
    /// Reading the page's `struct page` failed: its memmap is gone
    /// (after `memunmap_pages`) or the pointer was bad.
    pub const MEMMAP_UNREADABLE: u32 = 1 << 2;
    /// The hooked function returned failure; nothing changed.
    pub const FAILED: u32 = 1 << 3;
    /// Seen by a kprobe/kretprobe (not fentry/fexit).
    pub const KPROBE: u32 = 1 << 4;
    /// The `pfn_t` argument had `PFN_DEV|PFN_MAP` (a devmap mapping, pre-6.17).
    pub const PFN_DEVMAP: u32 = 1 << 5;
    /// The event carries a kernel stack (a GUP record's `stack` key).
    pub const HAS_STACK: u32 = 1 << 6;
    /// The mapping was installed writable (`mkwrite`/`write`).
    pub const WRITE: u32 = 1 << 7;
    /// The in-kernel table of tracked address spaces was full; unmaps of this
    /// `mm` may be missed.
    pub const MM_TABLE_FULL: u32 = 1 << 8;
    /// The return value was not available (kretprobe missed, or no exit probe).
    pub const NO_RETURN: u32 = 1 << 9;
    /// Userspace only: the values come from the attach-time snapshot.
    pub const AT_ATTACH: u32 = 1 << 16;
}

/// One event, as the eBPF programs build it and userspace decodes it. It
/// crosses the ring buffer as the compact record of its kind ([`wire`]).
///
/// Field meaning depends on `kind`; unused fields are zero. Addresses are raw
/// kernel pointers here: userspace hashes them before they reach a trace
/// unless asked not to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// [`ABI_VERSION`].
    pub version: u16,
    /// [`EventKind`] as `u8`.
    pub kind: u8,
    /// [`HookId`] as `u8`.
    pub hook: u8,
    /// [`flags`] bits.
    pub flags: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// Per-CPU sequence number; gaps mean lost events on that CPU.
    pub seq: u64,
    pub cpu: u32,
    pub tgid: u32,
    pub tid: u32,
    /// `_refcount` read at function entry, or [`REF_UNKNOWN`].
    pub ref_before: i32,
    /// `_refcount` read at function return, or [`REF_UNKNOWN`].
    pub ref_after: i32,
    /// The hook's `refs`/`nr` argument (references taken or dropped), else 0.
    pub refs: i32,
    pub comm: [u8; COMM_LEN],
    /// Address space (`struct mm_struct *`) the event is about: the VMA's mm for
    /// map and unmap, the caller's mm for GUP.
    pub mm: u64,
    pub vaddr: u64,
    /// End of an address range (exclusive), for [`EventKind::Unmap`].
    pub vaddr_end: u64,
    pub pfn: u64,
    /// End of a pfn range (exclusive), for pgmap events.
    pub pfn_end: u64,
    /// `struct page *` (or folio) the hook saw.
    pub page: u64,
    /// `struct dev_pagemap *` of the page or pgmap event.
    pub pgmap: u64,
    /// GUP flags, `pfn_t` flags, `enum memory_type`, or `kill_dax` flags.
    pub arg_flags: u64,
    /// Return value of the hooked function (sign-extended).
    pub ret: i64,
    /// Folio/mapping order (0 = PTE, 9 = PMD on x86-64).
    pub order: u8,
    pub _pad: [u8; 7],
    /// Per kind: the source address space of [`EventKind::CopyRange`], the
    /// new address of [`EventKind::Remap`].
    pub aux: u64,
}

const _: () = assert!(size_of::<Event>() == 152);

impl Event {
    /// An all-zero event of this kind and hook, stamped with [`ABI_VERSION`].
    pub const fn new(kind: EventKind, hook: HookId) -> Self {
        Event {
            version: ABI_VERSION,
            kind: kind as u8,
            hook: hook as u8,
            flags: 0,
            ts_ns: 0,
            seq: 0,
            cpu: 0,
            tgid: 0,
            tid: 0,
            ref_before: REF_UNKNOWN,
            ref_after: REF_UNKNOWN,
            refs: 0,
            comm: [0; COMM_LEN],
            mm: 0,
            vaddr: 0,
            vaddr_end: 0,
            pfn: 0,
            pfn_end: 0,
            page: 0,
            pgmap: 0,
            arg_flags: 0,
            ret: 0,
            order: 0,
            _pad: [0; 7],
            aux: 0,
        }
    }
}

impl Event {
    /// The record's bytes, as the ring buffer carries them (userspace
    /// injects the attach-time snapshot's events this way).
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `#[repr(C)]` plain data without implicit padding (see the
        // size assertion), so every byte is initialised.
        unsafe {
            core::slice::from_raw_parts((self as *const Self).cast::<u8>(), size_of::<Self>())
        }
    }
}

/// Kernel facts the programs need, computed by userspace from the running
/// kernel's BTF and kallsyms and set as a read-only global before load.
/// (rustc emits no CO-RE relocations, so no struct offset is compiled in.)
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub abi_version: u32,
    /// `sizeof(struct page)`.
    pub struct_page_size: u32,
    /// Offset of `_refcount` in `struct page`.
    pub page_refcount_off: u32,
    /// Offset of the ZONE_DEVICE `pgmap` pointer in `struct page`/`folio`.
    pub page_pgmap_off: u32,
    /// Offset of `compound_head` (6.x) / `compound_info` (7.x) in `struct page`.
    pub page_compound_off: u32,
    /// Non-zero when a tail page's `compound_info` is a mask to AND with the
    /// page address (7.x with HVO), zero when it is `head + 1`.
    pub compound_is_mask: u32,
    /// Offset of `vm_mm` in `struct vm_area_struct`.
    pub vma_mm_off: u32,
    /// Offset of `vma` in `struct vm_fault`.
    pub vmf_vma_off: u32,
    /// Offset of `address` in `struct vm_fault`.
    pub vmf_address_off: u32,
    /// Offset of `mm` in `struct task_struct`.
    pub task_mm_off: u32,
    /// Offset of `type` in `struct dev_pagemap`.
    pub pgmap_type_off: u32,
    /// Offset of `nr_range` in `struct dev_pagemap`.
    pub pgmap_nr_range_off: u32,
    /// Offset of `range` (first `struct range`) in `struct dev_pagemap`.
    pub pgmap_range_off: u32,
    /// Non-zero when `try_grab_folio` returns a folio pointer (6.1) rather than
    /// an int (6.2+).
    pub try_grab_folio_returns_ptr: u32,
    /// Non-zero to capture a kernel stack on GUP events.
    pub stack_on_gup: u32,
    /// Number of valid entries in `filter_pids` (0 = no pid filter).
    pub filter_pid_count: u32,
    pub filter_pids: [u32; MAX_PIDS],
    /// Length of `filter_comm` (0 = no comm filter).
    pub filter_comm_len: u32,
    pub filter_comm: [u8; COMM_LEN],
    /// The kernel's `FOLL_PIN` bit (unpin_user_page has no flags argument).
    pub foll_pin: u32,
    /// Address of the kernel variable `vmemmap_base` (from kallsyms), or 0
    /// when the kernel has a fixed memory layout (no `vmemmap_base`).
    pub vmemmap_base_sym: u64,
    /// `vmemmap` when it is a compile-time constant (`vmemmap_base_sym == 0`).
    pub vmemmap_base_fixed: u64,
    /// Offsets in `struct vm_area_struct` of `vm_start`, `vm_end`, `anon_vma`.
    pub vma_start_off: u32,
    pub vma_end_off: u32,
    pub vma_anon_vma_off: u32,
    /// The kernel's `FOLL_LONGTERM` bit.
    pub foll_longterm: u32,
    /// Non-zero when `move_page_tables` takes a `struct
    /// pagetable_move_control *` (7.x); then the offsets below apply.
    /// `old_addr` and `new_addr` are advanced by the move itself; `old_end`
    /// and `len_in` are not, and give back the caller's addresses
    /// ([`pmc_caller_addrs`]).
    pub move_pmc: u32,
    pub pmc_old_off: u32,
    pub pmc_old_addr_off: u32,
    pub pmc_new_addr_off: u32,
    pub pmc_old_end_off: u32,
    pub pmc_len_in_off: u32,
    /// Offsets of `tgid` and `pid` in `struct task_struct` (the attach-time
    /// snapshot's task iterator).
    pub task_tgid_off: u32,
    pub task_pid_off: u32,
    /// Offset of `pgd` in `struct mm_struct` (the snapshot's page-table walk).
    pub mm_pgd_off: u32,
    /// `vm_area_struct.vm_file`, `file.f_inode`, `inode.i_flags`: whether a
    /// VMA maps a DAX file (`S_DAX`), for the copy-on-write hook.
    pub vma_file_off: u32,
    pub file_inode_off: u32,
    pub inode_flags_off: u32,
    /// Address of the kernel variable `page_offset_base` (the direct map's
    /// base, KASLR-randomised), or 0 when the layout is fixed.
    pub page_offset_base_sym: u64,
    /// The direct map's base when it is fixed (`page_offset_base_sym == 0`).
    pub page_offset_fixed: u64,
    /// Address of `__pgtable_l5_enabled` (5-level paging in use when
    /// non-zero), or 0 when the kernel has no 5-level support.
    pub pgtable_l5_sym: u64,
    /// Offset of `vm_flags` in `struct vm_area_struct`.
    pub vma_flags_off: u32,
    /// Wake the reader once every this many records per CPU (a power of
    /// two); the others do not wake it, and the reader also polls on its own
    /// clock, so latency stays bounded without a wakeup per record. 0: every
    /// record may wake it (the kernel's default).
    pub wakeup_every: u32,
    /// The `vm_flags` bits of the child's VMA that make fork copy a page
    /// table without an anon_vma (`vma_needs_copy`): PFNMAP, MIXEDMAP,
    /// uffd-wp, and on 7.x guard regions and uffd read-write protection.
    pub copy_on_fork_mask: u64,
    /// Non-zero when the compound word, `_refcount` and `pgmap` all lie in
    /// the first 64 bytes of `struct page` (every x86-64 kernel so far), so
    /// one read gets them.
    pub page_words: u32,
    pub _pad1: u32,
}

const _: () = assert!(size_of::<Config>() == 248);

impl Config {
    pub const fn zeroed() -> Self {
        Config {
            abi_version: 0,
            struct_page_size: 0,
            page_refcount_off: 0,
            page_pgmap_off: 0,
            page_compound_off: 0,
            compound_is_mask: 0,
            vma_mm_off: 0,
            vmf_vma_off: 0,
            vmf_address_off: 0,
            task_mm_off: 0,
            pgmap_type_off: 0,
            pgmap_nr_range_off: 0,
            pgmap_range_off: 0,
            try_grab_folio_returns_ptr: 0,
            stack_on_gup: 0,
            filter_pid_count: 0,
            filter_pids: [0; MAX_PIDS],
            filter_comm_len: 0,
            filter_comm: [0; COMM_LEN],
            foll_pin: 0,
            vmemmap_base_sym: 0,
            vmemmap_base_fixed: 0,
            vma_start_off: 0,
            vma_end_off: 0,
            vma_anon_vma_off: 0,
            foll_longterm: 0,
            move_pmc: 0,
            pmc_old_off: 0,
            pmc_old_addr_off: 0,
            pmc_new_addr_off: 0,
            pmc_old_end_off: 0,
            pmc_len_in_off: 0,
            task_tgid_off: 0,
            task_pid_off: 0,
            mm_pgd_off: 0,
            vma_file_off: 0,
            file_inode_off: 0,
            inode_flags_off: 0,
            page_offset_base_sym: 0,
            page_offset_fixed: 0,
            pgtable_l5_sym: 0,
            vma_flags_off: 0,
            wakeup_every: 0,
            copy_on_fork_mask: 0,
            page_words: 0,
            _pad1: 0,
        }
    }
}

/// The addresses the caller of 7.x `move_page_tables(struct
/// pagetable_move_control *pmc)` asked to move, `(old, new)`, from the
/// fields as they are when it returns.
///
/// The function moves `pmc->old_addr` and `pmc->new_addr` itself: first
/// `try_realign_addr` may align both down to a PMD boundary, then every
/// step adds the same extent to both (`pmc_next`). It never writes
/// `old_end` or `len_in`, and the caller set `old_end = old_addr + len_in`
/// (`PAGETABLE_MOVE`), so `old_end - len_in` is the caller's old address,
/// exactly. The new address follows because the two advance in lockstep:
/// realignment requires `old_addr` and `new_addr` to sit at the same offset
/// in their PMD (`can_realign_addr`), so both lose the same amount, and
/// every step adds the same amount: `old_addr - new_addr` never changes.
/// That holds on every return path (a `break` on allocation failure, the
/// hugetlb and empty early returns, which touch nothing), so wrapping
/// arithmetic gives the caller's values even when a realigned move stops
/// below the caller's address (the function then returns 0).
///
/// This needs no entry probe and no stash: the fexit (or kretprobe, which
/// stashed only the pointer) reads four fields of a structure that lives in
/// the caller's frame until the call returns. (Reading `old_addr` and
/// `new_addr` there directly gives `[old_end, old_end + moved)`: wrong.)
pub const fn pmc_caller_addrs(
    old_addr: u64,
    new_addr: u64,
    old_end: u64,
    len_in: u64,
) -> (u64, u64) {
    let orig_old = old_end.wrapping_sub(len_in);
    let orig_new = new_addr.wrapping_sub(old_addr.wrapping_sub(orig_old));
    (orig_old, orig_new)
}

/// One entry of the in-kernel device filter: pfns in `[start, end)` are traced.
/// An entry with `end == 0` is free; entries are packed from index 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PfnRange {
    pub start: u64,
    pub end: u64,
}

const _: () = assert!(size_of::<PfnRange>() == 16);

/// Per-CPU loss accounting (index 0 of the `DROPS` per-CPU array).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropStats {
    /// Events that could not be reserved in the ring buffer.
    pub dropped: u64,
    /// Timestamp of the first drop.
    pub first_ts: u64,
    /// Timestamp of the latest drop.
    pub last_ts: u64,
    /// Sequence number of the latest dropped event.
    pub last_seq: u64,
}

const _: () = assert!(size_of::<DropStats>() == 32);

/// Arguments and the entry refcount saved by an entry probe for its return
/// probe, keyed by [`stash_key`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stash {
    pub args: [u64; STASH_ARGS],
    pub ref_before: i32,
    pub flags: u32,
}

const _: () = assert!(size_of::<Stash>() == 56);

/// Key of a [`Stash`]: the thread and the hook, so nested hooks on one thread
/// do not clobber each other.
pub const fn stash_key(tid: u32, hook: HookId) -> u64 {
    ((tid as u64) << 8) | hook as u64
}

/// GUP reference bias of one FOLL_PIN on a small folio (`GUP_PIN_COUNTING_BIAS`).
pub const GUP_PIN_COUNTING_BIAS: i32 = 1024;

/// PMD order on x86-64 (2 MiB / 4 KiB).
pub const PMD_ORDER: u8 = 9;

/// PUD order on x86-64 (1 GiB / 4 KiB): device-dax with `align=1G`.
pub const PUD_ORDER: u8 = 18;

/// `pfn_t` flag bits (pre-6.17 kernels): the pfn is the low 52 bits.
pub mod pfn_t {
    pub const PFN_SG_CHAIN: u64 = 1 << 63;
    pub const PFN_SG_LAST: u64 = 1 << 62;
    pub const PFN_DEV: u64 = 1 << 61;
    pub const PFN_MAP: u64 = 1 << 60;
    pub const PFN_SPECIAL: u64 = 1 << 59;
    pub const FLAGS_MASK: u64 = 0xfff << 52;
}

#[cfg(feature = "user")]
mod user {
    // SAFETY (all impls): `#[repr(C)]`, `Copy`, no implicit padding (checked by
    // the size assertions above), every bit pattern valid.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::PfnRange {}
    unsafe impl aya::Pod for super::DropStats {}
    unsafe impl aya::Pod for super::Stash {}
    unsafe impl aya::Pod for super::SnapTask {}
    unsafe impl aya::Pod for super::SnapBatch {}
    unsafe impl aya::Pod for super::PtWalk {}
}

#[cfg(test)]
mod tests {
    use core::mem::offset_of;

    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_name(kind.as_str()), Some(*kind));
            assert_eq!(EventKind::from_raw(*kind as u8), Some(*kind));
        }
        for hook in HookId::ALL {
            assert_eq!(HookId::from_name(hook.as_str()), Some(*hook));
            assert_eq!(HookId::from_raw(*hook as u8), Some(*hook));
        }
        assert_eq!(EventKind::from_raw(0), None);
        assert_eq!(HookId::from_raw(0), None);
    }

    #[test]
    fn wire_layout_is_the_documented_one() {
        // docs/trace-format.md documents these offsets for people decoding the
        // ring buffer by hand (bpftool map dump); keep them in sync.
        use wire::*;
        assert_eq!(offset_of!(Head, version), 0);
        assert_eq!(offset_of!(Head, kind), 1);
        assert_eq!(offset_of!(Head, hook), 2);
        assert_eq!(offset_of!(Head, order), 3);
        assert_eq!(offset_of!(Head, flags), 4);
        assert_eq!(offset_of!(Head, cpu), 6);
        assert_eq!(offset_of!(Head, seq), 8);
        assert_eq!(offset_of!(Head, tid), 12);
        assert_eq!(offset_of!(Head, ts_ns), 16);
        assert_eq!(offset_of!(TaskRec, tgid), 24);
        assert_eq!(offset_of!(TaskRec, mm), 32);
        assert_eq!(offset_of!(TaskRec, comm), 40);
        assert_eq!(offset_of!(StackRec, key), 24);
        assert_eq!(offset_of!(StackRec, frames), 32);
        assert_eq!(offset_of!(MapRec, ret), 24);
        assert_eq!(offset_of!(MapRec, mm), 32);
        assert_eq!(offset_of!(MapRec, pfn), 48);
        assert_eq!(offset_of!(GupRec, refs), 32);
        assert_eq!(offset_of!(GupRec, pfn), 40);
        assert_eq!(offset_of!(GupRec, stack), 56);
        assert_eq!(offset_of!(RangeRec, mm), 32);
        assert_eq!(offset_of!(RangeRec, aux), 56);
        assert_eq!(offset_of!(WideRec, comm), 40);
        assert_eq!(offset_of!(WideRec, pfn), 80);
        assert_eq!(offset_of!(WideRec, aux), 128);
    }

    /// A model of 7.3's `move_page_tables` bookkeeping on `pmc`
    /// (mm/mremap.c: `try_realign_addr`, `pmc_next`, `pmc_progress`): the
    /// fields at return and the return value, moving `[old, old + len)` to
    /// `new`, realigning when asked, stopping after `steps` steps if given.
    fn model(old: u64, new: u64, len: u64, realign: bool, steps: Option<u32>) -> ([u64; 4], u64) {
        const PMD: u64 = 2 << 20;
        let (mut old_addr, mut new_addr, old_end, len_in) = (old, new, old + len, len);
        if realign {
            assert_eq!(
                old % PMD,
                new % PMD,
                "the kernel realigns only mutually aligned ranges"
            );
            old_addr &= !(PMD - 1);
            new_addr &= !(PMD - 1);
        }
        let mut n = 0;
        while old_addr < old_end && steps.is_none_or(|s| n < s) {
            let next = (old_addr + PMD) & !(PMD - 1);
            let extent = next.min(old_end) - old_addr;
            old_addr += extent;
            new_addr += extent;
            n += 1;
        }
        let orig = old_end - len_in;
        let ret = old_addr.saturating_sub(orig);
        ([old_addr, new_addr, old_end, len_in], ret)
    }

    #[test]
    fn move_page_tables_caller_addresses_come_back_exactly() {
        let page = 4096;
        let (old, new) = (0x7f00_001f_c000, 0x7f00_005f_c000);
        for (len, realign, steps) in [
            (8 * page, false, None),
            (8 * page, true, None),
            // A realigned move that stops after its first PMD, and one
            // that stops before moving anything of the caller's range.
            (600 * page, true, Some(1)),
            (600 * page, true, Some(0)),
            (page, false, None),
        ] {
            let ([oa, na, oe, li], ret) = model(old, new, len, realign, steps);
            assert_eq!(
                pmc_caller_addrs(oa, na, oe, li),
                (old, new),
                "{len} {realign} {steps:?}"
            );
            if steps.is_none() {
                // What refscope used to report: the end of the range.
                assert_eq!((oa, na, ret), (old + len, new + len, len));
            }
        }
        // Untouched fields (hugetlb or empty early return) give themselves.
        assert_eq!(pmc_caller_addrs(old, new, old + page, page), (old, new));
    }

    #[test]
    fn stash_keys_differ_per_hook_and_thread() {
        assert_ne!(
            stash_key(1, HookId::TryGrabFolio),
            stash_key(1, HookId::GupPutFolio)
        );
        assert_ne!(
            stash_key(1, HookId::TryGrabFolio),
            stash_key(2, HookId::TryGrabFolio)
        );
    }
}
