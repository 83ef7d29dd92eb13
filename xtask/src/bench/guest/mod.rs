//! The guest half of `cargo xtask bench`: what one boot runs, the shell
//! script that runs it, and reading back what it left in the share
//! directory. This module holds the plan (tracing modes, workloads and
//! capacity steps); [`shell`] writes the script, [`results`] reads the
//! results.
//!
//! Overhead: for each repetition, each tracing mode in turn (the order
//! rotates from one repetition to the next, so slow drift of the host
//! spreads over all modes) starts its tracer, runs every workload, and
//! stops the tracer. Every workload times its own rounds, so attaching and
//! detaching are outside the measurement. Before and after each workload
//! the script reads the kernel's run-time statistics of the tracer's BPF
//! programs from `/proc/PID/fdinfo` (`run_time_ns`, `run_cnt`: what
//! `bpftool prog` shows; refscope turns the statistics on with
//! `BPF_ENABLE_STATS` for as long as it runs, `refscope bench-floor` too).
//!
//! Capacity: `refscope record` with a 1 MiB ring buffer under a producer
//! paced at rising fractions of the untraced fault rate, then flat out on
//! one and two CPUs: the highest rate without loss. Then past it: a small
//! fixed load of faults and pins with a 4 KiB ring buffer, compared with
//! the same load under the default buffer (which holds all of it): losses
//! counted, no crash, and no definite finding the lossless run lacks.

pub mod results;
pub mod shell;

use serde::Serialize;

/// How a workload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// No tracer.
    Untraced,
    /// `refscope record` (fentry/fexit where the kernel allows: the default).
    Fentry,
    /// `refscope bench-floor`: an empty program wherever `refscope record`
    /// attaches one, with the same kinds (fentry/fexit): the attachment's
    /// own cost, which no tracer on these hooks can beat.
    Floor,
    /// `refscope record` of the binary given with `--baseline` (built from
    /// an older commit), with its defaults: before and after from one boot.
    Baseline,
    /// `refscope record --attach kprobe`.
    Kprobe,
    /// The same functions as kprobe events in tracefs, read from
    /// `trace_pipe` into a file.
    Tracefs,
    /// `refscope record --gup-stacks false`: what capturing a kernel stack
    /// per GUP reference costs.
    FentryNoStacks,
    /// `refscope record --no-audit`: the default without the shadow audit.
    FentryNoAudit,
    /// `refscope record --audit-interval 0.5`: the audit twenty times as
    /// often as by default, so its cost shows.
    FentryAuditFast,
}

/// The guest's name of the `--baseline` binary.
pub const BASELINE_BIN: &str = "refscope-baseline";

/// What starts and stops a mode's tracer in the guest script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracer {
    None,
    /// `BIN record ARGS`: writes a trace whose footer counts events.
    Record {
        bin: &'static str,
        args: &'static str,
    },
    /// `refscope bench-floor`: no trace.
    Floor,
    /// tracefs kprobe events read from trace_pipe.
    Tracefs,
}

impl Mode {
    /// Every mode but [`Mode::Baseline`], which needs a second binary.
    pub const ALL: [Mode; 8] = [
        Mode::Untraced,
        Mode::Fentry,
        Mode::Floor,
        Mode::Kprobe,
        Mode::Tracefs,
        Mode::FentryNoStacks,
        Mode::FentryNoAudit,
        Mode::FentryAuditFast,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Fentry => "fentry",
            Mode::Floor => "floor",
            Mode::Baseline => "baseline",
            Mode::Kprobe => "kprobe",
            Mode::Tracefs => "tracefs",
            Mode::FentryNoStacks => "fentry-nostacks",
            Mode::FentryNoAudit => "fentry-noaudit",
            Mode::FentryAuditFast => "fentry-audit0.5",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Fentry => "`refscope record` (fentry, default)",
            Mode::Floor => "empty programs on the same hooks (floor)",
            Mode::Baseline => "`refscope record` before the change (--baseline)",
            Mode::Kprobe => "`refscope record --attach kprobe`",
            Mode::Tracefs => "tracefs kprobe events, same functions",
            Mode::FentryNoStacks => "`refscope record --gup-stacks false`",
            Mode::FentryNoAudit => "`refscope record --no-audit`",
            Mode::FentryAuditFast => "`refscope record --audit-interval 0.5`",
        }
    }

    pub fn tracer(self) -> Tracer {
        let record = |args| Tracer::Record {
            bin: "refscope",
            args,
        };
        match self {
            Mode::Untraced => Tracer::None,
            Mode::Fentry => record(""),
            Mode::Floor => Tracer::Floor,
            Mode::Baseline => Tracer::Record {
                bin: BASELINE_BIN,
                args: "",
            },
            Mode::Kprobe => record("--attach kprobe"),
            Mode::Tracefs => Tracer::Tracefs,
            Mode::FentryNoStacks => record("--gup-stacks false"),
            Mode::FentryNoAudit => record("--no-audit"),
            Mode::FentryAuditFast => record("--audit-interval 0.5"),
        }
    }

    /// Its tracer is a process whose BPF programs' run-time statistics the
    /// script reads (refscope's, or the floor's empty ones).
    pub fn has_bpf_stats(self) -> bool {
        matches!(self.tracer(), Tracer::Record { .. } | Tracer::Floor)
    }

    /// Its session ends with a footer counting events and losses.
    pub fn has_footer(self) -> bool {
        matches!(self.tracer(), Tracer::Record { .. } | Tracer::Tracefs)
    }

    /// Its programs are attached as the floor's are (fentry/fexit, the
    /// default plan), so its cost per run compares with the floor's.
    pub fn compares_with_floor(self) -> bool {
        self.has_bpf_stats() && !matches!(self, Mode::Floor | Mode::Kprobe)
    }
}

/// The modes of one run: every mode, and [`Mode::Baseline`] after the
/// floor when there is a baseline binary.
pub fn modes(baseline: bool) -> Vec<Mode> {
    let mut v = Mode::ALL.to_vec();
    if baseline {
        let at = v
            .iter()
            .position(|m| *m == Mode::Floor)
            .map_or(v.len(), |i| i + 1);
        v.insert(at, Mode::Baseline);
    }
    v
}

/// One workload of the overhead runs.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub name: &'static str,
    pub about: &'static str,
    /// Touches device memory (else it is the "unrelated work" baseline).
    pub device: bool,
    /// `refscope-workload` arguments.
    pub args: String,
    /// Field of the workload's `done` line that counts units per round.
    pub unit_field: &'static str,
    /// What a unit is, for the table.
    pub unit: &'static str,
}

pub fn workloads(quick: bool) -> Vec<Workload> {
    // Enough rounds that one of them escapes the host's other work (the
    // best round counts), few enough that a session's events (about 75,000)
    // fit the default 16 MiB ring buffer however slowly the consumer runs.
    let (mib, rounds) = if quick { (4, 3) } else { (16, 8) };
    vec![
        Workload {
            name: "dax-faults",
            about: "map a DAX file, write-fault every page (PTEs), unmap",
            device: true,
            args: format!("fault-bench --size {mib} --rounds {rounds}"),
            unit_field: "pages",
            unit: "faults",
        },
        Workload {
            name: "dax-pins",
            about: "pin mapped DAX pages with process_vm_readv (FOLL_PIN), 64 per call",
            device: true,
            args: format!(
                "pin-bench --pages 1024 --batch 64 --rounds {}",
                if quick { 5 } else { 20 }
            ),
            unit_field: "pages",
            unit: "pins",
        },
        Workload {
            name: "anon-faults",
            about: "the fault loop on anonymous memory (no device memory)",
            device: false,
            args: format!("anon-bench --size {mib} --rounds {rounds}"),
            unit_field: "pages",
            unit: "faults",
        },
        Workload {
            name: "exec-loop",
            about: "fork + exec + wait of /bin/true (no device memory)",
            device: false,
            args: format!(
                "exec-bench --count {} --rounds {}",
                if quick { 20 } else { 50 },
                rounds
            ),
            unit_field: "count",
            unit: "execs",
        },
    ]
}

/// Everything the guest runs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub reps: usize,
    pub modes: Vec<Mode>,
    pub workloads: Vec<Workload>,
    pub capacity: bool,
    /// Target seconds of each capacity step (at the untraced rate).
    pub cap_secs: f64,
}

/// A producer in a capacity step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Producer {
    /// fault-bench on 8 MiB for about the step's seconds, paced at this
    /// fraction of the untraced fault rate (None: flat out).
    Faults(Option<f64>),
    /// A fixed small load, flat out: 3 rounds of fault-bench on 8 MiB, or
    /// 6 rounds of pin-bench on 1024 pages; together about 20,000 events,
    /// which the default ring buffer holds however slow the consumer is.
    FewFaults,
    FewPins,
}

/// One step of the capacity test.
#[derive(Debug, Clone)]
pub struct CapStep {
    pub name: &'static str,
    pub ring: &'static str,
    pub producers: Vec<Producer>,
    /// Summarise the findings (`refscope report --json` in the guest).
    pub findings: bool,
}

/// Ring buffer of the rate ladder: small enough that a consumer slower
/// than the producers overflows it within a step (about 6,500 records of
/// 160 bytes), not hidden by buffering.
pub const LADDER_RING: &str = "1M";
/// The overflow step's ring buffer (the ring-overflow scenario's).
pub const OVERFLOW_RING: &str = "4096";
/// The lossless run the overflow is compared with.
pub const REFERENCE_STEP: &str = "fault+pin-16M";
pub const OVERFLOW_STEP: &str = "fault+pin-4K";

pub fn cap_steps() -> Vec<CapStep> {
    use Producer::{Faults, FewFaults, FewPins};
    let step = |name, ring, producers, findings| CapStep {
        name,
        ring,
        producers,
        findings,
    };
    let mut steps: Vec<CapStep> = [
        ("paced-5", 0.05),
        ("paced-10", 0.1),
        ("paced-15", 0.15),
        ("paced-20", 0.2),
        ("paced-30", 0.3),
    ]
    .into_iter()
    .map(|(name, frac)| step(name, LADDER_RING, vec![Faults(Some(frac))], false))
    .collect();
    steps.extend([
        step("flat-1cpu", LADDER_RING, vec![Faults(None)], false),
        step(REFERENCE_STEP, "16M", vec![FewFaults, FewPins], true),
        step(OVERFLOW_STEP, OVERFLOW_RING, vec![FewFaults, FewPins], true),
    ]);
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_runs_after_the_floor_only_when_given() {
        assert!(!modes(false).contains(&Mode::Baseline));
        let m = modes(true);
        assert_eq!(
            &m[..4],
            [Mode::Untraced, Mode::Fentry, Mode::Floor, Mode::Baseline]
        );
        assert_eq!(m.len(), Mode::ALL.len() + 1);
        assert_eq!(
            Mode::Baseline.tracer(),
            Tracer::Record {
                bin: BASELINE_BIN,
                args: ""
            }
        );
        // The floor's statistics are read, it has no trace footer, and it
        // is no mode to compare with itself; kprobes differ in kind.
        assert!(Mode::Floor.has_bpf_stats() && !Mode::Floor.has_footer());
        assert!(!Mode::Floor.compares_with_floor() && !Mode::Kprobe.compares_with_floor());
        assert!(Mode::Baseline.compares_with_floor() && Mode::FentryNoStacks.compares_with_floor());
        assert!(!Mode::Tracefs.has_bpf_stats() && Mode::Tracefs.has_footer());
    }
}
