//! Page tables as the kernel's page-table walker (the `walk_tables`
//! program) hands them over: what one 2 MiB block holds, and which pfn an
//! x86-64 leaf entry maps. Pure; the attach snapshot and the shadow audit
//! both read page tables through it.

use refscope_common::PT_ENTRIES;

const PAGE_SHIFT: u64 = 12;

/// x86-64 page-table entry bits.
const PAGE_PRESENT: u64 = 1 << 0;
/// A PROT_NONE leaf: its pfn bits are stored inverted (L1TF).
pub(crate) const PAGE_PROTNONE: u64 = 1 << 8;
/// Physical address bits of an entry (52-bit physical).
pub(crate) const PFN_MASK: u64 = 0x000f_ffff_ffff_f000;
/// In a huge (PMD) leaf, bit 12 is the PAT bit, not address.
const PAT_LARGE: u64 = 1 << 12;

/// What the page table holds for one 2 MiB block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Block {
    /// A table could not be read: the block is left out of the comparison.
    Unknown,
    /// Nothing mapped.
    None,
    /// A 1 GiB leaf (device-dax); its entry.
    Pud(u64),
    /// A 2 MiB leaf; its entry.
    Pmd(u64),
    /// A page table's 512 entries.
    Ptes(Box<[u64; PT_ENTRIES]>),
}

/// Reads page tables in the kernel (the `walk_tables` program; faked in
/// tests).
pub trait PageTables {
    type Error: std::error::Error + Send + Sync + 'static;
    /// One [`Block`] per 2 MiB-aligned address of address space `mm`,
    /// appended to `out` in order.
    fn walk(&mut self, mm: u64, vas: &[u64], out: &mut Vec<Block>) -> Result<(), Self::Error>;
}

/// The pfn a leaf entry maps, if it maps one (present or PROT_NONE).
pub fn leaf_pfn(e: u64, huge: bool) -> Option<u64> {
    let addr = if e & PAGE_PRESENT != 0 {
        e & PFN_MASK
    } else if e & PAGE_PROTNONE != 0 {
        !e & PFN_MASK
    } else {
        return None;
    };
    let addr = if huge { addr & !PAT_LARGE } else { addr };
    Some(addr >> PAGE_SHIFT)
}
