//! The live view without a terminal: key handling on the state, and
//! snapshots of the main screens rendered with ratatui's `TestBackend`.
//!
//! Snapshots live in `src/live/snapshots/`; after an intended change to
//! the screens, regenerate them with
//! `REFSCOPE_UPDATE_SNAPSHOTS=1 cargo test -p refscope live::` and review
//! the diff.

use std::{path::PathBuf, slice};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::{Terminal, backend::TestBackend, buffer::Buffer, style::Color};
use refscope_common::{EventKind, HookId};
use refscope_core::{
    analysis::{Analyzer, Finding, RuleId, Severity},
    event::{Comm, Event, Hex},
    trace::{Footer, Header, Loss},
};

use super::{
    app::{App, Focus, Mode, Overlay, Screen, SortKey, TermCaps},
    event::ReplayEnd,
    layout,
    synth::{BASE_PFN, Item, Synth},
    ui,
};
use crate::{hash::AddrMapper, pipeline::Pipeline, recorder::Recorder};

/// The view as the owner loop drives it: the recorder analyses, the app
/// is told and reads the analysis.
struct View {
    app: App,
    rec: Recorder<std::io::Sink>,
}

impl std::ops::Deref for View {
    type Target = App;
    fn deref(&self) -> &App {
        &self.app
    }
}

impl std::ops::DerefMut for View {
    fn deref_mut(&mut self) -> &mut App {
        &mut self.app
    }
}

impl View {
    fn new(pipeline: Pipeline, header: Header, mode: Mode, caps: TermCaps) -> View {
        View {
            app: App::new(header, mode, caps),
            rec: Recorder::new(pipeline, None),
        }
    }

    fn analyzer(&self) -> &Analyzer {
        self.rec.analyzer()
    }

    fn on_events(&mut self, events: &[Event], clock: u64) {
        for e in events {
            self.rec.apply(e);
        }
        self.app.on_data(clock);
    }

    fn on_losses(&mut self, losses: &[Loss]) {
        for l in losses {
            self.rec.loss(l);
        }
        self.app.on_data(0);
    }

    fn on_replay_end(&mut self, end: ReplayEnd) {
        self.rec.end(end.end_t);
        self.app.on_replay_end(self.rec.pipeline(), end);
    }

    fn on_tick(&mut self, elapsed: std::time::Duration, now_t: Option<u64>) {
        self.app.on_tick(self.rec.pipeline(), elapsed, now_t);
    }

    fn handle_key(&mut self, k: KeyEvent) {
        self.app.handle_key(self.rec.pipeline(), k);
    }

    fn apply_filter(&mut self, text: &str) {
        self.app.apply_filter(self.rec.pipeline(), text);
    }

    fn refresh_all(&mut self) {
        self.app.refresh_all(self.rec.pipeline());
    }

    fn finding_at(&self, i: usize) -> Option<&Finding> {
        self.app.finding_at(self.rec.pipeline(), i)
    }
}

/// A small synthetic scenario (see `synth`), replayed to its end.
fn synth() -> Synth {
    Synth {
        pages: 64,
        pinned: 4,
    }
}

fn replayed(size: (u16, u16)) -> View {
    let s = synth();
    let header = s.header();
    let pipeline = Pipeline::new(&header, 64, AddrMapper::new(true), None);
    let mode = Mode::Replay {
        file: "synth.jsonl".into(),
        speed: 0.0,
        total_bytes: 1 << 20,
    };
    let mut app = View::new(
        pipeline,
        header,
        mode,
        TermCaps {
            ascii: false,
            color: true,
        },
    );
    app.on_resize(size.0, size.1);
    let mut events = 0;
    s.generate(&mut |item| match item {
        Item::Event(e) => {
            events += 1;
            app.on_events(slice::from_ref(e), e.t);
        }
        Item::Loss(l) => app.on_losses(slice::from_ref(l)),
    });
    app.on_progress(s.end_t(), 1 << 20);
    app.on_replay_end(ReplayEnd {
        end_t: s.end_t(),
        footer: Some(Footer {
            events,
            lost: 3,
            findings: 0,
            end_t: s.end_t(),
            end_reason: "signal".into(),
        }),
        truncated_at: None,
        error: None,
    });
    app
}

fn key(app: &mut View, code: KeyCode) {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
}

fn keys(app: &mut View, text: &str) {
    for c in text.chars() {
        key(app, KeyCode::Char(c));
    }
}

fn draw(app: &View) -> Buffer {
    let (w, h) = app.size();
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    t.draw(|f| ui::render(app, app.rec.pipeline(), f))
        .expect("draw");
    t.backend().buffer().clone()
}

fn text(buf: &Buffer) -> String {
    let mut out = String::new();
    for y in 0..buf.area.height {
        let mut line = String::new();
        for x in 0..buf.area.width {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Compare with (or with REFSCOPE_UPDATE_SNAPSHOTS=1, write) a snapshot.
fn snapshot(name: &str, app: &View) -> String {
    let got = text(&draw(app));
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "src/live/snapshots",
        &format!("{name}.txt"),
    ]
    .iter()
    .collect();
    if std::env::var_os("REFSCOPE_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&path, &got).expect("write snapshot");
        return got;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with REFSCOPE_UPDATE_SNAPSHOTS=1 to create it. The screen:\n{got}",
            path.display()
        )
    });
    assert!(
        got == want,
        "screen `{name}` differs from {} (REFSCOPE_UPDATE_SNAPSHOTS=1 to accept):\n--- want\n{want}--- got\n{got}",
        path.display()
    );
    got
}

fn row_of(screen: &str, needle: &str) -> Option<usize> {
    screen.lines().position(|l| l.contains(needle))
}

/// The line of a timeline row with this event kind and process.
fn timeline_row(screen: &str, kind: &str, who: &str) -> Option<usize> {
    screen.lines().position(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.len() > 2 && w[1] == kind && w[2] == who
    })
}

/// The cell column of `needle` on line `y`.
fn col_of(screen: &str, y: usize, needle: &str) -> u16 {
    let line = screen.lines().nth(y).expect("line");
    let byte = line.find(needle).expect("needle on the line");
    line[..byte].chars().count() as u16
}

// ---------------------------------------------------------- snapshots --

#[test]
fn main_screen_80x24() {
    let app = replayed((80, 24));
    let s = snapshot("main_80x24", &app);
    // The bad page is the newest error, first in the findings pane and
    // first in the pages table (sorted by findings).
    let f = row_of(&s, "mapped_after_unplug").expect("the finding is shown");
    assert!(
        s.lines()
            .nth(f)
            .is_some_and(|l| l.contains("0x14002a") && l.contains("stale_map[7777]"))
    );
    assert!(
        row_of(&s, "pin_leak").is_some_and(|r| r > f),
        "newest first"
    );
    assert!(s.contains("drops 3"), "{s}");
    assert!(s.contains("hooks 9/10"), "{s}");
    assert!(s.lines().all(|l| l.chars().count() <= 80));
}

#[test]
fn main_screen_120x40() {
    let app = replayed((120, 40));
    let s = snapshot("main_120x40", &app);
    assert!(s.starts_with("refscope"), "the name fits on wide screens");
}

#[test]
fn page_view_80x24_and_120x40() {
    for (size, name) in [((80, 24), "page_80x24"), ((120, 40), "page_120x40")] {
        let mut app = replayed(size);
        key(&mut app, KeyCode::Enter);
        assert_eq!(app.screen(), Screen::Page);
        let s = snapshot(name, &app);
        assert!(s.contains("Page 0x14002a"), "{s}");
        // The timeline: the map, the device removal under it, and the
        // late unmap that finds the memmap gone.
        let map = timeline_row(&s, "map", "stale_map[7777]").expect("map row");
        let rm = timeline_row(&s, "pgmap_remove", "ndctl[2718]").expect("removal row");
        let un = timeline_row(&s, "unmap", "stale_map[7777]").expect("unmap row");
        assert!(map < rm && rm < un, "oldest first:\n{s}");
        assert!(s.contains("memmap gone"), "{s}");
        assert!(s.contains("mapped_after_unplug"), "{s}");
    }
}

#[test]
fn help_and_filtered_screens() {
    let mut app = replayed((80, 24));
    key(&mut app, KeyCode::Char('?'));
    let s = snapshot("help_80x24", &app);
    assert!(s.contains("Help") && s.contains("pause the display"), "{s}");
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Char('/'));
    keys(&mut app, "pid:6100");
    let s = snapshot("filter_prompt_80x24", &app);
    assert!(s.contains("filter: pid:6100"), "{s}");
    key(&mut app, KeyCode::Enter);
    let s = snapshot("filtered_80x24", &app);
    assert!(!s.contains("mapped_after_unplug"), "{s}");
    assert!(
        s.contains("pin_leak") && s.contains("longterm_pin_fsdax"),
        "{s}"
    );
}

#[test]
fn ascii_and_monochrome_rendering() {
    let mut app = replayed((80, 24));
    let buf = draw(&app);
    // Colour by severity: the error's SEV cell is red.
    let s = text(&buf);
    let y = row_of(&s, "mapped_after_unplug").expect("row");
    let x = col_of(&s, y, "ERR");
    assert_eq!(buf[(x, y as u16)].fg, Color::Red);
    let y = row_of(&s, "pin_leak").expect("row");
    assert_eq!(buf[(col_of(&s, y, "WARN"), y as u16)].fg, Color::Yellow);
    // Drops are red when non-zero.
    assert_eq!(buf[(col_of(&s, 1, "drops 3"), 1)].fg, Color::Red);

    app = View::new(
        Pipeline::new(&synth().header(), 64, AddrMapper::new(true), None),
        synth().header(),
        Mode::Live { recording: None },
        TermCaps {
            ascii: true,
            color: false,
        },
    );
    app.on_resize(80, 24);
    app.refresh_all();
    let s = snapshot("empty_live_ascii_80x24", &app);
    assert!(s.is_ascii(), "ASCII mode draws only ASCII:\n{s}");
    assert!(
        s.contains("no findings yet") && s.contains("not recording"),
        "{s}"
    );
    let buf = draw(&app);
    assert!(
        buf.content().iter().all(|c| c.fg == Color::Reset),
        "no colours"
    );
}

// ---------------------------------------------------------------- keys --

#[test]
fn quit_keys() {
    let mut app = replayed((80, 24));
    key(&mut app, KeyCode::Char('q'));
    assert!(app.should_quit());
    let mut app = replayed((80, 24));
    app.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert!(app.should_quit(), "Ctrl-C quits");
    let mut app = replayed((80, 24));
    key(&mut app, KeyCode::Char('?'));
    key(&mut app, KeyCode::Char('q'));
    assert!(app.should_quit(), "q quits from the help too");
    let mut app = replayed((80, 24));
    app.handle_key(KeyEvent::new(KeyCode::Char('l'), KeyModifiers::CONTROL));
    assert!(app.take_repaint(), "Ctrl-L repaints");
    assert!(!app.take_repaint() && !app.should_quit());
    key(&mut app, KeyCode::Char('/'));
    key(&mut app, KeyCode::Char('q'));
    assert!(!app.should_quit(), "q is text at the filter prompt");
    assert_eq!(app.prompt(), Some("q"));
}

#[test]
fn help_opens_and_closes() {
    let mut app = replayed((80, 24));
    key(&mut app, KeyCode::Char('?'));
    assert_eq!(app.overlay(), Overlay::Help);
    key(&mut app, KeyCode::Char('j'));
    assert_eq!(app.overlay(), Overlay::Help, "other keys do nothing");
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.overlay(), Overlay::None);
    key(&mut app, KeyCode::Char('?'));
    key(&mut app, KeyCode::Char('?'));
    assert_eq!(app.overlay(), Overlay::None);
}

#[test]
fn enter_on_a_finding_opens_its_page_at_the_event_that_raised_it() {
    let mut app = replayed((80, 24));
    let s = synth();
    assert_eq!(app.focus(), Focus::Findings);
    let newest = app.finding_at(0).expect("findings");
    assert_eq!(newest.rule, RuleId::MappedAfterUnplug);
    assert_eq!(newest.pfn, s.bad_pfn());
    let raised = newest.t_ns;
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.screen(), Screen::Page);
    let d = app.detail().expect("detail");
    assert_eq!(d.pfn, s.bad_pfn());
    assert!(d.device_gone && d.memmap_gone);
    let sel = &d.timeline[app.timeline_list().selected];
    assert_eq!(sel.kind, EventKind::PgmapRemove);
    assert_eq!(sel.t, raised);
    // Scroll the timeline, then back to the list.
    key(&mut app, KeyCode::Char('j'));
    assert_eq!(app.timeline_list().selected, d_len(&app) - 1);
    key(&mut app, KeyCode::Home);
    assert_eq!(app.timeline_list().selected, 0);
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.screen(), Screen::Main);
    assert!(app.detail().is_none());
}

fn d_len(app: &View) -> usize {
    app.detail().map_or(0, |d| d.timeline.len())
}

#[test]
fn navigation_and_opening_a_page_from_the_table() {
    let mut app = replayed((80, 24));
    key(&mut app, KeyCode::Char('j'));
    assert_eq!(app.findings_list().selected, 1);
    key(&mut app, KeyCode::End);
    assert_eq!(app.findings_list().selected, app.finding_count() - 1);
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.focus(), Focus::Pages);
    let n = app.rows().len();
    assert!(n > 64, "every page the workload touched: {n}");
    let height = layout::table_rows(layout::main_layout((80, 24), app.finding_count()).pages);
    key(&mut app, KeyCode::PageDown);
    let page = app.pages_list();
    assert_eq!(page.selected, height - 1, "a screen down");
    key(&mut app, KeyCode::PageDown);
    let page = app.pages_list();
    assert_eq!(page.selected, 2 * (height - 1));
    assert!(page.selected < page.offset + height && page.selected >= page.offset);
    key(&mut app, KeyCode::Char('G'));
    assert_eq!(app.pages_list().selected, n - 1);
    assert!(app.pages_list().offset > 0, "scrolled to the end");
    key(&mut app, KeyCode::Char('g'));
    assert_eq!(app.pages_list(), Default::default());
    key(&mut app, KeyCode::Down);
    let pfn = app.rows()[1];
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.detail().map(|d| d.pfn), Some(pfn));
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::BackTab);
    assert_eq!(app.focus(), Focus::Findings);
}

#[test]
fn sorting_cycles_and_reverses() {
    let mut app = replayed((80, 24));
    let s = synth();
    assert_eq!(app.sort(), (SortKey::Severity, false));
    // Findings first: the error pages lead.
    assert_eq!(
        app.mark(app.rows()[0]).map(|m| m.worst),
        Some(Severity::Error)
    );
    key(&mut app, KeyCode::Char('s'));
    assert_eq!(app.sort(), (SortKey::Pfn, false));
    assert!(app.rows().windows(2).all(|w| w[0] < w[1]), "ascending pfns");
    assert_eq!(app.rows()[0], BASE_PFN);
    key(&mut app, KeyCode::Char('S'));
    assert_eq!(app.sort(), (SortKey::Pfn, true));
    assert!(app.rows().windows(2).all(|w| w[0] > w[1]), "reversed");
    key(&mut app, KeyCode::Char('s'));
    assert_eq!(app.sort(), (SortKey::Refcount, false));
    assert_eq!(
        app.rows()[0],
        s.longterm_pfn(),
        "the pinned page has the highest count"
    );
    let notice = app.notice().map(|n| n.1.clone());
    assert_eq!(notice.as_deref(), Some("pages sorted by refcount"));
    for _ in 0..SortKey::ALL.len() - 2 {
        key(&mut app, KeyCode::Char('s'));
    }
    assert_eq!(app.sort(), (SortKey::Severity, false), "s cycles");
}

#[test]
fn filtering_findings_and_pages() {
    let mut app = replayed((80, 24));
    let s = synth();
    let all_pages = app.rows().len();
    key(&mut app, KeyCode::Char('/'));
    keys(&mut app, "pid:7777");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.prompt(), None);
    assert_eq!(app.finding_count(), 1);
    assert_eq!(app.rows(), &[s.bad_pfn()], "only stale_map's page");

    // Rule, comm and pfn-range terms.
    app.apply_filter("rule:pin_leak");
    assert_eq!(app.finding_count(), 1);
    assert_eq!(app.rows(), &[s.longterm_pfn()]);
    app.apply_filter("comm:rdma");
    assert_eq!(app.finding_count(), 2);
    assert_eq!(app.rows(), &[s.longterm_pfn()]);
    app.apply_filter(&format!("{:#x}-{:#x}", BASE_PFN, BASE_PFN + 3));
    assert_eq!(app.rows().len(), 4);
    assert_eq!(app.finding_count(), 0);
    app.apply_filter("rule:mapped_after_unplug rule:pin_leak");
    assert_eq!(app.finding_count(), 2, "same key: either");
    app.apply_filter("rule:mapped_after_unplug pid:6100");
    assert_eq!(app.finding_count(), 0, "different keys: both");

    // A bad filter says why and keeps the prompt open with the text.
    key(&mut app, KeyCode::Char('/'));
    key(&mut app, KeyCode::Char('u'));
    app.handle_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    keys(&mut app, "rule:nope");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.prompt(), Some("rule:nope"));
    let n = app.notice().expect("an error").1.clone();
    assert!(n.contains("unknown rule `nope`"), "{n}");
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.prompt(), None);

    // Esc on the main screen clears the filter.
    key(&mut app, KeyCode::Esc);
    assert!(app.filter().is_empty());
    assert_eq!(app.rows().len(), all_pages);
    assert_eq!(app.finding_count(), 3);
}

/// A mapping that took no reference (6.15+ kernel), of a page whose device
/// is gone by the end of the scenario: a zero_ref_mapping and a
/// mapped_after_unplug error.
fn bad_map(t: u64, pfn: u64) -> Event {
    let mut e = Event::new(EventKind::Map, HookId::VmfInsertPageMkwrite);
    e.t = t;
    e.pid = 9999;
    e.comm = Comm::from_bytes(b"late");
    e.mm = Hex(0x9999_0000);
    e.vaddr = Hex(0x7000_0000_0000 + (pfn << 12));
    e.pfn = pfn;
    e.ref_after = Some(1);
    e
}

#[test]
fn pause_freezes_the_display_but_not_the_analysis() {
    let mut app = replayed((80, 24));
    let t = synth().end_t();
    key(&mut app, KeyCode::Char(' '));
    assert!(app.paused());
    let shown = app.finding_count();
    let counters = app.counters().clone();
    let rows = app.rows().to_vec();
    let before = app.analyzer().findings().len();
    app.on_events(&[bad_map(t + 1, BASE_PFN + 1)], t + 1);
    app.on_tick(std::time::Duration::from_secs(60), None);
    let added = app.analyzer().findings().len() - before;
    assert!(added > 0, "analysed");
    assert_eq!(app.finding_count(), shown, "not shown");
    assert_eq!(app.counters(), &counters);
    assert_eq!(app.rows(), &rows[..]);
    assert!(text(&draw(&app)).contains("PAUSED"));
    key(&mut app, KeyCode::Char(' '));
    assert!(!app.paused());
    assert_eq!(app.finding_count(), shown + added, "caught up");
    assert_eq!(app.finding_at(0).map(|f| f.pfn), Some(BASE_PFN + 1));
    assert!(
        app.analyzer().findings()[before..]
            .iter()
            .any(|f| f.rule == RuleId::ZeroRefMapping)
    );
}

#[test]
fn selection_stays_on_its_finding_when_new_ones_arrive() {
    let mut app = replayed((80, 24));
    let t = synth().end_t();
    key(&mut app, KeyCode::Down);
    let chosen = app.finding_at(1).map(|f| f.id);
    app.on_events(
        &[bad_map(t + 1, BASE_PFN + 1), bad_map(t + 2, BASE_PFN + 2)],
        t + 2,
    );
    app.on_tick(std::time::Duration::from_secs(1), None);
    assert!(app.finding_count() > 3);
    let sel = app.findings_list().selected;
    assert_eq!(app.finding_at(sel).map(|f| f.id), chosen);
    // At the top, the selection follows the newest.
    key(&mut app, KeyCode::Home);
    app.on_events(&[bad_map(t + 3, BASE_PFN + 3)], t + 3);
    app.on_tick(std::time::Duration::from_secs(2), None);
    assert_eq!(app.findings_list().selected, 0);
    assert_eq!(app.finding_at(0).map(|f| f.pfn), Some(BASE_PFN + 3));
}

#[test]
fn page_table_rebuilds_are_throttled() {
    let mut app = replayed((80, 24));
    let t = synth().end_t();
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Char('s')); // by pfn
    let rows = app.rows().len();
    let refresh = app.refresh_state();
    let last = refresh.last.expect("built");
    // A new page arrives just after a rebuild: not shown until the
    // interval has passed.
    let mut e = bad_map(t + 1, BASE_PFN + 0x300);
    e.ref_after = Some(2);
    app.on_events(&[e], t + 1);
    app.on_tick(last + refresh.interval / 2, None);
    assert_eq!(app.rows().len(), rows);
    app.on_tick(last + refresh.interval, None);
    assert_eq!(app.rows().len(), rows + 1);
}

#[test]
fn resize_keeps_the_selection_visible() {
    let mut app = replayed((120, 40));
    key(&mut app, KeyCode::Tab);
    for _ in 0..30 {
        key(&mut app, KeyCode::Down);
    }
    app.on_resize(80, 24);
    let st = app.pages_list();
    assert_eq!(st.selected, 30);
    let rows = layout::table_rows(layout::main_layout((80, 24), app.finding_count()).pages);
    assert!(
        st.offset <= st.selected && st.selected < st.offset + rows,
        "{st:?} {rows}"
    );
    // Tiny terminals do not panic.
    for (w, h) in [(20, 5), (1, 1), (0, 0)] {
        app.on_resize(w, h);
        let _ = draw(&app);
        key(&mut app, KeyCode::Enter);
        let _ = draw(&app);
        key(&mut app, KeyCode::Esc);
    }
}

#[test]
fn replay_errors_are_shown() {
    let s = synth();
    let header = s.header();
    let mut app = View::new(
        Pipeline::new(&header, 64, AddrMapper::new(true), None),
        header,
        Mode::Replay {
            file: "bad.jsonl".into(),
            speed: 1.0,
            total_bytes: 100,
        },
        TermCaps::default(),
    );
    app.on_replay_end(ReplayEnd {
        end_t: 0,
        footer: None,
        truncated_at: None,
        error: Some("bad.jsonl: line 7: corrupt record: expected value".into()),
    });
    let s = text(&draw(&app));
    assert!(s.contains("read error"), "{s}");
    assert!(s.contains("bad.jsonl: line 7: corrupt record"), "{s}");
}

#[test]
fn log_lines_go_to_the_log_pane() {
    let mut app = replayed((80, 24));
    app.on_log(log::Level::Warn, "could not attach kill_dax: EINVAL".into());
    let s = text(&draw(&app));
    assert!(
        s.contains("could not attach kill_dax"),
        "the footer shows warnings: {s}"
    );
    key(&mut app, KeyCode::Char('l'));
    assert_eq!(app.overlay(), Overlay::Log);
    let s = text(&draw(&app));
    assert!(s.contains("warn: could not attach kill_dax: EINVAL"), "{s}");
}

#[test]
fn table_selection_follows_its_page_or_stays_on_top() {
    let mut app = replayed((80, 24));
    let t = synth().end_t();
    key(&mut app, KeyCode::Tab);
    for _ in 0..5 {
        key(&mut app, KeyCode::Char('s'));
    }
    assert_eq!(app.sort().0, SortKey::Recent);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Down);
    let chosen = app.rows()[2];
    // Activity on another page moves it to the top: the chosen page moves
    // down a row and stays selected.
    let mut e = bad_map(t + 1, BASE_PFN + 0x3f0);
    e.ref_after = Some(2);
    app.on_events(&[e], t + 1);
    app.on_tick(std::time::Duration::from_secs(5), None);
    assert_eq!(app.rows()[0], BASE_PFN + 0x3f0);
    assert_eq!(app.rows()[app.pages_list().selected], chosen);
    // On the first row, the selection stays there as rows come and go.
    key(&mut app, KeyCode::Home);
    let mut e = bad_map(t + 2, BASE_PFN + 0x3f1);
    e.ref_after = Some(2);
    app.on_events(&[e], t + 2);
    app.on_tick(std::time::Duration::from_secs(10), None);
    assert_eq!(app.pages_list().selected, 0);
    assert_eq!(app.rows()[0], BASE_PFN + 0x3f1);
}

#[test]
fn the_header_shows_pages_evicted_at_the_cap() {
    let s = synth();
    let header = s.header();
    let mut pipeline = Pipeline::new(&header, 64, AddrMapper::new(true), None);
    pipeline.analyzer.set_max_pages(8);
    let mode = Mode::Replay {
        file: "synth.jsonl".into(),
        speed: 0.0,
        total_bytes: 1 << 20,
    };
    let caps = TermCaps {
        ascii: false,
        color: true,
    };
    let mut app = View::new(pipeline, header, mode, caps);
    app.on_resize(120, 40);
    let mut end_t = 0;
    s.generate(&mut |item| match item {
        Item::Event(e) => {
            end_t = e.t;
            app.on_events(slice::from_ref(e), e.t);
        }
        Item::Loss(l) => app.on_losses(slice::from_ref(l)),
    });
    // Pages seen once and left idle: past the cap they are forgotten.
    for i in 0..32 {
        let mut e = Event::new(EventKind::Free, HookId::FreeZoneDevicePage);
        e.t = end_t + 1 + i;
        e.pfn = BASE_PFN + 0x10000 + i;
        app.on_events(slice::from_ref(&e), e.t);
    }
    app.on_tick(std::time::Duration::from_secs(1), None);
    let evicted = app.analyzer().stats().pages_evicted;
    assert!(evicted > 0, "the synthetic trace has more than 8 pages");
    let screen = text(&draw(&app));
    let line = screen.lines().nth(1).unwrap_or_default();
    assert!(line.contains(&format!("evicted {evicted}")), "{screen}");
    // Without evictions, nothing is said.
    let plain = text(&draw(&replayed((120, 40))));
    assert!(!plain.contains("evicted"), "{plain}");
}
