//! GUP scenarios: gup-pin (process_vm_readv), odirect (O_DIRECT read into a
//! DAX buffer), longterm-pin (io_uring fixed buffers).

use std::{
    fs::OpenOptions,
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

use super::{
    Backing, FileOpts, TouchMode, force_pte, known_flavour, map_and_touch, map_shared, open_backing,
};
use crate::{
    ctx::{Ctx, MapRecord, touch_pages},
    json::Obj,
    sys::{
        self, FileInfo, IoUring, LoopDev, Mapping, Pipe, err_obj, pattern_byte, process_vm_read,
    },
    util::{PAGE_SIZE, parse_bytes},
};

/// Who calls process_vm_readv.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Reader {
    /// The process reads its own mapping (pid = self).
    #[value(name = "self")]
    Itself,
    /// A forked child reads the parent's mapping.
    Child,
    /// The parent reads the mapping of a forked child.
    Parent,
}

#[derive(Debug, Clone, Args)]
pub struct GupPin {
    /// Pages to pin: the first K pages of the mapping, in one
    /// process_vm_readv call (one pin_user_pages_remote batch; at most 1024
    /// pages per batch in the kernel).
    pub pins: usize,
    /// Pages to map and touch (default: K).
    #[arg(long, value_name = "N")]
    pub pages: Option<usize>,
    /// Who calls process_vm_readv: `self` reads its own mapping, `child` is
    /// a forked child reading the parent's mapping, `parent` reads a forked
    /// child's mapping.
    #[arg(long, value_enum, default_value = "self")]
    pub reader: Reader,
    /// Do not touch before pinning: GUP faults the pages in itself
    /// (handle_mm_fault from __get_user_pages).
    #[arg(long)]
    pub no_touch: bool,
    /// Repeat the process_vm_readv this many times.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    #[command(flatten)]
    pub touch: TouchMode,
    #[command(flatten)]
    pub fopts: FileOpts,
}

/// The `gup` object of process_vm_readv pins.
fn pvr_gup(reader: i32, target: i32, pages: usize, calls: usize) -> Obj {
    Obj::new()
        .with("api", "process_vm_readv")
        .with(
            "kernel_path",
            "pin_user_pages_remote -> __get_user_pages (slow path)",
        )
        .with("flags", "FOLL_PIN")
        .with("reader_pid", reader)
        .with("target_pid", target)
        .with("pages", pages)
        .with("calls", calls)
}

/// process_vm_readv `pages` pages of `pid` at `remote`, `repeat` times,
/// and check the pattern (when the file was filled).
/// Byte 1 of each page keeps the fill pattern whatever the touch did
/// (touches write byte 0).
fn pin_pages(
    pid: i32,
    remote: usize,
    pages: usize,
    repeat: usize,
    check: bool,
) -> anyhow::Result<()> {
    let buf = Mapping::anon(pages * PAGE_SIZE, PAGE_SIZE)?;
    for i in 0..pages {
        buf.touch(i, true);
    }
    for r in 0..repeat {
        let n = process_vm_read(pid, buf.addr(), remote, pages * PAGE_SIZE)
            .with_context(|| format!("process_vm_readv(pid {pid}, {remote:#x}, {pages} pages)"))?;
        if n != pages * PAGE_SIZE {
            bail!(
                "process_vm_readv round {r}: short read {n} of {}",
                pages * PAGE_SIZE
            );
        }
    }
    if check {
        for i in 0..pages {
            // Byte 0 may have been written by the touch; byte 1 is pattern.
            let b = buf.touch_at(i, 1, false);
            if b != pattern_byte(i) {
                bail!(
                    "page {i}: read {b:#x}, expected pattern {:#x}",
                    pattern_byte(i)
                );
            }
        }
    }
    Ok(())
}

pub fn gup_pin(ctx: &Ctx, a: &GupPin) -> anyhow::Result<()> {
    let k = a.pins;
    let n = a.pages.unwrap_or(k).max(k).max(1);
    let repeat = a.repeat.max(1);
    let f = ctx.create_file("0", (n * PAGE_SIZE) as u64, a.fopts.fill(), false)?;
    let name = f.path.display().to_string();
    let check = !a.fopts.no_fill;
    let me = sys::getpid();
    let wait = ctx.child_wait();
    let all: Vec<usize> = (0..n).collect();

    if a.reader == Reader::Parent {
        // The child maps and touches; the parent pins the child's pages.
        let to_child = Pipe::new()?;
        let to_parent = Pipe::new()?;
        let child = sys::fork_child(ctx.g.timeout, || {
            let m = map_shared(f.fd(), n * PAGE_SIZE, 0, PAGE_SIZE, a.fopts.map_flags())?;
            force_pte(ctx, &m);
            if !a.no_touch {
                touch_pages(&m, &all, a.touch.is_write(), false);
            }
            to_parent.send_u64(m.addr() as u64)?;
            to_child.recv(wait)?.context("parent went away")?;
            let touched: Vec<usize> = if a.no_touch {
                (0..k).collect()
            } else {
                all.clone()
            };
            let recs = ctx.page_records(&m, &touched, &name, 0, None)?;
            ctx.check_present(&recs)?;
            m.unmap_in_child()?;
            ctx.emit(
                &ctx.done_line()
                    .with("role", "target")
                    .with("reader_pid", me)
                    .with("pages", recs.len())
                    .with("mappings", ctx.records_json(&recs))
                    .with("pins", 0u32)
                    .with("munmapped", true),
            )?;
            Ok(())
        })?;
        let addr = to_parent.recv_u64(wait)? as usize;
        pin_pages(child, addr, k, repeat, check)?;
        ctx.say(format!(
            "pinned {k} pages of child {child} at {addr:#x} x{repeat}"
        ));
        ctx.ready(
            ctx.line("ready")
                .with("role", "reader")
                .with("target_pid", child)
                .with("pins", k * repeat),
        )?;
        let hold = ctx.hold();
        to_child.send(b'X')?;
        sys::expect_child_ok(child, wait, "target child")?;
        return ctx.emit(
            &ctx.done_line()
                .with("role", "reader")
                .with("pages", 0u32)
                .with("mappings", Vec::<Obj>::new())
                .with("pins", k * repeat)
                .with("gup", pvr_gup(me, child, k, repeat))
                .with("hold", hold)
                .with("env", ctx.file_env(&f)),
        );
    }

    let mut m = map_shared(f.fd(), n * PAGE_SIZE, 0, PAGE_SIZE, a.fopts.map_flags())?;
    force_pte(ctx, &m);
    if !a.no_touch {
        touch_pages(&m, &all, a.touch.is_write(), false);
    }
    let (my_pins, reader_pid) = match a.reader {
        Reader::Itself => {
            pin_pages(me, m.addr(), k, repeat, check)?;
            (k * repeat, me)
        }
        Reader::Child => {
            let addr = m.addr();
            let child = sys::fork_child(ctx.g.timeout, || {
                pin_pages(me, addr, k, repeat, check)?;
                ctx.emit(
                    &ctx.done_line()
                        .with("role", "reader")
                        .with("target_pid", me)
                        .with("pages", 0u32)
                        .with("mappings", Vec::<Obj>::new())
                        .with("pins", k * repeat)
                        .with("gup", pvr_gup(sys::getpid(), me, k, repeat)),
                )
            })?;
            sys::expect_child_ok(child, wait, "reader child")?;
            (0, child)
        }
        Reader::Parent => unreachable!(),
    };
    ctx.say(format!(
        "pinned {k} of {n} pages x{repeat} (reader pid {reader_pid})"
    ));
    let touched: Vec<usize> = if a.no_touch {
        (0..k).collect()
    } else {
        all.clone()
    };
    let recs = ctx.page_records(&m, &touched, &name, 0, None)?;
    ctx.check_present(&recs)?;
    ctx.ready(
        ctx.line("ready")
            .with("pages", recs.len())
            .with("mappings", ctx.records_json(&recs))
            .with("pins", my_pins),
    )?;
    let hold = ctx.hold();
    m.unmap().context("munmap")?;
    ctx.emit(
        &ctx.done_line()
            .with(
                "role",
                if a.reader == Reader::Child {
                    "target"
                } else {
                    "self"
                },
            )
            .with("pages", recs.len())
            .with("touch", if a.no_touch { "none" } else { a.touch.name() })
            .with("mappings", ctx.records_json(&recs))
            .with("pins", my_pins)
            .with("gup", pvr_gup(reader_pid, me, k, repeat))
            .with("hold", hold)
            .with("munmapped", true)
            .with("env", ctx.file_env(&f))
            .with("options", a.fopts.obj()),
    )
}

/// How the DAX buffer is prepared before the O_DIRECT read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PreTouch {
    /// Write-fault every page first: present writable PTEs, so the
    /// lockless fast GUP path takes the references.
    Write,
    /// Read-fault first: read-only PTEs; fast GUP (FOLL_WRITE) fails and the
    /// slow path takes a write fault, then the reference.
    Read,
    /// No PTEs: fast GUP finds nothing; the slow path faults the pages in.
    None,
}

#[derive(Debug, Clone, Args)]
pub struct Odirect {
    /// Pages of the DAX buffer to read into.
    #[arg(default_value_t = 8)]
    pub pages: usize,
    /// What to read with O_DIRECT: `auto` (the block device under --dir,
    /// else a loop device), `backing` (the block device under --dir, e.g.
    /// /dev/pmem0: plain bio I/O, not DAX), `loop` (a loop device over a
    /// pattern file in --loop-dir), or a path (block device or a file on a
    /// non-DAX file system).
    #[arg(long, default_value = "auto")]
    pub source: String,
    /// Directory for the loop device's backing file (not DAX; created if
    /// missing).
    #[arg(long, default_value = "/tmp")]
    pub loop_dir: PathBuf,
    /// Byte offset in the source (a multiple of 4096).
    #[arg(long, default_value = "0", value_parser = parse_bytes)]
    pub source_offset: u64,
    /// How the buffer is touched before the read.
    #[arg(long, value_enum, default_value = "write")]
    pub pre_touch: PreTouch,
    #[command(flatten)]
    pub fopts: FileOpts,
}

/// An opened O_DIRECT source and what keeps it alive.
struct Source {
    file: std::fs::File,
    desc: Obj,
    verify: bool,
    _loop: Option<LoopDev>,
    backing_file: Option<PathBuf>,
}

impl Drop for Source {
    fn drop(&mut self) {
        self._loop.take();
        if let Some(p) = self.backing_file.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn open_direct(p: &Path) -> anyhow::Result<std::fs::File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(p)
        .with_context(|| format!("open {} with O_DIRECT", p.display()))
}

fn loop_source(ctx: &Ctx, a: &Odirect, need: u64) -> anyhow::Result<Source> {
    std::fs::create_dir_all(&a.loop_dir)
        .with_context(|| format!("create {}", a.loop_dir.display()))?;
    let img = a
        .loop_dir
        .join(format!("refscope-odirect-{}.img", sys::getpid()));
    let size = need.max(1 << 20);
    {
        let f = std::fs::File::create(&img).with_context(|| format!("create {}", img.display()))?;
        let mut buf = vec![0u8; PAGE_SIZE];
        for i in 0..(size as usize / PAGE_SIZE) {
            buf.fill(pattern_byte(i));
            f.write_all_at(&buf, (i * PAGE_SIZE) as u64)?;
        }
        f.sync_all()?;
    }
    let lo = match LoopDev::attach(&img) {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_file(&img);
            return Err(e);
        }
    };
    ctx.say(format!(
        "loop device {} over {}",
        lo.path.display(),
        img.display()
    ));
    let file = open_direct(&lo.path)?;
    Ok(Source {
        file,
        desc: Obj::new()
            .with("kind", "loop")
            .with("path", lo.path.display().to_string())
            .with("backing", img.display().to_string()),
        verify: true,
        _loop: Some(lo),
        backing_file: Some(img),
    })
}

fn backing_source(ctx: &Ctx) -> anyhow::Result<Source> {
    let m = sys::mount_of(&ctx.g.dir)
        .with_context(|| format!("no mount found for {}", ctx.g.dir.display()))?;
    let p = sys::block_dev_path(m.dev, Some(&m.source)).with_context(|| {
        format!(
            "no block device node for {}:{} (mount source {}) under /dev",
            m.dev.0, m.dev.1, m.source
        )
    })?;
    let file = open_direct(&p)?;
    Ok(Source {
        file,
        desc: Obj::new()
            .with("kind", "backing")
            .with("path", p.display().to_string())
            .with("fs", m.fstype),
        verify: false,
        _loop: None,
        backing_file: None,
    })
}

fn open_source(ctx: &Ctx, a: &Odirect, need: u64) -> anyhow::Result<Source> {
    match a.source.as_str() {
        "loop" => loop_source(ctx, a, need),
        "backing" => backing_source(ctx),
        "auto" => backing_source(ctx).or_else(|e| {
            ctx.say(format!(
                "no backing block device ({e:#}); trying a loop device"
            ));
            loop_source(ctx, a, need)
        }),
        path => {
            let p = Path::new(path);
            let file = open_direct(p)?;
            let info = FileInfo::of_fd(std::os::fd::AsRawFd::as_raw_fd(&file)).ok();
            if info.as_ref().and_then(|i| i.dax) == Some(true) {
                ctx.say(format!(
                    "warning: {path} is DAX: O_DIRECT goes through dax_iomap_rw and takes no GUP references"
                ));
            }
            Ok(Source {
                file,
                desc: Obj::new()
                    .with("kind", "path")
                    .with("path", path)
                    .with("dax", info.and_then(|i| i.dax)),
                verify: false,
                _loop: None,
                backing_file: None,
            })
        }
    }
}

pub fn odirect(ctx: &Ctx, a: &Odirect) -> anyhow::Result<()> {
    let n = a.pages.max(1);
    let len = n * PAGE_SIZE;
    if !a.source_offset.is_multiple_of(PAGE_SIZE as u64) {
        bail!("--source-offset must be a multiple of 4096");
    }
    let f = ctx.create_file("0", len as u64, a.fopts.fill(), false)?;
    let name = f.path.display().to_string();
    let mut m = map_shared(f.fd(), len, 0, PAGE_SIZE, a.fopts.map_flags())?;
    force_pte(ctx, &m);
    let all: Vec<usize> = (0..n).collect();
    match a.pre_touch {
        PreTouch::Write => {
            touch_pages(&m, &all, true, false);
        }
        PreTouch::Read => {
            touch_pages(&m, &all, false, false);
        }
        PreTouch::None => {}
    }
    let src = open_source(ctx, a, a.source_offset + len as u64)?;
    let t = Instant::now();
    // SAFETY: the DAX mapping is ours, writable and `len` bytes long.
    let buf = unsafe { std::slice::from_raw_parts_mut(m.addr() as *mut u8, len) };
    let mut done = 0;
    let mut calls = 0;
    while done < len {
        let r = src
            .file
            .read_at(&mut buf[done..], a.source_offset + done as u64);
        calls += 1;
        match r {
            Ok(0) => bail!("O_DIRECT read hit end of source after {done} bytes"),
            Ok(k) => done += k,
            Err(e) => bail!("O_DIRECT read of {len} bytes into the DAX buffer: {e}"),
        }
    }
    let ms = sys::ms_since(t);
    let verified = if src.verify {
        let first = a.source_offset as usize / PAGE_SIZE;
        let bad = (0..n).find(|&i| {
            buf[i * PAGE_SIZE..(i + 1) * PAGE_SIZE]
                .iter()
                .any(|&b| b != pattern_byte(first + i))
        });
        if let Some(i) = bad {
            bail!("page {i} of the DAX buffer does not hold the source pattern after the read");
        }
        Some(true)
    } else {
        None
    };
    ctx.say(format!(
        "O_DIRECT read {len} bytes in {calls} call(s), {ms:.3} ms"
    ));
    let recs = ctx.page_records(&m, &all, &name, 0, None)?;
    ctx.check_present(&recs)?;
    let flavour = known_flavour(
        &ctx.kernel,
        &[
            (
                (6, 1),
                "FOLL_GET|FOLL_WRITE (iov_iter_get_pages2 -> get_user_pages_fast)",
            ),
            (
                (6, 12),
                "FOLL_PIN|FOLL_WRITE (iov_iter_extract_pages -> pin_user_pages_fast)",
            ),
            (
                (7, 3),
                "FOLL_PIN|FOLL_WRITE (iov_iter_extract_pages -> pin_user_pages_fast)",
            ),
        ],
    );
    let gup = Obj::new()
        .with("api", "O_DIRECT read (bio_iov_iter_get_pages)")
        .with("flags", flavour)
        .with("pre_touch", format!("{:?}", a.pre_touch).to_lowercase())
        .with("pages", n)
        .with("calls", calls);
    ctx.ready(
        ctx.line("ready")
            .with("pages", n)
            .with("mappings", ctx.records_json(&recs))
            .with("pins", n),
    )?;
    let hold = ctx.hold();
    m.unmap().context("munmap")?;
    ctx.emit(
        &ctx.done_line()
            .with("pages", n)
            .with("mappings", ctx.records_json(&recs))
            .with("pins", n)
            .with("gup", gup)
            .with("source", src.desc.clone())
            .with("bytes", done)
            .with("read_ms", ms)
            .with("verified", verified)
            .with("hold", hold)
            .with("munmapped", true)
            .with("env", ctx.file_env(&f))
            .with("options", a.fopts.obj()),
    )
}

#[derive(Debug, Clone, Args)]
pub struct LongtermPin {
    /// Pages of DAX memory to register as one io_uring fixed buffer.
    #[arg(default_value_t = 4)]
    pub pages: usize,
    /// Register a mapping of this device-dax device instead of a file in
    /// --dir.
    #[arg(long, value_name = "PATH")]
    pub devdax: Option<PathBuf>,
    /// Skip the control registration of anonymous memory (which tells a
    /// DAX refusal from an io_uring that does not work at all).
    #[arg(long)]
    pub no_control: bool,
    #[command(flatten)]
    pub fopts: FileOpts,
}

pub fn longterm_pin(ctx: &Ctx, a: &LongtermPin) -> anyhow::Result<()> {
    let n = a.pages.max(1);
    let ring = IoUring::setup(4).map_err(|e| {
        anyhow::anyhow!(
            "io_uring_setup: {e} (is io_uring disabled: /proc/sys/kernel/io_uring_disabled = {})",
            sys::read_trim("/proc/sys/kernel/io_uring_disabled").unwrap_or_else(|| "?".into())
        )
    })?;
    let control = if a.no_control {
        None
    } else {
        let anon = Mapping::anon(n * PAGE_SIZE, PAGE_SIZE)?;
        for i in 0..n {
            anon.touch(i, true);
        }
        ring.register_buffers(&[(anon.addr(), anon.len())])
            .map_err(|e| {
                anyhow::anyhow!(
                    "io_uring buffer registration of anonymous memory failed ({e}): \
                 a DAX refusal could not be told apart from a broken io_uring"
                )
            })?;
        ring.unregister_buffers()
            .context("IORING_UNREGISTER_BUFFERS (control)")?;
        Some(
            Obj::new()
                .with("memory", "anonymous")
                .with("result", "registered"),
        )
    };
    let b = open_backing(ctx, a.devdax.as_deref(), "0", n * PAGE_SIZE, a.fopts.fill())?;
    let is_file = matches!(b, Backing::File(_));
    let memory = match &b {
        Backing::File(f) if f.info.dax == Some(true) => "fsdax",
        Backing::File(_) => "file (not DAX)",
        Backing::Dev { .. } => "devdax",
    };
    let (mut m, recs): (Mapping, Vec<MapRecord>) =
        map_and_touch(ctx, &b, n, true, a.fopts.map_flags())?;
    let t = Instant::now();
    let res = ring.register_buffers(&[(m.addr(), m.len())]);
    let ms = sys::ms_since(t);
    let registered = res.is_ok();
    let mut result = Obj::new()
        .with("api", "io_uring_register(IORING_REGISTER_BUFFERS)")
        .with("flags", "FOLL_PIN|FOLL_LONGTERM|FOLL_WRITE")
        .with("memory", memory)
        .with("result", if registered { "registered" } else { "refused" })
        .with("ms", ms);
    if let Err(e) = &res {
        result.extend(err_obj(e));
    }
    // FS-DAX must refuse (check_vma_flags: FOLL_LONGTERM && vma_is_fsdax ->
    // -EOPNOTSUPP, in 6.1, 6.12 and 7.3). Device-dax, measured: 6.1 refuses
    // (io_uring's own "no file-backed memory" VMA check, -EOPNOTSUPP),
    // 6.12 and 7.3 register (the pages are not ZONE_MOVABLE: long-term
    // pinnable).
    let expected = if is_file {
        Some("refused")
    } else {
        known_flavour(
            &ctx.kernel,
            &[
                ((6, 1), "refused"),
                ((6, 12), "registered"),
                ((7, 3), "registered"),
            ],
        )
    };
    result.set("expected", expected);
    result.set(
        "as_expected",
        expected.map(|e| e == if registered { "registered" } else { "refused" }),
    );
    ctx.say(match &res {
        Ok(()) => format!(
            "registered {} DAX pages as a fixed buffer (long-term pinned)",
            m.pages()
        ),
        Err(e) => format!("registration of {} DAX pages refused: {e}", m.pages()),
    });
    let pins = if registered { m.pages() } else { 0 };
    ctx.ready(
        ctx.line("ready")
            .with("pages", m.pages())
            .with("mappings", ctx.records_json(&recs))
            .with("pins", pins)
            .with("longterm", result.clone()),
    )?;
    let hold = ctx.hold();
    if registered {
        ring.unregister_buffers()
            .context("IORING_UNREGISTER_BUFFERS")?;
    }
    m.unmap().context("munmap")?;
    let env = b.env(ctx);
    ctx.emit(
        &ctx.done_line()
            .with("pages", m.pages())
            .with("mappings", ctx.records_json(&recs))
            .with("pins", pins)
            .with("longterm", result)
            .with("control", control)
            .with("hold", hold)
            .with("munmapped", true)
            .with("env", env),
    )
}
