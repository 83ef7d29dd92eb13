//! Soak and benchmark loads: churn, fault-bench, pin-bench, anon-bench,
//! exec-bench. They print throughput and do not list mappings (too many).

use std::{ffi::CString, time::Instant};

use anyhow::{Context as _, bail};
use clap::Args;

use super::{FileOpts, TouchMode, force_pte, map_shared};
use crate::{
    ctx::{Ctx, touch_pages},
    json::{Json, Obj},
    pagemap,
    sys::{self, Mapping, process_vm_read},
    util::{PAGE_SIZE, PMD_SIZE, parse_mib, parse_secs},
};

#[derive(Debug, Clone, Args)]
pub struct Churn {
    /// Run for SECS.
    #[arg(long, default_value = "10", value_parser = parse_secs, value_name = "SECS")]
    pub seconds: f64,
    /// Pages per mapping.
    #[arg(long, default_value_t = 16)]
    pub pages: usize,
    /// Files to rotate over.
    #[arg(long, default_value_t = 4)]
    pub files: usize,
    /// Also pin the mapping's first page with process_vm_readv each time.
    #[arg(long)]
    pub pin: bool,
    /// Sleep this long after each cycle (e.g. `50ms`): a steady rate for
    /// soaks, instead of as fast as possible.
    #[arg(long, default_value = "0", value_parser = parse_secs, value_name = "SECS")]
    pub pause: f64,
    #[command(flatten)]
    pub touch: TouchMode,
    #[command(flatten)]
    pub fopts: FileOpts,
}

pub fn churn(ctx: &Ctx, a: &Churn) -> anyhow::Result<()> {
    let n = a.pages.max(1);
    let files = (0..a.files.max(1))
        .map(|i| {
            ctx.create_file(
                &i.to_string(),
                (n * PAGE_SIZE) as u64,
                a.fopts.fill(),
                false,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let order: Vec<usize> = (0..n).collect();
    let buf = Mapping::anon(PAGE_SIZE, PAGE_SIZE)?;
    buf.touch(0, true);
    let me = sys::getpid();
    let start = Instant::now();
    let (mut iters, mut pins) = (0u64, 0u64);
    while iters == 0 || start.elapsed().as_secs_f64() < a.seconds {
        let f = &files[iters as usize % files.len()];
        let mut m = map_shared(f.fd(), n * PAGE_SIZE, 0, PAGE_SIZE, a.fopts.map_flags())?;
        force_pte(ctx, &m);
        touch_pages(&m, &order, a.touch.is_write(), false);
        if a.pin {
            process_vm_read(me, buf.addr(), m.addr(), PAGE_SIZE).context("process_vm_readv")?;
            pins += 1;
        }
        m.unmap().context("munmap")?;
        iters += 1;
        if a.pause > 0.0 {
            std::thread::sleep(std::time::Duration::from_secs_f64(a.pause));
        }
        if iters == 1 {
            ctx.ready(
                ctx.line("ready")
                    .with("pages_per_map", n)
                    .with("files", files.len()),
            )?;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // On DAX every touch is a fault (no fault-around, no page cache).
    let touched = iters * n as u64;
    ctx.say(format!(
        "{iters} map/touch/unmap cycles, {touched} pages touched in {secs:.2} s ({:.0} pages/s)",
        touched as f64 / secs
    ));
    ctx.emit(
        &ctx.done_line()
            .with("seconds", secs)
            .with("iterations", iters)
            .with("pages_touched", touched)
            .with("pins", pins)
            .with("mappings", Vec::<Json>::new())
            .with(
                "throughput",
                Obj::new()
                    .with("maps_per_sec", iters as f64 / secs)
                    .with("pages_per_sec", touched as f64 / secs)
                    .with("pins_per_sec", pins as f64 / secs),
            )
            .with("env", ctx.file_env(&files[0])),
    )
}

/// Per-round timings -> {rounds_ms, best_ms, mean_ms, pages_per_sec (best),
/// mib_per_sec (best)}.
fn stats(rounds_ms: &[f64], pages: usize) -> Obj {
    let best = rounds_ms.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = rounds_ms.iter().sum::<f64>() / rounds_ms.len().max(1) as f64;
    Obj::new()
        .with(
            "rounds_ms",
            rounds_ms
                .iter()
                .map(|&x| Json::Float(x))
                .collect::<Vec<_>>(),
        )
        .with("best_ms", best)
        .with("mean_ms", mean)
        .with("pages_per_sec", pages as f64 / (best / 1000.0))
        .with("mean_pages_per_sec", pages as f64 / (mean / 1000.0))
        .with(
            "mib_per_sec",
            (pages * PAGE_SIZE) as f64 / (1 << 20) as f64 / (best / 1000.0),
        )
}

#[derive(Debug, Clone, Args)]
pub struct FaultBench {
    /// File size (a bare number is MiB).
    #[arg(long, default_value = "64", value_parser = parse_mib)]
    pub size: u64,
    /// Rounds of map / touch every page / unmap.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Allow PMD faults (2 MiB-aligned mapping, MADV_HUGEPAGE) instead of
    /// forcing PTE faults.
    #[arg(long)]
    pub pmd: bool,
    /// Pace the touches at about this many pages per second (sleeping
    /// between 64-page chunks) instead of touching as fast as possible:
    /// a steady event rate for a tracer's capacity test.
    #[arg(long, value_name = "PAGES_PER_SEC")]
    pub rate: Option<f64>,
    #[command(flatten)]
    pub touch: TouchMode,
    #[command(flatten)]
    pub fopts: FileOpts,
}

/// Touch `order`'s pages of `m`, at most `rate` pages per second counted
/// from `start` with `done` pages already touched (None: flat out).
fn touch_paced(
    m: &Mapping,
    order: &[usize],
    write: bool,
    rate: Option<f64>,
    start: Instant,
    done: &mut u64,
) {
    let Some(rate) = rate.filter(|r| *r > 0.0) else {
        touch_pages(m, order, write, false);
        *done += order.len() as u64;
        return;
    };
    for chunk in order.chunks(64) {
        touch_pages(m, chunk, write, false);
        *done += chunk.len() as u64;
        let due = std::time::Duration::from_secs_f64(*done as f64 / rate);
        if let Some(ahead) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
}

pub fn fault_bench(ctx: &Ctx, a: &FaultBench) -> anyhow::Result<()> {
    let len = a.size as usize / PAGE_SIZE * PAGE_SIZE;
    if len == 0 {
        bail!("--size must be at least one page");
    }
    let pages = len / PAGE_SIZE;
    let t = Instant::now();
    let f = ctx.create_file("0", len as u64, a.fopts.fill(), a.pmd)?;
    ctx.say(format!(
        "created {} MiB in {:.1} ms",
        len >> 20,
        sys::ms_since(t)
    ));
    let order: Vec<usize> = (0..pages).collect();
    let mut rounds = Vec::new();
    let paced_from = Instant::now();
    let mut touched = 0u64;
    for r in 0..a.rounds.max(1) {
        let t = Instant::now();
        let align = if a.pmd { PMD_SIZE } else { PAGE_SIZE };
        let mut m = map_shared(f.fd(), len, 0, align, a.fopts.map_flags())?;
        if a.pmd {
            let _ = m.madvise(libc::MADV_HUGEPAGE);
        } else {
            force_pte(ctx, &m);
        }
        touch_paced(
            &m,
            &order,
            a.touch.is_write(),
            a.rate,
            paced_from,
            &mut touched,
        );
        m.unmap().context("munmap")?;
        let ms = sys::ms_since(t);
        ctx.say(format!("round {r}: {pages} pages in {ms:.1} ms"));
        rounds.push(ms);
        if r == 0 {
            ctx.ready(ctx.line("ready").with("pages", pages))?;
        }
    }
    let st = stats(&rounds, pages);
    ctx.emit(
        &ctx.done_line()
            .with("size", len)
            .with("pages", pages)
            .with("rounds", rounds.len())
            .with("pmd", a.pmd)
            .with("rate", a.rate)
            .with("touch", a.touch.name())
            .with("mappings", Vec::<Json>::new())
            .with("pins", 0u32)
            .with("throughput", st)
            .with("env", ctx.file_env(&f)),
    )
}

#[derive(Debug, Clone, Args)]
pub struct PinBench {
    /// Pages mapped and pinned per round.
    #[arg(long, default_value_t = 1024)]
    pub pages: usize,
    /// Rounds.
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Pages per process_vm_readv call.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Pin anonymous memory instead of DAX (the baseline).
    #[arg(long)]
    pub anon: bool,
    #[command(flatten)]
    pub fopts: FileOpts,
}

pub fn pin_bench(ctx: &Ctx, a: &PinBench) -> anyhow::Result<()> {
    let n = a.pages.max(1);
    let batch = a.batch.clamp(1, n);
    let len = n * PAGE_SIZE;
    let file = if a.anon {
        None
    } else {
        Some(ctx.create_file("0", len as u64, a.fopts.fill(), false)?)
    };
    let m = match &file {
        Some(f) => map_shared(f.fd(), len, 0, PAGE_SIZE, a.fopts.map_flags())?,
        None => Mapping::anon(len, PAGE_SIZE)?,
    };
    force_pte(ctx, &m);
    let all: Vec<usize> = (0..n).collect();
    touch_pages(&m, &all, true, false);
    let buf = Mapping::anon(batch * PAGE_SIZE, PAGE_SIZE)?;
    for i in 0..batch {
        buf.touch(i, true);
    }
    ctx.ready(ctx.line("ready").with("pages", n))?;
    let me = sys::getpid();
    let mut rounds = Vec::new();
    for _ in 0..a.rounds.max(1) {
        let t = Instant::now();
        let mut p = 0;
        while p < n {
            let k = batch.min(n - p);
            let got = process_vm_read(me, buf.addr(), m.addr() + p * PAGE_SIZE, k * PAGE_SIZE)
                .context("process_vm_readv")?;
            if got != k * PAGE_SIZE {
                bail!("short process_vm_readv: {got}");
            }
            p += k;
        }
        rounds.push(sys::ms_since(t));
    }
    let st = stats(&rounds, n);
    let pins = n * rounds.len();
    ctx.say(format!(
        "{pins} pins in {} rounds; best {:.0} pins/s",
        rounds.len(),
        n as f64 / (rounds.iter().copied().fold(f64::INFINITY, f64::min) / 1000.0)
    ));
    let mut done = ctx
        .done_line()
        .with("memory", if a.anon { "anonymous" } else { "fsdax" })
        .with("pages", n)
        .with("batch", batch)
        .with("rounds", rounds.len())
        .with("mappings", Vec::<Json>::new())
        .with("pins", pins)
        .with("throughput", st);
    if let Some(f) = &file {
        done.set("env", ctx.file_env(f));
    }
    drop(m);
    ctx.emit(&done)
}

#[derive(Debug, Clone, Args)]
pub struct AnonBench {
    /// Anonymous memory per round (a bare number is MiB).
    #[arg(long, default_value = "64", value_parser = parse_mib)]
    pub size: u64,
    /// Rounds of map / touch every page / unmap.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Also pin every page once per round with process_vm_readv (64-page
    /// batches).
    #[arg(long)]
    pub pins: bool,
}

pub fn anon_bench(ctx: &Ctx, a: &AnonBench) -> anyhow::Result<()> {
    let len = a.size as usize / PAGE_SIZE * PAGE_SIZE;
    if len == 0 {
        bail!("--size must be at least one page");
    }
    let pages = len / PAGE_SIZE;
    let order: Vec<usize> = (0..pages).collect();
    let me = sys::getpid();
    let buf = Mapping::anon(64 * PAGE_SIZE, PAGE_SIZE)?;
    let mut rounds = Vec::new();
    let mut device_pages = None;
    for r in 0..a.rounds.max(1) {
        let t = Instant::now();
        let mut m = Mapping::anon(len, PAGE_SIZE)?;
        force_pte(ctx, &m);
        touch_pages(&m, &order, true, false);
        if a.pins {
            let mut p = 0;
            while p < pages {
                let k = 64.min(pages - p);
                process_vm_read(me, buf.addr(), m.addr() + p * PAGE_SIZE, k * PAGE_SIZE)
                    .context("process_vm_readv")?;
                p += k;
            }
        }
        let touched_ms = sys::ms_since(t);
        if r == 0 && !ctx.ranges.is_empty() {
            // Untimed: no touched pfn may lie in a device range.
            let e = pagemap::read(None, m.addr(), pages)?;
            let dev = e
                .iter()
                .filter_map(|x| x.pfn())
                .filter(|&p| ctx.ranges.contains(p) == Some(true))
                .count();
            device_pages = Some(dev);
            if dev > 0 {
                bail!(
                    "{dev} anonymous pages landed in device memory ranges: the baseline is not clean"
                );
            }
        }
        let t = Instant::now();
        m.unmap().context("munmap")?;
        let ms = touched_ms + sys::ms_since(t);
        rounds.push(ms);
        if r == 0 {
            ctx.ready(ctx.line("ready").with("pages", pages))?;
        }
    }
    let st = stats(&rounds, pages);
    ctx.say(format!("{pages} anonymous pages x {} rounds", rounds.len()));
    ctx.emit(
        &ctx.done_line()
            .with("size", len)
            .with("pages", pages)
            .with("rounds", rounds.len())
            .with("mappings", Vec::<Json>::new())
            .with("pins", if a.pins { pages * rounds.len() } else { 0 })
            .with("device_pages", device_pages)
            .with("throughput", st),
    )
}

#[derive(Debug, Clone, Args)]
pub struct ExecBench {
    /// fork + execve + wait of PROGRAM per round, this many times.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// Rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The program to run (with no arguments); it must exit 0.
    #[arg(long, default_value = "/bin/true", value_name = "PATH")]
    pub program: String,
}

/// Process churn that touches no device memory: every fork copies page
/// tables (`copy_page_range`), every exec and exit tears an address space
/// down (`unmap_page_range`/`zap_vma_range`, `exit_mmap`): hooks a DAX
/// tracer has on, whose in-kernel filter must make them cheap.
pub fn exec_bench(ctx: &Ctx, a: &ExecBench) -> anyhow::Result<()> {
    let prog = CString::new(a.program.as_str()).context("--program contains a NUL byte")?;
    let argv = [prog.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let count = a.count.max(1);
    let mut rounds = Vec::new();
    for r in 0..a.rounds.max(1) {
        let t = Instant::now();
        for _ in 0..count {
            // SAFETY: the child only calls execve and _exit (async-signal
            // safe) with pointers prepared before the fork.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                bail!("fork: {}", std::io::Error::last_os_error());
            }
            if pid == 0 {
                // SAFETY: as above; argv and envp are NULL-terminated.
                unsafe {
                    libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr());
                    libc::_exit(127);
                }
            }
            let mut status = 0;
            loop {
                // SAFETY: valid pointer; our own child.
                let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
                if rc == pid {
                    break;
                }
                let e = std::io::Error::last_os_error();
                if rc < 0 && e.kind() != std::io::ErrorKind::Interrupted {
                    bail!("waitpid({pid}): {e}");
                }
            }
            if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                bail!("{} did not exit 0 (wait status {status:#x})", a.program);
            }
        }
        rounds.push(sys::ms_since(t));
        if r == 0 {
            ctx.ready(ctx.line("ready").with("count", count))?;
        }
    }
    let best = rounds.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = rounds.iter().sum::<f64>() / rounds.len() as f64;
    ctx.say(format!(
        "{count} fork+exec of {} x {} rounds; best {:.0} execs/s",
        a.program,
        rounds.len(),
        count as f64 / (best / 1000.0)
    ));
    ctx.emit(
        &ctx.done_line()
            .with("program", a.program.as_str())
            .with("count", count)
            .with("rounds", rounds.len())
            .with("mappings", Vec::<Json>::new())
            .with("pins", 0u32)
            .with(
                "throughput",
                Obj::new()
                    .with(
                        "rounds_ms",
                        rounds.iter().map(|&x| Json::Float(x)).collect::<Vec<_>>(),
                    )
                    .with("best_ms", best)
                    .with("mean_ms", mean)
                    .with("execs_per_sec", count as f64 / (best / 1000.0))
                    .with("mean_execs_per_sec", count as f64 / (mean / 1000.0)),
            ),
    )
}
