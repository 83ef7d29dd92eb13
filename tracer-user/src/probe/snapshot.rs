//! The kernel half of the attach-time snapshot (`crate::snapshot`): the task
//! iterator that names each process's address space, the one-shot refcount
//! reader, and the in-kernel table of tracked address spaces.

use std::{collections::HashMap, io::Read as _};

use aya::{
    Btf, Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData},
    programs::{Iter, RawTracePoint, RawTracePointRunOptions, TestRun as _},
};
use refscope_common::{
    PT_WALK_BATCH, PtWalk, REF_UNKNOWN, SNAP_BATCH, SnapBatch, SnapTask, maps, programs, pt_level,
    snap_huge,
};
use thiserror::Error;

use super::verifier_summary;
use crate::{
    pagetable::{Block, PageTables},
    snapshot::{KernelReads, PageRef, PageReq},
};

const TASKS_PROG: &str = programs::SNAPSHOT_TASKS;
const REFS_PROG: &str = programs::SNAPSHOT_REFS;
const WALK_PROG: &str = programs::WALK_TABLES;

/// Why the kernel half of the snapshot cannot run.
#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("the eBPF object has no program `{0}` (a build mismatch)")]
    NoProgram(&'static str),
    #[error("the eBPF object has no map `{0}` (a build mismatch)")]
    NoMap(&'static str),
    #[error("cannot load the snapshot program {prog}: {why}")]
    Load { prog: &'static str, why: String },
    #[error("the task iterator failed: {0}")]
    Iter(String),
    #[error("the refcount reader failed: {0}")]
    Run(String),
    #[error("the page-table reader failed: {0}")]
    Walk(String),
    #[error("eBPF map {name}: {why}")]
    Map { name: &'static str, why: String },
}

/// The snapshot programs, loaded (they are never attached to a function).
pub struct SnapshotKernel<'a> {
    ebpf: &'a mut Ebpf,
}

impl<'a> SnapshotKernel<'a> {
    /// Load the programs into the object the probes came from (so they
    /// share its configuration and maps); already loaded ones are reused,
    /// so the audit can call this as often as it runs.
    pub fn load(ebpf: &'a mut Ebpf) -> Result<Self, SnapshotError> {
        let iter: &mut Iter = ebpf
            .program_mut(TASKS_PROG)
            .ok_or(SnapshotError::NoProgram(TASKS_PROG))?
            .try_into()
            .map_err(|_| SnapshotError::NoProgram(TASKS_PROG))?;
        if iter.fd().is_err() {
            let btf = Btf::from_sys_fs().map_err(|e| SnapshotError::Load {
                prog: TASKS_PROG,
                why: format!("cannot read /sys/kernel/btf/vmlinux: {e}"),
            })?;
            iter.load("task", &btf).map_err(|e| SnapshotError::Load {
                prog: TASKS_PROG,
                why: verifier_summary(&format!("{e:#}")),
            })?;
        }
        for name in [REFS_PROG, WALK_PROG] {
            let prog: &mut RawTracePoint = ebpf
                .program_mut(name)
                .ok_or(SnapshotError::NoProgram(name))?
                .try_into()
                .map_err(|_| SnapshotError::NoProgram(name))?;
            if prog.fd().is_err() {
                prog.load().map_err(|e| SnapshotError::Load {
                    prog: name,
                    why: verifier_summary(&format!("{e:#}")),
                })?;
            }
        }
        Ok(SnapshotKernel { ebpf })
    }

    /// Run one of the one-shot programs.
    fn run(&self, name: &'static str) -> Result<(), String> {
        let prog: &RawTracePoint = self
            .ebpf
            .program(name)
            .ok_or_else(|| SnapshotError::NoProgram(name).to_string())?
            .try_into()
            .map_err(|_| SnapshotError::NoProgram(name).to_string())?;
        let ran = prog
            .test_run(RawTracePointRunOptions::new())
            .map_err(|e| e.to_string())?;
        if ran.return_value != 0 {
            return Err(format!("the program returned {}", ran.return_value));
        }
        Ok(())
    }

    fn walk_map(&mut self) -> Result<Array<&mut MapData, PtWalk>, SnapshotError> {
        let map = self
            .ebpf
            .map_mut(maps::PT_WALK)
            .ok_or(SnapshotError::NoMap(maps::PT_WALK))?;
        Array::try_from(map).map_err(|e| SnapshotError::Map {
            name: maps::PT_WALK,
            why: e.to_string(),
        })
    }

    fn batch_map(&mut self) -> Result<Array<&mut MapData, SnapBatch>, SnapshotError> {
        let map = self
            .ebpf
            .map_mut(maps::SNAP_PAGES)
            .ok_or(SnapshotError::NoMap(maps::SNAP_PAGES))?;
        Array::try_from(map).map_err(|e| SnapshotError::Map {
            name: maps::SNAP_PAGES,
            why: e.to_string(),
        })
    }
}

impl KernelReads for SnapshotKernel<'_> {
    type Error = SnapshotError;

    fn task_mms(&mut self) -> Result<HashMap<u32, u64>, SnapshotError> {
        let iter: &mut Iter = self
            .ebpf
            .program_mut(TASKS_PROG)
            .ok_or(SnapshotError::NoProgram(TASKS_PROG))?
            .try_into()
            .map_err(|_| SnapshotError::NoProgram(TASKS_PROG))?;
        let id = iter
            .attach()
            .map_err(|e| SnapshotError::Iter(e.to_string()))?;
        let link = iter
            .take_link(id)
            .map_err(|e| SnapshotError::Iter(e.to_string()))?;
        let mut file = link
            .into_file()
            .map_err(|e| SnapshotError::Iter(e.to_string()))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| SnapshotError::Iter(format!("reading the iterator: {e}")))?;
        Ok(parse_tasks(&bytes))
    }

    fn read_pages(
        &mut self,
        mm: u64,
        reqs: &[PageReq],
        out: &mut Vec<PageRef>,
    ) -> Result<(), SnapshotError> {
        for chunk in reqs.chunks(SNAP_BATCH) {
            let mut batch = SnapBatch::zeroed();
            batch.count = chunk.len() as u32;
            batch.mm = mm;
            for (i, r) in chunk.iter().enumerate() {
                batch.pfns[i] = r.pfn;
                batch.walk[i] = r.walk;
            }
            self.batch_map()?
                .set(0, batch, 0)
                .map_err(|e| SnapshotError::Map {
                    name: maps::SNAP_PAGES,
                    why: e.to_string(),
                })?;
            self.run(REFS_PROG).map_err(SnapshotError::Run)?;
            let done = self
                .batch_map()?
                .get(&0, 0)
                .map_err(|e| SnapshotError::Map {
                    name: maps::SNAP_PAGES,
                    why: e.to_string(),
                })?;
            out.extend((0..chunk.len()).map(|i| PageRef {
                raw: (done.refs[i] != REF_UNKNOWN).then_some(done.refs[i]),
                pgmap: done.pgmaps[i],
                pmd: match done.huge[i] {
                    snap_huge::PMD => Some(true),
                    snap_huge::NOT_PMD => Some(false),
                    _ => None,
                },
            }));
        }
        Ok(())
    }

    fn pud_leaf(&mut self, mm: u64, va: u64) -> Result<Option<u64>, SnapshotError> {
        let mut out = Vec::with_capacity(1);
        self.walk(mm, &[va], &mut out)?;
        Ok(match out.pop() {
            Some(Block::Pud(e)) => Some(e),
            _ => None,
        })
    }

    fn track_mm(&mut self, mm: u64, now: u64) -> Result<(), SnapshotError> {
        let map = self
            .ebpf
            .map_mut(maps::TRACKED_MMS)
            .ok_or(SnapshotError::NoMap(maps::TRACKED_MMS))?;
        let mut mms: BpfHashMap<&mut MapData, u64, u64> =
            BpfHashMap::try_from(map).map_err(|e| SnapshotError::Map {
                name: maps::TRACKED_MMS,
                why: e.to_string(),
            })?;
        mms.insert(mm, now, 0).map_err(|e| SnapshotError::Map {
            name: maps::TRACKED_MMS,
            why: format!("{e} (the table of tracked address spaces may be full)"),
        })
    }
}

/// The iterator's output: packed [`SnapTask`] records.
impl PageTables for SnapshotKernel<'_> {
    type Error = SnapshotError;

    fn walk(&mut self, mm: u64, vas: &[u64], out: &mut Vec<Block>) -> Result<(), SnapshotError> {
        for chunk in vas.chunks(PT_WALK_BATCH) {
            let mut batch = Box::new(PtWalk::zeroed());
            batch.count = chunk.len() as u32;
            batch.mm = mm;
            batch.va[..chunk.len()].copy_from_slice(chunk);
            let map_err = |e: aya::maps::MapError| SnapshotError::Map {
                name: maps::PT_WALK,
                why: e.to_string(),
            };
            self.walk_map()?.set(0, *batch, 0).map_err(map_err)?;
            self.run(WALK_PROG).map_err(SnapshotError::Walk)?;
            let done = Box::new(self.walk_map()?.get(&0, 0).map_err(map_err)?);
            out.extend((0..chunk.len()).map(|i| match done.level[i] {
                pt_level::NONE => Block::None,
                pt_level::PUD => Block::Pud(done.entry[i]),
                pt_level::PMD => Block::Pmd(done.entry[i]),
                pt_level::PTES => Block::Ptes(Box::new(done.ptes[i])),
                _ => Block::Unknown,
            }));
        }
        Ok(())
    }
}

fn parse_tasks(bytes: &[u8]) -> HashMap<u32, u64> {
    bytes
        .chunks_exact(size_of::<SnapTask>())
        .filter_map(|c| {
            let tgid = u32::from_ne_bytes(c[0..4].try_into().ok()?);
            let mm = u64::from_ne_bytes(c[8..16].try_into().ok()?);
            (mm != 0).then_some((tgid, mm))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterator_records_are_decoded_in_abi_layout() {
        let recs = [
            SnapTask {
                tgid: 7,
                pid: 7,
                mm: 0xffff_8880_0000_1000,
            },
            SnapTask {
                tgid: 9,
                pid: 9,
                mm: 0,
            },
        ];
        let mut bytes = Vec::new();
        for r in &recs {
            bytes.extend(r.tgid.to_ne_bytes());
            bytes.extend(r.pid.to_ne_bytes());
            bytes.extend(r.mm.to_ne_bytes());
        }
        bytes.extend([1, 2, 3]); // a torn tail is ignored
        let m = parse_tasks(&bytes);
        assert_eq!(m.len(), 1);
        assert_eq!(m[&7], 0xffff_8880_0000_1000);
    }
}
