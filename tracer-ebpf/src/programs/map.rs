//! Programs of the map hooks: a PTE, PMD or PUD installed.

use super::super::*;

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
