//! `/proc/PID/pagemap` decoding (Documentation/admin-guide/mm/pagemap.rst),
//! PMD detection from pagemap contiguity, and the device (pmem) physical
//! ranges from `/proc/iomem`.

use std::{fs::File, os::unix::fs::FileExt as _};

use anyhow::{Context as _, bail};

use crate::util::PAGE_SIZE;

/// One 64-bit pagemap entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PagemapEntry(pub u64);

impl PagemapEntry {
    const PFN_MASK: u64 = (1 << 55) - 1;

    /// Bit 63: page present.
    pub fn present(self) -> bool {
        self.0 & (1 << 63) != 0
    }
    /// Bit 62: page swapped.
    pub fn swapped(self) -> bool {
        self.0 & (1 << 62) != 0
    }
    /// Bit 61: file page or shared anonymous. For FS-DAX this is set only
    /// when the kernel has a `struct page` for the PTE via `vm_normal_page`
    /// (7.x refcounted DAX), not for 6.x devmap PTEs.
    pub fn file_or_shared(self) -> bool {
        self.0 & (1 << 61) != 0
    }
    /// Bit 56: page exclusively mapped (mapcount == 1).
    pub fn exclusive(self) -> bool {
        self.0 & (1 << 56) != 0
    }
    /// Bit 55: soft-dirty.
    pub fn soft_dirty(self) -> bool {
        self.0 & (1 << 55) != 0
    }
    /// Names of the set flags: present, swapped, file, exclusive,
    /// soft-dirty.
    pub fn flag_names(self) -> Vec<&'static str> {
        [
            (self.present(), "present"),
            (self.swapped(), "swapped"),
            (self.file_or_shared(), "file"),
            (self.exclusive(), "exclusive"),
            (self.soft_dirty(), "soft-dirty"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect()
    }
    /// Bits 0-54 when present: the PFN. It reads as 0 without
    /// CAP_SYS_ADMIN, which this returns as `None` too.
    pub fn pfn(self) -> Option<u64> {
        if !self.present() {
            return None;
        }
        match self.0 & Self::PFN_MASK {
            0 => None,
            pfn => Some(pfn),
        }
    }
}

/// Read `npages` entries of `pid`'s pagemap (`None` = self) starting at
/// `vaddr` (page aligned).
pub fn read(pid: Option<i32>, vaddr: usize, npages: usize) -> anyhow::Result<Vec<PagemapEntry>> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/pagemap"),
        None => "/proc/self/pagemap".to_owned(),
    };
    if !vaddr.is_multiple_of(PAGE_SIZE) {
        bail!("pagemap read at unaligned address {vaddr:#x}");
    }
    let f = File::open(&path).with_context(|| format!("open {path}"))?;
    let mut buf = vec![0u8; npages * 8];
    let mut done = 0;
    let base = (vaddr / PAGE_SIZE * 8) as u64;
    while done < buf.len() {
        let n = f
            .read_at(&mut buf[done..], base + done as u64)
            .with_context(|| format!("read {path} at {vaddr:#x}"))?;
        if n == 0 {
            bail!("short read of {path}: {done} of {} bytes", buf.len());
        }
        done += n;
    }
    Ok(buf
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            PagemapEntry(u64::from_ne_bytes(b))
        })
        .collect())
}

/// Whether `entries` (the 2^order base pages of one naturally aligned
/// virtual block) look like one huge mapping: all present, with consecutive
/// PFNs starting at a 2^order-aligned PFN. Used after touching only the
/// first byte of the block: a PTE fault maps one page (FS-DAX and device-dax
/// have no fault-around), so 512 present contiguous pages mean a PMD fault.
pub fn is_huge_block(entries: &[PagemapEntry], order: u32) -> bool {
    let n = 1usize << order;
    if order == 0 || entries.len() != n {
        return false;
    }
    let Some(first) = entries[0].pfn() else {
        return false;
    };
    if first % n as u64 != 0 {
        return false;
    }
    entries
        .iter()
        .enumerate()
        .all(|(i, e)| e.pfn() == Some(first + i as u64))
}

/// Physical ranges of device memory, in PFNs, half open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceRanges(pub Vec<(u64, u64, String)>);

impl DeviceRanges {
    /// Parse `/proc/iomem` text: keep "Persistent Memory" (legacy e820 and
    /// NFIT), `namespaceX.Y`, `daxX.Y` and "Soft Reserved" resources.
    /// Lines whose addresses read as 0-0 (no CAP_SYS_ADMIN) are skipped.
    pub fn parse_iomem(text: &str) -> Self {
        let mut out = Vec::new();
        for line in text.lines() {
            let Some((range, name)) = line.split_once(" : ") else {
                continue;
            };
            let name = name.trim();
            let wanted = name.starts_with("Persistent Memory")
                || name.starts_with("namespace")
                || name.starts_with("dax")
                || name.starts_with("Soft Reserved");
            if !wanted {
                continue;
            }
            let Some((a, b)) = range.trim().split_once('-') else {
                continue;
            };
            let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
                continue;
            };
            if b == 0 || b < a {
                continue;
            }
            out.push((
                a / PAGE_SIZE as u64,
                (b + 1).div_ceil(PAGE_SIZE as u64),
                name.to_owned(),
            ));
        }
        Self(out)
    }

    /// Read `/proc/iomem` (empty on failure).
    pub fn load() -> Self {
        std::fs::read_to_string("/proc/iomem")
            .map(|t| Self::parse_iomem(&t))
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Some(true)` if `pfn` lies in a device range, `Some(false)` if not,
    /// `None` if no ranges are known (so nothing can be said).
    pub fn contains(&self, pfn: u64) -> Option<bool> {
        if self.0.is_empty() {
            return None;
        }
        Some(self.0.iter().any(|(a, b, _)| (*a..*b).contains(&pfn)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_entries() {
        let e = PagemapEntry((1 << 63) | (1 << 61) | (1 << 56) | 0x48c00);
        assert!(e.present());
        assert!(e.file_or_shared());
        assert!(e.exclusive());
        assert!(!e.swapped());
        assert!(!e.soft_dirty());
        assert_eq!(e.pfn(), Some(0x48c00));
        assert_eq!(e.flag_names(), vec!["present", "file", "exclusive"]);

        // 6.x devmap PTE: present, no file bit, the pfn is still reported.
        let devmap = PagemapEntry((1 << 63) | 0x140000);
        assert_eq!(devmap.pfn(), Some(0x140000));
        assert!(!devmap.file_or_shared());

        // Not present: no pfn even if low bits are set (swap entries).
        assert_eq!(PagemapEntry((1 << 62) | 0x1234).pfn(), None);
        // Present without CAP_SYS_ADMIN: pfn reads 0.
        assert_eq!(PagemapEntry(1 << 63).pfn(), None);
        // Bits above 54 never leak into the pfn.
        assert_eq!(PagemapEntry(u64::MAX).pfn(), Some((1 << 55) - 1));
    }

    fn run(first: u64, n: usize) -> Vec<PagemapEntry> {
        (0..n as u64)
            .map(|i| PagemapEntry((1 << 63) | (first + i)))
            .collect()
    }

    #[test]
    fn huge_block_detection() {
        assert!(is_huge_block(&run(0x140000, 512), 9));
        // Misaligned first pfn.
        assert!(!is_huge_block(&run(0x140001, 512), 9));
        // One page missing (a PTE fault mapped only the touched page).
        let mut v = run(0x140000, 512);
        v[3] = PagemapEntry(0);
        assert!(!is_huge_block(&v, 9));
        // Non-contiguous.
        let mut v = run(0x140000, 512);
        v[511] = PagemapEntry((1 << 63) | 0x999999);
        assert!(!is_huge_block(&v, 9));
        // Wrong length and order 0.
        assert!(!is_huge_block(&run(0x140000, 511), 9));
        assert!(!is_huge_block(&run(0x140000, 1), 0));
    }

    #[test]
    fn iomem_ranges() {
        let text = "\
00000000-00000fff : Reserved
00100000-3fffffff : System RAM
  01000000-01ffffff : Kernel code
40000000-5fffffff : Persistent Memory (legacy)
  40000000-5fffffff : namespace0.0
60000000-7fffffff : System RAM
";
        let r = DeviceRanges::parse_iomem(text);
        assert_eq!(r.0.len(), 2);
        assert_eq!(r.0[0].0, 0x40000);
        assert_eq!(r.0[0].1, 0x60000);
        assert_eq!(r.contains(0x40000), Some(true));
        assert_eq!(r.contains(0x5ffff), Some(true));
        assert_eq!(r.contains(0x60000), Some(false));
        assert_eq!(r.contains(0x1000), Some(false));

        // Unprivileged readers see zeros: nothing known.
        let hidden = "00000000-00000000 : Persistent Memory (legacy)\n";
        let r = DeviceRanges::parse_iomem(hidden);
        assert!(r.is_empty());
        assert_eq!(r.contains(5), None);
    }

    #[test]
    fn read_self() {
        // Map and touch one anonymous page, then read its entry.
        let mut v = vec![0u8; 3 * PAGE_SIZE];
        let addr = crate::util::align_up(v.as_ptr() as usize, PAGE_SIZE);
        let off = addr - v.as_ptr() as usize;
        v[off] = 1;
        let e = read(None, addr, 1).unwrap();
        assert!(e[0].present());
    }
}
