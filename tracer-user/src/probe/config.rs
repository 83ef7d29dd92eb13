//! What the eBPF programs need to know about this kernel, read from its BTF
//! and symbol table: struct offsets (rustc emits no CO-RE relocations, so
//! nothing is compiled in), GUP flag values, the refcount model.

use refscope_common::{ABI_VERSION, COMM_LEN, Config, MAX_PIDS};
use refscope_core::model::{GupFlagBits, RefcountModel};
use thiserror::Error;

use crate::{
    btf::{Btf, BtfError, ValueKind},
    kernel::Kallsyms,
};

/// `__PAGE_OFFSET_BASE_L4`: the direct map without KASLR of the layout.
pub const PAGE_OFFSET_BASE_L4: u64 = 0xffff_8880_0000_0000;

/// `__VMEMMAP_BASE_L4` (arch/x86/include/asm/pgtable_64_types.h).
pub const VMEMMAP_BASE_L4: u64 = 0xffff_ea00_0000_0000;

/// Whether the compound word, `_refcount` (4 bytes) and `pgmap` all lie in
/// the first 64 bytes of `struct page`, 8-byte words aligned, so the
/// programs read them with one read (`Config::page_words`).
fn page_words(c: &Config) -> bool {
    c.page_compound_off.is_multiple_of(8)
        && c.page_pgmap_off.is_multiple_of(8)
        && c.page_refcount_off.is_multiple_of(4)
        && c.page_compound_off + 8 <= 64
        && c.page_pgmap_off + 8 <= 64
        && c.page_refcount_off + 4 <= 64
}

/// Why the programs cannot be configured for this kernel.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A struct or member refscope reads is missing from BTF.
    #[error("this kernel's BTF lacks what refscope reads: {0}")]
    Btf(#[from] BtfError),
    /// Neither `vmemmap_base` nor a usable symbol table.
    #[error(
        "/proc/kallsyms has neither `vmemmap_base` nor kernel text symbols: refscope supports x86-64 kernels with SPARSEMEM_VMEMMAP"
    )]
    NoVmemmapBase,
    /// kallsyms shows zero addresses.
    #[error(
        "/proc/kallsyms shows zero addresses (kernel.kptr_restrict, or not root): run refscope as root, and if it is root, `sysctl kernel.kptr_restrict=1`"
    )]
    AddressesHidden,
    /// More pids than the in-kernel filter holds.
    #[error("at most {MAX_PIDS} pids can be filtered in the kernel (got {0})")]
    TooManyPids(usize),
}

/// The refcount model, and why we believe it.
pub fn refcount_model(btf: &Btf) -> (RefcountModel, String) {
    if btf.func("vmf_insert_page_mkwrite").is_some() {
        return (
            RefcountModel::Refcounted,
            "BTF has vmf_insert_page_mkwrite: FS-DAX pages are refcounted per mapping (Linux 6.15+)".into(),
        );
    }
    for f in [
        "__put_devmap_managed_page_refs",
        "__put_devmap_managed_folio_refs",
    ] {
        if btf.func(f).is_some() {
            return (
                RefcountModel::IdleOne,
                format!(
                    "BTF has {f}: idle FS-DAX pages have _refcount 1 and mappings take no reference (before 6.15)"
                ),
            );
        }
    }
    // No devmap put path and no page-based DAX insert: assume the modern model.
    (
        RefcountModel::Refcounted,
        "neither vmf_insert_page_mkwrite nor __put_devmap_managed_*_refs in BTF: assuming the 6.15+ model".into(),
    )
}

/// GUP flag values: enumerators in 6.2+ BTF, `#define`s (6.1 values) before.
pub fn gup_flags(btf: &Btf) -> GupFlagBits {
    let d = GupFlagBits::default();
    let get = |name: &str, fallback: u64| btf.enum_value(name).map_or(fallback, |v| v as u64);
    // All-or-nothing: mixing enum values with 6.1 defines would be wrong.
    if btf.enum_value("FOLL_PIN").is_none() {
        return d;
    }
    GupFlagBits {
        foll_write: get("FOLL_WRITE", d.foll_write),
        foll_get: get("FOLL_GET", d.foll_get),
        foll_pin: get("FOLL_PIN", d.foll_pin),
        foll_longterm: get("FOLL_LONGTERM", d.foll_longterm),
        pin_bias: d.pin_bias,
    }
}

/// The `vm_flags` bits that make fork copy a VMA's page table even when it
/// has no anon_vma (`vma_needs_copy` in mm/memory.c, tested on the child's
/// VMA): 6.1 and 6.12 copy for uffd-wp (`userfaultfd_wp(dst_vma)`) and for
/// `VM_HUGETLB | VM_PFNMAP | VM_MIXEDMAP`, x86-64 `#define`s invisible to
/// BTF; 7.x tests `VM_COPY_ON_FORK`, which adds guard regions
/// (`VM_MAYBE_GUARD`) and uffd read-write protection, with the bits numbered
/// in an enum that BTF has. All-or-nothing, as for the FOLL_* bits.
pub fn copy_on_fork_mask(btf: &Btf) -> u64 {
    const VM_PFNMAP: u64 = 0x400;
    const VM_UFFD_WP: u64 = 0x1000;
    const VM_HUGETLB: u64 = 0x40_0000;
    const VM_MIXEDMAP: u64 = 0x1000_0000;
    if btf.enum_value("VMA_PFNMAP_BIT").is_none() {
        return VM_PFNMAP | VM_UFFD_WP | VM_HUGETLB | VM_MIXEDMAP;
    }
    [
        "VMA_PFNMAP_BIT",
        "VMA_MIXEDMAP_BIT",
        "VMA_UFFD_WP_BIT",
        "VMA_MAYBE_GUARD_BIT",
        "VMA_UFFD_RWP_BIT",
        "VMA_HUGETLB_BIT",
    ]
    .iter()
    .filter_map(|name| btf.enum_value(name))
    .filter(|bit| (0..64).contains(bit))
    .fold(0, |mask, bit| mask | 1 << bit)
}

/// User choices that end up in the programs' configuration.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    pub pids: Vec<u32>,
    pub comm: Option<String>,
    pub gup_stacks: bool,
}

/// The first of `paths` that `struct_name` has.
fn first_member(btf: &Btf, struct_name: &str, paths: &[&str]) -> Result<u32, BtfError> {
    let mut last = None;
    for p in paths {
        match btf.member_offset(struct_name, p) {
            Ok(off) => return Ok(off),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| BtfError::NoStruct(struct_name.into())))
}

/// Build the programs' configuration.
pub fn build(btf: &Btf, kallsyms: &Kallsyms, f: &Filters) -> Result<Config, ConfigError> {
    let mut c = Config::zeroed();
    c.abi_version = u32::from(ABI_VERSION);
    c.struct_page_size = btf
        .struct_size("page")
        .ok_or_else(|| BtfError::NoStruct("page".into()))?;
    c.page_refcount_off = btf.member_offset("page", "_refcount")?;
    // 7.x moved the ZONE_DEVICE pgmap pointer from struct page to struct folio.
    c.page_pgmap_off = match btf.member_offset("page", "pgmap") {
        Ok(off) => off,
        Err(_) => btf.member_offset("folio", "pgmap")?,
    };
    match btf.member_offset("page", "compound_info") {
        Ok(off) => {
            c.page_compound_off = off;
            c.compound_is_mask = 1;
        }
        Err(_) => c.page_compound_off = btf.member_offset("page", "compound_head")?,
    }
    c.page_words = page_words(&c).into();
    c.vma_mm_off = btf.member_offset("vm_area_struct", "vm_mm")?;
    c.vmf_vma_off = btf.member_offset("vm_fault", "vma")?;
    c.vmf_address_off = btf.member_offset("vm_fault", "address")?;
    c.task_mm_off = btf.member_offset("task_struct", "mm")?;
    c.task_tgid_off = btf.member_offset("task_struct", "tgid")?;
    c.task_pid_off = btf.member_offset("task_struct", "pid")?;
    c.mm_pgd_off = btf.member_offset("mm_struct", "pgd")?;
    c.vma_file_off = btf.member_offset("vm_area_struct", "vm_file")?;
    c.file_inode_off = btf.member_offset("file", "f_inode")?;
    c.inode_flags_off = btf.member_offset("inode", "i_flags")?;
    c.pgmap_type_off = btf.member_offset("dev_pagemap", "type")?;
    c.pgmap_nr_range_off = btf.member_offset("dev_pagemap", "nr_range")?;
    c.pgmap_range_off = first_member(btf, "dev_pagemap", &["range", "ranges"])?;
    c.try_grab_folio_returns_ptr =
        btf.func("try_grab_folio")
            .is_some_and(|f| matches!(f.ret, ValueKind::Ptr(_))) as u32;
    c.stack_on_gup = u32::from(f.gup_stacks);
    let gup = gup_flags(btf);
    c.foll_pin = gup.foll_pin as u32;
    c.foll_longterm = gup.foll_longterm as u32;
    c.vma_start_off = btf.member_offset("vm_area_struct", "vm_start")?;
    c.vma_end_off = btf.member_offset("vm_area_struct", "vm_end")?;
    c.vma_anon_vma_off = btf.member_offset("vm_area_struct", "anon_vma")?;
    c.vma_flags_off = btf.member_offset("vm_area_struct", "vm_flags")?;
    c.copy_on_fork_mask = copy_on_fork_mask(btf);
    // 7.x: move_page_tables(struct pagetable_move_control *pmc).
    if btf
        .func("move_page_tables")
        .is_some_and(|f| f.params.len() == 1)
    {
        c.move_pmc = 1;
        c.pmc_old_off = btf.member_offset("pagetable_move_control", "old")?;
        c.pmc_old_addr_off = btf.member_offset("pagetable_move_control", "old_addr")?;
        c.pmc_new_addr_off = btf.member_offset("pagetable_move_control", "new_addr")?;
        // The fields move_page_tables never writes: the caller's addresses
        // are derived from them at return (refscope_common::pmc_caller_addrs).
        c.pmc_old_end_off = btf.member_offset("pagetable_move_control", "old_end")?;
        c.pmc_len_in_off = btf.member_offset("pagetable_move_control", "len_in")?;
    }

    if f.pids.len() > MAX_PIDS {
        return Err(ConfigError::TooManyPids(f.pids.len()));
    }
    c.filter_pid_count = f.pids.len() as u32;
    c.filter_pids[..f.pids.len()].copy_from_slice(&f.pids);
    if let Some(comm) = &f.comm {
        let bytes = comm.as_bytes();
        let n = bytes.len().min(COMM_LEN - 1);
        c.filter_comm[..n].copy_from_slice(&bytes[..n]);
        c.filter_comm_len = n as u32;
    }

    if !kallsyms.addresses_visible() {
        return Err(ConfigError::AddressesHidden);
    }
    match kallsyms.address("vmemmap_base") {
        Some(sym) => c.vmemmap_base_sym = sym,
        // Without CONFIG_DYNAMIC_MEMORY_LAYOUT (no KASLR of the direct map)
        // vmemmap is the fixed 4-level base. 5-level paging always implies
        // a dynamic layout, so it always has the variable.
        None if kallsyms.has_function("_stext") => c.vmemmap_base_fixed = VMEMMAP_BASE_L4,
        None => return Err(ConfigError::NoVmemmapBase),
    }
    // The attach snapshot's page-table walk (kernels without PAGEMAP_SCAN).
    match kallsyms.address("page_offset_base") {
        Some(sym) => c.page_offset_base_sym = sym,
        None => c.page_offset_fixed = PAGE_OFFSET_BASE_L4,
    }
    c.pgtable_l5_sym = kallsyms.address("__pgtable_l5_enabled").unwrap_or(0);
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btf::testing::fixture;

    fn kallsyms() -> Kallsyms {
        Kallsyms::parse("ffffffff82415730 D vmemmap_base\nffffffff81000000 T _stext\n")
    }

    #[test]
    fn offsets_per_kernel() {
        for (k, pgmap, compound_mask, grab_ptr, model) in [
            ("6.1", 8, 0, 1, RefcountModel::IdleOne),
            ("6.12", 8, 0, 0, RefcountModel::IdleOne),
            ("7.3", 8, 1, 0, RefcountModel::Refcounted),
        ] {
            let btf = fixture(k);
            let c = build(&btf, &kallsyms(), &Filters::default()).unwrap();
            assert_eq!(c.struct_page_size, 64, "{k}");
            assert_eq!(c.page_refcount_off, 52, "{k}");
            assert_eq!(c.page_pgmap_off, pgmap, "{k}");
            assert_eq!(c.page_compound_off, 8, "{k}");
            assert_eq!(c.page_words, 1, "{k}: one read of the first 64 bytes");
            assert_eq!(c.task_pid_off + 4, c.task_tgid_off, "{k}: pid, then tgid");
            assert!(c.mm_pgd_off > 0, "{k}");
            assert_eq!(c.page_offset_fixed, PAGE_OFFSET_BASE_L4, "{k}");
            assert_eq!(c.compound_is_mask, compound_mask, "{k}");
            assert_eq!(c.vma_mm_off, 16, "{k}");
            assert_eq!(c.vmf_vma_off, 0, "{k}");
            assert_eq!(c.vmf_address_off, 24, "{k}");
            assert_eq!(c.try_grab_folio_returns_ptr, grab_ptr, "{k}");
            assert_eq!(c.vmemmap_base_sym, 0xffffffff82415730);
            assert_eq!(refcount_model(&btf).0, model, "{k}");
        }
        // Offsets that moved between releases.
        let c61 = build(&fixture("6.1"), &kallsyms(), &Filters::default()).unwrap();
        let c612 = build(&fixture("6.12"), &kallsyms(), &Filters::default()).unwrap();
        let c73 = build(&fixture("7.3"), &kallsyms(), &Filters::default()).unwrap();
        assert_eq!(
            (c61.task_mm_off, c612.task_mm_off, c73.task_mm_off),
            (2272, 2304, 2744)
        );
        assert_eq!(
            (c61.pgmap_type_off, c612.pgmap_type_off, c73.pgmap_type_off),
            (96, 104, 96)
        );
        assert_eq!(
            (
                c61.pgmap_range_off,
                c612.pgmap_range_off,
                c73.pgmap_range_off
            ),
            (136, 144, 136)
        );
        assert_eq!((c61.move_pmc, c612.move_pmc, c73.move_pmc), (0, 0, 1));
        assert_eq!(
            (
                c73.pmc_old_off,
                c73.pmc_old_addr_off,
                c73.pmc_old_end_off,
                c73.pmc_new_addr_off,
                c73.pmc_len_in_off
            ),
            (0, 16, 24, 32, 40)
        );
        for c in [&c61, &c612] {
            // 6.x passes plain arguments: no pmc offset is used there.
            assert_eq!((c.pmc_old_end_off, c.pmc_len_in_off), (0, 0));
        }
        for c in [&c61, &c612, &c73] {
            assert_eq!((c.vma_start_off, c.vma_end_off), (0, 8));
            assert_ne!(c.vma_anon_vma_off, 0);
        }
        assert_eq!((c61.foll_pin, c61.foll_longterm), (0x40000, 0x10000));
        assert_eq!((c73.foll_pin, c73.foll_longterm), (0x80000, 0x100));
    }

    #[test]
    fn gup_flags_follow_the_kernel() {
        let f61 = gup_flags(&fixture("6.1"));
        assert_eq!(
            (f61.foll_get, f61.foll_pin, f61.foll_longterm),
            (0x4, 0x40000, 0x10000)
        );
        for k in ["6.12", "7.3"] {
            let f = gup_flags(&fixture(k));
            assert_eq!(
                (f.foll_get, f.foll_pin, f.foll_longterm),
                (0x2, 0x80000, 0x100),
                "{k}"
            );
        }
    }

    #[test]
    fn fork_copies_page_tables_for_the_flags_each_kernel_names() {
        // 6.x: x86-64 #defines (uffd-wp, hugetlb, pfnmap, mixedmap).
        for k in ["6.1", "6.12"] {
            assert_eq!(copy_on_fork_mask(&fixture(k)), 0x1040_1400, "{k}");
        }
        // 7.3: VM_COPY_ON_FORK's bits from the VMA_*_BIT enum: PFNMAP 10,
        // MAYBE_GUARD 11, UFFD_WP 12, MIXEDMAP 28, UFFD_RWP 43.
        let m = copy_on_fork_mask(&fixture("7.3"));
        for bit in [10, 11, 12, 28, 43] {
            assert_ne!(m & 1 << bit, 0, "bit {bit} of {m:#x}");
        }
        assert_eq!(m & 1, 0, "VM_READ is not one");
        for k in ["6.1", "6.12", "7.3"] {
            let c = build(
                &fixture(k),
                &Kallsyms::parse("ffffffff81000000 T _stext\n"),
                &Filters::default(),
            )
            .unwrap();
            assert_eq!(c.vma_flags_off, 32, "{k}");
            assert_eq!(c.copy_on_fork_mask, copy_on_fork_mask(&fixture(k)));
        }
    }

    #[test]
    fn hidden_kallsyms_and_pid_limits_are_errors() {
        let btf = fixture("6.12");
        let fixed = Kallsyms::parse("ffffffff81000000 T _stext\n");
        let c = build(&btf, &fixed, &Filters::default()).unwrap();
        assert_eq!(
            (c.vmemmap_base_sym, c.vmemmap_base_fixed),
            (0, VMEMMAP_BASE_L4)
        );
        let hidden = Kallsyms::parse("0000000000000000 D vmemmap_base\n");
        let err = build(&btf, &hidden, &Filters::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("kptr_restrict"), "{err}");
        let f = Filters {
            pids: (0..9).collect(),
            ..Filters::default()
        };
        assert!(matches!(
            build(&btf, &kallsyms(), &f),
            Err(ConfigError::TooManyPids(9))
        ));
        let f = Filters {
            pids: vec![7, 8],
            comm: Some("workload".into()),
            gup_stacks: true,
        };
        let c = build(&btf, &kallsyms(), &f).unwrap();
        assert_eq!(c.filter_pid_count, 2);
        assert_eq!(&c.filter_comm[..8], b"workload");
        assert_eq!(c.stack_on_gup, 1);
    }
}
