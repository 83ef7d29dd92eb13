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

mod data;
mod input;

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use refscope_core::{
    analysis::{Finding, Holder, Mapping, Severity, TimelineEntry},
    trace::Header,
};

use super::{
    event::ReplayEnd,
    filter::Filter,
    keys::{self, Action},
    layout::{self, PageCounts},
};
use crate::pipeline::Pipeline;

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

/// What the terminal can show: Unicode, colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TermCaps {
    /// ASCII borders and symbols only (serial consoles, non-UTF-8 locales).
    pub ascii: bool,
    /// Colours (off with NO_COLOR).
    pub color: bool,
}

impl Default for TermCaps {
    fn default() -> Self {
        TermCaps {
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
    pub(super) fn descending(self) -> bool {
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
    pub(super) fn clamp(&mut self, len: usize, height: usize) {
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

    pub(super) fn step(&mut self, delta: isize, len: usize, height: usize) {
        self.selected = self.selected.saturating_add_signed(delta);
        self.clamp(len, height);
    }

    pub(super) fn home(&mut self) {
        self.selected = 0;
        self.offset = 0;
    }

    pub(super) fn end(&mut self, len: usize, height: usize) {
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
    header: Header,
    mode: Mode,
    caps: TermCaps,

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
    pub fn new(header: Header, mode: Mode, caps: TermCaps) -> Self {
        let now_t = header.clock.monotonic_ns;
        let replay = matches!(mode, Mode::Replay { .. }).then(ReplayState::default);
        App {
            header,
            mode,
            caps,
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

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    pub fn caps(&self) -> TermCaps {
        self.caps
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
    pub fn finding_at<'a>(&self, src: &'a Pipeline, i: usize) -> Option<&'a Finding> {
        let n = self.finding_rows.len();
        let idx = *self.finding_rows.get(n.checked_sub(i + 1)?)?;
        src.analyzer.findings().get(idx)
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
    pub fn selected_pfn(&self, src: &Pipeline) -> Option<u64> {
        match self.focus {
            Focus::Findings => self
                .finding_at(src, self.findings_list.selected)
                .map(|f| f.pfn),
            Focus::Pages => self.rows.get(self.pages_list.selected).copied(),
        }
    }

    // ----------------------------------------------------------- layout --

    /// Visible rows of (findings, pages, timeline) at the current size.
    pub(super) fn heights(&self) -> (usize, usize, usize) {
        let l = layout::main_layout(self.size, self.finding_rows.len());
        let p = layout::page_layout(self.size, self.detail.as_ref().map(PageDetail::counts));
        (
            layout::table_rows(l.findings),
            layout::table_rows(l.pages),
            layout::table_rows(p.timeline),
        )
    }

    pub(super) fn clamp_all(&mut self) {
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
}

pub fn sev_index(s: Severity) -> usize {
    match s {
        Severity::Info => 0,
        Severity::Warning => 1,
        Severity::Error => 2,
    }
}
