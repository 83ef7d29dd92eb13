//! What every scenario shares: the global options, the JSON line writer,
//! the readiness/hold protocol, test file creation and mapping records.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::{
    json::{Json, Obj, hex},
    pagemap::{self, DeviceRanges, PagemapEntry},
    sys::{self, Fill, Mapping, TestFile},
    util::{PAGE_SIZE, parse_secs},
};

/// Options every subcommand accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Directory on the DAX file system where test files are created.
    #[arg(
        long,
        global = true,
        default_value = "/mnt/dax",
        env = "REFSCOPE_DAX_DIR"
    )]
    pub dir: PathBuf,

    /// Create PATH (atomically, holding the `ready` JSON line) when the
    /// scenario's interesting state is reached.
    #[arg(long, global = true, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,

    /// At the hold point, wait SECS before going on.
    #[arg(long, global = true, value_name = "SECS", value_parser = parse_secs)]
    pub hold: Option<f64>,

    /// At the hold point, wait until PATH exists (polled every 10 ms).
    #[arg(long, global = true, value_name = "PATH")]
    pub hold_until: Option<PathBuf>,

    /// At the hold point, wait for SIGUSR1. (SIGUSR1 also ends any other
    /// hold early.)
    #[arg(long, global = true)]
    pub hold_signal: bool,

    /// Upper bound on any hold; when it expires the scenario goes on and
    /// reports `"hold":{"reason":"max-hold"}`.
    #[arg(long, global = true, value_name = "SECS", default_value = "600", value_parser = parse_secs)]
    pub max_hold: f64,

    /// Global bound on the whole run: SIGALRM after SECS exits with status
    /// 124 (0 = none). Child processes re-arm it.
    #[arg(long, global = true, value_name = "SECS", default_value = "1800")]
    pub timeout: u32,

    /// Do not remove the test files at the end.
    #[arg(long, global = true)]
    pub keep_files: bool,

    /// Accept test files that are not DAX (STATX_ATTR_DAX clear), e.g. for
    /// smoke tests on tmpfs or ext4 without -o dax. Without it such a file
    /// is an error.
    #[arg(long, global = true)]
    pub allow_non_dax: bool,
}

/// One mapped unit (a PTE page or a PMD block) a tracer should see.
#[derive(Debug, Clone)]
pub struct MapRecord {
    pub vaddr: usize,
    pub entry: PagemapEntry,
    pub order: u32,
    pub file: String,
    pub offset: u64,
    pub t_ns: Option<u64>,
}

impl MapRecord {
    pub fn pfn(&self) -> Option<u64> {
        self.entry.pfn()
    }

    pub fn to_json(&self, ranges: &DeviceRanges) -> Json {
        let mut o = Obj::new()
            .with("vaddr", hex(self.vaddr as u64))
            .with("pfn", self.entry.pfn())
            .with("order", self.order)
            .with("file", &self.file)
            .with("offset", self.offset)
            .with("pm", self.entry.flag_names());
        if let Some(pfn) = self.entry.pfn() {
            o.set("device", ranges.contains(pfn));
        }
        if let Some(t) = self.t_ns {
            o.set("t_ns", t);
        }
        o.into()
    }
}

/// The per-run context.
pub struct Ctx {
    pub g: GlobalArgs,
    pub scenario: &'static str,
    pub kernel: String,
    pub ranges: DeviceRanges,
    pub started: Instant,
}

impl Ctx {
    pub fn new(g: GlobalArgs, scenario: &'static str) -> Self {
        Self {
            g,
            scenario,
            kernel: sys::kernel_release(),
            ranges: DeviceRanges::load(),
            started: Instant::now(),
        }
    }

    /// Progress on stderr.
    pub fn say(&self, msg: impl AsRef<str>) {
        eprintln!(
            "refscope-workload[{}] {} +{:.3}s: {}",
            sys::getpid(),
            self.scenario,
            self.started.elapsed().as_secs_f64(),
            msg.as_ref()
        );
    }

    /// A new output line: scenario, event, pid, t_ns (CLOCK_MONOTONIC).
    pub fn line(&self, event: &str) -> Obj {
        Obj::new()
            .with("scenario", self.scenario)
            .with("event", event)
            .with("pid", sys::getpid())
            .with("t_ns", sys::monotonic_ns())
    }

    /// The final line of a process: `line("done")` plus kernel and ok.
    pub fn done_line(&self) -> Obj {
        let comm = sys::read_trim("/proc/self/comm").unwrap_or_default();
        self.line("done")
            .with("comm", comm)
            .with("kernel", &self.kernel)
            .with("ok", true)
    }

    /// Write one JSON line to stdout (one write(2)).
    pub fn emit(&self, o: &Obj) -> anyhow::Result<()> {
        let mut s = o.to_line();
        s.push('\n');
        sys::write_all_fd(1, s.as_bytes()).context("write to stdout")
    }

    /// Emit `o` as the `ready` line and create --ready-file with it.
    pub fn ready(&self, mut o: Obj) -> anyhow::Result<()> {
        o.set("event", "ready");
        o.set("t_ns", sys::monotonic_ns());
        self.emit(&o)?;
        if let Some(p) = &self.g.ready_file {
            write_atomically(p, &(o.to_line() + "\n"))?;
            self.say(format!("ready: created {}", p.display()));
        }
        Ok(())
    }

    pub fn holding(&self) -> bool {
        self.g.hold.is_some() || self.g.hold_until.is_some() || self.g.hold_signal
    }

    /// The hold point: wait per --hold/--hold-until/--hold-signal (SIGUSR1
    /// always releases), bounded by --max-hold. Returns the JSON describing
    /// the hold, or None when no hold was requested.
    pub fn hold(&self) -> Option<Obj> {
        if !self.holding() {
            return None;
        }
        let g = &self.g;
        let mut what = Vec::new();
        if let Some(s) = g.hold {
            what.push(format!("{s} s"));
        }
        if let Some(p) = &g.hold_until {
            what.push(format!("until {} exists", p.display()));
        }
        if g.hold_signal {
            what.push("until SIGUSR1".into());
        }
        self.say(format!(
            "holding ({}; at most {} s)",
            what.join(", "),
            g.max_hold
        ));
        let start = Instant::now();
        let reason = loop {
            if sys::hold_released() {
                break "signal";
            }
            if g.hold_until.as_ref().is_some_and(|p| p.exists()) {
                break "file";
            }
            let el = start.elapsed().as_secs_f64();
            if g.hold.is_some_and(|s| el >= s) {
                break "time";
            }
            if el >= g.max_hold {
                self.say("warning: --max-hold expired; going on");
                break "max-hold";
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let secs = start.elapsed().as_secs_f64();
        self.say(format!("hold ended ({reason}) after {secs:.3} s"));
        Some(Obj::new().with("reason", reason).with("secs", secs))
    }

    /// Bound for waiting on a cooperating child process.
    pub fn child_wait(&self) -> Duration {
        let hold = if self.holding() { self.g.max_hold } else { 0.0 };
        Duration::from_secs_f64(hold + 120.0)
    }

    /// A file name unique to this process and scenario.
    pub fn file_name(&self, tag: &str) -> String {
        format!("refscope-{}-{}-{tag}", self.scenario, sys::getpid())
    }

    /// Create a test file in --dir and check that it is DAX.
    pub fn create_file(
        &self,
        tag: &str,
        size: u64,
        fill: Fill,
        extsize_hint: bool,
    ) -> anyhow::Result<TestFile> {
        if !self.g.dir.is_dir() {
            bail!(
                "{} is not a directory (mount the DAX file system there, or pass --dir)",
                self.g.dir.display()
            );
        }
        let f = TestFile::create(
            &self.g.dir,
            &self.file_name(tag),
            size,
            fill,
            self.g.keep_files,
            extsize_hint,
        )?;
        match f.info.dax {
            Some(true) => {}
            Some(false) if !self.g.allow_non_dax => bail!(
                "{} is not DAX (STATX_ATTR_DAX clear; fs {}): mount with -o dax on an fsdax namespace, \
                 or pass --allow-non-dax for a smoke test",
                f.path.display(),
                f.info.fs
            ),
            Some(false) => {}
            None => self.say(format!(
                "warning: the kernel does not report STATX_ATTR_DAX for {}",
                f.path.display()
            )),
        }
        Ok(f)
    }

    /// Describe the file system a test file lives on.
    pub fn file_env(&self, f: &TestFile) -> Obj {
        let mut o = Obj::new()
            .with("dir", self.g.dir.display().to_string())
            .with("fs", &f.info.fs)
            .with("dax", f.info.dax)
            .with("dev", format!("{}:{}", f.info.dev.0, f.info.dev.1));
        if let Some(m) = sys::mount_of(&f.path) {
            o.set("mount_source", m.source);
            o.set("mount_options", m.super_options);
        }
        let nd = sys::nd_devices();
        if nd != Obj::new() {
            o.set("nd", nd);
        }
        o
    }

    /// Records for the pages `pages` (indices into `map`, in touch order)
    /// of a mapping of `file` at file offset `file_off`, with PFNs from
    /// pagemap.
    pub fn page_records(
        &self,
        map: &Mapping,
        pages: &[usize],
        file: &str,
        file_off: u64,
        times: Option<&[u64]>,
    ) -> anyhow::Result<Vec<MapRecord>> {
        let entries = pagemap::read(None, map.addr(), map.pages())?;
        Ok(pages
            .iter()
            .enumerate()
            .map(|(k, &i)| MapRecord {
                vaddr: map.addr() + i * PAGE_SIZE,
                entry: entries[i],
                order: 0,
                file: file.to_owned(),
                offset: file_off + (i * PAGE_SIZE) as u64,
                t_ns: times.map(|t| t[k]),
            })
            .collect())
    }

    /// Records for a mapping touched once per 2^order block: one record per
    /// block, order 2^order if pagemap shows the whole block mapped
    /// contiguously (a huge fault), else order 0 for the touched page.
    pub fn block_records(
        &self,
        map: &Mapping,
        order: u32,
        file: &str,
        file_off: u64,
    ) -> anyhow::Result<Vec<MapRecord>> {
        let entries = pagemap::read(None, map.addr(), map.pages())?;
        let n = 1usize << order;
        Ok(entries
            .chunks(n)
            .enumerate()
            .map(|(b, chunk)| {
                let huge = pagemap::is_huge_block(chunk, order);
                MapRecord {
                    vaddr: map.addr() + b * n * PAGE_SIZE,
                    entry: chunk[0],
                    order: if huge { order } else { 0 },
                    file: file.to_owned(),
                    offset: file_off + (b * n * PAGE_SIZE) as u64,
                    t_ns: None,
                }
            })
            .collect())
    }

    /// The `oracle` line: every present device page of `regions` (start
    /// address, pages) with the pfn `/proc/self/pagemap` shows for it right
    /// now. It depends on nothing a tracer does, so a test can hold a
    /// tracer's view of the mappings against it (`oracle: pagemap` in
    /// tests/scenarios.json). A present page whose pfn is hidden (no
    /// CAP_SYS_ADMIN) has `pfn: null`. Present pages outside the device
    /// ranges of /proc/iomem (anonymous copies made by copy-on-write) are
    /// only counted, as `other_pages`.
    pub fn oracle_line(&self, regions: &[(usize, usize)]) -> anyhow::Result<Obj> {
        let mut pages = Vec::new();
        let mut other = 0usize;
        for &(addr, n) in regions {
            let entries = pagemap::read(None, addr, n)?;
            for (i, e) in entries.iter().enumerate() {
                if e.present()
                    && e.pfn()
                        .is_some_and(|pfn| self.ranges.contains(pfn) == Some(false))
                {
                    other += 1;
                } else if e.present() {
                    pages.push(
                        Obj::new()
                            .with("vaddr", hex((addr + i * PAGE_SIZE) as u64))
                            .with("pfn", e.pfn()),
                    );
                }
            }
        }
        Ok(self
            .line("oracle")
            .with("source", "pagemap")
            .with("pages", pages)
            .with("other_pages", other))
    }

    pub fn records_json(&self, recs: &[MapRecord]) -> Json {
        Json::Arr(recs.iter().map(|r| r.to_json(&self.ranges)).collect())
    }

    /// Fail if any record has no PFN (not present, or pagemap hid it).
    pub fn check_present(&self, recs: &[MapRecord]) -> anyhow::Result<()> {
        if let Some(r) = recs.iter().find(|r| !r.entry.present()) {
            bail!("page at {:#x} is not present after touching it", r.vaddr);
        }
        if recs.iter().any(|r| r.pfn().is_none()) {
            self.say("warning: pagemap shows no PFNs (needs CAP_SYS_ADMIN): pfn fields are null");
        }
        if !self.g.allow_non_dax
            && let Some(r) = recs.iter().find(|r| {
                r.pfn()
                    .is_some_and(|p| self.ranges.contains(p) == Some(false))
            })
        {
            self.say(format!(
                "warning: pfn {:#x} at {:#x} is outside every device range in /proc/iomem",
                r.pfn().unwrap_or(0),
                r.vaddr
            ));
        }
        Ok(())
    }
}

/// Write `text` to `path` via a temporary name and rename, so a poller
/// never sees a partial file.
pub fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", sys::getpid()));
    std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Touch pages `order` of `map` (write or read), returning the touch time
/// of each (CLOCK_MONOTONIC ns) if `timed`.
pub fn touch_pages(map: &Mapping, order: &[usize], write: bool, timed: bool) -> Vec<u64> {
    let mut times = Vec::with_capacity(if timed { order.len() } else { 0 });
    let mut sink = 0u8;
    for &i in order {
        sink ^= map.touch(i, write);
        if timed {
            times.push(sys::monotonic_ns());
        }
    }
    std::hint::black_box(sink);
    times
}
