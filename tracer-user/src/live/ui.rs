//! Rendering: a pure function of the [`App`] state. Only visible rows are
//! formatted, so the cost of a frame does not grow with the number of pages
//! or findings.

use ratatui::{
    Frame,
    layout::{Constraint, Rect},
    style::{Color, Modifier, Style},
    symbols::border,
    text::{Line, Span},
    widgets::{Block, Cell, Clear, Paragraph, Row, Table},
};
use refscope_common::flags;
use refscope_core::analysis::{Finding, PageView, Severity, Status, TimelineEntry};

use super::{
    app::{App, Focus, Mode, Overlay, PageDetail, Screen, SortKey},
    keys::BINDINGS,
    layout::{LIST_LINES, main_layout, page_layout, table_rows},
};

/// Styles and symbols for the terminal at hand.
struct Theme {
    color: bool,
    ascii: bool,
}

impl Theme {
    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }
    fn severity(&self, s: Severity) -> Style {
        match s {
            Severity::Error => self.fg(Color::Red).add_modifier(Modifier::BOLD),
            Severity::Warning => self.fg(Color::Yellow),
            Severity::Info => self.fg(Color::Cyan),
        }
    }
    fn level(&self, l: log::Level) -> Style {
        match l {
            log::Level::Error => self.severity(Severity::Error),
            log::Level::Warn => self.severity(Severity::Warning),
            _ => Style::new(),
        }
    }
    fn dim(&self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new()
        }
    }
    fn bold(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }
    fn selected(&self, focused: bool) -> Style {
        if focused {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new().add_modifier(Modifier::UNDERLINED)
        }
    }
    fn border(&self, focused: bool) -> Style {
        if focused {
            self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
        } else {
            Style::new()
        }
    }
    fn set(&self) -> border::Set<'static> {
        if self.ascii {
            border::Set {
                top_left: "+",
                top_right: "+",
                bottom_left: "+",
                bottom_right: "+",
                vertical_left: "|",
                vertical_right: "|",
                horizontal_top: "-",
                horizontal_bottom: "-",
            }
        } else {
            border::PLAIN
        }
    }
    fn sep(&self) -> &'static str {
        if self.ascii { " | " } else { " │ " }
    }
    fn arrow(&self) -> &'static str {
        if self.ascii { "->" } else { "→" }
    }
    fn dot(&self) -> &'static str {
        if self.ascii { "*" } else { "●" }
    }
    fn block<'a>(&self, title: Line<'a>, focused: bool) -> Block<'a> {
        Block::bordered()
            .border_set(self.set())
            .border_style(self.border(focused))
            .title(title)
    }
}

/// Draw the whole screen.
pub fn render(app: &App, f: &mut Frame<'_>) {
    let theme = Theme {
        color: app.look().color,
        ascii: app.look().ascii,
    };
    let size = (f.area().width, f.area().height);
    match app.screen() {
        Screen::Main => {
            let l = main_layout(size, app.finding_count());
            render_header(app, &theme, f, l.header);
            render_findings(app, &theme, f, l.findings);
            render_pages(app, &theme, f, l.pages);
            render_footer(app, &theme, f, l.footer);
        }
        Screen::Page => {
            let l = page_layout(size, app.detail().map(PageDetail::counts));
            render_header(app, &theme, f, l.header);
            if let Some(d) = app.detail() {
                render_page_info(app, d, &theme, f, l.info);
                render_timeline(app, d, &theme, f, l.timeline);
            }
            render_footer(app, &theme, f, l.footer);
        }
    }
    match app.overlay() {
        Overlay::None => {}
        Overlay::Help => render_help(&theme, f),
        Overlay::Log => render_log(app, &theme, f),
    }
}

// ------------------------------------------------------------- header --

fn render_header(app: &App, t: &Theme, f: &mut Frame<'_>, area: Rect) {
    let h = app.header();
    let c = app.counters();
    let sep = || Span::styled(t.sep(), t.dim());
    let attached = h.hooks.iter().filter(|s| !s.functions.is_empty()).count();
    let (mut fentry, mut kprobe) = (0, 0);
    for func in h.hooks.iter().flat_map(|s| &s.functions) {
        if func.attach.starts_with('k') {
            kprobe += 1;
        } else {
            fentry += 1;
        }
    }
    let mut l1 = Vec::new();
    if area.width >= 100 {
        l1.push(Span::styled("refscope", t.bold()));
        l1.push(sep());
    }
    l1.extend([
        Span::raw(h.kernel_release.clone()),
        sep(),
        Span::raw(match h.refcount_model {
            refscope_core::model::RefcountModel::IdleOne => "pre-6.15 model",
            refscope_core::model::RefcountModel::Refcounted => "6.15+ model",
        }),
        sep(),
        Span::raw(format!(
            "hooks {attached}/{}: {fentry} fentry, {kprobe} kprobe",
            h.hooks.len()
        )),
    ]);
    if app.paused() {
        l1.insert(
            0,
            Span::styled(
                " PAUSED ",
                t.fg(Color::Yellow)
                    .add_modifier(Modifier::REVERSED | Modifier::BOLD),
            ),
        );
        l1.insert(1, Span::raw(" "));
    }
    let drops = if c.lost > 0 {
        Span::styled(
            format!("drops {}", count(c.lost)),
            t.fg(Color::Red).add_modifier(Modifier::BOLD),
        )
    } else {
        Span::raw("drops 0")
    };
    let mut l2 = vec![
        Span::raw(format!("{} ev/s", compact(c.rate))),
        sep(),
        Span::raw(format!("{} events", count(c.events))),
        sep(),
        drops,
        sep(),
    ];
    if let Some(d) = c.drift {
        // Shadow vs page tables: a healthy run shows 0.
        l2.push(if d > 0 {
            Span::styled(
                format!("drift {}", count(d)),
                t.fg(Color::Red).add_modifier(Modifier::BOLD),
            )
        } else {
            Span::raw("drift 0")
        });
        l2.push(sep());
    }
    if c.evicted > 0 {
        // Memory is capped (--max-pages): say that pages were forgotten.
        l2.push(Span::styled(
            format!("evicted {}", count(c.evicted)),
            t.fg(Color::Yellow),
        ));
        l2.push(sep());
    }
    match app.mode() {
        Mode::Live { recording } => {
            l2.push(Span::raw(match c.bpf {
                Some(b) => format!("bpf {:.0} ns/run {:.1}% cpu", b.ns_per_run, b.cpu_percent),
                None => "bpf -".into(),
            }));
            l2.push(sep());
            match (recording, app.recording_error()) {
                (Some(_), Some(e)) => l2.push(Span::styled(
                    format!("recording FAILED: {e}"),
                    t.severity(Severity::Error),
                )),
                (Some(p), None) => l2.push(Span::styled(
                    format!("rec {} {p}", t.arrow()),
                    t.fg(Color::Green),
                )),
                (None, _) => l2.push(Span::styled("not recording", t.dim())),
            }
        }
        Mode::Replay {
            file,
            speed,
            total_bytes,
        } => {
            let r = app.replay();
            let state = match r.and_then(|r| r.end.as_ref()) {
                Some(e) if e.error.is_some() => {
                    Span::styled("read error", t.severity(Severity::Error))
                }
                Some(_) => Span::raw("done"),
                None => Span::raw(format!(
                    "{}%",
                    r.map_or(0, |r| r.bytes * 100 / (*total_bytes).max(1))
                )),
            };
            l2.push(Span::raw(format!(
                "replay {file} ({})",
                if *speed == 0.0 {
                    "max speed".to_string()
                } else {
                    format!("{speed}x")
                }
            )));
            l2.push(Span::raw(" "));
            l2.push(state);
        }
    }
    if c.decode_errors > 0 {
        l2.push(sep());
        l2.push(Span::styled(
            format!("{} undecodable", count(c.decode_errors)),
            t.severity(Severity::Warning),
        ));
    }
    f.render_widget(Paragraph::new(vec![Line::from(l1), Line::from(l2)]), area);
}

// ----------------------------------------------------------- findings --

/// Width of the findings' process column and the timeline's.
const PROCESS_W: u16 = 17;
const WHO_W: u16 = 16;

fn sev_label(s: Severity) -> &'static str {
    match s {
        Severity::Error => "ERR",
        Severity::Warning => "WARN",
        Severity::Info => "INFO",
    }
}

/// `comm[pid]` in at most `width` cells: the command name is cut, never
/// the pid.
fn who_fit(pid: u32, comm: &str, width: usize) -> String {
    let pid = format!("[{pid}]");
    let room = width.saturating_sub(pid.len());
    let comm: String = comm.chars().take(room).collect();
    format!("{comm}{pid}")
}

fn who(pid: u32, comm: &str) -> String {
    if comm.is_empty() {
        format!("[{pid}]")
    } else {
        format!("{comm}[{pid}]")
    }
}

fn render_findings(app: &App, t: &Theme, f: &mut Frame<'_>, area: Rect) {
    let focused = app.focus() == Focus::Findings;
    let c = app.counters();
    let mut title = vec![Span::styled(" Findings ", t.bold())];
    if c.findings > 0 {
        let [i, w, e] = c.by_severity;
        title.push(Span::styled(
            format!("{e} error "),
            t.severity(Severity::Error),
        ));
        title.push(Span::styled(
            format!("{w} warning "),
            t.severity(Severity::Warning),
        ));
        title.push(Span::styled(
            format!("{i} info "),
            t.severity(Severity::Info),
        ));
    }
    if !app.filter().is_empty() {
        title.push(Span::raw(format!(
            "- {} shown (filter) ",
            count(app.finding_count() as u64)
        )));
    }
    let block = t.block(Line::from(title), focused);
    if app.finding_count() == 0 {
        let msg = if c.findings == 0 {
            "no findings yet (Tab: pages table, ? help)"
        } else {
            "no finding matches the filter (Esc clears it)"
        };
        f.render_widget(
            Paragraph::new(Span::styled(msg, t.dim())).block(block),
            area,
        );
        return;
    }
    let st = app.findings_list();
    let height = table_rows(area);
    let now = app.now_t();
    let rows: Vec<Row<'_>> = (st.offset..(st.offset + height).min(app.finding_count()))
        .filter_map(|i| app.finding_at(i).map(|fd| (i, fd)))
        .map(|(i, fd)| {
            let row = finding_row(fd, now, t);
            if i == st.selected {
                row.style(t.selected(focused))
            } else {
                row
            }
        })
        .collect();
    let widths = [
        Constraint::Length(5),
        Constraint::Length(19),
        Constraint::Length(10),
        Constraint::Length(PROCESS_W),
        Constraint::Length(6),
        Constraint::Fill(1),
    ];
    let header = Row::new(["SEV", "RULE", "PFN", "PROCESS", "AGE", "WHAT"]).style(t.bold());
    f.render_widget(
        Table::new(rows, widths)
            .header(header)
            .column_spacing(1)
            .block(block),
        area,
    );
}

fn finding_row<'a>(fd: &Finding, now: u64, t: &Theme) -> Row<'a> {
    let sev = format!(
        "{}{}",
        sev_label(fd.severity),
        if fd.status == Status::Uncertain {
            "?"
        } else {
            ""
        }
    );
    let what = if fd.occurrences > 1 {
        format!("(x{}) {}", fd.occurrences, fd.explanation)
    } else {
        fd.explanation.clone()
    };
    Row::new(vec![
        Cell::from(sev).style(t.severity(fd.severity)),
        Cell::from(fd.rule.id()),
        Cell::from(format!("{:#x}", fd.pfn)),
        Cell::from(who_fit(fd.pid, &fd.comm.as_str(), PROCESS_W as usize)),
        Cell::from(age(now, fd.t_ns)),
        Cell::from(what),
    ])
}

// -------------------------------------------------------------- pages --

fn render_pages(app: &App, t: &Theme, f: &mut Frame<'_>, area: Rect) {
    let focused = app.focus() == Focus::Pages;
    let (sort, reverse) = app.sort();
    let desc = (sort != SortKey::Pfn) != reverse;
    let mut title = vec![
        Span::styled(" Pages ", t.bold()),
        Span::raw(format!("{} ", count(app.rows().len() as u64))),
        Span::styled(
            format!(
                "sort {} {} ",
                sort.name(),
                match (desc, t.ascii) {
                    (true, false) => "▼",
                    (false, false) => "▲",
                    (true, true) => "v",
                    (false, true) => "^",
                }
            ),
            t.dim(),
        ),
    ];
    if !app.filter().is_empty() {
        title.push(Span::styled(
            format!("filter {} ", app.filter().text()),
            t.fg(Color::Yellow),
        ));
    }
    let block = t.block(Line::from(title), focused);
    if app.rows().is_empty() {
        let msg = if app.counters().pages == 0 {
            "no device page seen yet"
        } else {
            "no page matches the filter (Esc clears it)"
        };
        f.render_widget(
            Paragraph::new(Span::styled(msg, t.dim())).block(block),
            area,
        );
        return;
    }
    let st = app.pages_list();
    let height = table_rows(area);
    let a = app.analyzer();
    let now = app.now_t();
    let end = (st.offset + height).min(app.rows().len());
    // LAST EVENT gets what the fixed columns (below) and the 9 gaps leave.
    const FIXED: u16 = 1 + 10 + 12 + 5 + 5 + 4 + 4 + 4 + 6 + 9;
    let last_w = area.width.saturating_sub(2 + FIXED) as usize;
    let rows: Vec<Row<'_>> = (st.offset..end)
        .map(|i| {
            let pfn = app.rows()[i];
            let row = match a.page(pfn) {
                Some(p) => page_row(app, &p, now, last_w, t),
                None => Row::new(vec![
                    Cell::from(""),
                    Cell::from(format!("{pfn:#x}")),
                    Cell::from("(no longer tracked)"),
                ]),
            };
            if i == st.selected {
                row.style(t.selected(focused))
            } else {
                row
            }
        })
        .collect();
    let widths = [
        Constraint::Length(1),
        Constraint::Length(10),
        Constraint::Length(12),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(4),
        Constraint::Length(4),
        Constraint::Length(4),
        Constraint::Fill(1),
        Constraint::Length(6),
    ];
    let header = Row::new([
        "",
        "PFN",
        "DEVICE",
        "LREF",
        "RAW",
        "MAPS",
        "PINS",
        "REFS",
        "LAST EVENT",
        "AGE",
    ])
    .style(t.bold());
    f.render_widget(
        Table::new(rows, widths)
            .header(header)
            .column_spacing(1)
            .block(block),
        area,
    );
}

fn opt(v: Option<i32>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn page_row<'a>(app: &App, p: &PageView<'_>, now: u64, last_w: usize, t: &Theme) -> Row<'a> {
    let mark = match app.mark(p.pfn) {
        Some(m) => Cell::from(t.dot()).style(t.severity(m.worst)),
        None => Cell::from(""),
    };
    let device = match p.pgmap {
        Some(g) if !g.name.is_empty() => g.name.clone(),
        Some(g) => g.ty.as_str().into(),
        None => "-".into(),
    };
    let gone = p.memmap_gone
        || p.pgmap
            .is_some_and(|g| g.state != refscope_core::analysis::PgmapState::Live);
    let last = p
        .timeline()
        .last()
        .map(|e| {
            let kind = e.kind.as_str();
            let w = last_w.saturating_sub(kind.len() + 1);
            format!("{kind} {}", who_fit(e.pid, &e.comm.as_str(), w))
        })
        .unwrap_or_default();
    let lref = Cell::from(opt(p.logical_ref));
    let lref = match p.logical_ref {
        Some(r) if r < 0 => lref.style(t.severity(Severity::Error)),
        _ => lref,
    };
    Row::new(vec![
        mark,
        Cell::from(format!("{:#x}", p.pfn)),
        if gone {
            Cell::from(device).style(t.severity(Severity::Error))
        } else {
            Cell::from(device)
        },
        lref,
        Cell::from(opt(p.raw_ref)),
        Cell::from(p.mapcount.to_string()),
        Cell::from(p.pins.to_string()),
        Cell::from(p.gets.to_string()),
        Cell::from(last),
        Cell::from(age(now, p.last_t)),
    ])
}

// --------------------------------------------------------------- page --

fn render_page_info(app: &App, d: &PageDetail, t: &Theme, f: &mut Frame<'_>, area: Rect) {
    let t0 = app.header().clock.monotonic_ns;
    let now = app.now_t();
    let sep = || Span::styled(t.sep(), t.dim());
    let mut title = vec![Span::styled(format!(" Page {:#x} ", d.pfn), t.bold())];
    if let Some(m) = app.mark(d.pfn) {
        title.push(Span::styled(
            format!("{} {} finding(s) ", t.dot(), m.count),
            t.severity(m.worst),
        ));
    }
    let mut lines = Vec::new();
    let mut refs = vec![
        Span::raw("refcount raw "),
        Span::styled(opt(d.raw_ref), t.bold()),
        Span::raw(" logical "),
        Span::styled(opt(d.logical_ref), t.bold()),
        Span::styled(format!(" (idle bias {})", d.bias), t.dim()),
        sep(),
        Span::raw(format!("mappings {}", d.mapcount)),
        sep(),
        Span::raw(format!("pins {}", d.pins)),
        sep(),
        Span::raw(format!("refs {}", d.gets)),
    ];
    if d.at_attach {
        refs.push(sep());
        refs.push(Span::raw("mapped before attach"));
    }
    lines.push(Line::from(refs));
    let mut dev = vec![if d.device_gone {
        Span::styled(d.device.clone(), t.severity(Severity::Error))
    } else {
        Span::raw(d.device.clone())
    }];
    if d.memmap_gone {
        dev.push(Span::raw(" "));
        dev.push(Span::styled("memmap gone", t.severity(Severity::Error)));
    }
    dev.push(sep());
    dev.push(Span::raw(format!(
        "first {} last {} ({} ago)",
        rel(d.first_t, t0),
        rel(d.last_t, t0),
        age(now, d.last_t)
    )));
    lines.push(Line::from(dev));
    let width = area.width.saturating_sub(30) as usize;
    let (spark, lo, hi, n) = sparkline(&d.timeline, d.bias, width, t.ascii);
    lines.push(Line::from(vec![
        Span::raw("logical refcount "),
        Span::styled(spark, t.fg(Color::Cyan)),
        Span::styled(
            if n == 0 {
                "no readings".to_string()
            } else {
                format!(" {lo}..{hi} over {n} events")
            },
            t.dim(),
        ),
    ]));
    push_list(
        &mut lines,
        t,
        "mapped by",
        "no live mapping",
        d.mappings
            .iter()
            .map(|((_, va), m)| {
                format!(
                    "{} at {va:#x}{} since {}",
                    who(m.pid, &m.comm.as_str()),
                    if m.order > 0 {
                        format!(" (order {})", m.order)
                    } else {
                        String::new()
                    },
                    rel(m.t, t0)
                )
            })
            .collect(),
    );
    let unowned = if d.pins + d.gets > 0 {
        format!(
            "{} pin(s) and {} reference(s) held by processes that exited (leaked)",
            d.pins, d.gets
        )
    } else {
        "no pin or GUP reference held".into()
    };
    push_list(
        &mut lines,
        t,
        "pinned by",
        &unowned,
        d.holders
            .iter()
            .map(|(_, h)| {
                format!(
                    "{} pins {} refs {}{} since {}",
                    who(h.pid, &h.comm.as_str()),
                    h.pins,
                    h.gets,
                    if h.longterm { " LONGTERM" } else { "" },
                    rel(h.first_t, t0)
                )
            })
            .collect(),
    );
    let all = app.analyzer().findings();
    let mut shown = 0;
    for &i in d.findings.iter().rev() {
        let Some(fd) = all.get(i) else { continue };
        if shown == LIST_LINES && d.findings.len() > LIST_LINES {
            lines.push(Line::styled(
                format!("  ... {} more finding(s)", d.findings.len() - LIST_LINES),
                t.dim(),
            ));
            break;
        }
        shown += 1;
        lines.push(Line::from(vec![
            Span::styled(
                format!("{} {} ", sev_label(fd.severity), fd.rule.id()),
                t.severity(fd.severity),
            ),
            Span::raw(format!("{} {}", rel(fd.t_ns, t0), fd.explanation)),
        ]));
    }
    f.render_widget(
        Paragraph::new(lines).block(t.block(Line::from(title), false)),
        area,
    );
}

fn push_list(lines: &mut Vec<Line<'_>>, t: &Theme, label: &str, none: &str, items: Vec<String>) {
    if items.is_empty() {
        lines.push(Line::styled(none.to_string(), t.dim()));
        return;
    }
    for (i, s) in items.iter().enumerate() {
        if i == LIST_LINES && items.len() > LIST_LINES {
            lines.push(Line::styled(
                format!("  ... {} more", items.len() - LIST_LINES),
                t.dim(),
            ));
            break;
        }
        lines.push(Line::from(vec![
            Span::styled(format!("{label} "), t.dim()),
            Span::raw(s.clone()),
        ]));
    }
}

/// The logical refcount over the timeline, scaled to `width` cells (the
/// newest events if there are more): (line, min, max, readings).
pub fn sparkline(
    tl: &[TimelineEntry],
    bias: i32,
    width: usize,
    ascii: bool,
) -> (String, i32, i32, usize) {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    const ASCII: [char; 8] = ['_', '.', '-', '~', '=', '+', '*', '#'];
    let v: Vec<i32> = tl
        .iter()
        .filter_map(|e| e.ref_after.or(e.ref_before))
        .map(|r| r - bias)
        .collect();
    let n = v.len();
    let v = &v[n.saturating_sub(width.max(1))..];
    let (Some(&lo), Some(&hi)) = (v.iter().min(), v.iter().max()) else {
        return (String::new(), 0, 0, 0);
    };
    let set = if ascii { ASCII } else { BLOCKS };
    let span = i64::from(hi) - i64::from(lo);
    let s = v
        .iter()
        .map(|&x| {
            let i = if span == 0 {
                0
            } else {
                ((i64::from(x) - i64::from(lo)) * 7 / span) as usize
            };
            set[i.min(7)]
        })
        .collect();
    (s, lo, hi, n)
}

fn render_timeline(app: &App, d: &PageDetail, t: &Theme, f: &mut Frame<'_>, area: Rect) {
    let t0 = app.header().clock.monotonic_ns;
    let title = Line::from(vec![
        Span::styled(" Timeline ", t.bold()),
        Span::styled(
            format!("{} events, oldest first ", d.timeline.len()),
            t.dim(),
        ),
    ]);
    let block = t.block(title, true);
    if d.timeline.is_empty() {
        f.render_widget(
            Paragraph::new(Span::styled(
                "no events kept for this page (--timeline 0?)",
                t.dim(),
            ))
            .block(block),
            area,
        );
        return;
    }
    let wide = area.width >= 110;
    let st = app.timeline_list();
    let height = table_rows(area);
    let raised_at = app
        .opened_from()
        .and_then(|i| app.analyzer().findings().get(i))
        .map(|fd| fd.t_ns);
    let rows: Vec<Row<'_>> = (st.offset..(st.offset + height).min(d.timeline.len()))
        .map(|i| {
            let e = &d.timeline[i];
            let mut cells = vec![
                Cell::from(rel_us(e.t, t0)),
                Cell::from(e.kind.as_str()),
                Cell::from(who_fit(e.pid, &e.comm.as_str(), WHO_W as usize)),
                Cell::from(refs(e, t.arrow())),
            ];
            if wide {
                cells.push(Cell::from(e.hook.as_str()));
            }
            let mut detail = detail(e);
            if !wide {
                detail = if detail.is_empty() {
                    format!("in {}", e.hook.as_str())
                } else {
                    format!("{detail}; in {}", e.hook.as_str())
                };
            }
            cells.push(Cell::from(detail));
            let mut row = Row::new(cells);
            if e.flags.has(flags::MEMMAP_UNREADABLE) || raised_at == Some(e.t) {
                row = row.style(t.severity(Severity::Error));
            }
            if i == st.selected {
                row = row.style(t.selected(true));
            }
            row
        })
        .collect();
    let mut widths = vec![
        Constraint::Length(10),
        Constraint::Length(12),
        Constraint::Length(WHO_W),
        Constraint::Length(9),
    ];
    let mut header = vec!["TIME (s)", "EVENT", "WHO", "REFCOUNT"];
    if wide {
        widths.push(Constraint::Length(26));
        header.push("WHERE (kernel)");
        header.push("DETAIL");
    } else {
        header.push("DETAIL / WHERE");
    }
    widths.push(Constraint::Fill(1));
    f.render_widget(
        Table::new(rows, widths)
            .header(Row::new(header).style(t.bold()))
            .column_spacing(1)
            .block(block),
        area,
    );
}

/// `before->after` raw refcount.
fn refs(e: &TimelineEntry, arrow: &str) -> String {
    match (e.ref_before, e.ref_after) {
        (Some(b), Some(a)) => format!("{b}{arrow}{a}"),
        (None, Some(a)) => format!("{arrow}{a}"),
        (Some(b), None) => format!("{b}{arrow}"),
        (None, None) => "-".into(),
    }
}

/// What matters most first (narrow terminals cut the end): alarming
/// flags, the GUP kind, the address, then the rest.
fn detail(e: &TimelineEntry) -> String {
    let mut d = Vec::new();
    for (bit, name) in [
        (flags::MEMMAP_UNREADABLE, "memmap gone"),
        (flags::FAILED, "failed"),
    ] {
        if e.flags.has(bit) {
            d.push(name.to_string());
        }
    }
    if let Some(g) = e.gup {
        d.push(format!("{} x{}", g.as_str(), e.refs.max(1)));
    } else if e.refs != 0 {
        d.push(format!("refs {}", e.refs));
    }
    if e.vaddr.0 != 0 {
        d.push(format!("va {}", e.vaddr));
    }
    if e.order > 0 {
        d.push(format!("order {}", e.order));
    }
    for (bit, name) in [(flags::WRITE, "write"), (flags::AT_ATTACH, "at attach")] {
        if e.flags.has(bit) {
            d.push(name.into());
        }
    }
    d.join(", ")
}

// ------------------------------------------------------------- footer --

fn render_footer(app: &App, t: &Theme, f: &mut Frame<'_>, area: Rect) {
    let line = if let Some(p) = app.prompt() {
        Line::from(vec![
            Span::styled("filter: ", t.bold()),
            Span::raw(p.to_string()),
            Span::styled(if t.ascii { "_" } else { "█" }, Style::new()),
            Span::styled(
                "  (pid: comm: pfn:A-B rule:; Enter apply, Esc cancel)",
                t.dim(),
            ),
        ])
    } else if let Some((level, msg)) = app.notice() {
        Line::styled(msg.clone(), t.level(*level))
    } else {
        let keys: &[(&str, &str)] = match app.screen() {
            Screen::Main => &[
                ("q", "quit"),
                ("?", "help"),
                ("Enter", "open page"),
                ("Tab", "pane"),
                ("/", "filter"),
                ("s", "sort"),
                ("space", if app.paused() { "resume" } else { "pause" }),
            ],
            Screen::Page => &[
                ("Esc", "back"),
                ("j/k", "scroll"),
                ("?", "help"),
                ("q", "quit"),
                ("space", if app.paused() { "resume" } else { "pause" }),
            ],
        };
        let mut spans = Vec::new();
        for (k, what) in keys {
            spans.push(Span::styled(format!(" {k}"), t.bold()));
            spans.push(Span::raw(format!(" {what}")));
        }
        Line::from(spans)
    };
    f.render_widget(Paragraph::new(line), area);
}

// ------------------------------------------------------------ overlays --

/// Lines of the help screen after the keys (which come from
/// [`super::keys::BINDINGS`]).
const HELP_NOTES: &[(&str, &str)] = &[
    ("", ""),
    ("filter terms", "pid:N comm:TEXT pfn:A-B rule:ID"),
    ("", "(bare words work; same keys OR, others AND)"),
    ("SEV", "ERR/WARN/INFO; ? = events were lost"),
    ("LREF", "logical refcount (raw - idle bias)"),
];

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn render_help(t: &Theme, f: &mut Frame<'_>) {
    let help = BINDINGS
        .iter()
        .map(|b| (b.label, b.what))
        .chain(HELP_NOTES.iter().copied());
    let area = centered(f.area(), 68, (BINDINGS.len() + HELP_NOTES.len()) as u16 + 2);
    let lines: Vec<Line<'_>> = help
        .map(|(k, v)| {
            Line::from(vec![
                Span::styled(format!(" {k:<16} "), t.bold()),
                Span::raw(v),
            ])
        })
        .collect();
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(lines).block(t.block(Line::styled(" Help ", t.bold()), true)),
        area,
    );
}

fn render_log(app: &App, t: &Theme, f: &mut Frame<'_>) {
    let full = f.area();
    let area = centered(
        full,
        full.width.saturating_sub(4),
        full.height.saturating_sub(4),
    );
    let rows = area.height.saturating_sub(2) as usize;
    let logs = app.logs();
    let lines: Vec<Line<'_>> = if logs.is_empty() {
        vec![Line::styled("no log messages", t.dim())]
    } else {
        logs.iter()
            .skip(logs.len().saturating_sub(rows))
            .map(|l| {
                Line::styled(
                    format!("{}: {}", l.level.as_str().to_lowercase(), l.text),
                    t.level(l.level),
                )
            })
            .collect()
    };
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(lines).block(t.block(Line::styled(" Log (Esc closes) ", t.bold()), true)),
        area,
    );
}

// --------------------------------------------------------- formatting --

/// `+1.234567s` since the start of the trace.
pub fn rel(t: u64, t0: u64) -> String {
    if t >= t0 {
        format!("+{:.3}s", (t - t0) as f64 / 1e9)
    } else {
        format!("-{:.3}s", (t0 - t) as f64 / 1e9)
    }
}

/// `+1.234567` seconds since the start, in 10 cells: microseconds while
/// they fit, fewer decimals for later times.
pub fn rel_us(t: u64, t0: u64) -> String {
    let (sign, ns) = if t >= t0 {
        ('+', t - t0)
    } else {
        ('-', t0 - t)
    };
    let secs = ns as f64 / 1e9;
    let int_digits = (ns / 1_000_000_000).max(1).ilog10() as usize + 1;
    let decimals = 8usize.saturating_sub(int_digits).min(6);
    format!("{sign}{secs:.decimals$}")
}

/// Short age: `850ms`, `4.2s`, `37s`, `5m07s`, `3h05m`.
pub fn age(now: u64, t: u64) -> String {
    let ns = now.saturating_sub(t);
    let s = ns / 1_000_000_000;
    if ns < 1_000_000_000 {
        format!("{}ms", ns / 1_000_000)
    } else if s < 10 {
        format!("{:.1}s", ns as f64 / 1e9)
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    }
}

/// `1,234,567`.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `950`, `12.3k`, `4.5M`.
pub fn compact(v: f64) -> String {
    if v < 1000.0 {
        format!("{v:.0}")
    } else if v < 1e6 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{:.1}M", v / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(compact(12.4), "12");
        assert_eq!(compact(12_345.0), "12.3k");
        assert_eq!(compact(4_500_000.0), "4.5M");
        assert_eq!(age(5_000_000_000, 4_150_000_000), "850ms");
        assert_eq!(age(5_000_000_000, 800_000_000), "4.2s");
        assert_eq!(age(40_000_000_000, 3_000_000_000), "37s");
        assert_eq!(age(307_000_000_000, 0), "5m07s");
        assert_eq!(age(3 * 3600 * 1_000_000_000 + 300_000_000_000, 0), "3h05m");
        assert_eq!(age(0, 10), "0ms");
        assert_eq!(rel(1_500_000_000, 1_000_000_000), "+0.500s");
        assert_eq!(rel_us(1_500_000_000, 1_000_000_000), "+0.500000");
        assert_eq!(rel_us(148_275_360_123, 1_000_000_000), "+147.27536");
        assert_eq!(rel_us(12_345_678_900_000, 0), "+12345.679");
        assert_eq!(rel_us(0, 2_000_000_000), "-2.000000");
        assert_eq!(who_fit(216, "refscope-worklo", 16), "refscope-wo[216]");
        assert_eq!(who_fit(7, "fio", 16), "fio[7]");
        assert_eq!(
            who_fit(1234567, "x", 4),
            "[1234567]",
            "the pid is never cut"
        );
    }

    #[test]
    fn sparkline_scales_logical_refcounts() {
        use refscope_common::{EventKind, HookId};
        use refscope_core::event::{Comm, Event};
        let mk = |r: i32| {
            let mut e = Event::new(EventKind::Map, HookId::InsertPfn);
            e.ref_after = Some(r);
            e.comm = Comm::default();
            TimelineEntry::from_event(&e, None)
        };
        let tl: Vec<_> = [1, 2, 1025, 2, 1].into_iter().map(mk).collect();
        let (s, lo, hi, n) = sparkline(&tl, 1, 80, false);
        assert_eq!((lo, hi, n), (0, 1024, 5));
        assert_eq!(s, "▁▁█▁▁");
        let (s, ..) = sparkline(&tl, 1, 3, true);
        assert_eq!(s, "#__", "only the newest fit, ASCII ramp");
        assert_eq!(sparkline(&[], 0, 10, false), (String::new(), 0, 0, 0));
    }
}
