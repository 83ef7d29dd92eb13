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

mod format;
mod lists;
mod page;

use format::{PROCESS_W, WHO_W, opt, sev_label, who, who_fit};
pub use format::{age, compact, count, rel, rel_us};
use lists::{render_findings, render_pages};
use page::{render_page_info, render_timeline};

use super::{
    app::{App, Focus, Mode, Overlay, PageDetail, Screen, SortKey},
    keys::BINDINGS,
    layout::{LIST_LINES, main_layout, page_layout, table_rows},
};
use crate::pipeline::Pipeline;

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
pub fn render(app: &App, src: &Pipeline, f: &mut Frame<'_>) {
    let theme = Theme {
        color: app.caps().color,
        ascii: app.caps().ascii,
    };
    let size = (f.area().width, f.area().height);
    match app.screen() {
        Screen::Main => {
            let l = main_layout(size, app.finding_count());
            render_header(app, &theme, f, l.header);
            render_findings(app, src, &theme, f, l.findings);
            render_pages(app, src, &theme, f, l.pages);
            render_footer(app, &theme, f, l.footer);
        }
        Screen::Page => {
            let l = page_layout(size, app.detail().map(PageDetail::counts));
            render_header(app, &theme, f, l.header);
            if let Some(d) = app.detail() {
                render_page_info(app, src, d, &theme, f, l.info);
                render_timeline(app, src, d, &theme, f, l.timeline);
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
