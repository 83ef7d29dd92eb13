//! The findings store: raising a finding (deduplicated, capped, held for
//! the audit when it accuses a mapping) and settling one the audit
//! decided.

use super::*;

impl Analyzer {
    pub(super) fn raise<F: FnOnce() -> String>(&mut self, r: Raise<F>) -> Option<usize> {
        let wait = r.rule.needs_page_table() && !self.in_audit;
        if wait && self.pending.iter().any(|p| p.key == r.key) {
            return None;
        }
        match self.dedupe.entry(r.key) {
            Entry::Occupied(e) => {
                let f = &mut self.findings[*e.get()];
                f.occurrences += 1;
                return None;
            }
            Entry::Vacant(v) => {
                if self.findings.len() >= self.cfg.max_findings {
                    self.stats.findings_dropped += 1;
                    return None;
                }
                v.insert(self.findings.len());
            }
        }
        let id = self.findings.len();
        let timeline = self.timeline_of(r.pfn);
        let finding = Finding {
            id: id as u64,
            rule: r.rule,
            severity: r
                .severity
                .unwrap_or_else(|| r.rule.severity(self.cfg.model)),
            status: r.status,
            pfn: r.pfn,
            order: r.order,
            mm: r.mm,
            vaddr: r.vaddr,
            pid: r.pid,
            comm: r.comm,
            t_ns: r.t,
            explanation: (r.explanation)(),
            at_attach: r.at_attach,
            occurrences: 1,
            timeline,
        };
        if wait {
            // Not reported (or counted) until the page table confirms it.
            self.dedupe.remove(&r.key);
            let pid = finding.pid;
            if self.cfg.verify {
                self.verify_requests.insert(finding.mm.0, pid);
            }
            self.pending.push(Pending {
                key: r.key,
                finding,
                contradicted: false,
            });
            if !self.cfg.verify {
                let p = self.pending.pop().expect("just pushed");
                return self.settle(
                    p,
                    Status::Unconfirmed,
                    "the recording did not audit page tables",
                );
            }
            return None;
        }
        self.open_unplug(&finding, id);
        self.findings.push(finding);
        Some(id)
    }

    /// A mapped_after_unplug finding collects every later event on its pages.
    /// A PUD's pages are one folio whose events name its head (GUP events
    /// are reported on the folio's head pfn): the head stands for all.
    pub(super) fn open_unplug(&mut self, f: &Finding, id: usize) {
        if f.rule == RuleId::MappedAfterUnplug {
            let pages = if f.order == PUD_ORDER {
                1
            } else {
                1u64 << f.order
            };
            for p in f.pfn..f.pfn + pages {
                self.unplug_open.entry(p).or_default().push(id);
            }
        }
    }

    /// Report a finding that waited for the page table: `status`
    /// `Unconfirmed` says why it could not be checked.
    pub(super) fn settle(&mut self, p: Pending, status: Status, why: &str) -> Option<usize> {
        let Pending {
            key, mut finding, ..
        } = p;
        if self.findings.len() >= self.cfg.max_findings {
            self.stats.findings_dropped += 1;
            return None;
        }
        if let Entry::Occupied(e) = self.dedupe.entry(key) {
            self.findings[*e.get()].occurrences += 1;
            return None;
        }
        let id = self.findings.len();
        finding.id = id as u64;
        if status == Status::Unconfirmed {
            // Events lost around it (uncertain) is the stronger caveat.
            if finding.status == Status::Definite {
                finding.status = Status::Unconfirmed;
            }
            finding
                .explanation
                .push_str(&format!(" Not confirmed against the page table: {why}."));
        } else if finding.status == Status::Definite {
            finding.explanation.push_str(
                " Confirmed: the kernel's page table still mapped it when refscope read it.",
            );
        }
        self.open_unplug(&finding, id);
        self.dedupe.insert(key, id);
        self.findings.push(finding);
        Some(id)
    }
}

/// Arguments of [`Analyzer::raise`].
/// `explanation` is only called for a finding that is kept: most raises
/// repeat a known finding (or come past the cap), and formatting was most
/// of the hot path's cost.
pub(super) struct Raise<F: FnOnce() -> String> {
    pub(super) rule: RuleId,
    /// Overrides the rule's default severity.
    pub(super) severity: Option<Severity>,
    pub(super) key: DedupeKey,
    pub(super) pfn: u64,
    pub(super) order: u8,
    pub(super) mm: Hex,
    pub(super) vaddr: Hex,
    pub(super) pid: u32,
    pub(super) comm: Comm,
    pub(super) t: u64,
    pub(super) status: Status,
    pub(super) at_attach: bool,
    pub(super) explanation: F,
}

pub(super) fn describe_proc(pid: u32, comm: &Comm) -> String {
    if comm.is_empty() {
        format!("pid {pid}")
    } else {
        format!("{comm} (pid {pid})")
    }
}

pub(super) fn display_name(name: &str) -> &str {
    if name.is_empty() { "(unnamed)" } else { name }
}
