//! The attach-time snapshot: mappings of device memory that existed before
//! refscope attached, fed to the analysis as `attach_map` events so page
//! timelines start with them and the rules apply to them.
//!
//! How it stays consistent with the probes, which are attached first:
//! - a process's address space is added to the in-kernel table of tracked
//!   address spaces before its page tables are read, so its later unmaps
//!   and exit are reported;
//! - before each chunk of `/proc/PID/pagemap` is read, the ring buffer is
//!   drained into the analysis. An event applied before the snapshot's
//!   events therefore happened before the read; an event applied after may
//!   have happened before it too, which is harmless: a probe `map` of a
//!   mapping the snapshot also saw is the same install (the analysis
//!   dedupes it), and an unmap the read no longer shows finds nothing;
//! - a chunk is read twice, around the refcount reads, and only entries the
//!   two reads agree on are kept: a mapping torn down (and its page freed)
//!   while the snapshot ran is never reported with a refcount it did not
//!   have.
//!
//! Pins that exist at attach time have no userspace trace (no interface
//! lists GUP holders): they show in the refcount the snapshot reads, and
//! releases of them are counted as unmatched, never as findings.
//!
//! This module holds the interfaces (kernel, `/proc`, sink), the options
//! and summary, and the walk over processes; reading one process's VMAs
//! (pagemap chunks, huge-page checks, the events) is in `scan`.

pub mod procfs;
mod scan;

use std::{collections::HashMap, io, time::Instant};

use refscope_common::{COMM_LEN, Event as RawEvent, PMD_ORDER, PUD_ORDER};

use self::scan::Scan;

/// Base pages in a PMD mapping (x86-64).
const PMD_PAGES: u64 = 1 << PMD_ORDER;
const PAGE_SHIFT: u64 = 12;
const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
const PMD_SIZE: u64 = PAGE_SIZE * PMD_PAGES;
const PUD_SHIFT: u64 = PAGE_SHIFT + PUD_ORDER as u64;
const PUD_SIZE: u64 = 1 << PUD_SHIFT;
/// `vpn >> PUD_PAGES_SHIFT`: the GiB a page is in.
const PUD_PAGES_SHIFT: u64 = PUD_ORDER as u64;
/// Pages of pagemap read at once (a 64 MiB window, 128 KiB of entries):
/// a multiple of a PMD so a PMD never straddles two chunks.
const CHUNK_PAGES: u64 = 16 * 1024;

/// pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
const PM_PRESENT: u64 = 1 << 63;
const PM_PFN_MASK: u64 = (1 << 55) - 1;

/// A page's state as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRef {
    /// `_refcount` of the page's folio head (None: the struct page could not
    /// be read).
    pub raw: Option<i32>,
    /// `page->pgmap` (kernel pointer), or 0.
    pub pgmap: u64,
    /// When asked: whether a PMD leaf maps the address (None: not asked, or
    /// the page table could not be read).
    pub pmd: Option<bool>,
}

/// One page to read: its pfn, and the virtual address whose page-table
/// entry to inspect (0: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageReq {
    pub pfn: u64,
    pub walk: u64,
}

/// What the snapshot needs from the kernel (BPF programs; faked in tests).
pub trait KernelReads {
    type Error: std::error::Error + Send + Sync + 'static;
    /// `tgid -> mm_struct pointer` of every process with an address space.
    fn task_mms(&mut self) -> Result<HashMap<u32, u64>, Self::Error>;
    /// One [`PageRef`] per request, appended to `out` in order; `walk`
    /// addresses are looked up in the page table of address space `mm`.
    fn read_pages(
        &mut self,
        mm: u64,
        reqs: &[PageReq],
        out: &mut Vec<PageRef>,
    ) -> Result<(), Self::Error>;
    /// Report unmaps and the exit of `mm` from now on.
    fn track_mm(&mut self, mm: u64, now: u64) -> Result<(), Self::Error>;
    /// The page-table entry of a 1 GiB (PUD) leaf at `va` of `mm`, if the
    /// kernel's page table has one there. A pagemap read must not see it:
    /// the pagemap walk splits (clears) a device-dax PUD on 6.1 to 7.3.
    fn pud_leaf(&mut self, _mm: u64, _va: u64) -> Result<Option<u64>, Self::Error> {
        Ok(None)
    }
}

/// What the snapshot reads from `/proc` and `/sys` (faked in tests).
pub trait Procfs {
    /// Process ids (thread-group leaders).
    fn pids(&mut self) -> io::Result<Vec<u32>>;
    fn comm(&mut self, pid: u32) -> io::Result<String>;
    fn maps(&mut self, pid: u32) -> io::Result<String>;
    /// pagemap entries of the pages `[vpn, vpn + out.len())`.
    fn pagemap(&mut self, pid: u32, vpn: u64, out: &mut [u64]) -> io::Result<()>;
    /// Ranges `[start, end)` (bytes) of `[start, end)` mapped by huge
    /// (PMD) entries, or `None` when the kernel cannot say (no PAGEMAP_SCAN,
    /// before 6.7).
    fn huge_ranges(
        &mut self,
        pid: u32,
        start: u64,
        end: u64,
    ) -> io::Result<Option<Vec<(u64, u64)>>>;
    /// Whether block device `major:minor` supports DAX.
    fn dax_capable(&mut self, major: u32, minor: u32) -> bool;
    /// CLOCK_MONOTONIC, ns.
    fn now(&mut self) -> u64;
}

/// Where the snapshot's events go: the same path as ring-buffer records.
pub trait Sink {
    /// Apply what the ring buffer holds now.
    fn drain(&mut self);
    /// Apply (and record) one snapshot event.
    fn emit(&mut self, ev: &RawEvent);
}

/// Which processes to look at.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Only these processes (empty: all).
    pub pids: Vec<u32>,
    /// Only processes whose command name starts with this (the kernel
    /// filter's rule: the first 15 bytes).
    pub comm: Option<String>,
    /// Device pfn ranges `[start, end)`.
    pub ranges: Vec<(u64, u64)>,
    /// refscope itself (never scanned).
    pub self_pid: u32,
}

/// How PMD mappings were told from PTE mappings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HugeMethod {
    /// No mapping needed telling apart.
    #[default]
    None,
    /// The kernel said (`PAGEMAP_SCAN`, `PAGE_IS_HUGE`; 6.7+).
    PagemapScan,
    /// refscope read the PMD entry (kernels before 6.7).
    PageTableWalk,
}

/// What the snapshot found and how long it took.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    pub processes: usize,
    /// Processes with at least one mapping of device memory.
    pub processes_mapping: usize,
    pub vmas: usize,
    pub mappings: u64,
    pub pmd_mappings: u64,
    /// 1 GiB (PUD) mappings, read from the page table (not from pagemap).
    pub pud_mappings: u64,
    /// Base pages those mappings cover.
    pub pages: u64,
    /// Entries that changed between the two reads of their chunk (skipped).
    pub changed: u64,
    /// Pages whose struct page could not be read.
    pub unreadable: u64,
    /// Candidate PMDs whose page-table entry could not be read: reported as
    /// PMDs (512 present pages, contiguous and aligned).
    pub pmd_unverified: u64,
    /// Processes that exited while being scanned.
    pub vanished: usize,
    pub huge_method: HugeMethod,
    pub seconds: f64,
    /// Stopped early (a signal): what was found so far was emitted.
    pub interrupted: bool,
}

/// Errors that stop the snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError<K: std::error::Error + 'static> {
    #[error(transparent)]
    Kernel(K),
    #[error("cannot list processes in /proc: {0}")]
    Proc(io::Error),
    #[error(
        "/proc/{0}/pagemap hides page frame numbers: reading them needs CAP_SYS_ADMIN (run refscope as root), or pass --no-snapshot"
    )]
    PfnsHidden(u32),
    #[error("cannot read /proc/{pid}/pagemap: {err}")]
    Pagemap { pid: u32, err: io::Error },
}

/// Progress, for a status line.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    pub mappings: u64,
}

/// One VMA worth reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
}

/// Run the snapshot. `progress` is called before each process; when it
/// returns false the snapshot stops there.
pub fn run<K: KernelReads, P: Procfs, S: Sink>(
    kernel: &mut K,
    proc: &mut P,
    sink: &mut S,
    opts: &Options,
    mut progress: impl FnMut(&Progress) -> bool,
) -> Result<Summary, SnapshotError<K::Error>> {
    let t0 = Instant::now();
    let mut sum = Summary::default();
    let mms = kernel.task_mms().map_err(SnapshotError::Kernel)?;
    let mut pids = proc.pids().map_err(SnapshotError::Proc)?;
    pids.retain(|p| *p != opts.self_pid && (opts.pids.is_empty() || opts.pids.contains(p)));
    pids.sort_unstable();
    let mut dax_devs: HashMap<(u32, u32), bool> = HashMap::new();
    let total = pids.len();
    for (i, &pid) in pids.iter().enumerate() {
        if !progress(&Progress {
            done: i,
            total,
            mappings: sum.mappings,
        }) {
            sum.interrupted = true;
            break;
        }
        let Ok(maps) = proc.maps(pid) else {
            sum.vanished += 1;
            continue;
        };
        sum.processes += 1;
        let vmas = device_vmas(&maps, |maj, min| {
            *dax_devs
                .entry((maj, min))
                .or_insert_with(|| proc.dax_capable(maj, min))
        });
        if vmas.is_empty() {
            continue;
        }
        let Ok(comm) = proc.comm(pid) else {
            sum.vanished += 1;
            continue;
        };
        if let Some(want) = &opts.comm {
            let want = &want.as_bytes()[..want.len().min(COMM_LEN - 1)];
            if !comm.as_bytes().starts_with(want) {
                continue;
            }
        }
        let Some(&mm) = mms.get(&pid) else {
            // Started after the iterator ran: the probes see its mappings.
            continue;
        };
        let now = proc.now();
        kernel.track_mm(mm, now).map_err(SnapshotError::Kernel)?;
        let before = sum.mappings;
        let mut scan = Scan {
            pid,
            mm,
            comm: comm_bytes(&comm),
            opts,
            sum: &mut sum,
        };
        for vma in &vmas {
            match scan.vma(kernel, proc, sink, vma) {
                Ok(()) => {}
                Err(SnapshotError::Pagemap { err, .. }) if vanished(&err) => {
                    scan.sum.vanished += 1;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        sum.vmas += vmas.len();
        if sum.mappings > before {
            sum.processes_mapping += 1;
        }
    }
    sum.seconds = t0.elapsed().as_secs_f64();
    Ok(sum)
}

fn vanished(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENOENT))
        || e.kind() == io::ErrorKind::NotFound
}

fn comm_bytes(comm: &str) -> [u8; COMM_LEN] {
    let mut out = [0; COMM_LEN];
    let b = comm.as_bytes();
    let n = b.len().min(COMM_LEN - 1);
    out[..n].copy_from_slice(&b[..n]);
    out
}

/// The VMAs of a `/proc/PID/maps` text that can map device memory: files
/// on DAX-capable block devices, and device-dax character devices.
pub fn device_vmas(maps: &str, mut dax_capable: impl FnMut(u32, u32) -> bool) -> Vec<Vma> {
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(_perms), Some(_off), Some(dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let path = f.next().unwrap_or("");
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        if inode == "0" || start >= end {
            continue;
        }
        let devdax = path.strip_prefix("/dev/dax").is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        });
        let mut on_dax_fs = || {
            // The device column is `major:minor` in hex.
            let Some((maj, min)) = dev.split_once(':') else {
                return false;
            };
            match (u32::from_str_radix(maj, 16), u32::from_str_radix(min, 16)) {
                (Ok(maj), Ok(min)) if maj != 0 => dax_capable(maj, min),
                _ => false,
            }
        };
        if devdax || on_dax_fs() {
            out.push(Vma { start, end });
        }
    }
    out
}

#[cfg(test)]
mod tests;
