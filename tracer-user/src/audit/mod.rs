//! The shadow audit: refscope's shadow of device mappings compared with the
//! kernel's own page tables, address by address.
//!
//! The page tables are read in the kernel by the `walk_tables` program
//! (probe reads of the PGD..PTE entries of one address space, never a
//! `struct page`): exact at the moment of the read, independent of every
//! hook refscope attaches, and safe after `memunmap_pages`, when reading
//! `/proc/PID/pagemap` of a process with a stale mapping makes the kernel
//! touch the freed memmap.
//!
//! One address space at a time:
//! 1. the ring buffer is drained (the shadow is as of now), the blocks
//!    (2 MiB) of its device VMAs and of the shadow's mappings are read;
//! 2. the ring buffer is read up to the read (a barrier: every event
//!    reserved before it applied, waiting for a record still being
//!    written; if that wait runs out the address space is audited again
//!    later, never compared), and the shadow compared with what the page
//!    table held: a disagreement may only be an event not yet reserved (a
//!    fault finishing while the table was read);
//! 3. only when there are disagreements: a pause, and a second read of the
//!    blocks concerned, with barriers around it. A disagreement that is in both
//!    comparisons, the same way, is drift: `audit_unmap` (the shadow had
//!    it) or `audit_map` (the page table had it) corrects the shadow, and
//!    records which kind of path was missed;
//! 4. an `audit` event closes the address space: findings that waited for
//!    its page table are settled (docs/rules.md, "definite").

mod auditor;

pub use auditor::{AuditCost, Auditor, audit};

use std::collections::{BTreeMap, BTreeSet, HashMap};

use refscope_common::{COMM_LEN, EventKind, HookId, PMD_ORDER, PT_ENTRIES, PUD_ORDER, flags};
use refscope_core::event::{Attach, Comm, Event, Flags, Hex};

use crate::{
    pagetable::{Block, PageTables, leaf_pfn},
    snapshot::{self, KernelReads, Procfs},
};

const PAGE_SHIFT: u64 = 12;
const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
const PMD_SIZE: u64 = PAGE_SIZE << PMD_ORDER;
const PUD_SIZE: u64 = PAGE_SIZE << PUD_ORDER;

/// What the audit needs from the recording it checks.
pub trait Recording {
    /// Apply every event the kernel reserved before this call (a barrier:
    /// it waits, briefly, for a record still being written). False when
    /// one still was after that wait: the shadow is not as of now.
    fn sync(&mut self) -> bool;
    /// The id events carry for kernel address space pointer `mm`.
    fn mm_id(&self, mm: u64) -> u64;
    /// The shadow's mappings of address space id `mm`: address ->
    /// (pfn, order).
    fn shadow(&self, mm_id: u64) -> BTreeMap<u64, (u64, u8)>;
    /// Device memory pfn ranges `[start, end)` (removed devices included).
    fn devices(&self) -> Vec<(u64, u64)>;
    /// Apply and record one audit event (its `mm` is an id already).
    fn emit(&mut self, ev: &Event);
    /// Wait a little before reading disagreements again, so that events
    /// of changes made while the table was read are in the ring buffer.
    fn pause(&mut self);
    /// Address spaces findings wait for (with a pid holding each), since
    /// the last call.
    fn verify_requests(&mut self) -> Vec<(u64, u32)>;
}

/// How long to wait before reading disagreements again.
pub const PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// How long [`Recording::sync`] waits for a record still being written.
pub const SYNC_PATIENCE: std::time::Duration = std::time::Duration::from_millis(200);

/// The shadow's mappings of one address space, as [`Recording::shadow`]
/// hands them over.
pub fn shadow_of(an: &refscope_core::analysis::Analyzer, mm_id: u64) -> BTreeMap<u64, (u64, u8)> {
    an.mappings_in(mm_id)
        .map(|(va, m)| (va, (m.pfn, m.order)))
        .collect()
}

/// Device pfn ranges the analysis knows (removed devices included).
pub fn devices_of(an: &refscope_core::analysis::Analyzer) -> Vec<(u64, u64)> {
    an.pgmaps()
        .iter()
        .flat_map(|g| g.ranges.iter().copied())
        .collect()
}

/// Which address spaces to audit.
#[derive(Clone, Debug)]
pub enum Scope {
    /// Every process with a device VMA or a shadow mapping (filtered as
    /// the recording is).
    All {
        pids: Vec<u32>,
        comm: Option<String>,
    },
    /// These address spaces (ids as events carry them), each with a pid
    /// that held it.
    Only(Vec<(u64, u32)>),
}

/// What one audit pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub address_spaces: usize,
    /// Address spaces whose process was gone before it could be read.
    pub vanished: usize,
    /// Address spaces read but not compared: the ring buffer could not be
    /// read up to the table read (a record still being written); with a
    /// pid holding each, to audit again.
    pub unsynced: Vec<(u64, u32)>,
    /// Shadow mappings compared.
    pub compared: u64,
    pub missing: u64,
    pub stale: u64,
    /// 2 MiB blocks read, and those whose tables could not be read.
    pub blocks: u64,
    pub unreadable: u64,
    /// 1 GiB (PUD) device leaves seen, each once however many of its 512
    /// blocks were read.
    pub pud_leaves: u64,
    /// Wall time of the pass.
    pub elapsed: std::time::Duration,
}

/// Errors that stop an audit pass.
#[derive(Debug, thiserror::Error)]
pub enum AuditError<K: std::error::Error + 'static> {
    #[error(transparent)]
    Kernel(K),
    #[error("cannot list processes in /proc: {0}")]
    Proc(std::io::Error),
}

/// Run one audit pass; `reason` is an [`refscope_common::audit_reason`].
pub fn run<K, P, R>(
    kernel: &mut K,
    proc: &mut P,
    rec: &mut R,
    scope: &Scope,
    reason: u64,
    self_pid: u32,
) -> Result<Summary, AuditError<<K as KernelReads>::Error>>
where
    K: KernelReads + PageTables<Error = <K as KernelReads>::Error>,
    P: Procfs,
    R: Recording,
{
    let started = std::time::Instant::now();
    let mut sum = Summary::default();
    let mms = kernel.task_mms().map_err(AuditError::Kernel)?;
    let mut dax_devs: HashMap<(u32, u32), bool> = HashMap::new();
    let mut targets: Vec<(u32, u64, Option<u64>)> = Vec::new();
    match scope {
        Scope::All { pids, comm } => {
            let mut all = proc.pids().map_err(AuditError::Proc)?;
            all.retain(|p| *p != self_pid && (pids.is_empty() || pids.contains(p)));
            all.sort_unstable();
            for pid in all {
                let Some(&mm) = mms.get(&pid) else { continue };
                if let Some(want) = comm {
                    let want = &want.as_bytes()[..want.len().min(COMM_LEN - 1)];
                    match proc.comm(pid) {
                        Ok(c) if c.as_bytes().starts_with(want) => {}
                        _ => continue,
                    }
                }
                targets.push((pid, mm, None));
            }
        }
        Scope::Only(list) => {
            for &(id, pid) in list {
                match mms.get(&pid) {
                    Some(&mm) if rec.mm_id(mm) == id => targets.push((pid, mm, None)),
                    _ => targets.push((pid, 0, Some(id))),
                }
            }
        }
    }
    for (pid, mm, gone) in targets {
        if let Some(id) = gone {
            sum.vanished += 1;
            rec.emit(&closing(pid, id, "", reason, 0, 0, true));
            continue;
        }
        let Ok(maps) = proc.maps(pid) else {
            sum.vanished += 1;
            if matches!(scope, Scope::Only(_)) {
                // Findings wait for this address space: say it is gone.
                rec.emit(&closing(pid, rec.mm_id(mm), "", reason, 0, 0, true));
            }
            continue;
        };
        let vmas = snapshot::device_vmas(&maps, |maj, min| {
            *dax_devs
                .entry((maj, min))
                .or_insert_with(|| proc.dax_capable(maj, min))
        });
        let id = rec.mm_id(mm);
        rec.sync();
        if vmas.is_empty() && rec.shadow(id).is_empty() && matches!(scope, Scope::All { .. }) {
            // Nothing of device memory here.
            continue;
        }
        let comm = proc.comm(pid).unwrap_or_default();
        audit_mm(kernel, proc, rec, &mut sum, pid, mm, &comm, &vmas, reason)
            .map_err(AuditError::Kernel)?;
    }
    sum.elapsed = started.elapsed();
    Ok(sum)
}

#[allow(clippy::too_many_arguments)]
fn audit_mm<K, P, R>(
    kernel: &mut K,
    proc: &mut P,
    rec: &mut R,
    sum: &mut Summary,
    pid: u32,
    mm: u64,
    comm: &str,
    vmas: &[snapshot::Vma],
    reason: u64,
) -> Result<(), <K as PageTables>::Error>
where
    K: KernelReads + PageTables<Error = <K as KernelReads>::Error>,
    P: Procfs,
    R: Recording,
{
    sum.address_spaces += 1;
    let id = rec.mm_id(mm);
    let devices = rec.devices();
    let in_device = |pfn: u64| devices.iter().any(|&(a, b)| a <= pfn && pfn < b);
    // Every block a device VMA or a shadow mapping touches.
    let mut blocks: BTreeSet<u64> = BTreeSet::new();
    for v in vmas {
        let mut b = v.start & !(PMD_SIZE - 1);
        while b < v.end {
            blocks.insert(b);
            b += PMD_SIZE;
        }
    }
    blocks.extend(rec.shadow(id).keys().map(|va| va & !(PMD_SIZE - 1)));
    let blocks: Vec<u64> = blocks.into_iter().collect();
    // Findings raised after this instant wait for a later audit: the
    // table read may predate what they accuse.
    let read_at = proc.now();
    let first = read(kernel, mm, &blocks, &in_device, sum)?;
    // Every comparison needs the events of changes the read saw: an unmap
    // is reported before its PTEs are cleared, so its event is reserved
    // before a read that misses them, but may still be behind a record
    // being written.
    if !rec.sync() {
        sum.unsynced.push((id, pid));
        return Ok(());
    }
    let shadow = rec.shadow(id);
    sum.compared += shadow.len() as u64;
    let (stale, missing) = diff(&shadow, &first);
    let mut drift_stale = Vec::new();
    let mut drift_missing = Vec::new();
    // Divergences carry the time of the read that confirmed them: an
    // event older than that, arriving later anyway, explains them
    // (`drift_late` in the analysis).
    let mut confirmed_at = read_at;
    if !stale.is_empty() || !missing.is_empty() {
        rec.pause();
        rec.sync();
        let again: BTreeSet<u64> = stale
            .iter()
            .chain(missing.iter())
            .map(|(va, _)| va & !(PMD_SIZE - 1))
            .collect();
        let again: Vec<u64> = again.into_iter().collect();
        let mut scratch = Summary::default();
        confirmed_at = proc.now();
        let second = read(kernel, mm, &again, &in_device, &mut scratch)?;
        if !rec.sync() {
            sum.unsynced.push((id, pid));
            return Ok(());
        }
        let shadow2 = rec.shadow(id);
        let (stale2, missing2) = diff(&shadow2, &second);
        drift_stale = stale2
            .into_iter()
            .filter(|x| stale.contains(x))
            .map(|(va, m)| (va, m, second.entry_at(va)))
            .collect();
        drift_missing = missing2
            .into_iter()
            .filter(|x| missing.contains(x))
            .collect();
    }
    for (va, (pfn, order), entry) in &drift_stale {
        let mut ev = event(EventKind::AuditUnmap, pid, id, comm);
        ev.t = confirmed_at;
        ev.vaddr = Hex(*va);
        ev.pfn = *pfn;
        ev.order = *order;
        ev.arg_flags = Hex(*entry);
        rec.emit(&ev);
    }
    for (va, (pfn, order)) in &drift_missing {
        let mut ev = event(EventKind::AuditMap, pid, id, comm);
        ev.t = confirmed_at;
        ev.vaddr = Hex(*va);
        ev.pfn = *pfn;
        ev.order = *order;
        rec.emit(&ev);
    }
    if !drift_missing.is_empty() {
        // Mappings the probes never saw: from now on the kernel must
        // report this address space's unmaps and exit.
        kernel.track_mm(mm, crate::kernel::clock_ns(libc::CLOCK_MONOTONIC))?;
    }
    let n = (drift_stale.len() + drift_missing.len()) as u64;
    sum.stale += drift_stale.len() as u64;
    sum.missing += drift_missing.len() as u64;
    let mut done = closing(pid, id, comm, reason, shadow.len() as u64, n, false);
    done.t = read_at;
    rec.emit(&done);
    Ok(())
}

/// What one read of the page tables found: device mappings by address,
/// and every entry (for what replaced a stale mapping).
struct Observed {
    mappings: BTreeMap<u64, (u64, u8)>,
    /// Blocks whose table could not be read (left out of comparisons).
    unknown: BTreeSet<u64>,
    entries: BTreeMap<u64, Block>,
}

impl Observed {
    /// The raw entry mapping `va` (0: none, or unknown).
    fn entry_at(&self, va: u64) -> u64 {
        match self.entries.get(&(va & !(PMD_SIZE - 1))) {
            Some(Block::Ptes(t)) => t[((va >> PAGE_SHIFT) & (PT_ENTRIES as u64 - 1)) as usize],
            Some(Block::Pmd(e) | Block::Pud(e)) => *e,
            _ => 0,
        }
    }
}

fn read<K: PageTables>(
    kernel: &mut K,
    mm: u64,
    blocks: &[u64],
    in_device: &dyn Fn(u64) -> bool,
    sum: &mut Summary,
) -> Result<Observed, K::Error> {
    // The GiB-aligned blocks first: a GiB whose first block reads a PUD
    // leaf reads the same entry in its other 511, which are not read (a
    // host of 1 GiB device-dax mappings costs one read per GiB, not 512).
    let heads: Vec<u64> = blocks
        .iter()
        .copied()
        .filter(|b| b % PUD_SIZE == 0)
        .collect();
    let mut got = Vec::with_capacity(blocks.len());
    if !heads.is_empty() {
        kernel.walk(mm, &heads, &mut got)?;
    }
    let leaves: BTreeSet<u64> = heads
        .iter()
        .zip(&got)
        .filter(|(_, b)| matches!(b, Block::Pud(_)))
        .map(|(&va, _)| va)
        .collect();
    let rest: Vec<u64> = blocks
        .iter()
        .copied()
        .filter(|b| b % PUD_SIZE != 0 && !leaves.contains(&(b & !(PUD_SIZE - 1))))
        .collect();
    if !rest.is_empty() {
        kernel.walk(mm, &rest, &mut got)?;
    }
    let blocks: Vec<u64> = heads.into_iter().chain(rest).collect();
    let mut obs = Observed {
        mappings: BTreeMap::new(),
        unknown: BTreeSet::new(),
        entries: BTreeMap::new(),
    };
    sum.blocks += blocks.len() as u64;
    for (&va, b) in blocks.iter().zip(got) {
        match &b {
            Block::Unknown => {
                sum.unreadable += 1;
                obs.unknown.insert(va);
            }
            Block::None => {}
            Block::Pud(e) => {
                // Every 2 MiB block of a 1 GiB leaf reads the same entry:
                // one mapping, at the leaf's address, as the shadow keeps
                // it (one order-18 mapping).
                if let Some(pfn) = leaf_pfn(*e, true).filter(|p| in_device(*p)) {
                    let leaf = va & !(PUD_SIZE - 1);
                    if obs.mappings.insert(leaf, (pfn, PUD_ORDER)).is_none() {
                        sum.pud_leaves += 1;
                    }
                }
            }
            Block::Pmd(e) => {
                if let Some(pfn) = leaf_pfn(*e, true).filter(|p| in_device(*p)) {
                    obs.mappings.insert(va, (pfn, PMD_ORDER));
                }
            }
            Block::Ptes(t) => {
                for (k, &e) in t.iter().enumerate() {
                    if let Some(pfn) = leaf_pfn(e, false).filter(|p| in_device(*p)) {
                        obs.mappings.insert(va + k as u64 * PAGE_SIZE, (pfn, 0));
                    }
                }
            }
        }
        obs.entries.insert(va, b);
    }
    Ok(obs)
}

type Mapped = (u64, (u64, u8));

/// Where the shadow and the page table disagree, over the blocks read:
/// `(stale, missing)`.
fn diff(shadow: &BTreeMap<u64, (u64, u8)>, obs: &Observed) -> (Vec<Mapped>, Vec<Mapped>) {
    let read = |va: u64| {
        let b = va & !(PMD_SIZE - 1);
        obs.entries.contains_key(&b) && !obs.unknown.contains(&b)
    };
    let stale = shadow
        .iter()
        .filter(|(va, m)| read(**va) && obs.mappings.get(va) != Some(m))
        .map(|(va, m)| (*va, *m))
        .collect();
    let missing = obs
        .mappings
        .iter()
        .filter(|(va, m)| read(**va) && shadow.get(va) != Some(m))
        .map(|(va, m)| (*va, *m))
        .collect();
    (stale, missing)
}

fn event(kind: EventKind, pid: u32, mm_id: u64, comm: &str) -> Event {
    let mut ev = Event::new(kind, HookId::Audit);
    ev.t = crate::kernel::clock_ns(libc::CLOCK_MONOTONIC);
    ev.attach = Attach::Audit;
    ev.pid = pid;
    ev.tid = pid;
    ev.mm = Hex(mm_id);
    let b = comm.as_bytes();
    ev.comm = Comm::from_bytes(&b[..b.len().min(COMM_LEN - 1)]);
    ev
}

/// The `audit` event closing one address space.
fn closing(
    pid: u32,
    mm_id: u64,
    comm: &str,
    reason: u64,
    compared: u64,
    drift: u64,
    gone: bool,
) -> Event {
    let mut ev = event(EventKind::Audit, pid, mm_id, comm);
    ev.arg_flags = Hex(reason);
    ev.ret = compared as i64;
    ev.refs = drift as i32;
    if gone {
        ev.flags = Flags(flags::FAILED);
    }
    ev
}

#[cfg(test)]
mod tests;
