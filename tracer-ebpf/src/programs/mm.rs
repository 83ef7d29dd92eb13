//! Programs of the hooks on freeing, unmapping, splitting, moving and copying mappings, and address-space teardown.

use super::super::*;

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
