//! The shadow page table: device mappings by (address space, address),
//! as the probes report them installed, moved, copied, split and removed.
//! A PTE or PMD counts on each of its pages; a PUD (262144 pages) counts
//! once, at its head.

use super::*;

impl Analyzer {
    pub(super) fn on_map(&mut self, ev: &Event, at_attach: bool) {
        let pfn = ev.pfn;
        self.touch(pfn, ev, None);
        if ev.failed() {
            return;
        }
        if !at_attach && !self.in_audit && !self.drift_open.is_empty() {
            let va = ev.vaddr.0;
            self.explain_late(DriftKind::Missing, ev.mm.0, va, va + 1, ev.t, Some(pfn));
        }
        let key = (ev.mm.0, ev.vaddr.0);
        let mapping = Mapping {
            pfn,
            order: ev.order,
            t: ev.t,
            pid: ev.pid,
            comm: ev.comm,
            at_attach,
        };
        let new = match self.mappings.get(&key) {
            // Same page again (write upgrade, or seen by the snapshot and a
            // probe): not a new install.
            Some(m) if m.pfn == pfn && m.order == ev.order => false,
            Some(_) => {
                self.stats.mappings_replaced += 1;
                if let Some(old) = self.remove_mapping(key) {
                    self.unmap_pages(&old);
                }
                true
            }
            None => true,
        };
        if new {
            self.map_pages(&mapping, ev.t);
            self.insert_mapping(key, mapping);
            self.stats.mappings_installed += 1;
            if let Some(l) = &mut self.life {
                l.map_begin(
                    key,
                    MapLife {
                        id: 0,
                        mm: ev.mm.0,
                        vaddr: ev.vaddr.0,
                        pfn,
                        order: ev.order,
                        t: ev.t,
                        pid: ev.pid,
                        comm: ev.comm,
                        at_attach: at_attach || ev.flags.has(flags::AT_ATTACH),
                        write: ev.flags.has(flags::WRITE),
                        copied: false,
                    },
                );
            }
        }

        let ty = self.page_type(pfn);
        let bias = idle_bias(self.cfg.model, ty);
        // A return probe still sees the fault path's temporary reference.
        let transient = if ev.ref_after.is_some() && !at_attach {
            transient_install_refs(self.cfg.model, ty)
        } else {
            0
        };
        if let Some(raw) = ev.ref_after.or(ev.ref_before)
            && raw.wrapping_sub(bias).wrapping_sub(transient) <= 0
        {
            let what = match ev.order {
                0 => "PTE",
                PUD_ORDER => "PUD",
                _ => "PMD",
            };
            let explanation = || {
                format!(
                    "{} installed a {what} at {} for pfn {pfn:#x} while its _refcount was {raw} \
                 (logical {}, idle bias {bias}{}): the mapping holds no page reference{}.",
                    describe_proc(ev.pid, &ev.comm),
                    ev.vaddr,
                    raw.wrapping_sub(bias).wrapping_sub(transient),
                    if transient > 0 {
                        ", minus the fault's temporary reference"
                    } else {
                        ""
                    },
                    if at_attach {
                        " (present when refscope attached)"
                    } else {
                        ""
                    },
                )
            };
            self.raise(Raise {
                rule: RuleId::ZeroRefMapping,
                severity: None,
                key: (
                    RuleId::ZeroRefMapping,
                    pfn,
                    ev.mm.0,
                    ev.vaddr.0,
                    ev.order as u64,
                ),
                pfn,
                order: ev.order,
                mm: ev.mm,
                vaddr: ev.vaddr,
                pid: ev.pid,
                comm: ev.comm,
                t: ev.t,
                status: Status::Definite,
                at_attach,
                explanation,
            });
        }

        let removing = self
            .pages
            .get(&pfn)
            .and_then(|p| self.pgmap_at(p.pgmap))
            .filter(|g| g.state != PgmapState::Live)
            .map(|g| (g.name.clone(), g.state));
        if let Some((name, state)) = removing {
            let audited = self.in_audit;
            let explanation = || {
                if audited {
                    return format!(
                        "The page table of {} maps pfn {pfn:#x} at {} (read by the shadow audit: refscope's hooks missed this mapping) while its device {} is being removed.",
                        describe_proc(ev.pid, &ev.comm),
                        ev.vaddr,
                        display_name(&name),
                    );
                }
                format!(
                    "{} mapped pfn {pfn:#x} at {} after removal of its device {} had {}.",
                    describe_proc(ev.pid, &ev.comm),
                    ev.vaddr,
                    display_name(&name),
                    if state == PgmapState::Removed {
                        "completed"
                    } else {
                        "started"
                    },
                )
            };
            self.raise(Raise {
                rule: RuleId::MappedAfterUnplug,
                severity: None,
                key: (RuleId::MappedAfterUnplug, pfn, ev.mm.0, ev.vaddr.0, ev.t),
                pfn,
                order: ev.order,
                mm: ev.mm,
                vaddr: ev.vaddr,
                pid: ev.pid,
                comm: ev.comm,
                t: ev.t,
                status: Status::Definite,
                at_attach,
                explanation,
            });
        }
    }

    /// Count one more mapping of every page `m` covers. A PMD maps 512
    /// pages of the head's device: they share its pgmap (and so its idle
    /// bias). A PUD is counted once, at its head ([`Analyzer::pud_heads`]).
    pub(super) fn map_pages(&mut self, m: &Mapping, t: u64) {
        let pfn = m.pfn;
        if m.order == PUD_ORDER {
            *self.pud_heads.entry(pfn).or_default() += 1;
            if let Some(page) = self.pages.get_mut(&pfn) {
                page.page_flags &= !PAGE_FREED_REPORTED;
            }
            return;
        }
        let pgmap = self.pages.get(&pfn).map_or(0, |p| p.pgmap);
        for p in pfn..pfn + (1u64 << m.order) {
            let page = self.pages.entry(p).or_insert_with(|| Page {
                first_t: t,
                last_t: t,
                ..Page::default()
            });
            if page.pgmap == 0 {
                page.pgmap = pgmap;
            }
            page.mapcount += 1;
            page.page_flags &= !PAGE_FREED_REPORTED;
        }
    }

    /// Decrement the mapcount of every page `m` covers.
    pub(super) fn unmap_pages(&mut self, m: &Mapping) {
        if m.order == PUD_ORDER {
            if let Some(n) = self.pud_heads.get_mut(&m.pfn) {
                *n -= 1;
                if *n == 0 {
                    self.pud_heads.remove(&m.pfn);
                }
            }
        } else {
            for p in m.pfn..m.pfn + (1u64 << m.order) {
                if let Some(page) = self.pages.get_mut(&p) {
                    page.mapcount = page.mapcount.saturating_sub(1);
                }
            }
        }
        self.stats.mappings_removed += 1;
    }

    /// The only ways into and out of `mappings`: they keep `pud_keys`.
    pub(super) fn insert_mapping(&mut self, key: (u64, u64), m: Mapping) -> Option<Mapping> {
        if m.order == PUD_ORDER {
            self.pud_keys.insert(key);
        }
        let old = self.mappings.insert(key, m);
        if let Some(o) = &old
            && o.order == PUD_ORDER
            && self.mappings.get(&key).is_none_or(|n| n.order != PUD_ORDER)
        {
            self.pud_keys.remove(&key);
        }
        old
    }

    pub(super) fn remove_mapping(&mut self, key: (u64, u64)) -> Option<Mapping> {
        let old = self.mappings.remove(&key);
        if old.as_ref().is_some_and(|m| m.order == PUD_ORDER) {
            self.pud_keys.remove(&key);
        }
        old
    }

    /// Keys of the shadow mappings of `mm` that overlap `[start, end)`.
    pub(super) fn overlapping(&self, mm: u64, start: u64, end: u64) -> Vec<(u64, u64)> {
        let covers = |va: u64, order: u8| va.saturating_add(4096u64 << order) > start;
        let lo = start.saturating_sub(MAX_MAPPING_BYTES - 1);
        let mut hits: Vec<(u64, u64)> = self
            .mappings
            .range((mm, lo)..(mm, end.max(lo)))
            .filter(|((_, va), m)| covers(*va, m.order))
            .map(|(k, _)| *k)
            .collect();
        let lo = start.saturating_sub(PUD_BYTES - 1);
        let before = hits.len();
        hits.extend(
            self.pud_keys
                .range((mm, lo)..(mm, end.max(lo)))
                .filter(|&&(_, va)| covers(va, PUD_ORDER)),
        );
        if hits.len() > before {
            hits.sort_unstable();
            hits.dedup();
        }
        hits
    }

    /// `[vaddr, vaddr_end)` of `mm` unmapped (`why`: an unmap, or the
    /// address space's exit).
    pub(super) fn on_unmap(&mut self, ev: &Event, why: End) {
        let (mm, start, end) = (ev.mm.0, ev.vaddr.0, ev.vaddr_end.0);
        if !self.drift_open.is_empty() {
            self.explain_late(DriftKind::Stale, mm, start, end, ev.t, None);
        }
        for key in self.overlapping(mm, start, end) {
            if let Some(m) = self.remove_mapping(key) {
                self.unmap_pages(&m);
                if let Some(l) = &mut self.life {
                    l.map_end(key, why);
                }
                let mut e = ev.clone();
                e.pfn = m.pfn;
                e.order = m.order;
                e.vaddr = Hex(key.1);
                e.ref_before = None;
                e.ref_after = None;
                self.touch(m.pfn, &e, None);
            }
        }
    }

    /// A DAX huge PMD or PUD was cleared by a split (it is refaulted at a
    /// smaller size). The event's order says which (0 in older traces: a
    /// PMD); only a mapping of that size at that address is cleared.
    pub(super) fn on_pmd_split(&mut self, ev: &Event) {
        if !self.drift_open.is_empty() {
            let (mm, start, end) = (ev.mm.0, ev.vaddr.0, ev.vaddr_end.0);
            self.explain_late(DriftKind::Stale, mm, start, end, ev.t, None);
        }
        let key = (ev.mm.0, ev.vaddr.0);
        let order = if ev.order == 0 { PMD_ORDER } else { ev.order };
        if self.mappings.get(&key).is_some_and(|m| m.order == order)
            && let Some(m) = self.remove_mapping(key)
        {
            self.unmap_pages(&m);
            if let Some(l) = &mut self.life {
                l.map_end(key, End::PmdSplit);
            }
            let mut e = ev.clone();
            e.pfn = m.pfn;
            e.order = m.order;
            self.touch(m.pfn, &e, None);
        }
    }

    /// mremap moved the page tables of `[vaddr, vaddr_end)` to `new_vaddr`.
    pub(super) fn on_remap(&mut self, ev: &Event) {
        let (mm, start, end) = (ev.mm.0, ev.vaddr.0, ev.vaddr_end.0);
        let moved: Vec<(u64, Mapping)> = self
            .mappings
            .range((mm, start)..(mm, end.max(start)))
            .map(|((_, va), m)| (*va, m.clone()))
            .collect();
        for (va, m) in moved {
            self.remove_mapping((mm, va));
            let new_va = ev.new_vaddr.0.wrapping_add(va - start);
            if let Some(old) = self.insert_mapping((mm, new_va), m) {
                self.unmap_pages(&old);
            }
            if let Some(l) = &mut self.life {
                l.map_moved((mm, va), (mm, new_va));
            }
            self.stats.mappings_moved += 1;
        }
    }

    /// fork copied the present PTEs of `[vaddr, vaddr_end)` from `src_mm`.
    /// PTEs and PUDs, not PMDs: `copy_huge_pmd` never copies a DAX PMD
    /// (devmap on 6.x, a file folio on 7.x; the child refaults it), so PMD
    /// mappings stay the parent's alone, while `copy_huge_pud` copies a
    /// device-dax PUD. The copy runs in the parent's context: the copies
    /// carry the parent's pid until `task_new` names the child.
    pub(super) fn on_copy_range(&mut self, ev: &Event) {
        let (src, dst) = (ev.src_mm.0, ev.mm.0);
        let copied: Vec<(u64, Mapping)> = self
            .mappings
            .range((src, ev.vaddr.0)..(src, ev.vaddr_end.0.max(ev.vaddr.0)))
            .filter(|(_, m)| m.order == 0 || m.order == PUD_ORDER)
            .map(|((_, va), m)| (*va, m.clone()))
            .collect();
        for (va, m) in copied {
            let copy = Mapping {
                t: ev.t,
                pid: ev.pid,
                comm: ev.comm,
                ..m
            };
            if copy.order == PUD_ORDER {
                *self.pud_heads.entry(copy.pfn).or_default() += 1;
            } else if let Some(page) = self.pages.get_mut(&copy.pfn) {
                page.mapcount += 1;
            }
            if let Some(old) = self.insert_mapping((dst, va), copy) {
                self.unmap_pages(&old);
            }
            if let Some(l) = &mut self.life
                && let Some(from) = l.map_at((src, va))
            {
                let life = MapLife {
                    mm: dst,
                    t: ev.t,
                    pid: ev.pid,
                    comm: ev.comm,
                    copied: true,
                    ..from.clone()
                };
                l.map_begin((dst, va), life);
            }
            self.stats.mappings_copied += 1;
        }
    }

    /// A new process owns `mm`, which fork filled with copies made in its
    /// parent's context: from now on they are the child's.
    pub(super) fn on_task_new(&mut self, ev: &Event) {
        let mm = ev.mm.0;
        if let Some(l) = &mut self.life {
            l.map_owner(mm, ev.pid, ev.comm);
        }
        for (_, m) in self.mappings.range_mut((mm, 0)..=(mm, u64::MAX)) {
            if m.pid != ev.pid || m.comm != ev.comm {
                m.pid = ev.pid;
                m.comm = ev.comm;
                self.stats.mappings_reattributed += 1;
            }
        }
    }

    pub(super) fn on_mm_exit(&mut self, ev: &Event) {
        let mm = ev.mm.0;
        let mut range = ev.clone();
        range.vaddr = Hex(0);
        range.vaddr_end = Hex(u64::MAX);
        self.on_unmap(&range, End::MmExit);
        if let Some(l) = &mut self.life {
            l.pins_end(None, Some(mm), End::HolderExit);
        }

        let held: Vec<((u64, u64), Holder)> = self
            .holders
            .iter()
            .filter(|((_, hmm), _)| *hmm == mm)
            .map(|(k, h)| (*k, h.clone()))
            .collect();
        for ((pfn, hmm), h) in held {
            self.holders.remove(&(pfn, hmm));
            // FOLL_GET references can be dropped by inline folio_put_refs
            // on every kernel (e.g. 6.1's __bio_release_pages): only pins,
            // whose release always goes through gup_put_folio or
            // unpin_user_page, are evidence of a leak.
            if h.pins == 0 {
                continue;
            }
            let explanation = || {
                format!(
                    "{} exited still holding {} pin(s) on pfn {pfn:#x}, taken {:.3}s before.",
                    describe_proc(h.pid, &h.comm),
                    h.pins,
                    ev.t.saturating_sub(h.first_t) as f64 / 1e9,
                )
            };
            let status = self.status_since(h.first_t, ev.t);
            self.raise(Raise {
                rule: RuleId::PinLeak,
                severity: None,
                key: (RuleId::PinLeak, pfn, hmm, 0, 0),
                pfn,
                order: 0,
                mm: Hex(hmm),
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

    pub(super) fn mapped(&self, pfn: u64) -> bool {
        self.pages.get(&pfn).is_some_and(|p| p.mapcount > 0) || self.pud_covers(pfn)
    }

    /// A PUD mapping covers `pfn`.
    pub(super) fn pud_covers(&self, pfn: u64) -> bool {
        !self.pud_heads.is_empty()
            && self
                .pud_heads
                .range(pfn.saturating_sub(PUD_PAGES - 1)..=pfn)
                .next()
                .is_some()
    }
}
