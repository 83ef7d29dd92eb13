//! Where events were lost, so rules that need complete data can say
//! "uncertain" instead of asserting.
//!
//! Two sources agree on losses: gaps in a CPU's event sequence numbers (the
//! kernel numbers every event, delivered or not), and the kernel's own drop
//! counters that the recorder writes as loss records. Events from one CPU can
//! arrive slightly out of order when probes nest (an interrupt's probe runs
//! inside another's), so a gap only counts as lost once [`REORDER_WINDOW`]
//! later events from that CPU have not filled it.

/// Later events from the same CPU after which a sequence gap is a loss.
pub const REORDER_WINDOW: u32 = 64;

/// CPUs tracked one by one (Linux's NR_CPUS is at most 8192 on x86-64).
/// A larger CPU number only comes from a corrupt trace: its losses are
/// counted together, and its sequence numbers are not followed (a
/// per-CPU table indexed by it would not fit in memory).
pub const MAX_CPUS: u32 = 8192;

#[derive(Debug, Default, Clone)]
struct Pending {
    from: u64,
    to: u64,
    t_before: u64,
    t_after: u64,
    age: u32,
}

#[derive(Debug, Default, Clone)]
struct CpuSeq {
    started: bool,
    last_seq: u64,
    last_t: u64,
    pending: Vec<Pending>,
    /// Lost events confirmed from sequence gaps.
    gap_lost: u64,
    /// Lost events reported by the kernel's drop counters.
    reported: u64,
}

/// Loss accounting for one trace.
#[derive(Debug, Default, Clone)]
pub struct LossTracker {
    cpus: Vec<CpuSeq>,
    /// Merged, sorted, non-overlapping `[first_t, last_t]` windows.
    windows: Vec<(u64, u64)>,
    /// Drops reported for CPUs at or above [`MAX_CPUS`].
    reported_elsewhere: u64,
}

impl LossTracker {
    /// Account for event `seq` from `cpu` at time `t`. Sequence 0 means
    /// "not from the kernel" (snapshot, synthetic) and is ignored.
    pub fn observe(&mut self, cpu: u32, seq: u64, t: u64) {
        if seq == 0 || cpu >= MAX_CPUS {
            return;
        }
        let idx = cpu as usize;
        if self.cpus.len() <= idx {
            self.cpus.resize(idx + 1, CpuSeq::default());
        }
        let c = &mut self.cpus[idx];
        if !c.started {
            c.started = true;
            if seq > 1 {
                // The kernel numbers from 1: the first ones never arrived.
                c.pending.push(Pending {
                    from: 1,
                    to: seq - 1,
                    t_before: 0,
                    t_after: t,
                    age: 0,
                });
            }
        } else if seq > c.last_seq.saturating_add(1) {
            c.pending.push(Pending {
                from: c.last_seq + 1,
                to: seq - 1,
                t_before: c.last_t,
                t_after: t,
                age: 0,
            });
        } else if seq <= c.last_seq {
            fill(&mut c.pending, seq);
        }
        if seq > c.last_seq {
            c.last_seq = seq;
            c.last_t = t;
        }
        let mut confirmed = Vec::new();
        c.pending.retain_mut(|p| {
            p.age += 1;
            if p.age > REORDER_WINDOW {
                confirmed.push((gap_len(p), p.t_before, p.t_after));
                false
            } else {
                true
            }
        });
        for (n, a, b) in confirmed {
            let c = &mut self.cpus[idx];
            c.gap_lost = c.gap_lost.saturating_add(n);
            self.add_window(a, gap_end(a, b));
        }
    }

    /// A loss record from the kernel's drop counters (`count` new drops on
    /// `cpu` between `first_t` and `last_t`).
    pub fn reported(&mut self, cpu: u32, count: u64, first_t: u64, last_t: u64) {
        if cpu >= MAX_CPUS {
            self.reported_elsewhere = self.reported_elsewhere.saturating_add(count);
        } else {
            let idx = cpu as usize;
            if self.cpus.len() <= idx {
                self.cpus.resize(idx + 1, CpuSeq::default());
            }
            let c = &mut self.cpus[idx];
            c.reported = c.reported.saturating_add(count);
        }
        if count > 0 {
            self.add_window(first_t, last_t);
        }
    }

    /// End of the trace: every open gap is a loss.
    pub fn finish(&mut self) {
        let mut windows = Vec::new();
        for c in &mut self.cpus {
            for p in c.pending.drain(..) {
                c.gap_lost = c.gap_lost.saturating_add(gap_len(&p));
                windows.push((p.t_before, gap_end(p.t_before, p.t_after)));
            }
        }
        for (a, b) in windows {
            self.add_window(a, b);
        }
    }

    /// Events lost so far (the larger of the two sources, per CPU).
    pub fn total(&self) -> u64 {
        self.cpus
            .iter()
            .map(|c| {
                let pending = c
                    .pending
                    .iter()
                    .fold(0u64, |n, p| n.saturating_add(gap_len(p)));
                c.gap_lost.saturating_add(pending).max(c.reported)
            })
            .fold(self.reported_elsewhere, u64::saturating_add)
    }

    /// Whether any loss window overlaps `[t0, t1]`.
    pub fn any_between(&self, t0: u64, t1: u64) -> bool {
        // Open gaps count too: their events may yet prove lost.
        let pending = self
            .cpus
            .iter()
            .flat_map(|c| &c.pending)
            .any(|p| p.t_before <= t1 && gap_end(p.t_before, p.t_after) >= t0);
        if pending {
            return true;
        }
        let i = self.windows.partition_point(|&(_, last)| last < t0);
        self.windows.get(i).is_some_and(|&(first, _)| first <= t1)
    }

    /// Whether anything was lost at all.
    pub fn any(&self) -> bool {
        self.total() > 0
    }

    pub fn windows(&self) -> &[(u64, u64)] {
        &self.windows
    }

    fn add_window(&mut self, first: u64, last: u64) {
        let (first, last) = (first.min(last), first.max(last));
        let i = self.windows.partition_point(|&(_, l)| l < first);
        let mut j = i;
        let (mut a, mut b) = (first, last);
        while j < self.windows.len() && self.windows[j].0 <= b {
            a = a.min(self.windows[j].0);
            b = b.max(self.windows[j].1);
            j += 1;
        }
        self.windows.splice(i..j, [(a, b)]);
    }
}

/// Events in a gap (saturating: a corrupt trace can claim a gap of 2^64).
fn gap_len(p: &Pending) -> u64 {
    (p.to - p.from).saturating_add(1)
}

/// Last possible time of the events lost between two delivered events: they
/// were stamped before the event that revealed the gap.
fn gap_end(t_before: u64, t_after: u64) -> u64 {
    t_after.saturating_sub(1).max(t_before)
}

/// A late event `seq` arrived: take it out of the pending gaps.
fn fill(pending: &mut Vec<Pending>, seq: u64) {
    let Some(i) = pending.iter().position(|p| p.from <= seq && seq <= p.to) else {
        return;
    };
    let p = pending.remove(i);
    if p.from < seq {
        pending.push(Pending {
            to: seq - 1,
            ..p.clone()
        });
    }
    if seq < p.to {
        pending.push(Pending { from: seq + 1, ..p });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_sequences_lose_nothing() {
        let mut l = LossTracker::default();
        for s in 1..=100 {
            l.observe(0, s, s * 10);
            l.observe(1, s, s * 10 + 5);
        }
        l.finish();
        assert_eq!(l.total(), 0);
        assert!(!l.any_between(0, u64::MAX));
    }

    #[test]
    fn a_gap_becomes_a_window_after_the_reorder_window() {
        let mut l = LossTracker::default();
        l.observe(0, 1, 100);
        l.observe(0, 5, 200); // 2..=4 missing
        assert!(
            l.any_between(150, 150),
            "pending gaps already make pages uncertain"
        );
        for s in 6..(6 + REORDER_WINDOW as u64 + 1) {
            l.observe(0, s, 200 + s);
        }
        assert_eq!(l.total(), 3);
        assert!(l.any_between(100, 200));
        assert!(!l.any_between(201, 202));
        assert_eq!(l.windows(), &[(100, 199)]);
    }

    #[test]
    fn out_of_order_arrival_is_not_a_loss() {
        let mut l = LossTracker::default();
        l.observe(0, 1, 1);
        l.observe(0, 3, 3);
        l.observe(0, 2, 2);
        for s in 4..200 {
            l.observe(0, s, s);
        }
        l.finish();
        assert_eq!(l.total(), 0);
    }

    #[test]
    fn missing_first_events_and_open_gaps_at_the_end_count() {
        let mut l = LossTracker::default();
        l.observe(2, 4, 50); // 1..=3 never arrived
        l.observe(2, 9, 60); // 5..=8 open at the end
        l.finish();
        assert_eq!(l.total(), 7);
        assert!(l.any_between(0, 10));
        assert!(l.any_between(55, 55));
    }

    #[test]
    fn reported_drops_and_gaps_are_not_double_counted() {
        let mut l = LossTracker::default();
        l.observe(0, 1, 10);
        l.observe(0, 4, 20);
        l.reported(0, 2, 12, 18);
        l.finish();
        assert_eq!(l.total(), 2);
        l.reported(0, 5, 30, 40); // tail drops no later event revealed
        assert_eq!(l.total(), 7);
        assert!(l.any_between(35, 36));
    }

    #[test]
    fn absurd_cpu_numbers_and_counts_do_not_exhaust_memory_or_overflow() {
        // From a fuzzed trace: `"cpu": 2863311530` made a per-CPU table of
        // 183 GB.
        let mut l = LossTracker::default();
        l.observe(2_863_311_530, 5, 10);
        l.reported(u32::MAX, u64::MAX, 1, 2);
        l.reported(u32::MAX, 7, 3, 4);
        l.observe(0, u64::MAX, 20);
        l.observe(0, u64::MAX, 21);
        l.reported(0, u64::MAX, 5, 6);
        l.finish();
        assert_eq!(l.total(), u64::MAX);
        assert!(l.any_between(1, 2));
    }

    #[test]
    fn windows_merge() {
        let mut l = LossTracker::default();
        l.reported(0, 1, 10, 20);
        l.reported(1, 1, 15, 30);
        l.reported(1, 1, 50, 60);
        assert_eq!(l.windows(), &[(10, 30), (50, 60)]);
        assert!(!l.any_between(31, 49));
        assert!(l.any_between(40, 55));
    }
}
