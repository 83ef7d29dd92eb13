//! What comes in: ring-buffer records, events, losses, the end of a
//! replay; and the rows, page detail and counters rebuilt from the
//! analysis when the display asks.

use super::*;

impl App {
    /// The analysis moved on (events or losses), up to trace time `clock`.
    pub fn on_data(&mut self, clock: u64) {
        self.clock = self.clock.max(clock);
        self.data_changed = true;
    }

    /// Replay progress: the paced clock and bytes read.
    pub fn on_progress(&mut self, clock: u64, bytes: u64) {
        self.clock = self.clock.max(clock);
        if let Some(r) = &mut self.replay {
            r.bytes = bytes;
        }
    }

    /// The replay reached the end of the trace (and the analysis was
    /// finished: pins still held became findings, as in `report`): show the
    /// final state.
    pub fn on_replay_end(&mut self, src: &Pipeline, end: ReplayEnd) {
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
            self.refresh_all(src);
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
    pub fn on_tick(&mut self, src: &Pipeline, elapsed: Duration, now_t: Option<u64>) {
        self.elapsed = elapsed;
        if let Some(t) = now_t {
            self.clock = self.clock.max(t);
        }
        let events = src.analyzer.stats().events;
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
        self.update_counters(src);
        self.take_findings(src);
        let due = self
            .refresh
            .last
            .is_none_or(|last| elapsed.saturating_sub(last) >= self.refresh.interval);
        if due && (self.data_changed || self.rows_stale) {
            self.rebuild(src);
        }
        // Ages move with the clock: redraw at least once a second.
        let second = |t: u64| t / 1_000_000_000;
        if before != (self.now_t, self.counters.clone()) || second(before.0) != second(self.now_t) {
            self.dirty = true;
        }
    }

    pub(super) fn update_counters(&mut self, src: &Pipeline) {
        let a = &src.analyzer;
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
            decode_errors: src.decode_errors,
            evicted: a.stats().pages_evicted,
            rate,
            bpf: self.counters.bpf,
            drift: (a.settings().verify || a.stats().audits > 0).then(|| a.stats().drift()),
        };
    }

    /// Fold findings raised since the last call into the shown list.
    pub(super) fn take_findings(&mut self, src: &Pipeline) {
        let all = src.analyzer.findings();
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
    pub fn refresh_all(&mut self, src: &Pipeline) {
        self.now_t = self.clock;
        self.update_counters(src);
        self.take_findings(src);
        self.rebuild(src);
        self.dirty = true;
    }

    /// Rebuild the page list (filter + sort) and the open page's details.
    pub(super) fn rebuild(&mut self, src: &Pipeline) {
        let started = Instant::now();
        self.rebuild_rows(src);
        self.rebuild_detail(src);
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

    pub(super) fn rebuild_rows(&mut self, src: &Pipeline) {
        let a = &src.analyzer;
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

    pub(super) fn rebuild_detail(&mut self, src: &Pipeline) {
        let Some(pfn) = self.detail.as_ref().map(|d| d.pfn) else {
            return;
        };
        let at_end = self
            .detail
            .as_ref()
            .is_some_and(|d| self.timeline_list.selected + 1 >= d.timeline.len());
        let d = self.page_detail(src, pfn);
        if at_end {
            self.timeline_list.selected = d.timeline.len().saturating_sub(1);
        }
        self.detail = Some(d);
    }

    pub(super) fn page_detail(&self, src: &Pipeline, pfn: u64) -> PageDetail {
        let a = &src.analyzer;
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
}
