//! Device page maps: added, removal started (what is still mapped then is
//! `mapped_after_unplug`), removed.

use super::*;

impl Analyzer {
    pub(super) fn on_pgmap_add(&mut self, ev: &Event) {
        let range = (ev.pfn, ev.pfn_end);
        let ty = PgmapType::from_kernel(ev.arg_flags.0);
        if let Some(g) = self.pgmaps.iter_mut().find(|g| {
            (ev.pgmap.0 != 0 && g.id == ev.pgmap) || (g.id.0 == 0 && g.ranges.contains(&range))
        }) {
            g.id = ev.pgmap;
            g.ty = ty;
            g.state = PgmapState::Live;
            if !g.ranges.contains(&range) {
                g.ranges.push(range);
            }
            return;
        }
        self.pgmaps.push(Pgmap {
            id: ev.pgmap,
            name: String::new(),
            ty,
            ranges: vec![range],
            state: PgmapState::Live,
        });
    }

    pub(super) fn find_pgmap(&mut self, ev: &Event) -> usize {
        let range = (ev.pfn, ev.pfn_end);
        if let Some(i) = self.pgmaps.iter().position(|g| {
            (ev.pgmap.0 != 0 && g.id == ev.pgmap)
                || g.ranges
                    .iter()
                    .any(|&(a, b)| a < range.1.max(range.0.saturating_add(1)) && range.0 < b)
        }) {
            if self.pgmaps[i].id.0 == 0 {
                self.pgmaps[i].id = ev.pgmap;
            }
            return i;
        }
        self.pgmaps.push(Pgmap {
            id: ev.pgmap,
            name: String::new(),
            ty: PgmapType::from_kernel(ev.arg_flags.0),
            ranges: vec![range],
            state: PgmapState::Live,
        });
        self.pgmaps.len() - 1
    }

    pub(super) fn on_pgmap_remove(&mut self, ev: &Event) {
        let i = self.find_pgmap(ev);
        self.pgmaps[i].state = PgmapState::Removing;
        let name = self.pgmaps[i].name.clone();
        let (lo, hi) = (ev.pfn, ev.pfn_end);
        let in_range = |pfn: u64| lo <= pfn && pfn < hi;

        let stale: Vec<((u64, u64), Mapping)> = self
            .mappings
            .iter()
            .filter(|(_, m)| in_range(m.pfn) || (lo > m.pfn && lo < m.pfn + (1 << m.order)))
            .map(|(k, m)| (*k, m.clone()))
            .collect();
        let refcounted = self.cfg.model == RefcountModel::Refcounted;
        for ((mm, vaddr), m) in stale {
            let mut e = ev.clone();
            e.pfn = m.pfn;
            self.touch(m.pfn, &e, None);
            let explanation = || {
                let who = describe_proc(m.pid, &m.comm);
                let mut s = format!(
                    "memunmap_pages started for device {} (pfns {lo:#x}-{:#x}) while {who} still mapped pfn {:#x} at {vaddr:#x}.",
                    display_name(&name),
                    hi.saturating_sub(1),
                    m.pfn,
                );
                if refcounted {
                    // docs/kernel-bugs.md: 7.3.4 oopses in __zap_vma_range.
                    s.push_str(&format!(
                        " On this kernel the mapping holds a reference on a page whose memmap is being freed: when {who} unmaps it or exits, the kernel will touch freed memory (7.3.4 oopses in __zap_vma_range)."
                    ));
                }
                s
            };
            let status = self.status_since(m.t, ev.t);
            self.raise(Raise {
                rule: RuleId::MappedAfterUnplug,
                severity: None,
                key: (RuleId::MappedAfterUnplug, m.pfn, mm, vaddr, i as u64),
                pfn: m.pfn,
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

        let pinned: Vec<((u64, u64), Holder)> = self
            .holders
            .range((lo, 0)..(hi.max(lo), 0))
            .filter(|(_, h)| h.pins > 0)
            .map(|(k, h)| (*k, h.clone()))
            .collect();
        for ((pfn, mm), h) in pinned {
            let explanation = || {
                format!(
                    "memunmap_pages started for device {} while {} held {} pin(s) on pfn {pfn:#x}.",
                    display_name(&name),
                    describe_proc(h.pid, &h.comm),
                    h.pins,
                )
            };
            let status = self.status_since(h.first_t, ev.t);
            self.raise(Raise {
                rule: RuleId::PinnedAtUnplug,
                severity: None,
                key: (RuleId::PinnedAtUnplug, pfn, mm, 0, i as u64),
                pfn,
                order: 0,
                mm: Hex(mm),
                vaddr: Hex(0),
                pid: h.pid,
                comm: h.comm,
                t: ev.t,
                status,
                at_attach: false,
                explanation,
            });
        }
    }

    pub(super) fn on_pgmap_removed(&mut self, ev: &Event) {
        if let Some(g) = self
            .pgmaps
            .iter_mut()
            .find(|g| ev.pgmap.0 != 0 && g.id == ev.pgmap)
        {
            g.state = PgmapState::Removed;
        }
    }
}
