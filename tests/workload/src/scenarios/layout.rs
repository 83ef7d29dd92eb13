//! Layout changes under a mapping: truncate-mapped and punch-hole, with an
//! optional page reference held across the operation (vmsplice into a
//! pipe), so the file system has to break layouts and wait
//! (dax_layout_busy_page / ext4_break_layouts / xfs_break_dax_layouts on
//! 6.x, dax_break_layout on 7.x). Every wait is bounded.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

use super::{FileOpts, TouchMode, force_pte, map_shared};
use crate::{
    ctx::{Ctx, touch_pages},
    json::Obj,
    pagemap,
    sys::{self, Interrupter, Pipe},
    util::{PAGE_SIZE, parse_secs, pow2_at_least},
};

/// How a page reference is held across the layout change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HoldRef {
    /// Only mapped: the operation zaps the PTEs and goes on.
    None,
    /// vmsplice the affected DAX pages into a pipe: get_user_pages_fast
    /// (FOLL_GET) references held until the pipe is drained.
    Vmsplice,
}

#[derive(Debug, Clone, Args)]
pub struct LayoutArgs {
    /// Pages to map and touch.
    #[arg(default_value_t = 8)]
    pub pages: usize,
    /// Reference held on the affected pages across the operation.
    #[arg(long, value_enum, default_value = "none")]
    pub hold_ref: HoldRef,
    /// Drain the pipe (dropping the references) SECS after the operation
    /// starts.
    #[arg(long, default_value = "2", value_parser = parse_secs, value_name = "SECS")]
    pub release_after: f64,
    /// Interrupt the operation with a signal (EINTR) if it has not returned
    /// after SECS. When this is shorter than --release-after the
    /// interruption is the expected outcome.
    #[arg(long, default_value = "30", value_parser = parse_secs, value_name = "SECS")]
    pub op_timeout: f64,
    #[command(flatten)]
    pub touch: TouchMode,
    #[command(flatten)]
    pub fopts: FileOpts,
}

#[derive(Debug, Clone, Args)]
pub struct TruncateMapped {
    #[command(flatten)]
    pub common: LayoutArgs,
    /// New file size in pages.
    #[arg(long, default_value_t = 0)]
    pub to_pages: usize,
}

#[derive(Debug, Clone, Args)]
pub struct PunchHole {
    #[command(flatten)]
    pub common: LayoutArgs,
    /// First page of the hole.
    #[arg(long, default_value_t = 0)]
    pub hole_start: usize,
    /// Pages in the hole (default: from --hole-start to the end).
    #[arg(long)]
    pub hole_pages: Option<usize>,
}

enum Op {
    Truncate { to: usize },
    Punch { start: usize, len: usize },
}

pub fn truncate_mapped(ctx: &Ctx, a: &TruncateMapped) -> anyhow::Result<()> {
    if a.to_pages > a.common.pages {
        bail!(
            "--to-pages {} is larger than the file ({} pages)",
            a.to_pages,
            a.common.pages
        );
    }
    run(ctx, &a.common, Op::Truncate { to: a.to_pages })
}

pub fn punch_hole(ctx: &Ctx, a: &PunchHole) -> anyhow::Result<()> {
    let n = a.common.pages;
    if a.hole_start >= n {
        bail!("--hole-start {} is past the file ({n} pages)", a.hole_start);
    }
    let len = a
        .hole_pages
        .unwrap_or(n - a.hole_start)
        .min(n - a.hole_start);
    if len == 0 {
        bail!("empty hole");
    }
    run(
        ctx,
        &a.common,
        Op::Punch {
            start: a.hole_start,
            len,
        },
    )
}

fn run(ctx: &Ctx, a: &LayoutArgs, op: Op) -> anyhow::Result<()> {
    let n = a.pages.max(1);
    let f = ctx.create_file("0", (n * PAGE_SIZE) as u64, a.fopts.fill(), false)?;
    let name = f.path.display().to_string();
    let mut m = map_shared(f.fd(), n * PAGE_SIZE, 0, PAGE_SIZE, a.fopts.map_flags())?;
    force_pte(ctx, &m);
    let all: Vec<usize> = (0..n).collect();
    touch_pages(&m, &all, a.touch.is_write(), false);
    let recs = ctx.page_records(&m, &all, &name, 0, None)?;
    ctx.check_present(&recs)?;
    let (first, count) = match op {
        Op::Truncate { to } => (to, n - to),
        Op::Punch { start, len } => (start, len),
    };

    // Take the references.
    let pipe = Arc::new(Pipe::new()?);
    let mut refs = Obj::new().with("kind", format!("{:?}", a.hold_ref).to_lowercase());
    let mut ref_pages = 0;
    if a.hold_ref == HoldRef::Vmsplice && count > 0 {
        let bytes = count * PAGE_SIZE;
        let size = pipe
            .set_size(pow2_at_least(bytes, 65536))
            .context("F_SETPIPE_SZ for the vmsplice pipe")?;
        let got = pipe
            .vmsplice(m.addr() + first * PAGE_SIZE, bytes)
            .context("vmsplice of the DAX pages")?;
        if got != bytes {
            bail!("vmsplice took {got} of {bytes} bytes (pipe size {size})");
        }
        ref_pages = count;
        ctx.say(format!(
            "vmspliced pages {first}..{} into a pipe (references held)",
            first + count
        ));
    }
    refs.set("pages", ref_pages);
    refs.set("first_page", first);

    ctx.ready(
        ctx.line("ready")
            .with("pages", n)
            .with("mappings", ctx.records_json(&recs))
            .with("refs", refs.clone()),
    )?;
    let hold = ctx.hold();

    // The releaser drains the pipe --release-after seconds after the
    // operation starts.
    let stop = Arc::new(AtomicBool::new(false));
    let released_ns = Arc::new(AtomicU64::new(0));
    // Set when the release came from the timer while the operation was
    // still running (not from the operation returning first).
    let released_by_timer = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let releaser = (ref_pages > 0).then(|| {
        let (pipe, stop, released, by_timer) = (
            pipe.clone(),
            stop.clone(),
            released_ns.clone(),
            released_by_timer.clone(),
        );
        let after = Duration::from_secs_f64(a.release_after);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) && t0.elapsed() < after {
                std::thread::sleep(Duration::from_millis(2));
            }
            by_timer.store(!stop.load(Ordering::SeqCst), Ordering::SeqCst);
            let r = pipe.drain();
            released.store(t0.elapsed().as_nanos() as u64, Ordering::SeqCst);
            r
        })
    });

    let (kind, rc, err) = {
        let intr = Interrupter::after(Duration::from_secs_f64(a.op_timeout));
        let (kind, rc) = match op {
            Op::Truncate { to } => {
                // SAFETY: valid fd.
                let rc = unsafe { libc::ftruncate(f.fd(), (to * PAGE_SIZE) as libc::off_t) };
                ("truncate", rc)
            }
            Op::Punch { start, len } => {
                // SAFETY: valid fd.
                let rc = unsafe {
                    libc::fallocate(
                        f.fd(),
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        (start * PAGE_SIZE) as libc::off_t,
                        (len * PAGE_SIZE) as libc::off_t,
                    )
                };
                ("punch-hole", rc)
            }
        };
        let err = (rc != 0).then(std::io::Error::last_os_error);
        let _ = intr.fired();
        (kind, rc, err)
    };
    let op_ms = t0.elapsed().as_secs_f64() * 1000.0;
    stop.store(true, Ordering::SeqCst);
    let drained = match releaser {
        Some(h) => h
            .join()
            .map_err(|_| anyhow::anyhow!("releaser thread panicked"))?
            .context("drain the vmsplice pipe")?,
        None => 0,
    };
    let released_ms = (ref_pages > 0).then(|| released_ns.load(Ordering::SeqCst) as f64 / 1e6);
    // Anything still in the pipe (an early stop) goes now.
    pipe.drain().context("drain the vmsplice pipe")?;

    let interrupted = err.as_ref().and_then(std::io::Error::raw_os_error) == Some(libc::EINTR);
    let mut opj = Obj::new()
        .with("kind", kind)
        .with("ms", op_ms)
        .with("ret", rc)
        .with("interrupted", interrupted);
    match op {
        Op::Truncate { to } => {
            opj.set("from_pages", n);
            opj.set("to_pages", to);
        }
        Op::Punch { start, len } => {
            opj.set("hole_start", start);
            opj.set("hole_pages", len);
        }
    }
    if let Some(e) = &err {
        opj.extend(sys::err_obj(e));
    }
    // The operation waited for the references if it was still running
    // when the timer dropped them, and then succeeded.
    opj.set(
        "blocked_until_release",
        (ref_pages > 0).then(|| err.is_none() && released_by_timer.load(Ordering::SeqCst)),
    );
    refs.set("released_ms", released_ms);
    refs.set("drained_bytes", drained);

    // Which PTEs survived: the affected range must have been zapped.
    let after = pagemap::read(None, m.addr(), n)?;
    let present_in = (first..first + count)
        .filter(|&i| after[i].present())
        .count();
    let present_out = (0..n)
        .filter(|&i| !(first..first + count).contains(&i) && after[i].present())
        .count();
    ctx.say(format!(
        "{kind}: ret {rc}{} after {op_ms:.1} ms; refs released at {}; present after: {present_in} in range, {present_out} outside",
        err.as_ref().map(|e| format!(" ({e})")).unwrap_or_default(),
        released_ms.map_or("-".into(), |r| format!("{r:.1} ms")),
    ));
    m.unmap().context("munmap")?;
    let expected_interrupt = ref_pages > 0 && a.op_timeout < a.release_after;
    let ok = err.is_none() || (interrupted && expected_interrupt);
    let mut done = ctx
        .done_line()
        .with("pages", n)
        .with("touch", a.touch.name())
        .with("mappings", ctx.records_json(&recs))
        .with("pins", ref_pages)
        .with(
            "gup",
            (ref_pages > 0).then(|| {
                Obj::new()
                    .with("api", "vmsplice")
                    .with("kernel_path", "iov_iter_get_pages2 -> get_user_pages_fast")
                    .with("flags", "FOLL_GET")
                    .with("pages", ref_pages)
            }),
        )
        .with("refs", refs)
        .with("op", opj)
        .with(
            "present_after",
            Obj::new()
                .with("in_range", present_in)
                .with("outside", present_out),
        )
        .with("hold", hold)
        .with("munmapped", true)
        .with("env", ctx.file_env(&f))
        .with("options", a.fopts.obj());
    done.set("ok", ok);
    ctx.emit(&done)?;
    if !ok {
        bail!(
            "{kind} failed: {}",
            err.map(|e| e.to_string()).unwrap_or_default()
        );
    }
    Ok(())
}
