//! What a page's reference count means on a given kernel, and the data
//! the analysis takes besides events: the devices, and what the kernel lost.

use serde::{Deserialize, Serialize};

/// A device memory range (a pgmap) known at start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// e.g. `pfn0.0` (fsdax namespace), `dax0.0` (device-dax).
    pub name: String,
    /// e.g. `fsdax`, `devdax`.
    pub mode: String,
    pub pfn_start: u64,
    /// Exclusive.
    pub pfn_end: u64,
    pub pgmap_type: PgmapType,
}

/// Events the kernel could not deliver (ring buffer full).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loss {
    pub cpu: u32,
    /// Events lost on this CPU in the window.
    pub count: u64,
    /// Monotonic time of the first and last loss in the window.
    pub first_t: u64,
    pub last_t: u64,
}

/// How the kernel counts references to device pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefcountModel {
    /// Before Linux 6.15: an idle FS-DAX (and device-dax) page has
    /// `_refcount == 1`, and PTE/PMD mappings take no reference. A mapped page
    /// at logical zero is the design (the "idle = 1" convention).
    IdleOne,
    /// Linux 6.15 and later: an idle page has `_refcount == 0` and every PTE
    /// or PMD mapping holds a folio reference.
    Refcounted,
}

impl RefcountModel {
    pub fn as_str(self) -> &'static str {
        match self {
            RefcountModel::IdleOne => "idle_one",
            RefcountModel::Refcounted => "refcounted",
        }
    }

    /// A sentence for reports.
    pub fn describe(self) -> &'static str {
        match self {
            RefcountModel::IdleOne => {
                "pre-6.15: idle FS-DAX pages have _refcount 1 and mappings hold no reference"
            }
            RefcountModel::Refcounted => {
                "6.15+: idle pages have _refcount 0 and every mapping holds a reference"
            }
        }
    }
}

/// `enum memory_type` of a `struct dev_pagemap`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PgmapType {
    Private,
    Coherent,
    FsDax,
    Generic,
    PciP2pdma,
    #[default]
    Unknown,
}

impl PgmapType {
    /// From the kernel's `enum memory_type` value. The numbering has been
    /// stable since 5.x: PRIVATE = 1, COHERENT = 2, FS_DAX = 3, GENERIC = 4,
    /// PCI_P2PDMA = 5 (userspace checks it against BTF when it can).
    pub fn from_kernel(v: u64) -> Self {
        match v {
            1 => PgmapType::Private,
            2 => PgmapType::Coherent,
            3 => PgmapType::FsDax,
            4 => PgmapType::Generic,
            5 => PgmapType::PciP2pdma,
            _ => PgmapType::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PgmapType::Private => "private",
            PgmapType::Coherent => "coherent",
            PgmapType::FsDax => "fs_dax",
            PgmapType::Generic => "generic",
            PgmapType::PciP2pdma => "pci_p2pdma",
            PgmapType::Unknown => "unknown",
        }
    }
}

/// `_refcount` of an idle page: what "logically zero" is.
///
/// From `__init_zone_device_page` in each kernel: device-private and
/// coherent pages start at 0 everywhere (since 5.18); device-dax (GENERIC)
/// pages start at 1 on every kernel, including 6.15+ where each mapping then
/// adds one; FS-DAX and P2PDMA pages start at 1 before 6.15 and at 0 after.
pub fn idle_bias(model: RefcountModel, ty: PgmapType) -> i32 {
    match (model, ty) {
        (_, PgmapType::Private | PgmapType::Coherent) => 0,
        (_, PgmapType::Generic) => 1,
        (RefcountModel::Refcounted, _) => 0,
        (RefcountModel::IdleOne, _) => 1,
    }
}

/// References held only for the duration of an install, that a map hook's
/// return probe still sees: on 6.15+ the FS-DAX fault path takes a temporary
/// folio reference around `vmf_insert_page_mkwrite`/`vmf_insert_folio_pmd`
/// (`validate_page_before_insert` refuses a zero count), and drops it after.
pub fn transient_install_refs(model: RefcountModel, ty: PgmapType) -> i32 {
    match (model, ty) {
        (RefcountModel::Refcounted, PgmapType::FsDax) => 1,
        _ => 0,
    }
}

/// The GUP flag bits of the traced kernel (they moved between releases),
/// recorded in the trace header so offline analysis decodes them right.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GupFlagBits {
    pub foll_write: u64,
    pub foll_get: u64,
    pub foll_pin: u64,
    pub foll_longterm: u64,
    /// `GUP_PIN_COUNTING_BIAS`.
    pub pin_bias: i32,
}

impl Default for GupFlagBits {
    /// Linux 6.1's values (include/linux/mm.h #defines).
    fn default() -> Self {
        GupFlagBits {
            foll_write: 0x01,
            foll_get: 0x04,
            foll_pin: 0x40000,
            foll_longterm: 0x10000,
            pin_bias: 1024,
        }
    }
}

/// What a GUP flags word asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GupKind {
    pub pin: bool,
    pub longterm: bool,
    pub write: bool,
}

impl GupFlagBits {
    pub fn decode(&self, flags: u64) -> GupKind {
        GupKind {
            pin: flags & self.foll_pin != 0,
            longterm: flags & self.foll_longterm != 0,
            write: flags & self.foll_write != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_follows_model_and_type() {
        assert_eq!(idle_bias(RefcountModel::IdleOne, PgmapType::FsDax), 1);
        assert_eq!(idle_bias(RefcountModel::IdleOne, PgmapType::Generic), 1);
        assert_eq!(idle_bias(RefcountModel::IdleOne, PgmapType::Private), 0);
        assert_eq!(idle_bias(RefcountModel::Refcounted, PgmapType::FsDax), 0);
        assert_eq!(idle_bias(RefcountModel::Refcounted, PgmapType::Generic), 1);
        assert_eq!(idle_bias(RefcountModel::IdleOne, PgmapType::Unknown), 1);
    }

    #[test]
    fn gup_flags_decode() {
        let bits = GupFlagBits::default();
        let k = bits.decode(0x40000 | 0x10000 | 0x1);
        assert!(k.pin && k.longterm && k.write);
        assert!(!bits.decode(0x04).pin);
    }
}
