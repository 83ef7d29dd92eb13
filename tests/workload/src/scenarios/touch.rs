//! Mapping scenarios: pte-touch, pmd-touch, fork, snapshot-churn.

use std::{path::PathBuf, time::Instant};

use anyhow::{Context as _, bail};
use clap::Args;

use super::{FileOpts, TouchMode, Who, force_pte, map_shared};
use crate::{
    ctx::{Ctx, MapRecord, touch_pages},
    json::Obj,
    sys::{self, Mapping, Pipe, fiemap, physical_of},
    util::{PAGE_SIZE, PMD_PAGES, PMD_SIZE, is_aligned, parse_secs, split_pages},
};

#[derive(Debug, Clone, Args)]
pub struct PteTouch {
    /// Pages to touch in total.
    pub pages: usize,
    /// Spread the pages over K files (each its own mapping).
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub files: usize,
    /// Touch the last file's pages in reverse order.
    #[arg(long)]
    pub reverse: bool,
    /// After touching, pin the first K touched pages (in touch order) with
    /// one process_vm_readv on ourselves: one remote iovec, hence one
    /// pin_user_pages_remote (FOLL_PIN) batch, per page.
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub pin: usize,
    #[command(flatten)]
    pub touch: TouchMode,
    #[command(flatten)]
    pub fopts: FileOpts,
}

pub fn pte_touch(ctx: &Ctx, a: &PteTouch) -> anyhow::Result<()> {
    if a.pages == 0 {
        bail!("pte-touch needs at least one page");
    }
    let split: Vec<usize> = split_pages(a.pages, a.files)
        .into_iter()
        .filter(|n| *n > 0)
        .collect();
    let mut files = Vec::new();
    let mut maps = Vec::new();
    let mut recs: Vec<MapRecord> = Vec::new();
    for (i, &n) in split.iter().enumerate() {
        let f = ctx.create_file(
            &i.to_string(),
            (n * PAGE_SIZE) as u64,
            a.fopts.fill(),
            false,
        )?;
        let m = map_shared(f.fd(), n * PAGE_SIZE, 0, PAGE_SIZE, a.fopts.map_flags())?;
        force_pte(ctx, &m);
        let reversed = a.reverse && i + 1 == split.len();
        let order: Vec<usize> = if reversed {
            (0..n).rev().collect()
        } else {
            (0..n).collect()
        };
        touch_pages(&m, &order, a.touch.is_write(), false);
        recs.extend(ctx.page_records(&m, &order, &f.path.display().to_string(), 0, None)?);
        ctx.say(format!(
            "{} {n} pages of {} at {:#x}{}",
            a.touch.name(),
            f.path.display(),
            m.addr(),
            if reversed { " (reverse order)" } else { "" }
        ));
        files.push(f);
        maps.push(m);
    }
    ctx.check_present(&recs)?;
    if a.pin > recs.len() {
        bail!(
            "--pin {} is more than the {} touched pages",
            a.pin,
            recs.len()
        );
    }
    let gup = if a.pin > 0 {
        let buf = Mapping::anon(a.pin * PAGE_SIZE, PAGE_SIZE)?;
        for i in 0..a.pin {
            buf.touch(i, true);
        }
        let remotes: Vec<usize> = recs[..a.pin].iter().map(|r| r.vaddr).collect();
        let n = sys::process_vm_read_pages(sys::getpid(), buf.addr(), &remotes)
            .context("process_vm_readv of the touched pages")?;
        if n != a.pin * PAGE_SIZE {
            bail!("process_vm_readv: short read {n} of {}", a.pin * PAGE_SIZE);
        }
        ctx.say(format!(
            "pinned the first {} touched pages (process_vm_readv)",
            a.pin
        ));
        Some(
            Obj::new()
                .with("api", "process_vm_readv")
                .with(
                    "kernel_path",
                    "pin_user_pages_remote -> __get_user_pages (slow path)",
                )
                .with("flags", "FOLL_PIN")
                .with("pages", a.pin)
                .with("calls", 1u32)
                .with("batches", a.pin)
                .with(
                    "vaddrs",
                    remotes
                        .iter()
                        .map(|&v| crate::json::hex(v as u64))
                        .collect::<Vec<_>>(),
                ),
        )
    } else {
        None
    };
    let body = Obj::new()
        .with("pages", recs.len())
        .with(
            "files",
            files
                .iter()
                .map(|f| f.path.display().to_string())
                .collect::<Vec<_>>(),
        )
        .with("reverse", a.reverse)
        .with("touch", a.touch.name())
        .with("mappings", ctx.records_json(&recs))
        .with("pins", a.pin)
        .with("gup", gup)
        .with("env", ctx.file_env(&files[0]))
        .with("options", a.fopts.obj());
    ctx.ready(
        ctx.line("ready")
            .with("pages", recs.len())
            .with("mappings", ctx.records_json(&recs))
            .with("pins", a.pin),
    )?;
    let hold = ctx.hold();
    for m in &mut maps {
        m.unmap().context("munmap")?;
    }
    let mut done = ctx.done_line();
    done.extend(body);
    done.set("hold", hold);
    done.set("munmapped", true);
    ctx.emit(&done)
}

#[derive(Debug, Clone, Args)]
pub struct PmdTouch {
    /// 2 MiB blocks to map and touch (one touch per block).
    #[arg(long, default_value_t = 1)]
    pub blocks: usize,
    /// Attempts at a file whose extent is 2 MiB-aligned on the device (a
    /// misaligned attempt is kept as a spacer until the end).
    #[arg(long, default_value_t = 4)]
    pub tries: usize,
    /// Fail unless every block is PMD-mapped.
    #[arg(long)]
    pub require_pmd: bool,
    #[command(flatten)]
    pub touch: TouchMode,
    #[command(flatten)]
    pub fopts: FileOpts,
}

pub fn pmd_touch(ctx: &Ctx, a: &PmdTouch) -> anyhow::Result<()> {
    if a.blocks == 0 {
        bail!("pmd-touch needs at least one block");
    }
    let len = a.blocks * PMD_SIZE;
    let mut spacers = Vec::new();
    let mut chosen = None;
    let mut phys_aligned = None;
    let mut phys_first = None;
    let mut extents = Vec::new();
    for attempt in 0..a.tries.max(1) {
        let f = ctx.create_file(&format!("a{attempt}"), len as u64, a.fopts.fill(), true)?;
        let aligned = match fiemap(f.fd()) {
            Ok(ext) => {
                phys_first = physical_of(&ext, 0);
                extents = ext
                    .iter()
                    .map(|e| {
                        Obj::new()
                            .with("logical", e.logical)
                            .with("physical", e.physical)
                            .with("length", e.length)
                            .with("unwritten", e.unwritten())
                    })
                    .collect::<Vec<_>>();
                Some((0..a.blocks).all(|b| {
                    let off = (b * PMD_SIZE) as u64;
                    match (
                        physical_of(&ext, off),
                        physical_of(&ext, off + PMD_SIZE as u64 - 1),
                    ) {
                        (Some(p), Some(q)) => {
                            is_aligned(p, PMD_SIZE as u64) && q == p + PMD_SIZE as u64 - 1
                        }
                        _ => false,
                    }
                }))
            }
            Err(e) => {
                ctx.say(format!(
                    "FIEMAP unavailable ({e}); cannot check the physical alignment"
                ));
                None
            }
        };
        phys_aligned = aligned;
        ctx.say(format!(
            "attempt {attempt}: {} physical offset {} {}",
            f.path.display(),
            phys_first.map_or("?".into(), |p| format!("{p:#x}")),
            match aligned {
                Some(true) => "(2 MiB-aligned)",
                Some(false) => "(NOT 2 MiB-aligned)",
                None => "(unknown alignment)",
            }
        ));
        if aligned == Some(false) && attempt + 1 < a.tries {
            spacers.push(f);
            continue;
        }
        chosen = Some((attempt, f));
        break;
    }
    let Some((attempts, f)) = chosen else {
        bail!("no file created");
    };
    let mut m = map_shared(f.fd(), len, 0, PMD_SIZE, a.fopts.map_flags())?;
    if let Err(e) = m.madvise(libc::MADV_HUGEPAGE) {
        ctx.say(format!("warning: MADV_HUGEPAGE: {e}"));
    }
    let firsts: Vec<usize> = (0..a.blocks).map(|b| b * PMD_PAGES).collect();
    touch_pages(&m, &firsts, a.touch.is_write(), false);
    let recs = ctx.block_records(&m, 9, &f.path.display().to_string(), 0)?;
    ctx.check_present(&recs)?;
    let pmd = recs.iter().all(|r| r.order == 9);
    ctx.say(format!(
        "{} {} block(s) at {:#x}: {}",
        a.touch.name(),
        a.blocks,
        m.addr(),
        if pmd {
            "PMD-mapped"
        } else {
            "NOT PMD-mapped (PTE fallback)"
        }
    ));
    let body = Obj::new()
        .with("blocks", a.blocks)
        .with("pmd", pmd)
        .with("phys_aligned", phys_aligned)
        .with("phys_offset", phys_first)
        .with("extents", extents)
        .with("attempts", attempts + 1)
        .with("touch", a.touch.name())
        .with("mappings", ctx.records_json(&recs))
        .with("pins", 0u32)
        .with("env", ctx.file_env(&f))
        .with("options", a.fopts.obj());
    ctx.ready(
        ctx.line("ready")
            .with("pmd", pmd)
            .with("mappings", ctx.records_json(&recs)),
    )?;
    let hold = ctx.hold();
    m.unmap().context("munmap")?;
    drop(spacers);
    let mut done = ctx.done_line();
    done.extend(body);
    done.set("hold", hold);
    done.set("munmapped", true);
    ctx.emit(&done)?;
    if a.require_pmd && !pmd {
        bail!(
            "the mapping fell back to PTEs (physical extent aligned: {phys_aligned:?}); \
             is the namespace's pfn align 2 MiB?"
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct Fork {
    /// Pages of the shared mapping.
    #[arg(default_value_t = 8)]
    pub pages: usize,
    /// The parent does not touch before fork (only the child faults).
    #[arg(long)]
    pub no_parent_touch: bool,
    /// Who unmaps first. `child`: the child exits, then the parent.
    /// `parent`: the parent munmaps while the child still maps the pages.
    #[arg(long, value_enum, default_value = "child")]
    pub first: Who,
    /// munmap explicitly before exiting (default: process exit tears the
    /// mappings down).
    #[arg(long)]
    pub munmap: bool,
    #[command(flatten)]
    pub touch: TouchMode,
    #[command(flatten)]
    pub fopts: FileOpts,
}

pub fn fork(ctx: &Ctx, a: &Fork) -> anyhow::Result<()> {
    let n = a.pages.max(1);
    let f = ctx.create_file("0", (n * PAGE_SIZE) as u64, a.fopts.fill(), false)?;
    let name = f.path.display().to_string();
    let mut m = map_shared(f.fd(), n * PAGE_SIZE, 0, PAGE_SIZE, a.fopts.map_flags())?;
    force_pte(ctx, &m);
    let all: Vec<usize> = (0..n).collect();
    if !a.no_parent_touch {
        touch_pages(&m, &all, a.touch.is_write(), false);
    }
    let to_child = Pipe::new()?;
    let to_parent = Pipe::new()?;
    let parent = sys::getpid();
    let wait = ctx.child_wait();
    let child = sys::fork_child(ctx.g.timeout, || {
        // A shared file mapping's PTEs are not copied at fork
        // (vma_needs_copy is false without anon_vma/PFNMAP/MIXEDMAP): every
        // touch here is a fault of the child's own.
        touch_pages(&m, &all, a.touch.is_write(), false);
        let recs = ctx.page_records(&m, &all, &name, 0, None)?;
        ctx.check_present(&recs)?;
        to_parent.send(b'T')?;
        to_child.recv(wait)?.context("parent went away")?;
        let munmapped = a.munmap;
        if munmapped {
            m.unmap_in_child()?;
        }
        let line = ctx
            .done_line()
            .with("role", "child")
            .with("parent_pid", parent)
            .with("pages", recs.len())
            .with("touch", a.touch.name())
            .with("mappings", ctx.records_json(&recs))
            .with("pins", 0u32)
            .with("munmapped", munmapped);
        ctx.emit(&line)?;
        Ok(())
    })?;
    to_parent
        .recv(wait)?
        .context("child exited before touching")?;
    ctx.say(format!("child {child} touched {n} pages"));
    let recs = if a.no_parent_touch {
        Vec::new()
    } else {
        let r = ctx.page_records(&m, &all, &name, 0, None)?;
        ctx.check_present(&r)?;
        r
    };
    ctx.ready(
        ctx.line("ready")
            .with("role", "parent")
            .with("child_pid", child)
            .with("mappings", ctx.records_json(&recs)),
    )?;
    let hold = ctx.hold();
    let mut munmapped = false;
    if a.first == Who::Parent {
        m.unmap().context("munmap")?;
        munmapped = true;
    }
    to_child.send(b'X')?;
    sys::expect_child_ok(child, wait, "fork child")?;
    if a.munmap && !munmapped {
        m.unmap().context("munmap")?;
        munmapped = true;
    }
    let done = ctx
        .done_line()
        .with("role", "parent")
        .with("child_pid", child)
        .with(
            "first",
            if a.first == Who::Parent {
                "parent"
            } else {
                "child"
            },
        )
        .with("pages", recs.len())
        .with("touch", a.touch.name())
        .with("mappings", ctx.records_json(&recs))
        .with("pins", 0u32)
        .with("hold", hold)
        .with("munmapped", munmapped)
        .with("env", ctx.file_env(&f));
    ctx.emit(&done)?;
    if !munmapped {
        m.leak();
    }
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct SnapshotChurn {
    /// Pages in the file; faulting stops when every page is touched.
    #[arg(long, default_value_t = 4096)]
    pub pages: usize,
    /// Pause between two faults.
    #[arg(long, default_value = "5ms", value_parser = parse_secs, value_name = "SECS")]
    pub interval: f64,
    /// Emit `ready` (and create --ready-file) after this many faults.
    #[arg(long, default_value_t = 64)]
    pub ready_after: usize,
    /// Stop faulting after SECS even if pages remain.
    #[arg(long, value_parser = parse_secs, value_name = "SECS")]
    pub seconds: Option<f64>,
    /// Stop faulting as soon as PATH exists.
    #[arg(long, value_name = "PATH")]
    pub stop_file: Option<PathBuf>,
    #[command(flatten)]
    pub touch: TouchMode,
    #[command(flatten)]
    pub fopts: FileOpts,
}

pub fn snapshot_churn(ctx: &Ctx, a: &SnapshotChurn) -> anyhow::Result<()> {
    let n = a.pages.max(1);
    let f = ctx.create_file("0", (n * PAGE_SIZE) as u64, a.fopts.fill(), false)?;
    let name = f.path.display().to_string();
    let mut m = map_shared(f.fd(), n * PAGE_SIZE, 0, PAGE_SIZE, a.fopts.map_flags())?;
    force_pte(ctx, &m);
    let start = Instant::now();
    let interval = std::time::Duration::from_secs_f64(a.interval);
    let mut times = Vec::with_capacity(n);
    let mut touched = Vec::with_capacity(n);
    let mut stop_reason = "all-touched";
    let mut sent_ready = false;
    for i in 0..n {
        times.push(touch_pages(&m, &[i], a.touch.is_write(), true)[0]);
        touched.push(i);
        if !sent_ready && touched.len() >= a.ready_after.min(n) {
            let recs = ctx.page_records(&m, &touched, &name, 0, Some(&times))?;
            ctx.ready(
                ctx.line("ready")
                    .with("pages", recs.len())
                    .with("mappings", ctx.records_json(&recs)),
            )?;
            sent_ready = true;
        }
        if i + 1 == n {
            break;
        }
        if a.seconds
            .is_some_and(|s| start.elapsed().as_secs_f64() >= s)
        {
            stop_reason = "seconds";
            break;
        }
        if a.stop_file.as_ref().is_some_and(|p| p.exists()) {
            stop_reason = "stop-file";
            break;
        }
        if !interval.is_zero() {
            std::thread::sleep(interval);
        }
    }
    let recs = ctx.page_records(&m, &touched, &name, 0, Some(&times))?;
    ctx.check_present(&recs)?;
    ctx.say(format!(
        "faulted {} pages in {:.3} s ({stop_reason})",
        recs.len(),
        start.elapsed().as_secs_f64()
    ));
    ctx.emit(
        &ctx.line("faulted")
            .with("pages", recs.len())
            .with("stop", stop_reason)
            .with("mappings", ctx.records_json(&recs)),
    )?;
    let hold = ctx.hold();
    m.unmap().context("munmap")?;
    let done = ctx
        .done_line()
        .with("pages", recs.len())
        .with("stop", stop_reason)
        .with("touch", a.touch.name())
        .with("interval_s", a.interval)
        .with("mappings", ctx.records_json(&recs))
        .with("pins", 0u32)
        .with("hold", hold)
        .with("munmapped", true)
        .with("env", ctx.file_env(&f));
    ctx.emit(&done)
}
