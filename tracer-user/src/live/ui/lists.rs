//! The main screen's two lists: findings, and the pages table.

use super::*;

pub(super) fn render_findings(app: &App, src: &Pipeline, t: &Theme, f: &mut Frame<'_>, area: Rect) {
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
        .filter_map(|i| app.finding_at(src, i).map(|fd| (i, fd)))
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

pub(super) fn finding_row<'a>(fd: &Finding, now: u64, t: &Theme) -> Row<'a> {
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

pub(super) fn render_pages(app: &App, src: &Pipeline, t: &Theme, f: &mut Frame<'_>, area: Rect) {
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
    let a = &src.analyzer;
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

pub(super) fn page_row<'a>(
    app: &App,
    p: &PageView<'_>,
    now: u64,
    last_w: usize,
    t: &Theme,
) -> Row<'a> {
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
