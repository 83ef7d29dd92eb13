//! refscope's eBPF programs.
//!
//! For every hooked kernel function there is an fentry/fexit pair and a
//! kprobe/kretprobe pair running the same logic (`hooks.rs`); userspace picks
//! one attach type per function at start-up, from what the running kernel
//! offers. Program names are `<function without leading underscores>_<type>`,
//! e.g. `insert_pfn_fexit`. The names, kinds and arities are declared once,
//! in `refscope_common::hooks`, and every program here is checked against
//! that table at compile time (`check!`), every map against its names
//! (`abi_name!`).
#![no_std]
#![no_main]

/// Compile time: the item `$name` (a map's static, whose name is the map's
/// name in the object, or a program) has the name the ABI declares.
macro_rules! abi_name {
    ($name:ident, $abi:path) => {
        const _: () = assert!(
            refscope_common::hooks::str_eq(stringify!($name), $abi),
            concat!(
                stringify!($name),
                ": not the name refscope_common declares for it"
            )
        );
    };
}

mod emit;
mod hooks;
mod kernel;
mod snapshot;

use aya_ebpf::{EbpfContext, helpers::generated::bpf_get_func_arg};
use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use hooks::{
    Addr, Args, GrabRet, GrabSpec, MapSpec, PutFlags, PutSpec, Refs, Ret, Target, UnmapSpec, Write,
};
use refscope_common::{EventKind, HookId, PMD_ORDER, PUD_ORDER, Prog, STASH_ARGS};

/// The first `N` arguments of an fentry/fexit program, as plain integers.
///
/// Read with `bpf_get_func_arg` (5.17+) rather than from the context: a
/// context read of a `struct page *` argument yields a typed BTF pointer,
/// on which the verifier forbids the arithmetic pfn conversion needs (and
/// storing it in a map), while the helper hands back a scalar. It also
/// checks the index at run time, so functions whose arity differs between
/// kernels can share a program (`N` = the largest arity).
#[inline(always)]
fn args<C: EbpfContext, const N: usize>(ctx: &C) -> Args {
    let mut a: Args = [0; STASH_ARGS];
    let mut i = 0;
    while i < N && i < STASH_ARGS {
        let mut v = 0u64;
        // SAFETY: the helper writes one u64 to `v` or fails.
        if unsafe { bpf_get_func_arg(ctx.as_ptr(), i as u32, &mut v) } == 0 {
            a[i] = v;
        }
        i += 1;
    }
    a
}

#[inline(always)]
fn kprobe_args(ctx: &ProbeContext) -> Args {
    let mut a: Args = [0; STASH_ARGS];
    let mut i = 0;
    while i < STASH_ARGS {
        a[i] = ctx.arg(i).unwrap_or(0);
        i += 1;
    }
    a
}

/// Compile time: program `$name` of kind `$prog`, reading `$n` arguments
/// (`None`: a kprobe's registers), is what the ABI's hook table declares
/// for `$hook` (name, kind, arity; see `refscope_common::hooks::expects`).
macro_rules! check {
    ($hook:expr, $prog:ident, $n:expr, $name:ident) => {
        const _: () = assert!(
            refscope_common::hooks::expects($hook, Prog::$prog, $n, stringify!($name)),
            concat!(
                stringify!($name),
                ": not what refscope_common::HOOKS declares for its hook"
            )
        );
    };
}

/// A map hook: fexit alone in fentry mode; kprobe + kretprobe otherwise.
macro_rules! map_hook {
    ($spec:expr, $n:literal, $fexit:ident, $kprobe:ident, $kretprobe:ident) => {
        check!($spec.hook, Fexit, Some($n), $fexit);
        check!($spec.hook, Kprobe, None, $kprobe);
        check!($spec.hook, Kretprobe, None, $kretprobe);
        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            let a = args::<_, $n>(&ctx);
            hooks::map_exit(&$spec, Some(&a), ctx.ret::<u64>().ok(), false);
            0
        }
        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            hooks::map_entry(&$spec, &kprobe_args(&ctx));
            0
        }
        #[kretprobe]
        pub fn $kretprobe(ctx: RetProbeContext) -> u32 {
            hooks::map_exit(&$spec, None, Some(ctx.ret::<u64>()), true);
            0
        }
    };
}

/// A hook with both halves in either mode: `$entry(&spec, &args)` and
/// `$exit(spec, args, ret, kprobe)`.
macro_rules! grab_hook {
    ($spec:expr, $n:literal, $fentry:ident, $fexit:ident, $kprobe:ident, $kretprobe:ident) => {
        check!($spec.hook, Fentry, Some($n), $fentry);
        check!($spec.hook, Fexit, Some($n), $fexit);
        check!($spec.hook, Kprobe, None, $kprobe);
        check!($spec.hook, Kretprobe, None, $kretprobe);
        #[fentry]
        pub fn $fentry(ctx: FEntryContext) -> u32 {
            hooks::grab_entry(&$spec, &args::<_, $n>(&ctx));
            0
        }
        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            let a = args::<_, $n>(&ctx);
            let ret = ctx.ret::<u64>().unwrap_or(0);
            hooks::grab_exit(&ctx, &$spec, Some(&a), ret, false);
            0
        }
        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            hooks::grab_entry(&$spec, &kprobe_args(&ctx));
            0
        }
        #[kretprobe]
        pub fn $kretprobe(ctx: RetProbeContext) -> u32 {
            let ret = ctx.ret::<u64>();
            hooks::grab_exit(&ctx, &$spec, None, ret, true);
            0
        }
    };
}

macro_rules! put_hook {
    ($spec:expr, $n:literal, $fentry:ident, $fexit:ident, $kprobe:ident, $kretprobe:ident) => {
        check!($spec.hook, Fentry, Some($n), $fentry);
        check!($spec.hook, Fexit, Some($n), $fexit);
        check!($spec.hook, Kprobe, None, $kprobe);
        check!($spec.hook, Kretprobe, None, $kretprobe);
        #[fentry]
        pub fn $fentry(ctx: FEntryContext) -> u32 {
            hooks::put_entry(&$spec, &args::<_, $n>(&ctx));
            0
        }
        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            let a = args::<_, $n>(&ctx);
            hooks::put_exit(&$spec, Some(&a), ctx.ret::<u64>().ok(), false);
            0
        }
        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            hooks::put_entry(&$spec, &kprobe_args(&ctx));
            0
        }
        #[kretprobe]
        pub fn $kretprobe(ctx: RetProbeContext) -> u32 {
            hooks::put_exit(&$spec, None, Some(ctx.ret::<u64>()), true);
            0
        }
    };
}

/// Entry programs of `$hook`: `$body(args, kprobe)`.
macro_rules! entry_hook {
    ($hook:expr, $n:literal, $fentry:ident, $kprobe:ident, |$a:ident, $k:ident| $body:expr) => {
        check!($hook, Fentry, Some($n), $fentry);
        check!($hook, Kprobe, None, $kprobe);
        #[fentry]
        pub fn $fentry(ctx: FEntryContext) -> u32 {
            let $a = args::<_, $n>(&ctx);
            let $k = false;
            $body;
            0
        }
        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            let $a = kprobe_args(&ctx);
            let $k = true;
            $body;
            0
        }
    };
}

// ----------------------------------------------------------------- map PTE --

// 6.x: insert_pfn(vma, addr, pfn_t pfn, pgprot_t prot, bool mkwrite) -> vm_fault_t
// 7.x: insert_pfn(vma, addr, unsigned long pfn, pgprot_t prot, bool mkwrite)
const INSERT_PFN: MapSpec = MapSpec {
    hook: HookId::InsertPfn,
    addr: Addr::VmaAddr,
    target: Target::Pfn(2),
    ret: Ret::VmFault,
    write: Write::Arg(4),
    order: 0,
};
map_hook!(
    INSERT_PFN,
    5,
    insert_pfn_fexit,
    insert_pfn_kprobe,
    insert_pfn_kretprobe
);

// vmf_insert_mixed(vma, addr, pfn_t|ulong pfn) -> vm_fault_t
const VMF_INSERT_MIXED: MapSpec = MapSpec {
    hook: HookId::VmfInsertMixed,
    addr: Addr::VmaAddr,
    target: Target::Pfn(2),
    ret: Ret::VmFault,
    write: Write::Never,
    order: 0,
};
map_hook!(
    VMF_INSERT_MIXED,
    3,
    vmf_insert_mixed_fexit,
    vmf_insert_mixed_kprobe,
    vmf_insert_mixed_kretprobe
);

// vmf_insert_mixed_mkwrite(vma, addr, pfn_t|ulong pfn) -> vm_fault_t
const VMF_INSERT_MIXED_MKWRITE: MapSpec = MapSpec {
    hook: HookId::VmfInsertMixedMkwrite,
    write: Write::Always,
    ..VMF_INSERT_MIXED
};
map_hook!(
    VMF_INSERT_MIXED_MKWRITE,
    3,
    vmf_insert_mixed_mkwrite_fexit,
    vmf_insert_mixed_mkwrite_kprobe,
    vmf_insert_mixed_mkwrite_kretprobe
);

// 7.x: insert_page(vma, addr, struct page *page, pgprot_t prot, bool mkwrite) -> int
const INSERT_PAGE: MapSpec = MapSpec {
    hook: HookId::InsertPage,
    addr: Addr::VmaAddr,
    target: Target::Page(2),
    ret: Ret::Int,
    write: Write::Arg(4),
    order: 0,
};
map_hook!(
    INSERT_PAGE,
    5,
    insert_page_fexit,
    insert_page_kprobe,
    insert_page_kretprobe
);

// 7.x: vmf_insert_page_mkwrite(vmf, struct page *page, bool write) -> vm_fault_t
const VMF_INSERT_PAGE_MKWRITE: MapSpec = MapSpec {
    hook: HookId::VmfInsertPageMkwrite,
    addr: Addr::Vmf,
    target: Target::Page(1),
    ret: Ret::VmFault,
    write: Write::Arg(2),
    order: 0,
};
map_hook!(
    VMF_INSERT_PAGE_MKWRITE,
    3,
    vmf_insert_page_mkwrite_fexit,
    vmf_insert_page_mkwrite_kprobe,
    vmf_insert_page_mkwrite_kretprobe
);

// vm_insert_page(vma, addr, struct page *page) -> int (drivers)
const VM_INSERT_PAGE: MapSpec = MapSpec {
    hook: HookId::VmInsertPage,
    addr: Addr::VmaAddr,
    target: Target::Page(2),
    ret: Ret::Int,
    write: Write::Never,
    order: 0,
};
map_hook!(
    VM_INSERT_PAGE,
    3,
    vm_insert_page_fexit,
    vm_insert_page_kprobe,
    vm_insert_page_kretprobe
);

// ----------------------------------------------------------------- map PMD --

// 6.1: vmf_insert_pfn_pmd_prot(vmf, pfn_t pfn, pgprot_t pgprot, bool write) -> vm_fault_t
const VMF_INSERT_PFN_PMD_PROT: MapSpec = MapSpec {
    hook: HookId::VmfInsertPfnPmdProt,
    addr: Addr::Vmf,
    target: Target::Pfn(1),
    ret: Ret::VmFault,
    write: Write::Arg(3),
    order: PMD_ORDER,
};
map_hook!(
    VMF_INSERT_PFN_PMD_PROT,
    4,
    vmf_insert_pfn_pmd_prot_fexit,
    vmf_insert_pfn_pmd_prot_kprobe,
    vmf_insert_pfn_pmd_prot_kretprobe
);

// 6.12: vmf_insert_pfn_pmd(vmf, pfn_t pfn, bool write) -> vm_fault_t
const VMF_INSERT_PFN_PMD: MapSpec = MapSpec {
    hook: HookId::VmfInsertPfnPmd,
    write: Write::Arg(2),
    ..VMF_INSERT_PFN_PMD_PROT
};
map_hook!(
    VMF_INSERT_PFN_PMD,
    3,
    vmf_insert_pfn_pmd_fexit,
    vmf_insert_pfn_pmd_kprobe,
    vmf_insert_pfn_pmd_kretprobe
);

// 7.x: vmf_insert_folio_pmd(vmf, struct folio *folio, bool write) -> vm_fault_t
const VMF_INSERT_FOLIO_PMD: MapSpec = MapSpec {
    hook: HookId::VmfInsertFolioPmd,
    addr: Addr::Vmf,
    target: Target::Page(1),
    ret: Ret::VmFault,
    write: Write::Arg(2),
    order: PMD_ORDER,
};
map_hook!(
    VMF_INSERT_FOLIO_PMD,
    3,
    vmf_insert_folio_pmd_fexit,
    vmf_insert_folio_pmd_kprobe,
    vmf_insert_folio_pmd_kretprobe
);

// ----------------------------------------------------------------- map PUD --
// device-dax with align=1G (`__dev_dax_pud_fault`); FS-DAX never maps PUDs.

// 6.1: vmf_insert_pfn_pud_prot(vmf, pfn_t pfn, pgprot_t pgprot, bool write) -> vm_fault_t
const VMF_INSERT_PFN_PUD_PROT: MapSpec = MapSpec {
    hook: HookId::VmfInsertPfnPudProt,
    order: PUD_ORDER,
    ..VMF_INSERT_PFN_PMD_PROT
};
map_hook!(
    VMF_INSERT_PFN_PUD_PROT,
    4,
    vmf_insert_pfn_pud_prot_fexit,
    vmf_insert_pfn_pud_prot_kprobe,
    vmf_insert_pfn_pud_prot_kretprobe
);

// 6.12: vmf_insert_pfn_pud(vmf, pfn_t pfn, bool write) -> vm_fault_t
const VMF_INSERT_PFN_PUD: MapSpec = MapSpec {
    hook: HookId::VmfInsertPfnPud,
    order: PUD_ORDER,
    ..VMF_INSERT_PFN_PMD
};
map_hook!(
    VMF_INSERT_PFN_PUD,
    3,
    vmf_insert_pfn_pud_fexit,
    vmf_insert_pfn_pud_kprobe,
    vmf_insert_pfn_pud_kretprobe
);

// 7.x: vmf_insert_folio_pud(vmf, struct folio *folio, bool write) -> vm_fault_t
const VMF_INSERT_FOLIO_PUD: MapSpec = MapSpec {
    hook: HookId::VmfInsertFolioPud,
    order: PUD_ORDER,
    ..VMF_INSERT_FOLIO_PMD
};
map_hook!(
    VMF_INSERT_FOLIO_PUD,
    3,
    vmf_insert_folio_pud_fexit,
    vmf_insert_folio_pud_kprobe,
    vmf_insert_folio_pud_kretprobe
);

// --------------------------------------------------------------------- GUP --

// 6.1: try_grab_page(struct page *page, unsigned int flags) -> bool
const TRY_GRAB_PAGE: GrabSpec = GrabSpec {
    hook: HookId::TryGrabPage,
    refs: None,
    flags: 1,
    ret: GrabRet::Bool,
};
grab_hook!(
    TRY_GRAB_PAGE,
    2,
    try_grab_page_fentry,
    try_grab_page_fexit,
    try_grab_page_kprobe,
    try_grab_page_kretprobe
);

// 6.1: try_grab_folio(struct page *page, int refs, unsigned int flags) -> struct folio *
// 6.2+: try_grab_folio(struct folio *folio, int refs, unsigned int flags) -> int
const TRY_GRAB_FOLIO: GrabSpec = GrabSpec {
    hook: HookId::TryGrabFolio,
    refs: Some(1),
    flags: 2,
    ret: GrabRet::PtrOrInt,
};
grab_hook!(
    TRY_GRAB_FOLIO,
    3,
    try_grab_folio_fentry,
    try_grab_folio_fexit,
    try_grab_folio_kprobe,
    try_grab_folio_kretprobe
);

// 6.12+: try_grab_folio_fast(struct page *page, int refs, unsigned int flags) -> struct folio *
const TRY_GRAB_FOLIO_FAST: GrabSpec = GrabSpec {
    hook: HookId::TryGrabFolioFast,
    refs: Some(1),
    flags: 2,
    ret: GrabRet::Ptr,
};
grab_hook!(
    TRY_GRAB_FOLIO_FAST,
    3,
    try_grab_folio_fast_fentry,
    try_grab_folio_fast_fexit,
    try_grab_folio_fast_kprobe,
    try_grab_folio_fast_kretprobe
);

// gup_put_folio(struct folio *folio, int refs, unsigned int flags) -> void
const GUP_PUT_FOLIO: PutSpec = PutSpec {
    hook: HookId::GupPutFolio,
    kind: EventKind::GupPut,
    refs: Refs::Arg(1),
    flags: PutFlags::Arg(2),
    // 6.x unpin_user_page tail-calls gup_put_folio.
    nested_in: &[HookId::UnpinUserPage],
};
put_hook!(
    GUP_PUT_FOLIO,
    3,
    gup_put_folio_fentry,
    gup_put_folio_fexit,
    gup_put_folio_kprobe,
    gup_put_folio_kretprobe
);

// unpin_user_page(struct page *page) -> void: one FOLL_PIN reference. 7.x
// inlines gup_put_folio into it, so gup_put_folio alone misses these.
const UNPIN_USER_PAGE: PutSpec = PutSpec {
    hook: HookId::UnpinUserPage,
    kind: EventKind::GupPut,
    refs: Refs::One,
    flags: PutFlags::FollPin,
    nested_in: &[],
};
put_hook!(
    UNPIN_USER_PAGE,
    1,
    unpin_user_page_fentry,
    unpin_user_page_fexit,
    unpin_user_page_kprobe,
    unpin_user_page_kretprobe
);

// 6.1: __put_devmap_managed_page_refs(struct page *page, int refs) -> bool
const PUT_DEVMAP_PAGE: PutSpec = PutSpec {
    hook: HookId::PutDevmapManagedPageRefs,
    kind: EventKind::RefPut,
    refs: Refs::Arg(1),
    flags: PutFlags::None,
    nested_in: &[HookId::GupPutFolio, HookId::UnpinUserPage],
};
put_hook!(
    PUT_DEVMAP_PAGE,
    2,
    put_devmap_managed_page_refs_fentry,
    put_devmap_managed_page_refs_fexit,
    put_devmap_managed_page_refs_kprobe,
    put_devmap_managed_page_refs_kretprobe
);

// 6.12: __put_devmap_managed_folio_refs(struct folio *folio, int refs) -> bool
const PUT_DEVMAP_FOLIO: PutSpec = PutSpec {
    hook: HookId::PutDevmapManagedFolioRefs,
    ..PUT_DEVMAP_PAGE
};
put_hook!(
    PUT_DEVMAP_FOLIO,
    2,
    put_devmap_managed_folio_refs_fentry,
    put_devmap_managed_folio_refs_fexit,
    put_devmap_managed_folio_refs_kprobe,
    put_devmap_managed_folio_refs_kretprobe
);

// ------------------------------------------------------------------- free --

// free_zone_device_page(struct page *page) (6.1) / free_zone_device_folio(struct folio *folio)
entry_hook!(
    HookId::FreeZoneDevicePage,
    1,
    free_zone_device_page_fentry,
    free_zone_device_page_kprobe,
    |a, k| { hooks::free_entry(HookId::FreeZoneDevicePage, &a, k) }
);
entry_hook!(
    HookId::FreeZoneDeviceFolio,
    1,
    free_zone_device_folio_fentry,
    free_zone_device_folio_kprobe,
    |a, k| { hooks::free_entry(HookId::FreeZoneDeviceFolio, &a, k) }
);

// ------------------------------------------------------------------ unmap --

// 6.x: unmap_page_range(struct mmu_gather *tlb, vma, addr, end, struct zap_details *details)
const UNMAP_PAGE_RANGE: UnmapSpec = UnmapSpec {
    hook: HookId::UnmapPageRange,
    vma: 1,
    start: 2,
    end: 3,
};
entry_hook!(
    HookId::UnmapPageRange,
    5,
    unmap_page_range_fentry,
    unmap_page_range_kprobe,
    |a, k| { hooks::unmap_entry(&UNMAP_PAGE_RANGE, &a, k) }
);

// 7.x: __zap_vma_range(struct mmu_gather *tlb, vma, start, end, struct zap_details *details)
const ZAP_VMA_RANGE: UnmapSpec = UnmapSpec {
    hook: HookId::ZapVmaRange,
    vma: 1,
    start: 2,
    end: 3,
};
entry_hook!(
    HookId::ZapVmaRange,
    5,
    zap_vma_range_fentry,
    zap_vma_range_kprobe,
    |a, k| { hooks::unmap_entry(&ZAP_VMA_RANGE, &a, k) }
);

// __split_huge_pmd(vma, pmd, address, freeze[, folio]): 5 args on 6.x, 4 on 7.x.
check!(
    HookId::SplitHugePmd,
    Fentry,
    Some(STASH_ARGS),
    split_huge_pmd_fentry
);
#[fentry]
pub fn split_huge_pmd_fentry(ctx: FEntryContext) -> u32 {
    hooks::split_huge_entry(
        &args::<_, STASH_ARGS>(&ctx),
        false,
        HookId::SplitHugePmd,
        PMD_ORDER,
    );
    0
}
check!(HookId::SplitHugePmd, Kprobe, None, split_huge_pmd_kprobe);
#[kprobe]
pub fn split_huge_pmd_kprobe(ctx: ProbeContext) -> u32 {
    hooks::split_huge_entry(&kprobe_args(&ctx), true, HookId::SplitHugePmd, PMD_ORDER);
    0
}

// __split_huge_pud(vma, pud, address): a device-dax 1 GiB PUD cleared.
check!(HookId::SplitHugePud, Fentry, Some(3), split_huge_pud_fentry);
#[fentry]
pub fn split_huge_pud_fentry(ctx: FEntryContext) -> u32 {
    hooks::split_huge_entry(&args::<_, 3>(&ctx), false, HookId::SplitHugePud, PUD_ORDER);
    0
}
check!(HookId::SplitHugePud, Kprobe, None, split_huge_pud_kprobe);
#[kprobe]
pub fn split_huge_pud_kprobe(ctx: ProbeContext) -> u32 {
    hooks::split_huge_entry(&kprobe_args(&ctx), true, HookId::SplitHugePud, PUD_ORDER);
    0
}

/// A return-reported hook whose fexit reads all arguments (arity varies).
macro_rules! exit_hook {
    ($hook:expr, $handler:path, $fexit:ident, $kprobe:ident, $kretprobe:ident) => {
        check!($hook, Fexit, Some(STASH_ARGS), $fexit);
        check!($hook, Kprobe, None, $kprobe);
        check!($hook, Kretprobe, None, $kretprobe);
        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            let a = args::<_, STASH_ARGS>(&ctx);
            $handler(Some(&a), ctx.ret::<u64>().unwrap_or(0), false);
            0
        }
        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            hooks::stash_args($hook, &kprobe_args(&ctx));
            0
        }
        #[kretprobe]
        pub fn $kretprobe(ctx: RetProbeContext) -> u32 {
            $handler(None, ctx.ret::<u64>(), true);
            0
        }
    };
}

// move_page_tables: 6.x (vma, old_addr, new_vma, new_addr, len, ...), 7.x (pmc).
exit_hook!(
    HookId::MovePageTables,
    hooks::move_page_tables_exit,
    move_page_tables_fexit,
    move_page_tables_kprobe,
    move_page_tables_kretprobe
);

// copy_page_range(struct vm_area_struct *dst_vma, struct vm_area_struct *src_vma) -> int
exit_hook!(
    HookId::CopyPageRange,
    hooks::copy_page_range_exit,
    copy_page_range_fexit,
    copy_page_range_kprobe,
    copy_page_range_kretprobe
);

// check_vma_flags(struct vm_area_struct *vma, unsigned long gup_flags) -> int
exit_hook!(
    HookId::CheckVmaFlags,
    hooks::check_vma_flags_exit,
    check_vma_flags_fexit,
    check_vma_flags_kprobe,
    check_vma_flags_kretprobe
);

// exit_mmap(struct mm_struct *mm)

entry_hook!(
    HookId::ExitMmap,
    1,
    exit_mmap_fentry,
    exit_mmap_kprobe,
    |a, k| { hooks::exit_mmap_entry(&a, k) }
);

// page_add_new_anon_rmap(page, vma, address) (6.1);
// folio_add_new_anon_rmap(folio, vma, address, flags) (6.12+): copy-on-write.

entry_hook!(
    HookId::PageAddNewAnonRmap,
    3,
    page_add_new_anon_rmap_fentry,
    page_add_new_anon_rmap_kprobe,
    |a, k| { hooks::anon_rmap_entry(&a, HookId::PageAddNewAnonRmap, k) }
);
entry_hook!(
    HookId::FolioAddNewAnonRmap,
    4,
    folio_add_new_anon_rmap_fentry,
    folio_add_new_anon_rmap_kprobe,
    |a, k| { hooks::anon_rmap_entry(&a, HookId::FolioAddNewAnonRmap, k) }
);

// wake_up_new_task(struct task_struct *p)

entry_hook!(
    HookId::WakeUpNewTask,
    1,
    wake_up_new_task_fentry,
    wake_up_new_task_kprobe,
    |a, k| { hooks::wake_up_new_task_entry(&a, k) }
);

// ---------------------------------------------------------------- devices --

// memremap_pages(struct dev_pagemap *pgmap, int nid) -> void *
check!(HookId::MemremapPages, Fexit, Some(2), memremap_pages_fexit);
#[fexit]
pub fn memremap_pages_fexit(ctx: FExitContext) -> u32 {
    let a = args::<_, 2>(&ctx);
    hooks::memremap_exit(Some(&a), ctx.ret::<u64>().unwrap_or(0), false);
    0
}
check!(HookId::MemremapPages, Kprobe, None, memremap_pages_kprobe);
#[kprobe]
pub fn memremap_pages_kprobe(ctx: ProbeContext) -> u32 {
    hooks::stash_args(HookId::MemremapPages, &kprobe_args(&ctx));
    0
}
check!(
    HookId::MemremapPages,
    Kretprobe,
    None,
    memremap_pages_kretprobe
);
#[kretprobe]
pub fn memremap_pages_kretprobe(ctx: RetProbeContext) -> u32 {
    hooks::memremap_exit(None, ctx.ret::<u64>(), true);
    0
}

// memunmap_pages(struct dev_pagemap *pgmap)
entry_hook!(
    HookId::MemunmapPages,
    1,
    memunmap_pages_fentry,
    memunmap_pages_kprobe,
    |a, k| { hooks::memunmap_entry(&a, k) }
);
check!(HookId::MemunmapPages, Fexit, Some(1), memunmap_pages_fexit);
#[fexit]
pub fn memunmap_pages_fexit(ctx: FExitContext) -> u32 {
    let a = args::<_, 1>(&ctx);
    hooks::memunmap_exit(Some(&a), false);
    0
}
check!(
    HookId::MemunmapPages,
    Kretprobe,
    None,
    memunmap_pages_kretprobe
);
#[kretprobe]
pub fn memunmap_pages_kretprobe(_ctx: RetProbeContext) -> u32 {
    hooks::memunmap_exit(None, true);
    0
}

// kill_dax(struct dax_device *dax_dev)
entry_hook!(
    HookId::KillDax,
    1,
    kill_dax_fentry,
    kill_dax_kprobe,
    |a, k| { hooks::dax_entry(HookId::KillDax, EventKind::DaxKill, &a, k) }
);

// dax_holder_notify_failure(struct dax_device *dax_dev, u64 off, u64 len, int mf_flags)
entry_hook!(
    HookId::DaxHolderNotifyFailure,
    4,
    dax_holder_notify_failure_fentry,
    dax_holder_notify_failure_kprobe,
    |a, k| hooks::dax_entry(
        HookId::DaxHolderNotifyFailure,
        EventKind::HolderNotify,
        &a,
        k
    )
);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program with a reachable panic path, so this
    // is never called; it only has to exist for no_std.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
