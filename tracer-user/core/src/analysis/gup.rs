//! GUP references and pins: who holds what on which page, their releases,
//! the refcount checks that ride on them, and a page's free.

use super::*;

impl Analyzer {
    pub(super) fn on_gup_get(&mut self, ev: &Event) {
        let pfn = ev.pfn;
        let kind = self.cfg.gup.decode(ev.arg_flags.0);
        let label = GupLabel::new(kind.pin, kind.longterm);
        self.touch(pfn, ev, Some(label));
        if ev.failed() {
            return;
        }
        self.stats.gup_refs += 1;
        let refs = ev.refs.max(1) as u32;
        let ty = self.page_type(pfn);
        let bias = idle_bias(self.cfg.model, ty);
        let delta = if kind.pin {
            ev.refs.max(1).wrapping_mul(self.cfg.gup.pin_bias)
        } else {
            ev.refs.max(1)
        };
        let before = ev
            .ref_before
            .or_else(|| ev.ref_after.map(|a| a.wrapping_sub(delta)));
        if let Some(b) = before
            && b.wrapping_sub(bias) <= 0
        {
            let explanation = || {
                format!(
                    "{} took a {} on pfn {pfn:#x} whose _refcount was {b} before the call (logical {}, idle bias {bias}).",
                    describe_proc(ev.pid, &ev.comm),
                    label.as_str().replace('_', " "),
                    b.wrapping_sub(bias),
                )
            };
            self.raise(Raise {
                rule: RuleId::PinOnIdlePage,
                severity: None,
                key: (RuleId::PinOnIdlePage, pfn, ev.mm.0, 0, 0),
                pfn,
                order: ev.order,
                mm: ev.mm,
                vaddr: Hex(0),
                pid: ev.pid,
                comm: ev.comm,
                t: ev.t,
                status: Status::Definite,
                at_attach: false,
                explanation,
            });
        }
        if kind.longterm && ty == PgmapType::FsDax {
            let explanation = || {
                format!(
                    "{} obtained a FOLL_LONGTERM {} on FS-DAX pfn {pfn:#x}.",
                    describe_proc(ev.pid, &ev.comm),
                    if kind.pin { "pin" } else { "reference" },
                )
            };
            self.raise(Raise {
                rule: RuleId::LongtermPinFsdax,
                severity: None,
                key: (RuleId::LongtermPinFsdax, pfn, ev.mm.0, 0, 0),
                pfn,
                order: ev.order,
                mm: ev.mm,
                vaddr: Hex(0),
                pid: ev.pid,
                comm: ev.comm,
                t: ev.t,
                status: Status::Definite,
                at_attach: false,
                explanation,
            });
        }
        let h = self
            .holders
            .entry((pfn, ev.mm.0))
            .or_insert_with(|| Holder {
                pid: ev.pid,
                comm: ev.comm,
                pins: 0,
                gets: 0,
                longterm: false,
                first_t: ev.t,
            });
        h.longterm |= kind.longterm;
        if let Some(l) = &mut self.life {
            l.pin_begin(PinLife {
                id: 0,
                pfn,
                mm: ev.mm.0,
                t: ev.t,
                pid: ev.pid,
                comm: ev.comm,
                label,
                refs,
                left: refs,
            });
        }
        let page = self.pages.entry(pfn).or_default();
        if kind.pin {
            h.pins = h.pins.saturating_add(refs);
            page.pins = page.pins.saturating_add(refs);
        } else {
            h.gets = h.gets.saturating_add(refs);
            page.gets = page.gets.saturating_add(refs);
        }
    }

    /// `gup_put_folio` (`gup = true`: flags say pin or get) or a devmap put
    /// (a FOLL_GET reference, or one GUP did not take).
    pub(super) fn on_release(&mut self, ev: &Event, gup: bool) {
        let pfn = ev.pfn;
        let pin = gup && self.cfg.gup.decode(ev.arg_flags.0).pin;
        let label = gup.then(|| GupLabel::new(pin, false));
        self.touch(pfn, ev, label);
        let refs = ev.refs.max(1) as u32;
        // A devmap put with no GUP reference to match is normal (other
        // get_page users); an unpin with no pin is not.
        if !self.release(pfn, ev.mm.0, pin, refs) && gup {
            self.stats.unmatched_releases += 1;
        }
        self.check_count(ev);
    }

    /// Release `refs` pins or gets on `pfn`, preferring the holder `mm`.
    /// Returns false when nothing matched.
    pub(super) fn release(&mut self, pfn: u64, mm: u64, pin: bool, refs: u32) -> bool {
        let mut left = refs;
        let mut keys: Vec<u64> = self.holders_of(pfn).map(|(hmm, _)| hmm).collect();
        keys.sort_by_key(|&hmm| hmm != mm);
        let mark = self.life.as_ref().map_or(0, |l| l.mark());
        for hmm in keys {
            if left == 0 {
                break;
            }
            let Some(h) = self.holders.get_mut(&(pfn, hmm)) else {
                continue;
            };
            let have = if pin { &mut h.pins } else { &mut h.gets };
            let take = (*have).min(left);
            *have -= take;
            left -= take;
            if h.pins == 0 && h.gets == 0 {
                self.holders.remove(&(pfn, hmm));
            }
            if let Some(l) = &mut self.life
                && take > 0
            {
                l.pin_release(pfn, hmm, pin, take, End::Released);
            }
        }
        if let Some(l) = &mut self.life {
            l.sort_pin_ends(mark);
        }
        let released = refs - left;
        if let Some(page) = self.pages.get_mut(&pfn) {
            if pin {
                page.pins = page.pins.saturating_sub(released);
            } else {
                page.gets = page.gets.saturating_sub(released);
            }
        }
        released > 0
    }

    /// After a put: was the page released, or did its count underflow?
    pub(super) fn check_count(&mut self, ev: &Event) {
        let pfn = ev.pfn;
        let Some(after) = ev.ref_after else { return };
        let bias = self.bias(pfn);
        let released = match self.cfg.model {
            RefcountModel::IdleOne => after < bias,
            RefcountModel::Refcounted => after <= 0,
        };
        if !released {
            return;
        }
        if self.mapped(pfn) {
            self.freed_while_mapped(pfn, ev, format!("its _refcount fell to {after}"));
        } else if after < bias || after < 0 {
            let explanation = || {
                format!(
                    "{} dropped pfn {pfn:#x}'s _refcount to {after}, below its idle value {bias}.",
                    describe_proc(ev.pid, &ev.comm),
                )
            };
            self.raise(Raise {
                rule: RuleId::RefcountUnderflow,
                severity: None,
                key: (RuleId::RefcountUnderflow, pfn, 0, 0, 0),
                pfn,
                order: 0,
                mm: ev.mm,
                vaddr: Hex(0),
                pid: ev.pid,
                comm: ev.comm,
                t: ev.t,
                status: Status::Definite,
                at_attach: false,
                explanation,
            });
        }
    }

    pub(super) fn on_free(&mut self, ev: &Event) {
        let pfn = ev.pfn;
        self.touch(pfn, ev, None);
        // Whatever references we believed outstanding are gone now.
        let keys: Vec<u64> = self.holders_of(pfn).map(|(mm, _)| mm).collect();
        for mm in keys {
            self.holders.remove(&(pfn, mm));
        }
        if let Some(l) = &mut self.life {
            l.pins_end(Some(pfn), None, End::Freed);
        }
        if let Some(page) = self.pages.get_mut(&pfn) {
            page.pins = 0;
            page.gets = 0;
        }
        if self.mapped(pfn) {
            self.freed_while_mapped(pfn, ev, format!("{} ran", ev.hook.function()));
        }
    }

    pub(super) fn freed_while_mapped(&mut self, pfn: u64, ev: &Event, how: String) {
        let Some(page) = self.pages.get_mut(&pfn) else {
            return;
        };
        if page.page_flags & PAGE_FREED_REPORTED != 0 {
            return;
        }
        page.page_flags |= PAGE_FREED_REPORTED;
        for ((mm, vaddr), m) in self.mappings_of(pfn) {
            let explanation = || {
                format!(
                    "pfn {pfn:#x} was released ({how}, in {}) while {} still mapped it at {:#x} (installed {:.3}s before).",
                    describe_proc(ev.pid, &ev.comm),
                    describe_proc(m.pid, &m.comm),
                    vaddr,
                    ev.t.saturating_sub(m.t) as f64 / 1e9,
                )
            };
            let status = self.status_since(m.t, ev.t);
            self.raise(Raise {
                rule: RuleId::FreedWhileMapped,
                severity: None,
                key: (RuleId::FreedWhileMapped, pfn, mm, vaddr, m.t),
                pfn,
                order: m.order,
                mm: Hex(mm),
                vaddr: Hex(vaddr),
                pid: m.pid,
                comm: m.comm,
                t: ev.t,
                status,
                at_attach: m.at_attach,
                explanation,
            });
        }
    }
}
