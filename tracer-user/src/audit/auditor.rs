//! When a session audits its shadow, and what that costs: the
//! [`Auditor`] that `record` and `live` share (through
//! `crate::recorder::Capture`), and one pass of the audit against the
//! attached programs.

use std::time::{Duration, Instant};

use refscope_core::trace::Header;

use crate::{cli::TraceOpts, probe::loader::Attached, snapshot};

use super::{Recording, Scope, Summary};

/// One pass of the shadow audit (`crate::audit`). Problems are warnings:
/// tracing goes on; findings waiting for the audit stay unconfirmed.
pub fn audit(
    attached: &mut Attached,
    rec: &mut impl Recording,
    scope: &Scope,
    reason: u64,
) -> Option<Summary> {
    let mut kernel = match attached.snapshot_kernel() {
        Ok(k) => k,
        Err(e) => {
            log::warn!("the shadow audit cannot read page tables: {e} (--no-audit skips it)");
            return None;
        }
    };
    match super::run(
        &mut kernel,
        &mut snapshot::procfs::RealProcfs::default(),
        rec,
        scope,
        reason,
        std::process::id(),
    ) {
        Ok(sum) => {
            log::debug!("audit: {sum:?}");
            Some(sum)
        }
        Err(e) => {
            log::warn!("the shadow audit failed: {e}");
            None
        }
    }
}

/// How many passes in a row may fail to compare one address space before
/// the audit stops asking for it (the last pass still reads everything).
const AUDIT_RETRIES: u32 = 3;

/// The share of wall time periodic audits may take (docs/rules.md).
const AUDIT_BUDGET: f64 = 0.02;

/// When a session audits its shadow (`record` and `live` alike): the
/// confirmations findings ask for after each read of the ring buffer,
/// periodic passes within [`AUDIT_BUDGET`], a last pass before detaching;
/// and what they cost.
pub struct Auditor {
    scope: Scope,
    every: Option<Duration>,
    next: Option<Instant>,
    /// Address spaces a pass read but could not compare (the ring buffer
    /// held behind a record still being written): verified again, at most
    /// [`AUDIT_RETRIES`] times each (a record that is never committed must
    /// not make every read of the ring buffer wait).
    again: Vec<Retry>,
    pub cost: AuditCost,
}

impl Auditor {
    /// `None` when the session does not audit (`--no-audit`).
    pub fn new(header: &Header, opts: &TraceOpts) -> Option<Auditor> {
        let settings = header.audit?;
        let every = Some(settings.interval_s)
            .filter(|&s| s > 0.0)
            .map(Duration::from_secs_f64);
        Some(Auditor {
            scope: Scope::All {
                pids: opts.pids.clone(),
                comm: opts.comm.clone(),
            },
            every,
            next: every.map(|d| Instant::now() + d),
            again: Vec::new(),
            cost: AuditCost::default(),
        })
    }

    /// Findings waiting for the page table: audit their address spaces now.
    pub fn verify(&mut self, attached: &mut Attached, rec: &mut impl Recording) {
        let mut req = rec.verify_requests();
        for (x, _) in &self.again {
            if !req.contains(x) {
                req.push(*x);
            }
        }
        if !req.is_empty() {
            let pass = audit(
                attached,
                rec,
                &Scope::Only(req),
                refscope_common::audit_reason::VERIFY,
            );
            self.add(pass, true);
        }
    }

    /// Account for a pass; `requested_again`: it was asked for every
    /// address space waiting in `again`.
    fn add(&mut self, pass: Option<Summary>, requested_again: bool) {
        if let Some(s) = &pass {
            let old = std::mem::take(&mut self.again);
            let (next, given_up) = retry_after(&old, &s.unsynced, requested_again);
            for (mm, pid) in given_up {
                log::warn!(
                    "the shadow audit could not compare address space {mm:#x} (pid {pid}) \
                     {AUDIT_RETRIES} times: the ring buffer stays held behind a record still being written"
                );
            }
            self.again = next;
        }
        self.cost.add(pass);
    }

    /// The periodic pass, when it is due. Never more than [`AUDIT_BUDGET`]
    /// of the time: a host with much device memory mapped is audited less
    /// often.
    pub fn tick(&mut self, attached: &mut Attached, rec: &mut impl Recording) {
        if self.next.is_none_or(|at| Instant::now() < at) {
            return;
        }
        let pass = audit(
            attached,
            rec,
            &self.scope,
            refscope_common::audit_reason::PERIODIC,
        );
        let spent = pass.as_ref().map_or(Duration::ZERO, |p| p.elapsed);
        self.add(pass, false);
        self.next = self
            .every
            .map(|d| Instant::now() + d.max(spent.mul_f64(1.0 / AUDIT_BUDGET)));
    }

    /// Before detaching (the ring buffer drained): confirm what waits, the
    /// last audit of everything, then confirm what it raised (findings
    /// raised while it read the tables wait for a read after).
    pub fn finish(&mut self, attached: &mut Attached, rec: &mut impl Recording) {
        self.verify(attached, rec);
        let pass = audit(
            attached,
            rec,
            &self.scope,
            refscope_common::audit_reason::FINAL,
        );
        self.add(pass, false);
        rec.sync();
        self.verify(attached, rec);
    }
}

/// An address space to audit again (id, a pid holding it), and how many
/// passes failed to compare it.
type Retry = ((u64, u32), u32);

/// Address spaces to audit again after a pass that could not compare
/// `unsynced`, from `old` (with the tries each took); `requested_again`:
/// the pass was asked for all of `old`, so those it compared are done.
/// Returns them and those given up after [`AUDIT_RETRIES`] tries.
fn retry_after(
    old: &[Retry],
    unsynced: &[(u64, u32)],
    requested_again: bool,
) -> (Vec<Retry>, Vec<(u64, u32)>) {
    let mut next: Vec<Retry> = Vec::new();
    if !requested_again {
        next.extend(old.iter().filter(|(x, _)| !unsynced.contains(x)).copied());
    }
    let mut given_up = Vec::new();
    for x in unsynced {
        let tries = old.iter().find(|(y, _)| y == x).map_or(0, |(_, n)| *n) + 1;
        if tries < AUDIT_RETRIES {
            next.push((*x, tries));
        } else {
            given_up.push(*x);
        }
    }
    (next, given_up)
}

/// What the audit passes of a session cost, for its summary.
#[derive(Default)]
pub struct AuditCost {
    passes: u64,
    blocks: u64,
    /// Address spaces read but not compared, the ring buffer held.
    unsynced: u64,
    total: Duration,
    max: Duration,
}

impl AuditCost {
    fn add(&mut self, s: Option<Summary>) {
        if let Some(s) = s {
            self.passes += 1;
            self.blocks += s.blocks;
            self.unsynced += s.unsynced.len() as u64;
            self.total += s.elapsed;
            self.max = self.max.max(s.elapsed);
        }
    }

    /// The summary line (none without a pass).
    pub fn line(&self) -> Option<String> {
        (self.passes > 0).then(|| {
            format!(
                "refscope: shadow audit cost: {} pass(es), {} page-table block(s) read, {:.1} ms in all, longest {:.1} ms",
                self.passes,
                self.blocks,
                self.total.as_secs_f64() * 1e3,
                self.max.as_secs_f64() * 1e3
            ) + &if self.unsynced > 0 {
                format!(
                    "; {} address space(s) read again: the ring buffer was held behind a record still being written",
                    self.unsynced
                )
            } else {
                String::new()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_space_not_compared_is_audited_again_a_bounded_number_of_times() {
        let a = (0xa, 1);
        let b = (0xb, 2);
        // A periodic pass could not compare a: due again, first try.
        let (next, gone) = retry_after(&[], &[a], false);
        assert_eq!((next.clone(), gone), (vec![(a, 1)], vec![]));
        // A periodic pass that did not read a keeps it due; b joins.
        let (next, _) = retry_after(&next, &[b], false);
        assert_eq!(next, vec![(a, 1), (b, 1)]);
        // A confirmation asked for both and compared b: a is tried again.
        let (next, gone) = retry_after(&next, &[a], true);
        assert_eq!((next.clone(), gone), (vec![(a, 2)], vec![]));
        // The third failure gives it up.
        let (next, gone) = retry_after(&next, &[a], true);
        assert_eq!(AUDIT_RETRIES, 3);
        assert_eq!((next, gone), (vec![], vec![a]));
    }
}
