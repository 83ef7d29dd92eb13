//! The page screen: one page's refcounts, device, sparkline, mappings,
//! holders, findings, and its timeline.

use super::*;

pub(super) fn render_page_info(
    app: &App,
    src: &Pipeline,
    d: &PageDetail,
    t: &Theme,
    f: &mut Frame<'_>,
    area: Rect,
) {
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
    let all = src.analyzer.findings();
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

pub(super) fn push_list(
    lines: &mut Vec<Line<'_>>,
    t: &Theme,
    label: &str,
    none: &str,
    items: Vec<String>,
) {
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

pub(super) fn render_timeline(
    app: &App,
    src: &Pipeline,
    d: &PageDetail,
    t: &Theme,
    f: &mut Frame<'_>,
    area: Rect,
) {
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
        .and_then(|i| src.analyzer.findings().get(i))
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
pub(super) fn refs(e: &TimelineEntry, arrow: &str) -> String {
    match (e.ref_before, e.ref_after) {
        (Some(b), Some(a)) => format!("{b}{arrow}{a}"),
        (None, Some(a)) => format!("{arrow}{a}"),
        (Some(b), None) => format!("{b}{arrow}"),
        (None, None) => "-".into(),
    }
}

/// What matters most first (narrow terminals cut the end): alarming
/// flags, the GUP kind, the address, then the rest.
pub(super) fn detail(e: &TimelineEntry) -> String {
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
