//! Keys and terminal events: what each action does to the state.

use super::*;

impl App {
    /// Terminal input.
    pub fn on_input(&mut self, src: &Pipeline, ev: TermEvent) {
        match ev {
            TermEvent::Key(k) if k.kind != KeyEventKind::Release => self.handle_key(src, k),
            TermEvent::Resize(w, h) => self.on_resize(w, h),
            _ => {}
        }
    }

    /// Quit requested from outside (signal, closed terminal).
    pub fn request_quit(&mut self) {
        self.quit = true;
    }

    pub fn handle_key(&mut self, src: &Pipeline, k: KeyEvent) {
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
                    self.apply_filter(src, &text);
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
            Action::Pause => self.toggle_pause(src),
            Action::Back => match self.screen {
                Screen::Page => self.close_page(),
                Screen::Main if !self.filter.is_empty() => self.apply_filter(src, ""),
                Screen::Main => {}
            },
            Action::Filter => self.prompt = Some(self.filter.text().to_string()),
            Action::Sort => self.cycle_sort(src),
            Action::Reverse => {
                self.reverse = !self.reverse;
                self.resort(src);
            }
            Action::Pane if self.screen == Screen::Main => {
                self.focus = match self.focus {
                    Focus::Findings => Focus::Pages,
                    Focus::Pages => Focus::Findings,
                };
            }
            Action::Open if self.screen == Screen::Main => {
                if let Some(pfn) = self.selected_pfn(src) {
                    let from = match self.focus {
                        Focus::Findings => {
                            let n = self.finding_rows.len();
                            n.checked_sub(self.findings_list.selected + 1)
                                .and_then(|i| self.finding_rows.get(i).copied())
                        }
                        Focus::Pages => None,
                    };
                    self.open_page(src, pfn, from);
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

    pub(super) fn list_len_height(&self) -> (usize, usize) {
        let (hf, hp, ht) = self.heights();
        match (self.screen, self.focus) {
            (Screen::Page, _) => (self.detail.as_ref().map_or(0, |d| d.timeline.len()), ht),
            (Screen::Main, Focus::Findings) => (self.finding_rows.len(), hf),
            (Screen::Main, Focus::Pages) => (self.rows.len(), hp),
        }
    }

    pub(super) fn list_mut(&mut self) -> &mut ListState {
        match (self.screen, self.focus) {
            (Screen::Page, _) => &mut self.timeline_list,
            (Screen::Main, Focus::Findings) => &mut self.findings_list,
            (Screen::Main, Focus::Pages) => &mut self.pages_list,
        }
    }

    pub(super) fn step(&mut self, delta: isize) {
        let (len, h) = self.list_len_height();
        self.list_mut().step(delta, len, h);
    }

    pub(super) fn page_step(&mut self, dir: isize) {
        let (len, h) = self.list_len_height();
        let by = h.saturating_sub(1).max(1) as isize;
        self.list_mut().step(dir * by, len, h);
    }

    pub fn toggle_pause(&mut self, src: &Pipeline) {
        self.paused = !self.paused;
        if !self.paused {
            self.refresh_all(src);
        }
    }

    pub(super) fn cycle_sort(&mut self, src: &Pipeline) {
        let i = SortKey::ALL
            .iter()
            .position(|&k| k == self.sort)
            .unwrap_or(0);
        self.sort = SortKey::ALL[(i + 1) % SortKey::ALL.len()];
        self.reverse = false;
        self.resort(src);
    }

    pub(super) fn resort(&mut self, src: &Pipeline) {
        self.rebuild(src);
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
    pub fn apply_filter(&mut self, src: &Pipeline, text: &str) {
        match Filter::parse(text) {
            Ok(f) => {
                self.filter = f;
                self.finding_rows = src.analyzer.findings()[..self.findings_seen]
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| self.filter.matches_finding(f))
                    .map(|(i, _)| i)
                    .collect();
                self.findings_list = ListState::default();
                self.pages_list = ListState::default();
                self.rebuild(src);
            }
            Err(e) => {
                self.notice = Some((log::Level::Error, format!("filter: {e}")));
                self.prompt = Some(text.to_string());
            }
        }
    }

    /// Open the page view of `pfn` (from finding `from`, if any).
    pub fn open_page(&mut self, src: &Pipeline, pfn: u64, from: Option<usize>) {
        let d = self.page_detail(src, pfn);
        // Select the event that raised the finding, else the newest.
        let sel = from
            .and_then(|i| src.analyzer.findings().get(i))
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

    pub(super) fn close_page(&mut self) {
        self.screen = Screen::Main;
        self.detail = None;
        self.opened_from = None;
        self.clamp_all();
    }
}
