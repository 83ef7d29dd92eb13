//! What the shadow audit reports: corrections of the shadow (drift), late
//! explanations, and the findings that waited for an address space's
//! page table.

use super::*;

/// What kind of divergence the audit found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// The page table maps it; the shadow did not know.
    Missing,
    /// The shadow had it; the page table does not map it.
    Stale,
}

/// One divergence between the shadow and the kernel's page table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Drift {
    pub t: u64,
    pub kind: DriftKind,
    pub mm: Hex,
    pub pid: u32,
    pub comm: Comm,
    pub vaddr: Hex,
    pub pfn: u64,
    pub order: u8,
    /// The page-table entry found at `vaddr` (stale mappings; 0: none).
    pub entry: Hex,
    /// Which kind of path refscope missed, as far as the audit can tell.
    pub hint: &'static str,
    /// An event older than the read that found it arrived after: the
    /// shadow was behind, no path was missed.
    pub late: bool,
}

/// Divergences kept for reports (later ones are only counted).
pub(super) const MAX_DRIFT_KEPT: usize = 10_000;

/// A finding that accuses a mapping, waiting for the page table's word.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) key: DedupeKey,
    pub(super) finding: Finding,
    /// The audit found the page table does not map it.
    pub(super) contradicted: bool,
}

impl Analyzer {
    /// The page table maps what the shadow did not: take it in.
    pub(super) fn on_audit_map(&mut self, ev: &Event) {
        let hint = self.missing_hint(ev);
        self.note_drift(ev, DriftKind::Missing, hint);
        // Install-time rules do not apply (the install was not seen); a
        // mapping of a device being removed is confirmed by the page table.
        self.in_audit = true;
        let mut e = ev.clone();
        e.ref_before = None;
        e.ref_after = None;
        self.on_map(&e, false);
        self.in_audit = false;
    }

    pub(super) fn missing_hint(&self, ev: &Event) -> &'static str {
        let elsewhere: Vec<u64> = self
            .mappings_of(ev.pfn)
            .into_iter()
            .map(|((mm, _), _)| mm)
            .collect();
        if elsewhere.contains(&ev.mm.0) {
            "moved within the address space by a path refscope did not see (remap)"
        } else if !elsewhere.is_empty() {
            "copied from another address space by a path refscope did not see (fork)"
        } else {
            "installed by a path refscope did not see (map_pte, map_pmd)"
        }
    }

    /// The shadow had what the page table does not: drop it.
    pub(super) fn on_audit_unmap(&mut self, ev: &Event) {
        let key = (ev.mm.0, ev.vaddr.0);
        let Some(m) = self.mappings.get(&key).cloned() else {
            return;
        };
        let entry = ev.arg_flags.0;
        let hint = if entry == 0 {
            "cleared by a path refscope did not see (unmap, pmd split, exit)"
        } else {
            "replaced in place by a path refscope did not see (copy-on-write, migration: cow)"
        };
        let mut e = ev.clone();
        e.pid = m.pid;
        e.comm = m.comm;
        e.pfn = m.pfn;
        e.order = m.order;
        self.note_drift(&e, DriftKind::Stale, hint);
        self.remove_mapping(key);
        self.unmap_pages(&m);
        if let Some(l) = &mut self.life {
            l.map_end(key, End::Audit);
        }
        self.touch(m.pfn, &e, None);
        for p in &mut self.pending {
            if p.finding.mm == ev.mm && p.finding.vaddr == ev.vaddr {
                // The page table contradicts it: withdrawn at the audit.
                p.contradicted = true;
            }
        }
    }

    pub(super) fn note_drift(&mut self, ev: &Event, kind: DriftKind, hint: &'static str) {
        // With events lost, the missed event is most likely among them.
        let hint = if self.lost() > 0 {
            "its event may be among those lost (the ring buffer was full); else a path refscope did not see"
        } else {
            hint
        };
        match kind {
            DriftKind::Missing => self.stats.drift_missing += 1,
            DriftKind::Stale => self.stats.drift_stale += 1,
        }
        if self.drift.len() < MAX_DRIFT_KEPT {
            self.drift_open
                .insert((ev.mm.0, ev.vaddr.0), self.drift.len());
            self.drift.push(Drift {
                t: ev.t,
                kind,
                mm: ev.mm,
                pid: ev.pid,
                comm: ev.comm,
                vaddr: ev.vaddr,
                pfn: ev.pfn,
                order: ev.order,
                entry: if kind == DriftKind::Stale {
                    ev.arg_flags
                } else {
                    Hex(0)
                },
                hint,
                late: false,
            });
        }
    }

    /// An event of `kind`'s cause at `t` for `[start, end)` of `mm`: a
    /// divergence there found by a later page-table read was this event
    /// arriving late, not a missed path.
    pub(super) fn explain_late(
        &mut self,
        kind: DriftKind,
        mm: u64,
        start: u64,
        end: u64,
        t: u64,
        pfn: Option<u64>,
    ) {
        let keys: Vec<(u64, u64)> = self
            .drift_open
            .range((mm, start)..(mm, end.max(start)))
            .filter(|(_, i)| {
                let d = &self.drift[**i];
                d.kind == kind && t < d.t && pfn.is_none_or(|p| p == d.pfn)
            })
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            let Some(i) = self.drift_open.remove(&k) else {
                continue;
            };
            let d = &mut self.drift[i];
            d.late = true;
            d.hint = "its event reached refscope after the page table was read: the shadow was behind, no path was missed";
            match kind {
                DriftKind::Missing => self.stats.drift_missing -= 1,
                DriftKind::Stale => self.stats.drift_stale -= 1,
            }
            self.stats.drift_late += 1;
        }
    }

    /// An address space was audited (its corrections came first): settle
    /// the findings that waited for it. Its `t` is when the page table was
    /// read: a finding raised later (its event drained while the table was
    /// read) waits for the next audit, which it has requested, since the
    /// read may predate what it accuses (a copy-on-write replacing the PTE
    /// just before the free that raised it).
    pub(super) fn on_audit(&mut self, ev: &Event) {
        self.stats.audits += 1;
        let mm = ev.mm;
        let gone = ev.failed();
        let (mine, rest): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.finding.mm == mm && (gone || p.finding.t_ns <= ev.t));
        self.pending = rest;
        for p in mine {
            if p.contradicted {
                self.stats.findings_withdrawn += 1;
                continue;
            }
            let still = self
                .mappings
                .get(&(mm.0, p.finding.vaddr.0))
                .is_some_and(|m| m.pfn <= p.finding.pfn && p.finding.pfn < m.pfn + (1 << m.order));
            if gone {
                self.settle(
                    p,
                    Status::Unconfirmed,
                    "the process was gone before its page table could be read",
                );
            } else if still {
                let status = p.finding.status;
                self.settle(p, status, "");
            } else {
                self.settle(
                    p,
                    Status::Unconfirmed,
                    "it was unmapped before its page table could be read",
                );
            }
        }
    }

    /// Address spaces whose page table must be read before findings about
    /// them can be reported (with a pid holding each), since the last call.
    pub fn take_verify_requests(&mut self) -> Vec<(u64, u32)> {
        std::mem::take(&mut self.verify_requests)
            .into_iter()
            .collect()
    }

    /// Findings waiting for their address space's audit.
    pub fn pending_findings(&self) -> usize {
        self.pending.len()
    }

    /// Divergences the audit found (the first [`MAX_DRIFT_KEPT`]).
    pub fn drift(&self) -> &[Drift] {
        &self.drift
    }

    /// The shadow's mappings in address space `mm`, by address.
    pub fn mappings_in(&self, mm: u64) -> impl Iterator<Item = (u64, &Mapping)> {
        self.mappings
            .range((mm, 0)..=(mm, u64::MAX))
            .map(|(&(_, va), m)| (va, m))
    }
}
