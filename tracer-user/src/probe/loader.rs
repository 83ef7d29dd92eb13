//! Loading the eBPF object and attaching what the plan chose. The only
//! module (with `reader`) that touches aya.

use std::os::fd::{AsFd as _, OwnedFd};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, Map, MapData, PerCpuArray},
    programs::{FEntry, FExit, Program, ProgramFd},
};
use refscope_common::{Config, DropStats, HookId, MAX_RANGES, PfnRange, maps};
use thiserror::Error;

use super::{
    plan::{Plan, Via},
    ringbuf::RingReader,
};

/// The eBPF object built by build.rs (empty when built without bpf-linker).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/refscope-ebpf"));

/// Errors loading or attaching.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The binary was built without its eBPF programs.
    #[error(
        "this refscope binary was built without its eBPF programs ({}): build it with `cargo xtask build`, or run `cargo xtask setup` and rebuild",
        super::BUILT_WITHOUT_PROGRAMS.unwrap_or("reason unknown")
    )]
    NoObject,
    /// The kernel refused the object (maps, BTF, globals).
    #[error("the kernel refused refscope's eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    /// The kernel's BTF could not be read for fentry attachment.
    #[error("cannot read /sys/kernel/btf/vmlinux for fentry programs: {0}")]
    Btf(#[source] aya::BtfError),
    /// A map the object must have is missing (a build mismatch).
    #[error("the eBPF object has no map `{0}`")]
    Map(&'static str),
    /// A map operation failed.
    #[error("eBPF map `{name}`: {source}")]
    MapOp {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    /// The ring buffer could not be mapped.
    #[error("cannot map the ring buffer: {0}")]
    Mmap(#[source] std::io::Error),
    /// More device ranges than the in-kernel filter holds.
    #[error("{0} device ranges exceed the in-kernel filter's {MAX_RANGES}")]
    TooManyRanges(usize),
}

/// One program that could not be attached although the plan chose it.
#[derive(Debug)]
pub struct AttachFailure {
    pub hook: HookId,
    pub program: String,
    pub error: String,
}

/// Loaded and attached programs, and the maps userspace reads.
pub struct Probes {
    pub events: RingReader,
    pub drops: DropCounters,
    /// The programs that are attached: (name, hook).
    pub attached: Vec<(String, HookId)>,
    pub failures: Vec<AttachFailure>,
    pub guard: Attached,
}

/// The programs' per-CPU ring-buffer drop counters (map `DROPS`).
pub struct DropCounters(PerCpuArray<MapData, DropStats>);

impl super::DropSource for DropCounters {
    fn per_cpu(&self) -> Option<Vec<DropStats>> {
        self.0
            .get(&0, 0)
            .ok()
            .map(|per_cpu| per_cpu.iter().copied().collect())
    }
}

/// Keeps programs and links alive; dropping it detaches everything.
pub struct Attached {
    ebpf: Ebpf,
    /// Run-time statistics stay enabled while this lives.
    _stats: Option<OwnedFd>,
}

impl Attached {
    /// Runs of our programs the kernel skipped because the same program was
    /// already running on that CPU (`recursion_misses`, 5.12+): events that
    /// were never produced, so neither the drop counters nor the sequence
    /// numbers see them.
    pub fn recursion_misses(&self) -> u64 {
        self.ebpf
            .programs()
            .filter_map(|(_, p)| p.fd().ok())
            .filter_map(|fd| prog_info(fd.as_fd()))
            .map(|info| {
                log::trace!(
                    "program info: {} runs, {} ns, {} recursion misses",
                    info.run_cnt,
                    info.run_time_ns,
                    info.recursion_misses
                );
                info.recursion_misses
            })
            .sum()
    }

    /// The attach-time snapshot's programs, loaded into this object.
    pub fn snapshot_kernel(
        &mut self,
    ) -> Result<super::snapshot::SnapshotKernel<'_>, super::snapshot::SnapshotError> {
        super::snapshot::SnapshotKernel::load(&mut self.ebpf)
    }
}

/// The start of `struct bpf_prog_info` (include/uapi/linux/bpf.h) up to
/// `recursion_misses`: the kernel fills as much as we ask for. aya does not
/// expose that field.
#[repr(C)]
#[derive(Default)]
struct ProgInfoPrefix {
    _before_run_time: [u64; 24],
    run_time_ns: u64,
    run_cnt: u64,
    recursion_misses: u64,
}

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// `BPF_OBJ_GET_INFO_BY_FD` on a program (None on old kernels or errors).
fn prog_info(fd: std::os::fd::BorrowedFd<'_>) -> Option<ProgInfoPrefix> {
    use std::os::fd::AsRawFd as _;
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = ProgInfoPrefix::default();
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<ProgInfoPrefix>() as u32,
        info: (&raw mut info) as u64,
    };
    // SAFETY: attr and info outlive the call; the kernel writes at most
    // `info_len` bytes to `info` and updates `info_len`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw mut attr,
            size_of::<InfoAttr>(),
        )
    };
    // A kernel older than the field leaves it short (and zero).
    (r == 0).then_some(info)
}

/// Ring buffer sizes must be a power of two and a multiple of the page size.
pub fn ringbuf_size(requested: u64) -> u32 {
    requested.clamp(4096, 1 << 30).next_power_of_two() as u32
}

/// How many records per CPU between wakeups of the reader, for a ring
/// buffer of `size` bytes (`Config::wakeup_every`): a power of two, a
/// sixteenth of what the buffer holds of the smallest event records (64
/// bytes and the kernel's 8-byte header) and at most 1024, so a batch never
/// fills it and a burst costs one wakeup per batch, not one per record.
/// The reader's own tick bounds the latency of what is below a batch.
pub fn wakeup_every(size: u32) -> u32 {
    let records = size / 72;
    let every = (records / 16).clamp(1, 1024);
    1 << every.ilog2()
}

/// Load the object with `cfg`, seed the device filter with `ranges`, attach
/// the plan's programs. Individual attach failures are collected, not fatal.
pub fn load(
    plan: &Plan,
    cfg: &Config,
    ringbuf_bytes: u64,
    ranges: &[(u64, u64)],
) -> Result<Probes, LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    if ranges.len() > MAX_RANGES {
        return Err(LoadError::TooManyRanges(ranges.len()));
    }
    let size = ringbuf_size(ringbuf_bytes);
    let cfg = Config {
        wakeup_every: wakeup_every(size),
        ..*cfg
    };
    let mut ebpf = EbpfLoader::new()
        .override_global(maps::CONFIG, &cfg, true)
        .map_max_entries(maps::EVENTS, size)
        .load(OBJECT)
        .map_err(LoadError::Load)?;

    {
        let map = ebpf
            .map_mut(maps::DEVICE_RANGES)
            .ok_or(LoadError::Map(maps::DEVICE_RANGES))?;
        let mut arr: Array<_, PfnRange> =
            Array::try_from(map).map_err(|source| LoadError::MapOp {
                name: maps::DEVICE_RANGES,
                source,
            })?;
        for (i, &(start, end)) in ranges.iter().enumerate() {
            arr.set(i as u32, PfnRange { start, end }, 0)
                .map_err(|source| LoadError::MapOp {
                    name: maps::DEVICE_RANGES,
                    source,
                })?;
        }
    }

    // Per-program run time, as bpftop shows it (best effort: needs 5.8+).
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok();

    let btf = if plan.attach.iter().any(|a| a.via == Via::Fentry) {
        Some(Btf::from_sys_fs().map_err(LoadError::Btf)?)
    } else {
        None
    };
    let mut attached = Vec::new();
    let mut failures = Vec::new();
    for a in &plan.attach {
        for name in a.programs() {
            match attach_one(&mut ebpf, &name, a.hook, btf.as_ref()) {
                Ok(()) => attached.push((name, a.hook)),
                Err(error) => failures.push(AttachFailure {
                    hook: a.hook,
                    program: name,
                    error,
                }),
            }
        }
    }

    let events = match ebpf.take_map(maps::EVENTS) {
        Some(Map::RingBuf(data)) => RingReader::new(data, size).map_err(LoadError::Mmap)?,
        _ => return Err(LoadError::Map(maps::EVENTS)),
    };
    let drops = PerCpuArray::try_from(
        ebpf.take_map(maps::DROPS)
            .ok_or(LoadError::Map(maps::DROPS))?,
    )
    .map_err(|source| LoadError::MapOp {
        name: maps::DROPS,
        source,
    })?;
    Ok(Probes {
        events,
        drops: DropCounters(drops),
        attached,
        failures,
        guard: Attached {
            ebpf,
            _stats: stats,
        },
    })
}

fn attach_one(ebpf: &mut Ebpf, name: &str, hook: HookId, btf: Option<&Btf>) -> Result<(), String> {
    let function = hook.function();
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} is not in the eBPF object"))?;
    let verbose = |e: aya::programs::ProgramError| super::verifier_summary(&format!("{e:#}"));
    match prog {
        Program::FEntry(p) => {
            let btf = btf.ok_or("no BTF")?;
            load_fentry(p, function, btf).map_err(verbose)
        }
        Program::FExit(p) => {
            let btf = btf.ok_or("no BTF")?;
            load_fexit(p, function, btf).map_err(verbose)
        }
        Program::KProbe(p) => {
            p.load().map_err(verbose)?;
            p.attach(function, 0).map(|_| ()).map_err(verbose)
        }
        _ => Err(format!("program {name} has an unexpected type")),
    }
}

fn load_fentry(
    p: &mut FEntry,
    function: &str,
    btf: &Btf,
) -> Result<(), aya::programs::ProgramError> {
    p.load(function, btf)?;
    p.attach().map(|_| ())
}

fn load_fexit(p: &mut FExit, function: &str, btf: &Btf) -> Result<(), aya::programs::ProgramError> {
    p.load(function, btf)?;
    p.attach().map(|_| ())
}

/// Empty programs attached where a plan attaches refscope's
/// (`refscope bench-floor`): kept attached while this lives.
pub struct Floor {
    /// `(empty program, hook)` for every copy attached.
    pub attached: Vec<(&'static str, HookId)>,
    pub failures: Vec<AttachFailure>,
    /// The links: each holds its copy of the program in the kernel.
    _links: Vec<Box<dyn std::any::Any>>,
    /// A descriptor of each copy, so the kernel's run-time statistics of
    /// every copy show in `/proc/PID/fdinfo` (the benchmark reads them
    /// there, as it does refscope's own programs').
    programs: Vec<ProgramFd>,
    _ebpf: Ebpf,
    _stats: Option<OwnedFd>,
}

impl Floor {
    /// Runs and run time of all copies together, from the kernel's
    /// statistics (zero where they are off).
    pub fn run_stats(&self) -> (u64, std::time::Duration) {
        self.programs
            .iter()
            .filter_map(|fd| prog_info(fd.as_fd()))
            .fold((0, std::time::Duration::ZERO), |(n, t), i| {
                (
                    n + i.run_cnt,
                    t + std::time::Duration::from_nanos(i.run_time_ns),
                )
            })
    }
}

/// Attach, for every program `plan` attaches, a copy of the empty program
/// of the same kind ([`refscope_common::programs::floor`]) to the same
/// function. aya loads a program once per attach target (an fentry's target
/// is fixed when it is loaded), so each copy is loaded, attached, its link
/// and a descriptor kept, and aya's handle unloaded for the next copy: one
/// object, no map of it used (the ring buffer shrunk to a page).
pub fn load_floor(plan: &Plan) -> Result<Floor, LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    let ebpf = EbpfLoader::new()
        .map_max_entries(maps::EVENTS, ringbuf_size(0))
        .map_max_entries(maps::TRACKED_MMS, 1)
        .load(OBJECT)
        .map_err(LoadError::Load)?;
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok();
    let btf = if plan.attach.iter().any(|a| a.via == Via::Fentry) {
        Some(Btf::from_sys_fs().map_err(LoadError::Btf)?)
    } else {
        None
    };
    let mut floor = Floor {
        attached: Vec::new(),
        failures: Vec::new(),
        _links: Vec::new(),
        programs: Vec::new(),
        _ebpf: ebpf,
        _stats: stats,
    };
    for a in &plan.attach {
        for kind in a.kinds() {
            let name = refscope_common::programs::floor(kind);
            match attach_copy(&mut floor._ebpf, name, a.hook.function(), btf.as_ref()) {
                Ok((link, fd)) => {
                    floor._links.push(link);
                    floor.programs.push(fd);
                    floor.attached.push((name, a.hook));
                }
                Err(error) => floor.failures.push(AttachFailure {
                    hook: a.hook,
                    program: name.into(),
                    error,
                }),
            }
        }
    }
    Ok(floor)
}

/// Load `name` against `function`, attach it, take the link and a
/// descriptor of the program, and unload aya's handle (the kernel keeps
/// the program for the link), so the next call can load it again.
fn attach_copy(
    ebpf: &mut Ebpf,
    name: &str,
    function: &str,
    btf: Option<&Btf>,
) -> Result<(Box<dyn std::any::Any>, ProgramFd), String> {
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} is not in the eBPF object"))?;
    let verbose = |e: aya::programs::ProgramError| super::verifier_summary(&format!("{e:#}"));
    let clone = |fd: &ProgramFd| fd.try_clone().map_err(|e| format!("{name}: {e}"));
    // One body for the three program types, whose handles share no trait.
    macro_rules! once {
        ($p:ident, $load:expr, $attach:expr) => {{
            $load.map_err(verbose)?;
            let kept = (|| {
                let id = $attach.map_err(verbose)?;
                let link = $p.take_link(id).map_err(verbose)?;
                let fd = clone($p.fd().map_err(verbose)?)?;
                Ok::<_, String>((Box::new(link) as Box<dyn std::any::Any>, fd))
            })();
            // The taken link keeps the program attached (aya detaches only
            // the links it still tracks).
            let _ = $p.unload();
            kept
        }};
    }
    match prog {
        Program::FEntry(p) => {
            let btf = btf.ok_or("no BTF")?;
            once!(p, p.load(function, btf), p.attach())
        }
        Program::FExit(p) => {
            let btf = btf.ok_or("no BTF")?;
            once!(p, p.load(function, btf), p.attach())
        }
        Program::KProbe(p) => once!(p, p.load(), p.attach(function, 0)),
        _ => Err(format!("program {name} has an unexpected type")),
    }
}

/// Total BPF run time and runs of the attached programs (for the live
/// header's "in-kernel cost per event").
pub fn run_stats() -> (std::time::Duration, u64) {
    let mut time = std::time::Duration::ZERO;
    let mut runs = 0;
    for info in aya::programs::loaded_programs().flatten() {
        let name = info.name_as_str().unwrap_or_default();
        // Kernel program names are truncated to 15 bytes; ours all end in
        // one of these suffixes or their prefixes.
        if is_ours(name) {
            time += info.run_time();
            runs += info.run_count();
        }
    }
    (time, runs)
}

fn is_ours(kernel_name: &str) -> bool {
    super::plan::HOOKS.iter().any(|d| {
        let base = d.hook.function().trim_start_matches('_');
        ["fentry", "fexit", "kprobe", "kretprobe"]
            .iter()
            .any(|s| format!("{base}_{s}").starts_with(kernel_name) && !kernel_name.is_empty())
    })
}

/// Say what a load/attach failure means, not just its errno (`record` and
/// `live` say the same when they cannot trace). `lockdown` is the active
/// lockdown mode.
pub fn explain_refusal(err: &str, kprobes: bool, lockdown: Option<&str>) -> String {
    let eperm = err.contains("Operation not permitted")
        || err.contains("EPERM")
        || err.contains("os error 1)");
    if lockdown == Some("confidentiality") {
        // The verifier then knows no bpf_probe_read_kernel: EINVAL, not EPERM.
        format!(
            "kernel lockdown is in confidentiality mode: BPF programs may not read kernel memory \
             (bpf_probe_read_kernel), and refscope reads every struct page with it. refscope cannot \
             trace until the machine boots without it (the lockdown= kernel parameter, or Secure \
             Boot's lockdown; it cannot be lifted at run time). ({err})"
        )
    } else if eperm {
        format!(
            "the kernel refuses to load tracing (fentry/fexit) programs: EPERM before the verifier ran \
             (lockdown or a BPF LSM policy){}. refscope cannot trace on this kernel. ({err})",
            if kprobes {
                "; retry with --attach kprobe"
            } else {
                ", and it has no kprobes to fall back to (CONFIG_KPROBES off)"
            }
        )
    } else {
        format!("loading or attaching failed: {err}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_logs_are_reduced_to_the_complaint() {
        let log = "the BPF_PROG_LOAD syscall failed. Verifier output: 0: R1=ctx()\n\
                   12: (1f) r2 -= r1\n\
                   R2 pointer arithmetic on ptr_ prohibited\n\
                   processed 39 insns (limit 1000000) max_states_per_insn 0\n";
        let s = super::super::verifier_summary(log);
        assert!(s.contains("pointer arithmetic on ptr_ prohibited"), "{s}");
        assert!(!s.contains("processed 39"), "{s}");
        assert_eq!(ringbuf_size(3000), 4096);
        assert_eq!(ringbuf_size(5 << 20), 8 << 20);
    }

    #[test]
    fn wakeups_are_batched_below_what_the_ring_holds() {
        for size in [4096u32, 1 << 20, 16 << 20, 1 << 30] {
            let every = wakeup_every(size);
            assert!(every.is_power_of_two(), "{size}: {every}");
            assert!(every * 72 * 16 <= size.max(72 * 16), "{size}: {every}");
        }
        assert_eq!(wakeup_every(4096), 2);
        assert_eq!(wakeup_every(16 << 20), 1024);
    }
}
