//! Where things go on the screen: pure geometry from the terminal size and
//! how much there is to show. The state (`app`) sizes its scrolling with
//! it, the renderer (`ui`) draws into it.

use ratatui::layout::{Constraint, Layout, Rect};

/// Rows of a bordered table with a column header.
pub fn table_rows(area: Rect) -> usize {
    area.height.saturating_sub(3) as usize
}

/// The main screen's areas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MainLayout {
    pub header: Rect,
    pub findings: Rect,
    pub pages: Rect,
    pub footer: Rect,
}

fn frame(size: (u16, u16)) -> Rect {
    Rect::new(0, 0, size.0, size.1)
}

/// Header (2 lines), findings pane (sized to its content, at most 2/5 of
/// the rest), pages table (the rest), footer (1 line).
pub fn main_layout(size: (u16, u16), findings: usize) -> MainLayout {
    let area = frame(size);
    let avail = area.height.saturating_sub(3);
    let findings_h = if findings == 0 {
        3
    } else {
        let cap = (avail * 2 / 5).max(5);
        (findings as u16).saturating_add(3).clamp(5, cap)
    }
    .min(avail);
    let [header, findings, pages, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(findings_h),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    MainLayout {
        header,
        findings,
        pages,
        footer,
    }
}

/// The page view's areas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLayout {
    pub header: Rect,
    pub info: Rect,
    pub timeline: Rect,
    pub footer: Rect,
}

/// Lines of the page summary: refcounts, device, sparkline, then mappings,
/// holders and findings (each at most [`LIST_LINES`]).
pub const LIST_LINES: usize = 2;

/// How many mappings, holders and findings the page view lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageCounts {
    pub mappings: usize,
    pub holders: usize,
    pub findings: usize,
}

fn list_lines(n: usize) -> usize {
    if n == 0 {
        1
    } else if n <= LIST_LINES {
        n
    } else {
        LIST_LINES + 1
    }
}

fn info_lines(d: Option<PageCounts>) -> usize {
    match d {
        None => 3,
        Some(d) => {
            3 + list_lines(d.mappings)
                + list_lines(d.holders)
                + if d.findings == 0 {
                    0
                } else {
                    list_lines(d.findings)
                }
        }
    }
}

pub fn page_layout(size: (u16, u16), detail: Option<PageCounts>) -> PageLayout {
    let area = frame(size);
    let avail = area.height.saturating_sub(3);
    let info_h = (info_lines(detail) as u16 + 2)
        .min(avail / 2)
        .max(3.min(avail));
    let [header, info, timeline, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(info_h),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    PageLayout {
        header,
        info,
        timeline,
        footer,
    }
}
