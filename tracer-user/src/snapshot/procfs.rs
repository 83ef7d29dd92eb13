//! The real [`Procfs`]: `/proc/PID/{maps,comm,pagemap}`, the `PAGEMAP_SCAN`
//! ioctl (6.7+), and `/sys/dev/block/M:m/queue/dax`.

use std::{
    fs::{self, File},
    io,
    os::{fd::AsRawFd, unix::fs::FileExt},
    path::PathBuf,
};

use super::Procfs;
use crate::kernel::clock_ns;

/// `PAGEMAP_SCAN` (include/uapi/linux/fs.h): `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: u64 = (3 << 30) | ((size_of::<PmScanArg>() as u64) << 16) | (0x66 << 8) | 16;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_HUGE: u64 = 1 << 6;
/// Regions per ioctl call.
const REGIONS: usize = 256;

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `/proc` of this machine.
pub struct RealProcfs {
    root: PathBuf,
    /// The pagemap file of the process being read.
    open: Option<(u32, File)>,
    /// `PAGEMAP_SCAN` was refused as unknown: do not ask again.
    no_scan: bool,
}

impl Default for RealProcfs {
    fn default() -> Self {
        RealProcfs {
            root: PathBuf::from("/proc"),
            open: None,
            no_scan: false,
        }
    }
}

impl RealProcfs {
    fn pagemap_file(&mut self, pid: u32) -> io::Result<&File> {
        if self.open.as_ref().is_none_or(|(p, _)| *p != pid) {
            let f = File::open(self.root.join(pid.to_string()).join("pagemap"))?;
            self.open = Some((pid, f));
        }
        Ok(&self.open.as_ref().expect("just opened").1)
    }
}

impl Procfs for RealProcfs {
    fn pids(&mut self) -> io::Result<Vec<u32>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.root)? {
            if let Some(pid) = e?.file_name().to_str().and_then(|n| n.parse().ok()) {
                out.push(pid);
            }
        }
        Ok(out)
    }

    fn comm(&mut self, pid: u32) -> io::Result<String> {
        let s = fs::read_to_string(self.root.join(pid.to_string()).join("comm"))?;
        Ok(s.trim_end_matches('\n').to_owned())
    }

    fn maps(&mut self, pid: u32) -> io::Result<String> {
        fs::read_to_string(self.root.join(pid.to_string()).join("maps"))
    }

    fn pagemap(&mut self, pid: u32, vpn: u64, out: &mut [u64]) -> io::Result<()> {
        let f = self.pagemap_file(pid)?;
        let mut bytes = vec![0u8; out.len() * 8];
        f.read_exact_at(&mut bytes, vpn * 8)?;
        for (o, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
            *o = u64::from_ne_bytes(b.try_into().expect("8 bytes"));
        }
        Ok(())
    }

    fn huge_ranges(
        &mut self,
        pid: u32,
        start: u64,
        end: u64,
    ) -> io::Result<Option<Vec<(u64, u64)>>> {
        if self.no_scan {
            return Ok(None);
        }
        let fd = self.pagemap_file(pid)?.as_raw_fd();
        let mut out = Vec::new();
        let mut regions = [PageRegion::default(); REGIONS];
        let mut at = start;
        while at < end {
            let mut arg = PmScanArg {
                size: size_of::<PmScanArg>() as u64,
                start: at,
                end,
                vec: regions.as_mut_ptr() as u64,
                vec_len: REGIONS as u64,
                category_mask: PAGE_IS_PRESENT | PAGE_IS_HUGE,
                return_mask: PAGE_IS_HUGE,
                ..Default::default()
            };
            // SAFETY: `arg` and `regions` outlive the call; the kernel writes
            // at most `vec_len` regions and `walk_end`.
            let n = unsafe { libc::ioctl(fd, PAGEMAP_SCAN as _, &mut arg) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::ENOTTY | libc::EINVAL) => {
                        self.no_scan = true;
                        Ok(None)
                    }
                    _ => Err(e),
                };
            }
            out.extend(regions[..n as usize].iter().map(|r| (r.start, r.end)));
            if arg.walk_end <= at {
                break;
            }
            at = arg.walk_end;
        }
        Ok(Some(out))
    }

    fn dax_capable(&mut self, major: u32, minor: u32) -> bool {
        fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/queue/dax"))
            .is_ok_and(|s| s.trim() == "1")
    }

    fn now(&mut self) -> u64 {
        clock_ns(libc::CLOCK_MONOTONIC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagemap_scan_request_matches_the_uapi() {
        assert_eq!(size_of::<PmScanArg>(), 96);
        assert_eq!(size_of::<PageRegion>(), 24);
        // _IOWR('f', 16, struct pm_scan_arg) as the kernel headers spell it.
        assert_eq!(PAGEMAP_SCAN, 0xc060_6610);
    }

    #[test]
    fn reads_this_process() {
        let mut p = RealProcfs::default();
        let me = std::process::id();
        assert!(p.pids().unwrap().contains(&me));
        assert!(!p.comm(me).unwrap().is_empty());
        assert!(p.maps(me).unwrap().lines().count() > 3);
        // The entry of a page of our own stack: present (pfn may be hidden).
        let x = 0u64;
        let vpn = (&raw const x as u64) >> 12;
        let mut e = [0u64; 1];
        p.pagemap(me, vpn, &mut e).unwrap();
        assert_ne!(e[0] & (1 << 63), 0, "our stack page is present");
    }
}
