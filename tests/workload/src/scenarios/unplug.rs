//! unplug-mapped, unplug-mremap: device removal (pmem unbind ->
//! memunmap_pages) while mappings of its pages exist.
//!
//! Both end the same way ([`unplug_flow`]): an `oracle` line with what
//! `/proc/self/pagemap` shows for every page of the mappings at the last
//! moment before the unbind, the `ready` line (the test unbinds then, unless
//! `--unbind` makes the workload do it), the hold, and exit with the
//! mappings in place.

use std::{
    fs::OpenOptions,
    io::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;

use super::{FileOpts, TouchMode, force_pte, map_and_touch, open_backing};
use crate::{
    ctx::{Ctx, MapRecord, touch_pages},
    json::{Obj, hex},
    sys::{self, Mapping, err_obj},
    util::{PAGE_SIZE, PMD_SIZE, align_up, parse_secs},
};

/// What every unplug scenario does after its mappings are in place.
#[derive(Debug, Clone, Args)]
pub struct UnplugOpts {
    /// After `ready`, unbind DEV (e.g. pfn0.0, or dax0.0 for a device-dax
    /// namespace) by writing it to DRIVER/unbind. Without it the test does
    /// the unbind itself while the workload holds.
    #[arg(long, value_name = "DEV")]
    pub unbind: Option<String>,
    /// Driver directory whose `unbind` file --unbind writes.
    #[arg(
        long,
        value_name = "DRIVER",
        default_value = "/sys/bus/nd/drivers/nd_pmem"
    )]
    pub driver: PathBuf,
    /// Wait SECS after `ready` before unbinding.
    #[arg(long, default_value = "0", value_parser = parse_secs, value_name = "SECS")]
    pub unbind_delay: f64,
    /// munmap explicitly before exiting. By default the mapping is left to
    /// process exit (exit_mmap), which is the path that oopses on 7.3.
    #[arg(long)]
    pub munmap: bool,
    /// After the unbind and the hold, read one byte of every page again
    /// through the (possibly stale) mapping. A revoked mapping then faults:
    /// SIGBUS -> exit status 7.
    #[arg(long)]
    pub touch_after: bool,
}

#[derive(Debug, Clone, Args)]
pub struct UnplugMapped {
    /// Pages to map and touch.
    #[arg(default_value_t = 4)]
    pub pages: usize,
    /// Map this device-dax device instead of a file in --dir.
    #[arg(long, value_name = "PATH")]
    pub devdax: Option<PathBuf>,
    #[command(flatten)]
    pub unplug: UnplugOpts,
    #[command(flatten)]
    pub touch: TouchMode,
    #[command(flatten)]
    pub fopts: FileOpts,
}

pub fn unplug_mapped(ctx: &Ctx, a: &UnplugMapped) -> anyhow::Result<()> {
    let n = a.pages.max(1);
    let mut b = open_backing(ctx, a.devdax.as_deref(), "0", n * PAGE_SIZE, a.fopts.fill())?;
    // The file system is expected to die with the device: never try to
    // remove the file afterwards (the guest is thrown away).
    b.keep();
    let env = b.env(ctx);
    let (m, recs) = map_and_touch(ctx, &b, n, a.touch.is_write(), a.fopts.map_flags())?;
    ctx.say(format!(
        "mapped and touched {n} pages of {} at {:#x}",
        b.name(),
        m.addr()
    ));
    unplug_flow(
        ctx,
        &a.unplug,
        Held {
            maps: vec![m],
            recs,
            touch: a.touch.name(),
            env,
            extra: Obj::new(),
        },
    )
}

#[derive(Debug, Clone, Args)]
pub struct UnplugMremap {
    /// Pages to map, touch and move.
    #[arg(default_value_t = 8)]
    pub pages: usize,
    /// Pages of a second DAX mapping (another file) placed right after the
    /// moved range, touched too and never moved (0: none).
    #[arg(long, default_value_t = 2, value_name = "PAGES")]
    pub adjacent: usize,
    #[command(flatten)]
    pub unplug: UnplugOpts,
    #[command(flatten)]
    pub touch: TouchMode,
    #[command(flatten)]
    pub fopts: FileOpts,
}

/// Map N pages so that they cross a 2 MiB boundary with nothing mapped in
/// the 2 MiB block below them, map M pages of another file right after
/// them, touch all, then mremap(MREMAP_MAYMOVE|MREMAP_FIXED) the N pages to
/// an address that is not adjacent to anything and has the same offset in
/// its 2 MiB block, also with nothing below it. That lets 6.12 and 7.3
/// realign the move down to the 2 MiB boundary (`try_realign_addr`) and
/// move the first page table whole; on 7.3 `move_page_tables` then leaves
/// `pmc->old_addr` and `pmc->new_addr` neither where the caller put them
/// nor where they started.
pub fn unplug_mremap(ctx: &Ctx, a: &UnplugMremap) -> anyhow::Result<()> {
    let n = a.pages.max(1);
    let adj = a.adjacent;
    let mut f = ctx.create_file("0", (n * PAGE_SIZE) as u64, a.fopts.fill(), false)?;
    f.keep();
    let adj_file = if adj > 0 {
        let mut g = ctx.create_file("adj", (adj * PAGE_SIZE) as u64, a.fopts.fill(), false)?;
        g.keep();
        Some(g)
    } else {
        None
    };
    let env = ctx.file_env(&f);
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let flags = a.fopts.map_flags();

    // Layout, in one reservation aligned to 2 MiB at B:
    //   [B, old)            hole (punched just before the mremap)
    //   [old, old_end)      the N pages, `below` of them under B + 2 MiB
    //   [old_end, +M)       the adjacent mapping
    //   [B + block, dst)    hole (punched just before the mremap)
    //   [dst, dst + N)      the destination, `dst % 2 MiB == old % 2 MiB`
    let below = n.div_ceil(2);
    let block = align_up((n + adj) * PAGE_SIZE, PMD_SIZE) + PMD_SIZE;
    let res = Mapping::reserve(2 * block + PMD_SIZE, PMD_SIZE).context("reserve address space")?;
    let base = res.addr();
    let old = base + PMD_SIZE - below * PAGE_SIZE;
    let old_end = old + n * PAGE_SIZE;
    let dst = base + block + PMD_SIZE - below * PAGE_SIZE;

    let mut m = Mapping::file_at(f.fd(), n * PAGE_SIZE, 0, old, prot, flags)
        .with_context(|| format!("mmap {n} pages at {old:#x}"))?;
    force_pte(ctx, &m);
    let am = match &adj_file {
        Some(g) => {
            let am = Mapping::file_at(g.fd(), adj * PAGE_SIZE, 0, old_end, prot, flags)
                .with_context(|| format!("mmap {adj} pages at {old_end:#x}"))?;
            force_pte(ctx, &am);
            Some(am)
        }
        None => None,
    };
    let write = a.touch.is_write();
    let order: Vec<usize> = (0..n).collect();
    touch_pages(&m, &order, write, false);
    let mut recs = ctx.page_records(&m, &order, &f.path.display().to_string(), 0, None)?;
    if let (Some(am), Some(g)) = (&am, &adj_file) {
        let order: Vec<usize> = (0..adj).collect();
        touch_pages(am, &order, write, false);
        recs.extend(ctx.page_records(am, &order, &g.path.display().to_string(), 0, None)?);
    }
    ctx.check_present(&recs)?;
    ctx.say(format!(
        "mapped and touched {n} pages at {old:#x} and {adj} adjacent pages at {old_end:#x}"
    ));

    // Holes below the source and the destination, then the move, with no
    // allocation in between (nothing else may land in the holes).
    res.punch(base, old - base)
        .context("munmap below the source")?;
    res.punch(base + block, dst - (base + block))
        .context("munmap below the destination")?;
    m.mremap_to(dst)
        .with_context(|| format!("mremap {old:#x} -> {dst:#x}"))?;
    // What is left of the reservation stays mapped PROT_NONE until exit.
    res.leak();
    ctx.say(format!("moved {n} pages {old:#x} -> {dst:#x}"));
    let moved = Obj::new()
        .with("from", hex(old as u64))
        .with("to", hex(dst as u64))
        .with("pages", n)
        .with("adjacent", hex(old_end as u64))
        .with("adjacent_pages", adj);
    let mut maps = vec![m];
    maps.extend(am);
    unplug_flow(
        ctx,
        &a.unplug,
        Held {
            maps,
            recs,
            touch: a.touch.name(),
            env,
            extra: Obj::new().with("moved", moved),
        },
    )
}

/// The mappings an unplug scenario holds across the unbind.
struct Held {
    maps: Vec<Mapping>,
    /// The installs (faults), at the addresses they were made at.
    recs: Vec<MapRecord>,
    touch: &'static str,
    env: Obj,
    /// Scenario-specific fields of the `ready` and `done` lines.
    extra: Obj,
}

/// The `oracle` line for `maps` where they are now.
fn emit_oracle(ctx: &Ctx, maps: &[Mapping]) -> anyhow::Result<()> {
    let regions: Vec<(usize, usize)> = maps.iter().map(|m| (m.addr(), m.pages())).collect();
    ctx.emit(&ctx.oracle_line(&regions)?)
}

fn unplug_flow(ctx: &Ctx, a: &UnplugOpts, h: Held) -> anyhow::Result<()> {
    let Held {
        maps,
        recs,
        touch,
        env,
        extra,
    } = h;
    let pages: usize = maps.iter().map(Mapping::pages).sum();
    if a.unbind.is_none() {
        // The test unbinds as soon as it sees `ready`: this is the last
        // moment before it.
        emit_oracle(ctx, &maps)?;
    }
    let mut ready = ctx
        .line("ready")
        .with("pages", pages)
        .with("mappings", ctx.records_json(&recs))
        .with("pins", 0u32);
    ready.extend(extra.clone());
    ctx.ready(ready)?;

    let mut unbind = None;
    if let Some(dev) = &a.unbind {
        std::thread::sleep(Duration::from_secs_f64(a.unbind_delay));
        let path = a.driver.join("unbind");
        emit_oracle(ctx, &maps)?;
        ctx.say(format!("unbinding {dev} via {}", path.display()));
        let t = Instant::now();
        let res = OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(dev.as_bytes()));
        let ms = sys::ms_since(t);
        let mut u = Obj::new()
            .with("device", dev.as_str())
            .with("driver", a.driver.display().to_string())
            .with("ms", ms)
            .with("ok", res.is_ok());
        if let Err(e) = &res {
            u.extend(err_obj(e));
        }
        u.set("sigbus", sigbus_json());
        ctx.emit(&ctx.line("unbound").with("unbind", u.clone()))?;
        if let Err(e) = res {
            // Still exit through the normal path: the mappings stay.
            ctx.say(format!("unbind failed: {e}"));
            maps.into_iter().for_each(Mapping::leak);
            return Err(e).with_context(|| format!("write {dev} to {}", path.display()));
        }
        ctx.say(format!("unbind returned after {ms:.1} ms"));
        unbind = Some(u);
    }

    let hold = ctx.hold();
    let mut touched_after = None;
    if a.touch_after {
        // Announce first: a revoked mapping faults and the SIGBUS handler
        // exits 7, so this line is then the last one.
        ctx.emit(&ctx.line("touching-after").with("pages", pages))?;
        // A read of each page; SIGBUS here exits 7 from the handler.
        let mut sink = 0u8;
        for m in &maps {
            for i in 0..m.pages() {
                sink ^= m.touch(i, false);
            }
        }
        std::hint::black_box(sink);
        touched_after = Some(pages);
        ctx.say("read every page again after the unbind: no fault");
    }
    let mut done = ctx
        .done_line()
        .with("pages", pages)
        .with("touch", touch)
        .with("mappings", ctx.records_json(&recs))
        .with("pins", 0u32)
        .with("unbind", unbind)
        .with("hold", hold)
        .with("touched_after", touched_after)
        .with("sigbus", sigbus_json())
        .with("munmapped", a.munmap)
        .with("env", env);
    done.extend(extra);
    if !a.munmap {
        done.set("exit_with_mapping", true);
    }
    ctx.emit(&done)?;
    if a.munmap {
        ctx.say("munmap");
        for mut m in maps {
            m.unmap().context("munmap")?;
        }
    } else {
        ctx.say("exiting with the mappings in place (exit_mmap tears them down)");
        maps.into_iter().for_each(Mapping::leak);
    }
    Ok(())
}

/// Memory-failure SIGBUS notices (XFS with rmapbt revokes DAX mappings on
/// device removal and signals the mappers).
fn sigbus_json() -> Option<Obj> {
    sys::mce_sigbus().map(|(n, code, addr)| {
        Obj::new()
            .with("count", n)
            .with("code", code)
            .with("addr", hex(addr))
    })
}

/// `n` pages of a new DAX file (kept: the file system dies with the
/// device), mapped `MAP_PRIVATE` with PTEs only.
fn map_private(
    ctx: &Ctx,
    n: usize,
    fopts: &FileOpts,
) -> anyhow::Result<(sys::TestFile, Obj, Mapping)> {
    map_kept(ctx, n, fopts, libc::MAP_PRIVATE)
}

/// `n` pages of a new DAX file (kept), mapped with `flags`, PTEs only.
fn map_kept(
    ctx: &Ctx,
    n: usize,
    fopts: &FileOpts,
    flags: libc::c_int,
) -> anyhow::Result<(sys::TestFile, Obj, Mapping)> {
    let mut f = ctx.create_file("0", (n * PAGE_SIZE) as u64, fopts.fill(), false)?;
    f.keep();
    let env = ctx.file_env(&f);
    let m = Mapping::file(
        f.fd(),
        n * PAGE_SIZE,
        0,
        PAGE_SIZE,
        libc::PROT_READ | libc::PROT_WRITE,
        flags,
    )
    .with_context(|| format!("mmap flags {flags:#x}"))?;
    force_pte(ctx, &m);
    Ok((f, env, m))
}

#[derive(Debug, Clone, Args)]
pub struct UnplugCow {
    /// Pages of a DAX file to map privately and read (DAX PTEs).
    #[arg(default_value_t = 8)]
    pub pages: usize,
    /// Then write to the first N of them: copy-on-write replaces each DAX
    /// PTE by an anonymous copy in place, with no unmap.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub write: usize,
    #[command(flatten)]
    pub unplug: UnplugOpts,
    #[command(flatten)]
    pub fopts: FileOpts,
}

/// A MAP_PRIVATE mapping of a DAX file, read (device PTEs, read-only), then
/// some pages written (the copy takes the device PTE's place), then the
/// unbind. Only the pages never written still map the device.
pub fn unplug_cow(ctx: &Ctx, a: &UnplugCow) -> anyhow::Result<()> {
    let n = a.pages.max(1);
    let k = a.write.min(n);
    let (f, env, m) = map_private(ctx, n, &a.fopts)?;
    let all: Vec<usize> = (0..n).collect();
    touch_pages(&m, &all, false, false);
    let recs = ctx.page_records(&m, &all, &f.path.display().to_string(), 0, None)?;
    ctx.check_present(&recs)?;
    let written: Vec<usize> = (0..k).collect();
    touch_pages(&m, &written, true, false);
    ctx.say(format!(
        "read {n} pages of a private DAX mapping at {:#x}, then wrote {k} (copy-on-write)",
        m.addr()
    ));
    unplug_flow(
        ctx,
        &a.unplug,
        Held {
            maps: vec![m],
            recs,
            touch: "read, then write",
            env,
            extra: Obj::new().with("written", k),
        },
    )
}

#[derive(Debug, Clone, Args)]
pub struct UnplugForkPrivate {
    /// Pages of a DAX file to map privately. The first is written before
    /// the others are read: that write fault makes an anonymous copy (no
    /// device PTE) and gives the mapping an anon_vma, so fork copies its
    /// device PTEs into the child (vma_needs_copy).
    #[arg(default_value_t = 8)]
    pub pages: usize,
    #[command(flatten)]
    pub unplug: UnplugOpts,
    #[command(flatten)]
    pub fopts: FileOpts,
}

/// fork of a process holding a private DAX mapping whose PTEs fork copies:
/// parent and child both map the device pages at the unbind, each in its
/// own address space; each prints its own pagemap `oracle` line.
pub fn unplug_fork_private(ctx: &Ctx, a: &UnplugForkPrivate) -> anyhow::Result<()> {
    let n = a.pages.max(2);
    let (f, env, m) = map_private(ctx, n, &a.fopts)?;
    touch_pages(&m, &[0], true, false);
    let rest: Vec<usize> = (1..n).collect();
    touch_pages(&m, &rest, false, false);
    let recs = ctx.page_records(&m, &rest, &f.path.display().to_string(), 0, None)?;
    ctx.check_present(&recs)?;
    fork_then_unplug(
        ctx,
        &a.unplug,
        Held {
            maps: vec![m],
            recs,
            touch: "write the first page, read the rest",
            env,
            extra: Obj::new(),
        },
    )
}

#[derive(Debug, Clone, Args)]
pub struct UnplugForkGuard {
    /// Pages of a DAX file to map shared and read. One more page is mapped
    /// after them and made a guard region (`MADV_GUARD_INSTALL`, file
    /// mappings since 6.15): the VMA is then `VM_MAYBE_GUARD`, and fork
    /// copies its page table, device PTEs included, though it has no
    /// anon_vma. Where the kernel refuses the guard, fork copies nothing
    /// (a shared file mapping is refaulted by the child).
    #[arg(default_value_t = 8)]
    pub pages: usize,
    #[command(flatten)]
    pub unplug: UnplugOpts,
    #[command(flatten)]
    pub fopts: FileOpts,
}

/// `MADV_GUARD_INSTALL` (include/uapi/asm-generic/mman-common.h, 6.13+).
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// fork of a process holding a shared DAX mapping with a guard region.
pub fn unplug_fork_guard(ctx: &Ctx, a: &UnplugForkGuard) -> anyhow::Result<()> {
    let n = a.pages.max(1);
    let (f, env, m) = map_kept(ctx, n + 1, &a.fopts, libc::MAP_SHARED)?;
    let pages: Vec<usize> = (0..n).collect();
    touch_pages(&m, &pages, false, false);
    let recs = ctx.page_records(&m, &pages, &f.path.display().to_string(), 0, None)?;
    ctx.check_present(&recs)?;
    // SAFETY: the last page of our own mapping.
    let rc = unsafe {
        libc::madvise(
            (m.addr() + n * PAGE_SIZE) as *mut libc::c_void,
            PAGE_SIZE,
            MADV_GUARD_INSTALL,
        )
    };
    let guard = if rc == 0 {
        ctx.say(format!(
            "guard region on page {n}: fork copies the page table"
        ));
        "installed".to_owned()
    } else {
        let e = std::io::Error::last_os_error();
        ctx.say(format!(
            "MADV_GUARD_INSTALL refused ({e}): fork copies nothing of this shared mapping"
        ));
        format!("refused: {e}")
    };
    fork_then_unplug(
        ctx,
        &a.unplug,
        Held {
            maps: vec![m],
            recs,
            touch: "read",
            env,
            extra: Obj::new().with("guard", guard),
        },
    )
}

/// Fork while `held` is mapped: the child prints its own pagemap `oracle`
/// line, then holds until released; the parent ends like every unplug
/// scenario, then waits for the child.
fn fork_then_unplug(ctx: &Ctx, unplug: &UnplugOpts, mut held: Held) -> anyhow::Result<()> {
    let n = held.recs.len();
    let to_parent = sys::Pipe::new()?;
    let parent = sys::getpid();
    let wait = ctx.child_wait();
    let region: Vec<(usize, usize)> = held.maps.iter().map(|m| (m.addr(), m.pages())).collect();
    let child = sys::fork_child(ctx.g.timeout, || {
        // The child's own view, from its own pagemap, before the unbind.
        ctx.emit(
            &ctx.oracle_line(&region)?
                .with("role", "child")
                .with("parent_pid", parent),
        )?;
        to_parent.send(b'O')?;
        let hold = ctx.hold();
        ctx.emit(
            &ctx.done_line()
                .with("role", "child")
                .with("parent_pid", parent)
                .with("hold", hold)
                .with("exit_with_mapping", true),
        )?;
        Ok(())
    })?;
    to_parent
        .recv(wait)?
        .context("the child exited before reading its pagemap")?;
    ctx.say(format!(
        "forked child {child}; the parent holds {n} device pages"
    ));
    // The parent ends like every unplug scenario, then waits for the child
    // (released by the same hold).
    held.extra.set("child_pid", child);
    unplug_flow(ctx, unplug, held)?;
    sys::expect_child_ok(child, wait, "fork child")
}
