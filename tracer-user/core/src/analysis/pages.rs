//! Per-page state: which device a page belongs to, its timeline, what an
//! observed refcount says of the references believed outstanding, and
//! eviction under the page cap.

use super::*;

impl Analyzer {
    /// Index (+1) of the pgmap of `pfn`, learning from the event's pgmap id.
    pub(super) fn resolve_pgmap(&mut self, id: Hex, pfn: u64) -> u16 {
        if id.0 != 0
            && let Some(i) = self.pgmaps.iter().position(|g| g.id == id)
        {
            return (i + 1) as u16;
        }
        match self.pgmaps.iter().position(|g| g.contains(pfn)) {
            Some(i) => {
                if id.0 != 0 && self.pgmaps[i].id.0 == 0 {
                    self.pgmaps[i].id = id;
                }
                (i + 1) as u16
            }
            None => 0,
        }
    }

    pub(super) fn page_type(&self, pfn: u64) -> PgmapType {
        self.pages
            .get(&pfn)
            .and_then(|p| self.pgmap_at(p.pgmap))
            .map_or(PgmapType::Unknown, |g| g.ty)
    }

    pub(super) fn bias(&self, pfn: u64) -> i32 {
        idle_bias(self.cfg.model, self.page_type(pfn))
    }

    /// Record `ev` on page `pfn`: refcount, time, pgmap, timeline.
    pub(super) fn touch(&mut self, pfn: u64, ev: &Event, gup: Option<GupLabel>) {
        let pgmap = if ev.pgmap.0 != 0 || !self.pages.contains_key(&pfn) {
            self.resolve_pgmap(ev.pgmap, pfn)
        } else {
            0
        };
        let len = self.cfg.timeline_len;
        let page = self.pages.entry(pfn).or_insert_with(|| Page {
            first_t: ev.t,
            ..Page::default()
        });
        if pgmap != 0 {
            page.pgmap = pgmap;
        }
        page.last_t = ev.t;
        if let Some(r) = ev.ref_after.or(ev.ref_before) {
            page.raw_ref = Some(r);
        }
        // The count before the call describes the state before this event
        // is applied; the count after it, the state after (`apply`
        // reconciles with that one once the event's own references are
        // counted: a pin's release must not look like a get gone).
        let before = ev.ref_before;
        if ev.flags.has(flags::MEMMAP_UNREADABLE) {
            page.page_flags |= PAGE_MEMMAP_GONE;
        }
        if ev.flags.has(flags::AT_ATTACH) || ev.kind == EventKind::AttachMap {
            page.page_flags |= PAGE_AT_ATTACH;
        }
        let entry = TimelineEntry::from_event(ev, gup);
        if len > 0 {
            let tl = page
                .timeline
                .get_or_insert_with(|| Box::new(VecDeque::with_capacity(4)));
            if tl.len() >= len {
                tl.pop_front();
                self.stats.timeline_evicted += 1;
            }
            tl.push_back(entry.clone());
        }
        if let Some(ids) = self.unplug_open.get(&pfn) {
            for &id in ids {
                let f = &mut self.findings[id];
                // Bounded: the interesting part is the first events after removal.
                if f.timeline.len() < 4 * len.max(16) {
                    f.timeline.push(entry.clone());
                }
            }
        }
        if let Some(r) = before {
            self.reconcile_gets(pfn, r);
        }
    }

    /// FOLL_GET references we believe outstanding, that an observed
    /// refcount proves released (their put was inline: no event).
    pub(super) fn reconcile_gets(&mut self, pfn: u64, raw: i32) {
        // Most pages hold no FOLL_GET reference: one lookup, then out.
        if self.pages.get(&pfn).is_none_or(|p| p.gets == 0) {
            return;
        }
        let bias = self.bias(pfn);
        let pin_bias = self.cfg.gup.pin_bias;
        let Some(page) = self.pages.get_mut(&pfn) else {
            return;
        };
        if page.gets == 0 {
            return;
        }
        // Wrapping, as in release builds: refcounts come from the kernel
        // or a trace file, and a corrupt one must not panic.
        let floor = bias.wrapping_add((page.pins as i32).wrapping_mul(pin_bias));
        let gets_possible = raw.wrapping_sub(floor).max(0) as u32;
        if gets_possible >= page.gets {
            return;
        }
        let stale = page.gets - gets_possible;
        page.gets = gets_possible;
        self.stats.gets_reconciled += u64::from(stale);
        // References of holders that exited are still counted on the page
        // (their address space's exit did not put them): those go first,
        // then the live holders' by address space.
        let held: u32 = self
            .holders
            .range((pfn, 0)..=(pfn, u64::MAX))
            .map(|(_, h)| h.gets)
            .sum();
        let orphaned = (gets_possible + stale).saturating_sub(held);
        let mut stale = stale.saturating_sub(orphaned);
        for (&(_, hmm), h) in self.holders.range_mut((pfn, 0)..=(pfn, u64::MAX)) {
            let take = h.gets.min(stale);
            h.gets -= take;
            stale -= take;
            if let Some(l) = &mut self.life
                && take > 0
            {
                l.pin_release(pfn, hmm, false, take, End::Reconciled);
            }
        }
        self.holders.retain(|_, h| h.pins > 0 || h.gets > 0);
    }

    pub(super) fn timeline_of(&self, pfn: u64) -> Vec<TimelineEntry> {
        self.pages
            .get(&pfn)
            .and_then(|p| p.timeline.as_deref())
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Drop the least recently used idle pages down to 90% of the cap.
    pub(super) fn evict(&mut self) {
        let target = self.cfg.max_pages / 10 * 9;
        let excess = self.pages.len().saturating_sub(target);
        let mut idle: Vec<(u64, u64)> = self
            .pages
            .iter()
            .filter(|(pfn, p)| {
                p.mapcount == 0
                    && p.pins == 0
                    && p.gets == 0
                    && !self.unplug_open.contains_key(pfn)
                    && !self.pud_covers(**pfn)
            })
            .map(|(&pfn, p)| (p.last_t, pfn))
            .collect();
        let n = excess.min(idle.len());
        if n == 0 {
            return;
        }
        if n < idle.len() {
            idle.select_nth_unstable(n);
        }
        for &(_, pfn) in &idle[..n] {
            self.pages.remove(&pfn);
        }
        self.stats.pages_evicted += n as u64;
    }
}
