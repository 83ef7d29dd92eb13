//! The rules: stable ids, severities, and what each finding means.
//! docs/rules.md has a real example of each.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::RefcountModel;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a finding rests on complete data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every event the rule needs was seen.
    Definite,
    /// Events were lost while the state this finding rests on was live
    /// (e.g. the unmap that would clear it may be among them).
    Uncertain,
    /// The mapping it accuses could not be checked against the kernel's
    /// page table (the process was gone, or the trace has no audit):
    /// refscope's shadow says so, nothing else does.
    Unconfirmed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Definite => "definite",
            Status::Uncertain => "uncertain",
            Status::Unconfirmed => "unconfirmed",
        }
    }
}

macro_rules! rules {
    ($( $(#[$m:meta])* $variant:ident = $id:literal, $explanation:literal; )+) => {
        /// A rule's stable identifier.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum RuleId {
            $( $(#[$m])* $variant, )+
        }

        impl RuleId {
            pub const ALL: &'static [RuleId] = &[ $( RuleId::$variant, )+ ];

            /// The id used in traces, reports and `--rule`.
            pub fn id(self) -> &'static str {
                match self { $( RuleId::$variant => $id, )+ }
            }

            pub fn from_id(id: &str) -> Option<RuleId> {
                match id { $( $id => Some(RuleId::$variant), )+ _ => None }
            }

            /// One paragraph: what the rule checks and why it matters.
            pub fn explanation(self) -> &'static str {
                match self { $( RuleId::$variant => $explanation, )+ }
            }
        }
    };
}

rules! {
    /// A PTE/PMD was installed for a page whose logical refcount is zero.
    ZeroRefMapping = "zero_ref_mapping",
        "A PTE or PMD was installed for a device page whose logical reference count (raw _refcount minus the idle bias of the kernel's model) was zero at the install: the mapping holds no reference on the page. Before Linux 6.15 this is how FS-DAX and device-dax work (special devmap PTEs, idle _refcount 1), which is why it is a warning there: nothing stops the page from being freed, reused or removed while the PTE still points at it. From 6.15 every mapping must hold a folio reference, so the same observation is an error.";
    /// The page was released while the shadow still maps it.
    FreedWhileMapped = "freed_while_mapped",
        "The page was released for reuse (its refcount reached zero, the free path ran, or under the pre-6.15 model it dropped below the idle bias, or the device free callback ran) while a PTE or PMD in refscope's shadow page table still mapped it. The mapping now points at a page its owner considers free: a use-after-free window through user space.";
    /// memunmap_pages ran while mappings of the pgmap's pages remained.
    MappedAfterUnplug = "mapped_after_unplug",
        "memunmap_pages started tearing down a device's struct pages while a PTE or PMD still mapped one of its pages (or a mapping was installed after removal began). memunmap_pages does not shoot down user mappings or wait for page references: after it returns, the mapping points at memory whose memmap is gone. On refcounted kernels (6.15+) the stale mapping also holds a reference into the freed memmap, which the eventual unmap touches. Later events on the page are added to the finding.";
    /// A GUP reference was taken on a page at logical zero.
    PinOnIdlePage = "pin_on_idle_page",
        "GUP took a reference or pin on a page whose logical refcount was zero before the call. On pre-6.15 kernels every FS-DAX GUP does this (the \"refcount == 1 means idle\" convention that try_grab_page relies on), so it is informational there. On refcounted kernels a page that is mapped, and so reachable by GUP, always holds at least the mapping's reference: a GUP on a zero-refcount page is an error.";
    /// GUP pins or references still held when the holder exited or the trace ended.
    PinLeak = "pin_leak",
        "A GUP pin (FOLL_PIN) taken by a process was still outstanding when that process's address space exited (warning), or when the trace ended (info). Pins that outlive their holder keep device pages busy forever: truncate and hole punch wait on them (dax_layout_busy_page), and device removal proceeds under them. FOLL_GET references are not judged: they can be dropped by inline folio_put_refs on every kernel (6.1's __bio_release_pages does), with no event to see.";
    /// A FOLL_LONGTERM pin succeeded on an FS-DAX page.
    LongtermPinFsdax = "longterm_pin_fsdax",
        "A FOLL_LONGTERM pin succeeded on an FS-DAX page. The kernel is supposed to refuse long-term pins of FS-DAX memory (check_vma_flags returns -EOPNOTSUPP) because the filesystem cannot move or reclaim pinned blocks; a successful one means a path bypassed that check.";
    /// The raw refcount went below the idle bias, or negative.
    RefcountUnderflow = "refcount_underflow",
        "The page's raw _refcount dropped below its idle value (below 1 for FS-DAX and device-dax pages before 6.15, below 0 on any kernel). Before 6.15 an FS-DAX page's count never legitimately reaches 0: it means more puts than gets.";
    /// GUP references were outstanding when the device was removed.
    PinnedAtUnplug = "pinned_at_unplug",
        "memunmap_pages started for a device while GUP pins (FOLL_PIN) on one of its pages were outstanding. The pin holder (DMA, io_uring, RDMA, a vmsplice'd pipe) still uses the page after its struct page is gone.";
}

impl RuleId {
    /// Rules that accuse a live mapping: definite only once the kernel's
    /// page table confirms it (the shadow audit).
    pub fn needs_page_table(self) -> bool {
        matches!(self, RuleId::FreedWhileMapped | RuleId::MappedAfterUnplug)
    }

    /// Severity of a finding under `model` (some rules depend on it).
    pub fn severity(self, model: RefcountModel) -> Severity {
        match (self, model) {
            (RuleId::ZeroRefMapping, RefcountModel::IdleOne) => Severity::Warning,
            (RuleId::ZeroRefMapping, RefcountModel::Refcounted) => Severity::Error,
            (RuleId::FreedWhileMapped, _) => Severity::Error,
            (RuleId::MappedAfterUnplug, _) => Severity::Error,
            (RuleId::PinOnIdlePage, RefcountModel::IdleOne) => Severity::Info,
            (RuleId::PinOnIdlePage, RefcountModel::Refcounted) => Severity::Error,
            (RuleId::PinLeak, _) => Severity::Warning,
            (RuleId::LongtermPinFsdax, _) => Severity::Error,
            (RuleId::RefcountUnderflow, _) => Severity::Error,
            (RuleId::PinnedAtUnplug, _) => Severity::Error,
        }
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_serde_agrees() {
        for r in RuleId::ALL {
            assert_eq!(RuleId::from_id(r.id()), Some(*r));
            assert_eq!(serde_json::to_string(r).unwrap(), format!("\"{}\"", r.id()));
            assert!(r.explanation().len() > 100, "{r} needs a real explanation");
        }
    }
}
