//! The live view's state: its one owner. Changed only by the `handle_*`
//! and `on_*` methods below (no I/O: time and data come in as arguments),
//! read by `super::ui::render`.
//!
//! The analysis keeps running while the display is paused: what the screen
//! shows comes from a snapshot (counters, the filtered finding list, the
//! ordered page list, the open page's details) that is refreshed on ticks
//! unless paused, or at once when the user asks for something (sort,
//! filter, open). The page list is rebuilt (filtered and sorted) at most
//! every [`Refresh::interval`], which grows with the cost of a rebuild, so a
//! million pages never cost a sort per frame.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use refscope_core::{
    analysis::{Analyzer, Finding, Holder, Mapping, Severity, TimelineEntry},
    event::Event,
    trace::{Header, Loss},
};

use super::{
    event::{RawBatch, ReplayEnd},
    filter::Filter,
    keys::{self, Action},
    layout::{self, PageCounts},
};
use crate::session::Pipeline;

/// How often the snapshot is refreshed (and the clock ticks).
pub const TICK: Duration = Duration::from_millis(250);
/// Log lines kept for the log pane.
const LOG_LINES: usize = 500;

/// What the view is showing: the running kernel or a recorded trace.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    Live {
        /// Where the trace is also being recorded.
        recording: Option<String>,
    },
    Replay {
        file: String,
        speed: f64,
        /// Size of the file, for progress.
        total_bytes: u64,
    },
}

/// Display options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Look {
    /// ASCII borders and symbols only (serial consoles, non-UTF-8 locales).
    pub ascii: bool,
    /// Colours (off with NO_COLOR).
    pub color: bool,
}

impl Default for Look {
    fn default() -> Self {
        Look {
            ascii: false,
            color: true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    Main,
    Page,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    Findings,
    Pages,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlay {
    None,
    Help,
    Log,
}

/// Page-table order. `s` cycles through them, `S` reverses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// Pages with the worst findings first, then the most recently active.
    Severity,
    Pfn,
    /// Logical refcount.
    Refcount,
    Mappings,
    /// Pins and GUP references.
    Pins,
    /// Most recent event.
    Recent,
}

impl SortKey {
    pub const ALL: [SortKey; 6] = [
        SortKey::Severity,
        SortKey::Pfn,
        SortKey::Refcount,
        SortKey::Mappings,
        SortKey::Pins,
        SortKey::Recent,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SortKey::Severity => "findings",
            SortKey::Pfn => "pfn",
            SortKey::Refcount => "refcount",
            SortKey::Mappings => "mappings",
            SortKey::Pins => "pins",
            SortKey::Recent => "recent",
        }
    }

    /// Whether the natural order is largest first.
    fn descending(self) -> bool {
        !matches!(self, SortKey::Pfn)
    }
}

/// A scrollable list's selection and first visible row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListState {
    pub selected: usize,
    pub offset: usize,
}

impl ListState {
    /// Keep `selected` within `len` and visible in `height` rows.
    fn clamp(&mut self, len: usize, height: usize) {
        let height = height.max(1);
        self.selected = self.selected.min(len.saturating_sub(1));
        if self.selected < self.offset {
            self.offset = self.selected;
        }
        if self.selected >= self.offset + height {
            self.offset = self.selected + 1 - height;
        }
        self.offset = self.offset.min(len.saturating_sub(height));
    }

    fn step(&mut self, delta: isize, len: usize, height: usize) {
        self.selected = self.selected.saturating_add_signed(delta);
        self.clamp(len, height);
    }

    fn home(&mut self) {
        self.selected = 0;
        self.offset = 0;
    }

    fn end(&mut self, len: usize, height: usize) {
        self.selected = len.saturating_sub(1);
        self.clamp(len, height);
    }
}

/// Per-page summary of its findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageMark {
    pub worst: Severity,
    pub count: u32,
}

/// Counters shown in the header (frozen while paused).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    pub events: u64,
    pub lost: u64,
    pub pages: usize,
    pub mappings: usize,
    pub findings: usize,
    /// Findings by severity: info, warning, error.
    pub by_severity: [usize; 3],
    pub decode_errors: u64,
    /// Pages forgotten at the `--max-pages` cap.
    pub evicted: u64,
    /// Events per second over the last seconds.
    pub rate: f64,
    /// BPF run time per program run, and share of one CPU (live only).
    pub bpf: Option<BpfCost>,
    /// Divergences the shadow audit found (None: the source does not audit).
    pub drift: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BpfCost {
    pub ns_per_run: f64,
    pub cpu_percent: f64,
}

/// The open page, as of the last refresh.
#[derive(Clone, Debug, PartialEq)]
pub struct PageDetail {
    pub pfn: u64,
    /// The analysis still tracks the page (it may have been evicted).
    pub tracked: bool,
    pub raw_ref: Option<i32>,
    pub logical_ref: Option<i32>,
    pub mapcount: u32,
    pub pins: u32,
    pub gets: u32,
    pub first_t: u64,
    pub last_t: u64,
    /// Device name, type and state, e.g. `pfn1.0 fs_dax removed`.
    pub device: String,
    pub device_gone: bool,
    pub memmap_gone: bool,
    pub at_attach: bool,
    /// `raw - logical`.
    pub bias: i32,
    pub timeline: Vec<TimelineEntry>,
    pub mappings: Vec<((u64, u64), Mapping)>,
    pub holders: Vec<(u64, Holder)>,
    /// Indices into the analyzer's findings.
    pub findings: Vec<usize>,
}

impl PageDetail {
    /// What the page view's summary lists, for its layout.
    pub fn counts(&self) -> PageCounts {
        PageCounts {
            mappings: self.mappings.len(),
            holders: self.holders.len(),
            findings: self.findings.len(),
        }
    }
}

/// Replay progress.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplayState {
    pub bytes: u64,
    pub end: Option<ReplayEnd>,
}

/// Adaptive refresh of the expensive parts of the snapshot.
#[derive(Clone, Copy, Debug)]
pub struct Refresh {
    pub last: Option<Duration>,
    /// At least [`TICK`]; ten times the cost of the last rebuild.
    pub interval: Duration,
}

/// A line for the log pane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub level: log::Level,
    pub text: String,
}

/// The live view's state.
pub struct App {
    pipeline: Pipeline,
    header: Header,
    mode: Mode,
    look: Look,

    screen: Screen,
    focus: Focus,
    overlay: Overlay,
    /// The `/` prompt being edited.
    prompt: Option<String>,
    size: (u16, u16),
    paused: bool,
    quit: bool,
    dirty: bool,
    /// Repaint every cell (Ctrl-L: something else wrote on the terminal,
    /// e.g. kernel messages on a serial console).
    repaint: bool,

    /// The display clock (trace time): ages are relative to it.
    now_t: u64,
    /// The latest clock received (applied unless paused).
    clock: u64,
    elapsed: Duration,
    counters: Counters,
    rate_samples: VecDeque<(Duration, u64)>,
    bpf_last: Option<(Duration, Duration, u64)>,

    data_changed: bool,
    findings_seen: usize,
    /// Indices of shown findings, oldest first (displayed newest first).
    finding_rows: Vec<usize>,
    marks: HashMap<u64, PageMark>,
    rows: Vec<u64>,
    rows_stale: bool,
    refresh: Refresh,
    sort: SortKey,
    reverse: bool,
    filter: Filter,

    findings_list: ListState,
    pages_list: ListState,
    timeline_list: ListState,
    detail: Option<PageDetail>,
    /// The finding the page was opened from.
    opened_from: Option<usize>,

    logs: VecDeque<LogLine>,
    /// One-line message in the footer (cleared by the next key).
    notice: Option<(log::Level, String)>,
    replay: Option<ReplayState>,
    recording_error: Option<String>,
}

impl App {
    pub fn new(pipeline: Pipeline, header: Header, mode: Mode, look: Look) -> Self {
        let now_t = header.clock.monotonic_ns;
        let replay = matches!(mode, Mode::Replay { .. }).then(ReplayState::default);
        App {
            pipeline,
            header,
            mode,
            look,
            screen: Screen::Main,
            focus: Focus::Findings,
            overlay: Overlay::None,
            prompt: None,
            size: (80, 24),
            paused: false,
            quit: false,
            dirty: true,
            repaint: false,
            now_t,
            clock: now_t,
            elapsed: Duration::ZERO,
            counters: Counters::default(),
            rate_samples: VecDeque::new(),
            bpf_last: None,
            data_changed: true,
            findings_seen: 0,
            finding_rows: Vec::new(),
            marks: HashMap::new(),
            rows: Vec::new(),
            rows_stale: true,
            refresh: Refresh {
                last: None,
                interval: TICK,
            },
            sort: SortKey::Severity,
            reverse: false,
            filter: Filter::default(),
            findings_list: ListState::default(),
            pages_list: ListState::default(),
            timeline_list: ListState::default(),
            detail: None,
            opened_from: None,
            logs: VecDeque::new(),
            notice: None,
            replay,
            recording_error: None,
        }
    }

    // ------------------------------------------------------------ reads --

    pub fn analyzer(&self) -> &Analyzer {
        &self.pipeline.analyzer
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn pipeline_mut(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    pub fn look(&self) -> Look {
        self.look
    }

    pub fn screen(&self) -> Screen {
        self.screen
    }

    pub fn focus(&self) -> Focus {
        self.focus
    }

    pub fn overlay(&self) -> Overlay {
        self.overlay
    }

    pub fn prompt(&self) -> Option<&str> {
        self.prompt.as_deref()
    }

    pub fn size(&self) -> (u16, u16) {
        self.size
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    pub fn should_quit(&self) -> bool {
        self.quit
    }

    /// Whether the screen needs drawing.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// The screen was drawn.
    pub fn drawn(&mut self) {
        self.dirty = false;
    }

    /// Whether the next draw must repaint every cell (and forget it).
    pub fn take_repaint(&mut self) -> bool {
        std::mem::take(&mut self.repaint)
    }

    pub fn now_t(&self) -> u64 {
        self.now_t
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Shown findings, newest first: (display index, finding index).
    pub fn finding_count(&self) -> usize {
        self.finding_rows.len()
    }

    /// The finding shown at display row `i` (newest first).
    pub fn finding_at(&self, i: usize) -> Option<&Finding> {
        let n = self.finding_rows.len();
        let idx = *self.finding_rows.get(n.checked_sub(i + 1)?)?;
        self.pipeline.analyzer.findings().get(idx)
    }

    pub fn rows(&self) -> &[u64] {
        &self.rows
    }

    pub fn mark(&self, pfn: u64) -> Option<PageMark> {
        self.marks.get(&pfn).copied()
    }

    pub fn sort(&self) -> (SortKey, bool) {
        (self.sort, self.reverse)
    }

    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    pub fn findings_list(&self) -> ListState {
        self.findings_list
    }

    pub fn pages_list(&self) -> ListState {
        self.pages_list
    }

    pub fn timeline_list(&self) -> ListState {
        self.timeline_list
    }

    pub fn detail(&self) -> Option<&PageDetail> {
        self.detail.as_ref()
    }

    pub fn opened_from(&self) -> Option<usize> {
        self.opened_from
    }

    pub fn logs(&self) -> &VecDeque<LogLine> {
        &self.logs
    }

    pub fn notice(&self) -> Option<&(log::Level, String)> {
        self.notice.as_ref()
    }

    pub fn replay(&self) -> Option<&ReplayState> {
        self.replay.as_ref()
    }

    pub fn recording_error(&self) -> Option<&str> {
        self.recording_error.as_deref()
    }

    pub fn refresh_state(&self) -> Refresh {
        self.refresh
    }

    /// The pfn of the selected row of the focused pane, if any.
    pub fn selected_pfn(&self) -> Option<u64> {
        match self.focus {
            Focus::Findings => self.finding_at(self.findings_list.selected).map(|f| f.pfn),
            Focus::Pages => self.rows.get(self.pages_list.selected).copied(),
        }
    }

    // ------------------------------------------------------------- data --

    /// Live: decode and analyse ring-buffer records; the decoded events
    /// are returned for recording.
    pub fn on_records(&mut self, batch: &RawBatch) -> Vec<Event> {
        let mut out = Vec::with_capacity(batch.len());
        for rec in batch.iter() {
            if let Some(ev) = self.pipeline.on_record(rec) {
                self.clock = self.clock.max(ev.t);
                out.push(ev);
            }
        }
        self.data_changed = true;
        out
    }

    /// Replay: analyse decoded events.
    pub fn on_events(&mut self, events: &[Event], clock: u64) {
        for ev in events {
            self.pipeline.analyzer.apply(ev);
        }
        self.clock = self.clock.max(clock);
        self.data_changed = true;
    }

    /// Loss records (replay). Live losses are applied by the pipeline when
    /// it reads the drop counters; call [`App::on_data_changed`] then.
    pub fn on_losses(&mut self, losses: &[Loss]) {
        for l in losses {
            self.pipeline.analyzer.apply_loss(l);
        }
        self.data_changed = true;
    }

    pub fn on_data_changed(&mut self) {
        self.data_changed = true;
    }

    /// Replay progress: the paced clock and bytes read.
    pub fn on_progress(&mut self, clock: u64, bytes: u64) {
        self.clock = self.clock.max(clock);
        if let Some(r) = &mut self.replay {
            r.bytes = bytes;
        }
    }

    /// The replay reached the end of the trace: finish the analysis (pins
    /// still held become findings, as in `report`) and show the final state.
    pub fn on_replay_end(&mut self, end: ReplayEnd) {
        self.pipeline.analyzer.finish(end.end_t);
        self.clock = self.clock.max(end.end_t);
        if let Some(e) = &end.error {
            self.notice = Some((log::Level::Error, e.clone()));
        } else if let Some(line) = end.truncated_at {
            self.notice = Some((
                log::Level::Warn,
                format!(
                    "the trace ends in an incomplete line {line} (the recording was killed); replayed everything before it"
                ),
            ));
        } else if end.footer.is_none() {
            self.notice = Some((
                log::Level::Warn,
                "the trace has no footer (the recording did not stop cleanly)".into(),
            ));
        }
        if let Some(r) = &mut self.replay {
            r.end = Some(end);
        }
        self.data_changed = true;
        if !self.paused {
            self.refresh_all();
        }
        self.dirty = true;
    }

    /// The latest BPF run-time totals of our programs (live).
    pub fn on_bpf_stats(&mut self, run_time: Duration, runs: u64) {
        if let Some((at, t0, r0)) = self.bpf_last {
            let dt = run_time.saturating_sub(t0);
            let dr = runs.saturating_sub(r0);
            let wall = self.elapsed.saturating_sub(at);
            if !wall.is_zero() && (runs > 0 || !run_time.is_zero()) {
                let cost = BpfCost {
                    ns_per_run: if dr > 0 {
                        dt.as_nanos() as f64 / dr as f64
                    } else {
                        0.0
                    },
                    cpu_percent: dt.as_secs_f64() / wall.as_secs_f64() * 100.0,
                };
                if !self.paused {
                    self.counters.bpf = Some(cost);
                }
            }
        }
        self.bpf_last = Some((self.elapsed, run_time, runs));
    }

    /// Writing the recording failed: it stopped.
    pub fn on_recording_error(&mut self, error: String) {
        self.recording_error = Some(error);
        self.dirty = true;
    }

    /// A log record (they never go to the terminal while the view is up).
    pub fn on_log(&mut self, level: log::Level, text: String) {
        if level <= log::Level::Warn {
            self.notice = Some((level, text.clone()));
            self.dirty = true;
        }
        if self.logs.len() >= LOG_LINES {
            self.logs.pop_front();
        }
        self.logs.push_back(LogLine { level, text });
    }

    /// Time passed: `elapsed` since start; `now_t` is the kernel clock in
    /// live mode (replay moves its clock with the data).
    pub fn on_tick(&mut self, elapsed: Duration, now_t: Option<u64>) {
        self.elapsed = elapsed;
        if let Some(t) = now_t {
            self.clock = self.clock.max(t);
        }
        let events = self.pipeline.analyzer.stats().events;
        self.rate_samples.push_back((elapsed, events));
        while self
            .rate_samples
            .front()
            .is_some_and(|&(t, _)| elapsed.saturating_sub(t) > Duration::from_secs(2))
        {
            self.rate_samples.pop_front();
        }
        if self.paused {
            return;
        }
        let before = (self.now_t, self.counters.clone());
        self.now_t = self.clock;
        self.update_counters();
        self.take_findings();
        let due = self
            .refresh
            .last
            .is_none_or(|last| elapsed.saturating_sub(last) >= self.refresh.interval);
        if due && (self.data_changed || self.rows_stale) {
            self.rebuild();
        }
        // Ages move with the clock: redraw at least once a second.
        let second = |t: u64| t / 1_000_000_000;
        if before != (self.now_t, self.counters.clone()) || second(before.0) != second(self.now_t) {
            self.dirty = true;
        }
    }

    fn update_counters(&mut self) {
        let a = &self.pipeline.analyzer;
        let rate = match (self.rate_samples.front(), self.rate_samples.back()) {
            (Some(&(t0, e0)), Some(&(t1, e1))) if t1 > t0 => {
                e1.saturating_sub(e0) as f64 / (t1 - t0).as_secs_f64()
            }
            _ => 0.0,
        };
        let mut by_severity = [0; 3];
        for f in a.findings() {
            by_severity[sev_index(f.severity)] += 1;
        }
        self.counters = Counters {
            events: a.stats().events,
            lost: a.lost(),
            pages: a.page_count(),
            mappings: a.mapping_count(),
            findings: a.findings().len(),
            by_severity,
            decode_errors: self.pipeline.decode_errors,
            evicted: a.stats().pages_evicted,
            rate,
            bpf: self.counters.bpf,
            drift: (a.config().verify || a.stats().audits > 0).then(|| a.stats().drift()),
        };
    }

    /// Fold findings raised since the last call into the shown list.
    fn take_findings(&mut self) {
        let all = self.pipeline.analyzer.findings();
        if self.findings_seen >= all.len() {
            return;
        }
        let mut added = 0;
        for (i, f) in all.iter().enumerate().skip(self.findings_seen) {
            let m = self.marks.entry(f.pfn).or_insert(PageMark {
                worst: f.severity,
                count: 0,
            });
            m.worst = m.worst.max(f.severity);
            m.count += 1;
            if self.filter.matches_finding(f) {
                self.finding_rows.push(i);
                added += 1;
            }
        }
        self.findings_seen = all.len();
        // Keep the selected finding selected (newest first shifts rows),
        // unless the selection is on the newest one: then follow.
        if added > 0 && self.findings_list.selected > 0 {
            self.findings_list.selected += added;
        }
        self.clamp_all();
        self.rows_stale |= self.sort == SortKey::Severity;
        self.dirty = true;
    }

    /// Refresh everything now (user action, unpause, end of replay).
    pub fn refresh_all(&mut self) {
        self.now_t = self.clock;
        self.update_counters();
        self.take_findings();
        self.rebuild();
        self.dirty = true;
    }

    /// Rebuild the page list (filter + sort) and the open page's details.
    fn rebuild(&mut self) {
        let started = Instant::now();
        self.rebuild_rows();
        self.rebuild_detail();
        self.data_changed = false;
        self.rows_stale = false;
        let cost = started.elapsed();
        self.refresh = Refresh {
            last: Some(self.elapsed),
            interval: (cost * 10).max(TICK),
        };
        self.clamp_all();
        self.dirty = true;
    }

    fn rebuild_rows(&mut self) {
        let a = &self.pipeline.analyzer;
        // The selected page stays selected where the rows move, unless the
        // selection is on the first row: then it stays on the first row.
        let keep = match self.pages_list.selected {
            0 => None,
            i => self.rows.get(i).copied(),
        };
        let ctx = self.filter.page_context(a);
        let filtered = !self.filter.is_empty();
        let sort = self.sort;
        let marks = &self.marks;
        let mut keyed: Vec<(u64, u64)> = Vec::with_capacity(a.page_count());
        for p in a.pages() {
            if filtered && !self.filter.matches_page(&p, &ctx) {
                continue;
            }
            let key = match sort {
                SortKey::Severity => {
                    let sev = marks
                        .get(&p.pfn)
                        .map_or(0, |m| sev_index(m.worst) as u64 + 1);
                    (sev << 62) | (p.last_t >> 2)
                }
                SortKey::Pfn => p.pfn,
                SortKey::Refcount => p
                    .logical_ref
                    .map_or(0, |r| (i64::from(r) + (1i64 << 32)) as u64),
                SortKey::Mappings => u64::from(p.mapcount),
                SortKey::Pins => u64::from(p.pins) + u64::from(p.gets),
                SortKey::Recent => p.last_t,
            };
            keyed.push((key, p.pfn));
        }
        let desc = sort.descending() != self.reverse;
        keyed.sort_unstable_by(|x, y| {
            let k = if desc { y.0.cmp(&x.0) } else { x.0.cmp(&y.0) };
            k.then(x.1.cmp(&y.1))
        });
        self.rows = keyed.into_iter().map(|(_, pfn)| pfn).collect();
        if let Some(pfn) = keep
            && let Some(i) = self.rows.iter().position(|&p| p == pfn)
        {
            self.pages_list.selected = i;
        }
    }

    fn rebuild_detail(&mut self) {
        let Some(pfn) = self.detail.as_ref().map(|d| d.pfn) else {
            return;
        };
        let at_end = self
            .detail
            .as_ref()
            .is_some_and(|d| self.timeline_list.selected + 1 >= d.timeline.len());
        let d = self.page_detail(pfn);
        if at_end {
            self.timeline_list.selected = d.timeline.len().saturating_sub(1);
        }
        self.detail = Some(d);
    }

    fn page_detail(&self, pfn: u64) -> PageDetail {
        let a = &self.pipeline.analyzer;
        let findings: Vec<usize> = a
            .findings()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.pfn == pfn)
            .map(|(i, _)| i)
            .collect();
        let mappings = a.mappings_of(pfn);
        let holders: Vec<(u64, Holder)> =
            a.holders_of(pfn).map(|(mm, h)| (mm, h.clone())).collect();
        match a.page(pfn) {
            Some(p) => {
                let device = match p.pgmap {
                    Some(g) => format!(
                        "{} {} {}",
                        if g.name.is_empty() {
                            "(unnamed)"
                        } else {
                            &g.name
                        },
                        g.ty.as_str(),
                        match g.state {
                            refscope_core::analysis::PgmapState::Live => "live",
                            refscope_core::analysis::PgmapState::Removing => "removing",
                            refscope_core::analysis::PgmapState::Removed => "removed",
                        }
                    ),
                    None => "unknown device".into(),
                };
                PageDetail {
                    pfn,
                    tracked: true,
                    raw_ref: p.raw_ref,
                    logical_ref: p.logical_ref,
                    mapcount: p.mapcount,
                    pins: p.pins,
                    gets: p.gets,
                    first_t: p.first_t,
                    last_t: p.last_t,
                    device,
                    device_gone: p
                        .pgmap
                        .is_some_and(|g| g.state != refscope_core::analysis::PgmapState::Live),
                    memmap_gone: p.memmap_gone,
                    at_attach: p.at_attach,
                    bias: match (p.raw_ref, p.logical_ref) {
                        (Some(r), Some(l)) => r - l,
                        _ => 0,
                    },
                    timeline: p.timeline().cloned().collect(),
                    mappings,
                    holders,
                    findings,
                }
            }
            None => {
                // Evicted (or never tracked): the newest finding's evidence.
                let timeline = findings
                    .last()
                    .and_then(|&i| a.findings().get(i))
                    .map(|f| f.timeline.clone())
                    .unwrap_or_default();
                PageDetail {
                    pfn,
                    tracked: false,
                    raw_ref: None,
                    logical_ref: None,
                    mapcount: 0,
                    pins: 0,
                    gets: 0,
                    first_t: timeline.first().map_or(0, |e| e.t),
                    last_t: timeline.last().map_or(0, |e| e.t),
                    device: "not tracked (evicted)".into(),
                    device_gone: false,
                    memmap_gone: false,
                    at_attach: false,
                    bias: 0,
                    timeline,
                    mappings,
                    holders,
                    findings,
                }
            }
        }
    }

    // ----------------------------------------------------------- layout --

    /// Visible rows of (findings, pages, timeline) at the current size.
    fn heights(&self) -> (usize, usize, usize) {
        let l = layout::main_layout(self.size, self.finding_rows.len());
        let p = layout::page_layout(self.size, self.detail.as_ref().map(PageDetail::counts));
        (
            layout::table_rows(l.findings),
            layout::table_rows(l.pages),
            layout::table_rows(p.timeline),
        )
    }

    fn clamp_all(&mut self) {
        let (hf, hp, ht) = self.heights();
        self.findings_list.clamp(self.finding_rows.len(), hf);
        self.pages_list.clamp(self.rows.len(), hp);
        let nt = self.detail.as_ref().map_or(0, |d| d.timeline.len());
        self.timeline_list.clamp(nt, ht);
    }

    pub fn on_resize(&mut self, width: u16, height: u16) {
        self.size = (width, height);
        self.clamp_all();
        self.dirty = true;
    }

    // ------------------------------------------------------------ input --

    /// Terminal input.
    pub fn on_input(&mut self, ev: TermEvent) {
        match ev {
            TermEvent::Key(k) if k.kind != KeyEventKind::Release => self.handle_key(k),
            TermEvent::Resize(w, h) => self.on_resize(w, h),
            _ => {}
        }
    }

    /// Quit requested from outside (signal, closed terminal).
    pub fn request_quit(&mut self) {
        self.quit = true;
    }

    pub fn handle_key(&mut self, k: KeyEvent) {
        self.dirty = true;
        let action = keys::action(&k);
        // Ctrl keys work everywhere, the prompt included.
        if k.modifiers.contains(KeyModifiers::CONTROL) {
            match action {
                Some(Action::Quit) => {
                    self.quit = true;
                    return;
                }
                Some(Action::Repaint) => {
                    self.repaint = true;
                    return;
                }
                _ => {}
            }
        }
        if let Some(text) = &mut self.prompt {
            match k.code {
                KeyCode::Esc => self.prompt = None,
                KeyCode::Enter => {
                    let text = std::mem::take(text);
                    self.prompt = None;
                    self.apply_filter(&text);
                }
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char('u') if k.modifiers.contains(KeyModifiers::CONTROL) => text.clear(),
                KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::CONTROL) => text.push(c),
                _ => {}
            }
            return;
        }
        self.notice = None;
        let Some(action) = action else {
            return;
        };
        if self.overlay != Overlay::None {
            match action {
                Action::Quit => self.quit = true,
                Action::Back | Action::Help | Action::Open => self.overlay = Overlay::None,
                Action::Log if self.overlay == Overlay::Log => self.overlay = Overlay::None,
                _ => {}
            }
            return;
        }
        match action {
            Action::Quit => self.quit = true,
            Action::Help => self.overlay = Overlay::Help,
            Action::Log => self.overlay = Overlay::Log,
            Action::Pause => self.toggle_pause(),
            Action::Back => match self.screen {
                Screen::Page => self.close_page(),
                Screen::Main if !self.filter.is_empty() => self.apply_filter(""),
                Screen::Main => {}
            },
            Action::Filter => self.prompt = Some(self.filter.text().to_string()),
            Action::Sort => self.cycle_sort(),
            Action::Reverse => {
                self.reverse = !self.reverse;
                self.resort();
            }
            Action::Pane if self.screen == Screen::Main => {
                self.focus = match self.focus {
                    Focus::Findings => Focus::Pages,
                    Focus::Pages => Focus::Findings,
                };
            }
            Action::Open if self.screen == Screen::Main => {
                if let Some(pfn) = self.selected_pfn() {
                    let from = match self.focus {
                        Focus::Findings => {
                            let n = self.finding_rows.len();
                            n.checked_sub(self.findings_list.selected + 1)
                                .and_then(|i| self.finding_rows.get(i).copied())
                        }
                        Focus::Pages => None,
                    };
                    self.open_page(pfn, from);
                }
            }
            Action::Up => self.step(-1),
            Action::Down => self.step(1),
            Action::PageUp => self.page_step(-1),
            Action::PageDown => self.page_step(1),
            Action::Home => self.list_mut().home(),
            Action::End => {
                let (len, h) = self.list_len_height();
                self.list_mut().end(len, h);
            }
            Action::Pane | Action::Open | Action::Repaint => {}
        }
    }

    fn list_len_height(&self) -> (usize, usize) {
        let (hf, hp, ht) = self.heights();
        match (self.screen, self.focus) {
            (Screen::Page, _) => (self.detail.as_ref().map_or(0, |d| d.timeline.len()), ht),
            (Screen::Main, Focus::Findings) => (self.finding_rows.len(), hf),
            (Screen::Main, Focus::Pages) => (self.rows.len(), hp),
        }
    }

    fn list_mut(&mut self) -> &mut ListState {
        match (self.screen, self.focus) {
            (Screen::Page, _) => &mut self.timeline_list,
            (Screen::Main, Focus::Findings) => &mut self.findings_list,
            (Screen::Main, Focus::Pages) => &mut self.pages_list,
        }
    }

    fn step(&mut self, delta: isize) {
        let (len, h) = self.list_len_height();
        self.list_mut().step(delta, len, h);
    }

    fn page_step(&mut self, dir: isize) {
        let (len, h) = self.list_len_height();
        let by = h.saturating_sub(1).max(1) as isize;
        self.list_mut().step(dir * by, len, h);
    }

    pub fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        if !self.paused {
            self.refresh_all();
        }
    }

    fn cycle_sort(&mut self) {
        let i = SortKey::ALL
            .iter()
            .position(|&k| k == self.sort)
            .unwrap_or(0);
        self.sort = SortKey::ALL[(i + 1) % SortKey::ALL.len()];
        self.reverse = false;
        self.resort();
    }

    fn resort(&mut self) {
        self.rebuild();
        self.notice = Some((
            log::Level::Info,
            format!(
                "pages sorted by {}{}",
                self.sort.name(),
                if self.reverse { ", reversed" } else { "" }
            ),
        ));
    }

    /// Apply a filter typed at the prompt (empty: clear it).
    pub fn apply_filter(&mut self, text: &str) {
        match Filter::parse(text) {
            Ok(f) => {
                self.filter = f;
                let a = &self.pipeline.analyzer;
                self.finding_rows = a.findings()[..self.findings_seen]
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| self.filter.matches_finding(f))
                    .map(|(i, _)| i)
                    .collect();
                self.findings_list = ListState::default();
                self.pages_list = ListState::default();
                self.rebuild();
            }
            Err(e) => {
                self.notice = Some((log::Level::Error, format!("filter: {e}")));
                self.prompt = Some(text.to_string());
            }
        }
    }

    /// Open the page view of `pfn` (from finding `from`, if any).
    pub fn open_page(&mut self, pfn: u64, from: Option<usize>) {
        let d = self.page_detail(pfn);
        // Select the event that raised the finding, else the newest.
        let sel = from
            .and_then(|i| self.pipeline.analyzer.findings().get(i))
            .and_then(|f| d.timeline.iter().rposition(|e| e.t <= f.t_ns))
            .unwrap_or(d.timeline.len().saturating_sub(1));
        self.detail = Some(d);
        self.opened_from = from;
        self.screen = Screen::Page;
        self.timeline_list = ListState {
            selected: sel,
            offset: 0,
        };
        self.clamp_all();
        // Show the selected event near the bottom, with what led to it.
        let (_, _, h) = self.heights();
        self.timeline_list.offset = sel.saturating_sub(h.saturating_sub(3));
        self.clamp_all();
        self.dirty = true;
    }

    fn close_page(&mut self) {
        self.screen = Screen::Main;
        self.detail = None;
        self.opened_from = None;
        self.clamp_all();
    }
}

pub fn sev_index(s: Severity) -> usize {
    match s {
        Severity::Info => 0,
        Severity::Warning => 1,
        Severity::Error => 2,
    }
}
