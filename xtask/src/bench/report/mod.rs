//! From measurements to the published numbers: ratios with their spread,
//! the in-kernel cost, capacity and the goals, here; [`table`]
//! turns them into the markdown table.

pub mod table;

use std::collections::BTreeSet;

use serde::Serialize;

use super::{
    guest::{
        self, Mode,
        results::{CapResult, GuestData, Session},
    },
    host::HostData,
    stats::{self, Spread},
};

/// Throughput of one workload under each mode, relative to untraced.
#[derive(Debug, Clone, Serialize)]
pub struct OverheadRow {
    pub workload: String,
    pub about: String,
    pub device: bool,
    pub unit: String,
    /// Untraced units per second in the guest (TCG: only for scale).
    pub untraced_per_sec: Option<Spread>,
    /// Per repetition: traced rate / untraced rate of the same repetition.
    pub ratios: Vec<(Mode, Option<Spread>)>,
}

impl OverheadRow {
    pub fn ratio(&self, mode: Mode) -> Option<Spread> {
        self.ratios
            .iter()
            .find(|(m, _)| *m == mode)
            .and_then(|r| r.1)
    }
}

/// In-kernel cost of a tracer's programs on one workload (refscope's, or
/// the floor's empty ones).
#[derive(Debug, Clone, Serialize)]
pub struct BpfRow {
    pub workload: String,
    pub mode: Mode,
    pub unit: String,
    pub programs: u64,
    /// Program runs per unit of work (fault, pin, exec), all repetitions.
    pub runs_per_unit: f64,
    /// Mean run time of a program per repetition, from the kernel's
    /// statistics (TCG: inflated, and by host contention too).
    pub ns_per_run: Option<Spread>,
    /// Per repetition: `ns_per_run` over the floor's of the same
    /// repetition (modes attached as the floor is; see
    /// [`Mode::compares_with_floor`]).
    pub ns_per_run_vs_floor: Option<Spread>,
    /// Per repetition: BPF time per unit of work over the untraced time of
    /// a unit (best round).
    pub share_of_untraced: Option<Spread>,
    /// Per repetition: BPF time per unit over the time tracing added to a
    /// unit (repetitions where it added time).
    pub share_of_added: Option<Spread>,
    /// Per repetition: the time tracing added to a unit of work,
    /// `1/traced rate - 1/untraced rate` (TCG nanoseconds).
    pub added_ns_per_unit: Option<Spread>,
    /// Per repetition: `added_ns_per_unit` over the floor's of the same
    /// repetition (repetitions where both added time).
    pub added_vs_floor: Option<Spread>,
    pub recursion_misses: f64,
}

/// What the capacity test showed.
#[derive(Debug, Clone, Serialize)]
pub struct Capacity {
    /// Highest producer rate of a ladder step with no loss (TCG events/s).
    pub max_lossless_rate: Option<f64>,
    pub max_lossless_step: Option<String>,
    /// The same over the untraced rate one CPU faults DAX pages at.
    pub max_lossless_vs_untraced: Option<f64>,
    /// Whether the lossless ladder ran out of producers before it lost.
    pub no_loss_at_top: bool,
    pub overflow_lost: Option<u64>,
    /// refscope exited 0 after the overflow.
    pub overflow_survived: bool,
    /// Definite findings in the overflow run of rules with no definite
    /// finding in the lossless reference run.
    pub false_definite: Vec<String>,
    pub overflow_uncertain: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub what: String,
    pub target: String,
    pub measured: String,
    /// Whether the medians meet the target; None: not measured in this run.
    pub met: Option<bool>,
    /// For a goal comparing two modes: whether the min–max ranges of the
    /// two sides (the second shifted or scaled as the target says) share
    /// a value. If they do, the repetitions do not support the gap the
    /// medians show, and a goal the medians meet is not claimed met.
    pub ranges_overlap: Option<bool>,
}

impl Goal {
    fn new(what: String, target: impl Into<String>, measured: String, met: Option<bool>) -> Goal {
        Goal {
            what,
            target: target.into(),
            measured,
            met,
            ranges_overlap: None,
        }
    }

    /// "met", "**missed**", "not run", or "**unresolved**" where the medians
    /// meet a comparison the ranges do not separate.
    pub fn verdict(&self) -> &'static str {
        match (self.met, self.ranges_overlap) {
            (None, _) => "not run",
            (Some(false), _) => "**missed**",
            (Some(true), Some(true)) => "**unresolved** (medians meet it, ranges overlap)",
            (Some(true), _) => "met",
        }
    }
}

/// The other side of a goal comparing two modes: the other mode's
/// measurements, and the shift or scale the target applies to them.
struct Against {
    other: Option<Spread>,
    /// How the target changes the other side, shown after it: `+ 0.05`.
    how: String,
    apply: Box<dyn Fn(f64) -> f64>,
}

impl Against {
    fn new(other: Option<Spread>, how: String, apply: impl Fn(f64) -> f64 + 'static) -> Self {
        Against {
            other,
            how,
            apply: Box::new(apply),
        }
    }
}

/// A goal that `lhs` (of one mode) is at least (`at_least`) or at most
/// the other side, shifted or scaled as the target says: medians decide
/// `met`, the ranges (the other's shifted or scaled alike)
/// `ranges_overlap`. `show` formats a side.
fn compare(
    what: String,
    target: String,
    lhs: Option<Spread>,
    rhs: Against,
    at_least: bool,
    show: impl Fn(&Spread) -> String,
) -> Goal {
    let Some((l, raw)) = lhs.zip(rhs.other) else {
        return Goal::new(what, target, "not measured".into(), None);
    };
    let r = raw.map(&rhs.apply);
    let overlap = l.overlaps(&r);
    Goal {
        what,
        target,
        measured: format!(
            "{} vs {} {}; ranges {}",
            show(&l),
            show(&raw),
            rhs.how,
            if overlap { "overlap" } else { "apart" }
        ),
        met: Some(if at_least {
            l.median >= r.median
        } else {
            l.median <= r.median
        }),
        ranges_overlap: Some(overlap),
    }
}

/// The guest's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct GuestSummary {
    pub overhead: Vec<OverheadRow>,
    pub bpf: Vec<BpfRow>,
    /// Per mode: median events and losses of the tracer sessions, attach
    /// seconds, failed sessions.
    pub sessions: Vec<SessionRow>,
    pub capacity: Option<Capacity>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionRow {
    pub mode: Mode,
    pub sessions: usize,
    pub failed: usize,
    pub events: Option<Spread>,
    pub lost: u64,
    pub attach_secs: Option<Spread>,
    pub audits: Option<Spread>,
}

pub fn summarize_guest(g: &GuestData, plan: &guest::Plan) -> GuestSummary {
    let find = |rep: usize, mode: Mode, w: &str| {
        g.runs
            .iter()
            .find(|r| r.rep == rep && r.mode == mode && r.workload == w && r.ok)
    };
    let rate = |rep: usize, mode: Mode, w: &str| find(rep, mode, w).and_then(|r| r.per_sec);
    // What the tracer's programs cost per run in a repetition.
    let ns_per_run = |rep: usize, mode: Mode, w: &str| {
        let b = find(rep, mode, w).filter(|r| r.units > 0.0)?.bpf?;
        (b.run_cnt > 0.0).then(|| b.run_time_ns / b.run_cnt)
    };
    // What tracing added to a unit of work in a repetition (TCG ns).
    let added = |rep: usize, mode: Mode, w: &str| {
        Some(1e9 / rate(rep, mode, w)? - 1e9 / rate(rep, Mode::Untraced, w)?)
    };
    let has_floor = plan.modes.contains(&Mode::Floor);
    let mut overhead = Vec::new();
    let mut bpf = Vec::new();
    for w in &plan.workloads {
        let reps = || 1..=plan.reps;
        let untraced: Vec<f64> = reps()
            .filter_map(|rep| rate(rep, Mode::Untraced, w.name))
            .collect();
        let mut ratios = Vec::new();
        for &mode in plan.modes.iter().filter(|m| **m != Mode::Untraced) {
            let r: Vec<f64> = reps()
                .filter_map(|rep| {
                    Some(rate(rep, mode, w.name)? / rate(rep, Mode::Untraced, w.name)?)
                })
                .collect();
            ratios.push((mode, stats::spread(&r)));
            if !mode.has_bpf_stats() {
                continue;
            }
            let mut units = 0.0;
            let mut cnt = 0.0;
            let mut miss = 0.0;
            let mut progs = 0;
            let (mut share_un, mut share_add) = (Vec::new(), Vec::new());
            for rep in reps() {
                let Some(r) = find(rep, mode, w.name).filter(|r| r.units > 0.0) else {
                    continue;
                };
                let Some(b) = r.bpf else { continue };
                units += r.units;
                cnt += b.run_cnt;
                miss += b.recursion_misses;
                progs = progs.max(b.programs);
                let bpf_per_unit = b.run_time_ns / r.units;
                if let Some(u) = rate(rep, Mode::Untraced, w.name) {
                    share_un.push(bpf_per_unit / (1e9 / u));
                }
                if let Some(a) = added(rep, mode, w.name)
                    && a > 0.0
                {
                    share_add.push(bpf_per_unit / a);
                }
            }
            if units == 0.0 {
                continue;
            }
            let vs_floor = has_floor && mode.compares_with_floor();
            let ns_vs_floor: Vec<f64> = reps()
                .filter(|_| vs_floor)
                .filter_map(|rep| {
                    Some(ns_per_run(rep, mode, w.name)? / ns_per_run(rep, Mode::Floor, w.name)?)
                })
                .collect();
            // A difference of two noisy rates: where either is not above
            // zero (noise larger than the cost), the quotient means nothing.
            let added_vs_floor: Vec<f64> = reps()
                .filter(|_| vs_floor)
                .filter_map(|rep| {
                    let floor = added(rep, Mode::Floor, w.name).filter(|f| *f > 0.0)?;
                    Some(added(rep, mode, w.name).filter(|a| *a > 0.0)? / floor)
                })
                .collect();
            bpf.push(BpfRow {
                workload: w.name.into(),
                mode,
                unit: w.unit.into(),
                programs: progs,
                runs_per_unit: cnt / units,
                ns_per_run: stats::spread(
                    &reps()
                        .filter_map(|rep| ns_per_run(rep, mode, w.name))
                        .collect::<Vec<_>>(),
                ),
                ns_per_run_vs_floor: stats::spread(&ns_vs_floor),
                share_of_untraced: stats::spread(&share_un),
                share_of_added: stats::spread(&share_add),
                added_ns_per_unit: stats::spread(
                    &reps()
                        .filter_map(|rep| added(rep, mode, w.name))
                        .collect::<Vec<_>>(),
                ),
                added_vs_floor: stats::spread(&added_vs_floor),
                recursion_misses: miss,
            });
        }
        overhead.push(OverheadRow {
            workload: w.name.into(),
            about: w.about.into(),
            device: w.device,
            unit: w.unit.into(),
            untraced_per_sec: stats::spread(&untraced),
            ratios,
        });
    }
    let sessions = plan
        .modes
        .iter()
        .filter(|m| **m != Mode::Untraced)
        .map(|&mode| {
            let s: Vec<&Session> = g.sessions.iter().filter(|s| s.mode == mode).collect();
            let ok: Vec<&&Session> = s
                .iter()
                .filter(|s| s.status == Some(0) && (s.events.is_some() || !mode.has_footer()))
                .collect();
            SessionRow {
                mode,
                sessions: s.len(),
                failed: s.len() - ok.len(),
                events: stats::spread(
                    &ok.iter()
                        .filter_map(|s| s.events.map(|e| e as f64))
                        .collect::<Vec<_>>(),
                ),
                lost: ok.iter().filter_map(|s| s.lost).sum(),
                attach_secs: stats::spread(
                    &s.iter().filter_map(|s| s.attach_secs).collect::<Vec<_>>(),
                ),
                audits: stats::spread(
                    &ok.iter()
                        .filter_map(|s| s.audits.map(|a| a as f64))
                        .collect::<Vec<_>>(),
                ),
            }
        })
        .collect();
    GuestSummary {
        overhead,
        bpf,
        sessions,
        capacity: plan.capacity.then(|| capacity(g)),
    }
}

fn capacity(g: &GuestData) -> Capacity {
    let ladder: Vec<&CapResult> = g
        .capacity
        .iter()
        .filter(|c| c.ring == guest::LADDER_RING)
        .collect();
    let lossless = ladder
        .iter()
        .filter(|c| c.lost == Some(0) && c.status == Some(0) && c.producers_ok)
        .filter_map(|c| Some((c.rate?, c.name.clone())))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let no_loss_at_top = ladder
        .last()
        .is_some_and(|c| c.lost == Some(0) && c.status == Some(0));
    let step = |name: &str| g.capacity.iter().find(|c| c.name == name);
    let definite = |c: Option<&CapResult>| -> BTreeSet<String> {
        c.and_then(|c| c.findings.as_ref())
            .map(|f| {
                f.iter()
                    .filter(|(_, s)| s.get("definite").copied().unwrap_or(0) > 0)
                    .map(|(r, _)| r.clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    let reference = definite(step(guest::REFERENCE_STEP));
    let over = step(guest::OVERFLOW_STEP);
    let false_definite = definite(over)
        .into_iter()
        .filter(|r| !reference.contains(r))
        .collect();
    Capacity {
        max_lossless_rate: lossless.as_ref().map(|l| l.0),
        max_lossless_step: lossless.as_ref().map(|l| l.1.clone()),
        max_lossless_vs_untraced: match (&lossless, g.untraced_rate) {
            (Some(l), Some(u)) if u > 0.0 => Some(l.0 / u),
            _ => None,
        },
        no_loss_at_top,
        overflow_lost: over.and_then(|c| c.lost),
        overflow_survived: over.is_some_and(|c| c.status == Some(0) && c.events.is_some()),
        false_definite,
        overflow_uncertain: over
            .and_then(|c| c.findings.as_ref())
            .map(|f| {
                f.values()
                    .map(|s| s.get("uncertain").copied().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0),
    }
}

/// The least fentry / untraced ratio on the fault-heavy workload.
pub const FAULTS_MIN: f64 = 0.90;
/// How far above tracefs's ratio refscope's must be.
pub const TRACEFS_MARGIN: f64 = 0.05;
/// How much longer a pin may take with a stack per GUP reference than
/// without (`--gup-stacks false`).
pub const STACKS_MAX: f64 = 1.2;
/// refscope's BPF time per run over the empty programs', at most.
pub const FLOOR_MAX: f64 = 1.5;

/// The goals against this run.
pub fn goals(g: Option<&GuestSummary>, h: Option<&HostData>) -> Vec<Goal> {
    let mut out = Vec::new();
    let row = |name: &str| g.and_then(|g| g.overhead.iter().find(|r| r.workload == name));
    let ratio = |wl: &str, mode: Mode| row(wl).and_then(|r| r.ratio(mode));
    let ratio_goal = |out: &mut Vec<Goal>, what: &str, wl: &str, min: f64| {
        let s = ratio(wl, Mode::Fentry);
        out.push(Goal::new(
            format!("{what} (`{wl}`, fentry / untraced)"),
            format!(">= {min:.2}"),
            s.map_or("not measured".into(), |s| s.show(2)),
            s.map(|s| s.median >= min),
        ));
    };
    let two = |s: &Spread| s.show(2);
    ratio_goal(
        &mut out,
        "overhead on the fault-heavy workload",
        "dax-faults",
        FAULTS_MIN,
    );
    for wl in ["dax-faults", "dax-pins"] {
        out.push(compare(
            format!("lower overhead than tracefs kprobe events (`{wl}`)"),
            format!("fentry ratio >= tracefs ratio + {TRACEFS_MARGIN:.2}"),
            ratio(wl, Mode::Fentry),
            Against::new(
                ratio(wl, Mode::Tracefs),
                format!("+ {TRACEFS_MARGIN:.2}"),
                |x| x + TRACEFS_MARGIN,
            ),
            true,
            two,
        ));
    }
    // Time per pin with stacks at most STACKS_MAX times the time without:
    // 1/fentry <= STACKS_MAX / nostacks.
    out.push(compare(
        "a kernel stack per GUP reference costs at most 20% (`dax-pins`, time per pin with stacks over `--gup-stacks false`)".into(),
        format!("fentry ratio >= nostacks ratio / {STACKS_MAX}"),
        ratio("dax-pins", Mode::Fentry),
        Against::new(
            ratio("dax-pins", Mode::FentryNoStacks),
            format!("/ {STACKS_MAX}"),
            |x| x / STACKS_MAX,
        ),
        true,
        two,
    ));
    let bpf = |wl: &str, mode: Mode| {
        g.and_then(|g| g.bpf.iter().find(|b| b.workload == wl && b.mode == mode))
    };
    for wl in ["dax-faults", "dax-pins"] {
        let ns = |mode: Mode| bpf(wl, mode).and_then(|b| b.ns_per_run);
        let mut goal = compare(
            format!(
                "BPF time per run at most {FLOOR_MAX}x the empty-program floor on the same hooks (`{wl}`)"
            ),
            format!("fentry ns per run <= {FLOOR_MAX} x floor's"),
            ns(Mode::Fentry),
            Against::new(ns(Mode::Floor), format!("x {FLOOR_MAX}"), |x| x * FLOOR_MAX),
            false,
            |s| format!("{} ns", s.show(0)),
        );
        // The verdict: the ratio of each repetition, not of the medians.
        if let Some(x) = bpf(wl, Mode::Fentry).and_then(|f| f.ns_per_run_vs_floor) {
            goal.met = Some(x.median <= FLOOR_MAX);
            goal.measured = format!("{}x floor; {}", x.show(2), goal.measured);
        }
        out.push(goal);
    }
    ratio_goal(&mut out, "unrelated workload", "anon-faults", 0.99);
    ratio_goal(&mut out, "unrelated workload", "exec-loop", 0.98);
    if let Some(c) = g.and_then(|g| g.capacity.as_ref()) {
        out.push(Goal {
            what: "past capacity: losses counted, no crash, no false definite finding".into(),
            target: "lost > 0, exit 0, none".into(),
            measured: format!(
                "lost {}, {}, {}",
                c.overflow_lost.map_or("?".into(), |l| l.to_string()),
                if c.overflow_survived {
                    "exit 0"
                } else {
                    "FAILED"
                },
                if c.false_definite.is_empty() {
                    "none".to_owned()
                } else {
                    c.false_definite.join(", ")
                }
            ),
            met: Some(
                c.overflow_lost.is_some_and(|l| l > 0)
                    && c.overflow_survived
                    && c.false_definite.is_empty(),
            ),
            ranges_overlap: None,
        });
    }
    let crit = |model: &str| {
        h.and_then(|h| {
            h.criterion
                .iter()
                .find(|c| c.group == model && c.bench == "decode+analyze")
        })
    };
    for model in ["idle_one", "refcounted"] {
        let c = crit(model);
        out.push(Goal {
            what: format!("decode + analysis on one core ({model} model)"),
            target: ">= 5 M events/s".into(),
            measured: c.map_or("not measured".into(), |c| {
                format!("{:.2} M events/s", c.per_sec / 1e6)
            }),
            met: c.map(|c| c.per_sec >= 5e6),
            ranges_overlap: None,
        });
    }
    let rep = h.and_then(|h| h.report.iter().find(|r| r.what == super::host::REPORT_TEXT));
    out.push(Goal {
        what: "`refscope report` throughput (per CPU second)".into(),
        target: ">= 200 MB/s".into(),
        measured: rep.map_or("not measured".into(), |r| {
            format!("{:.0} MB/s", r.mb_per_sec)
        }),
        met: rep.map(|r| r.mb_per_sec >= 200.0),
        ranges_overlap: None,
    });
    let page = h.and_then(|h| {
        h.pages
            .iter()
            .find(|p| p.variant == super::host::PAGES_STATE)
    });
    out.push(Goal {
        what: "state per tracked page besides timelines (peak RSS)".into(),
        target: "<= 64 bytes".into(),
        measured: page.map_or("not measured".into(), |p| {
            format!("{:.0} bytes", p.bytes_per_page)
        }),
        met: page.map(|p| p.bytes_per_page <= 64.0),
        ranges_overlap: None,
    });
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{table::markdown, *};
    use crate::bench::guest::{
        Plan,
        results::{BpfDelta, Run},
        workloads,
    };

    fn run(rep: usize, mode: Mode, w: &str, per_sec: f64, bpf: Option<BpfDelta>) -> Run {
        Run {
            rep,
            mode,
            workload: w.into(),
            ok: true,
            per_sec: Some(per_sec),
            units: 1000.0,
            bpf,
        }
    }

    fn cap(name: &str, ring: &str, rate: f64, lost: u64, definite: &[&str]) -> CapResult {
        let mut f: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for r in definite {
            f.entry((*r).into())
                .or_default()
                .insert("definite".into(), 3);
        }
        CapResult {
            name: name.into(),
            ring: ring.into(),
            producers: 1,
            producers_ok: true,
            status: Some(0),
            events: Some(1000),
            lost: Some(lost),
            window_secs: Some(1.0),
            rate: Some(rate),
            findings: (!definite.is_empty()).then_some(f),
        }
    }

    #[test]
    fn ratios_costs_capacity_and_goals() {
        let plan = Plan {
            reps: 2,
            modes: vec![Mode::Untraced, Mode::Fentry, Mode::Tracefs],
            workloads: workloads(true)[..1].to_vec(),
            capacity: true,
            cap_secs: 1.0,
        };
        let b = BpfDelta {
            programs: 25,
            run_time_ns: 2_000_000.0,
            run_cnt: 1000.0,
            recursion_misses: 0.0,
        };
        let data = GuestData {
            kernel_release: "6.12".into(),
            hooks: vec![],
            tracefs_probes: Some(30),
            runs: vec![
                run(1, Mode::Untraced, "dax-faults", 1000.0, None),
                run(1, Mode::Fentry, "dax-faults", 500.0, Some(b)),
                run(1, Mode::Tracefs, "dax-faults", 400.0, None),
                run(2, Mode::Untraced, "dax-faults", 800.0, None),
                run(2, Mode::Fentry, "dax-faults", 600.0, Some(b)),
                run(2, Mode::Tracefs, "dax-faults", 400.0, None),
            ],
            sessions: vec![],
            untraced_rate: Some(1000.0),
            capacity: vec![
                cap("paced-10", guest::LADDER_RING, 250.0, 0, &[]),
                cap("flat-1cpu", guest::LADDER_RING, 600.0, 0, &[]),
                cap("flat-2cpu", guest::LADDER_RING, 900.0, 10, &[]),
                cap(
                    guest::REFERENCE_STEP,
                    "16M",
                    900.0,
                    0,
                    &["zero_ref_mapping"],
                ),
                cap(
                    guest::OVERFLOW_STEP,
                    guest::OVERFLOW_RING,
                    900.0,
                    500,
                    &["zero_ref_mapping", "pin_leak"],
                ),
            ],
            complete: true,
        };
        let sum = summarize_guest(&data, &plan);
        let row = &sum.overhead[0];
        // Ratios per repetition: 0.5 and 0.75.
        let f = row.ratio(Mode::Fentry).unwrap();
        assert_eq!((f.median, f.min, f.max), (0.625, 0.5, 0.75));
        assert_eq!(row.ratio(Mode::Tracefs).unwrap().median, 0.45);
        let bpf = &sum.bpf[0];
        assert_eq!(bpf.runs_per_unit, 1.0);
        assert_eq!(bpf.ns_per_run.unwrap().median, 2000.0);
        // BPF: 2 ms per 1000 units, 2 µs per unit; untraced units take 1
        // and 1.25 ms; tracing added 1 and 0.42 ms.
        let un = bpf.share_of_untraced.unwrap();
        assert!((un.min - 0.0016).abs() < 1e-9 && (un.max - 0.002).abs() < 1e-9);
        let add = bpf.share_of_added.unwrap();
        assert!((add.min - 0.002).abs() < 1e-9 && (add.max - 0.0048).abs() < 1e-9);
        let c = sum.capacity.as_ref().unwrap();
        assert_eq!(c.max_lossless_rate, Some(600.0));
        assert_eq!(c.max_lossless_step.as_deref(), Some("flat-1cpu"));
        assert!(!c.no_loss_at_top);
        assert_eq!(c.false_definite, vec!["pin_leak".to_owned()]);
        let goals = goals(Some(&sum), None);
        let by = |w: &str| goals.iter().find(|g| g.what.contains(w)).unwrap();
        assert_eq!(by("fault-heavy").met, Some(false));
        assert_eq!(by("tracefs kprobe events (`dax-faults`)").met, Some(true));
        assert_eq!(by("past capacity").met, Some(false));
        assert_eq!(by("report").met, None);
        let md = markdown(&goals, Some((&sum, &data)), None);
        assert!(md.contains("| `dax-faults`: "));
        assert!(md.contains("0.62 [0.50–0.75]"));
        assert!(md.contains("**missed**"));
    }

    fn bpf(ns: f64, runs: f64) -> Option<BpfDelta> {
        Some(BpfDelta {
            programs: 29,
            run_time_ns: ns * runs,
            run_cnt: runs,
            recursion_misses: 0.0,
        })
    }

    fn session(rep: usize, mode: Mode, status: i32, events: Option<u64>) -> Session {
        Session {
            rep,
            mode,
            status: Some(status),
            events,
            lost: events.map(|_| 0),
            attach_secs: Some(1.0),
            audits: None,
        }
    }

    /// Three repetitions of untraced, fentry, the floor, tracefs and
    /// fentry-nostacks on the two device workloads, with the rates and
    /// program costs given per mode (the same in every repetition unless
    /// `spread` widens them).
    fn floor_data(spread: f64) -> (GuestData, Plan) {
        let plan = Plan {
            reps: 3,
            modes: vec![
                Mode::Untraced,
                Mode::Fentry,
                Mode::Floor,
                Mode::Tracefs,
                Mode::FentryNoStacks,
            ],
            workloads: workloads(true)[..2].to_vec(),
            capacity: false,
            cap_secs: 1.0,
        };
        let mut runs = Vec::new();
        for rep in 1..=3 {
            // -1, 0, +1 times `spread` around the rate.
            let wobble = 1.0 + (rep as f64 - 2.0) * spread;
            for w in ["dax-faults", "dax-pins"] {
                // Untraced: 1 ms per unit. Floor: 1.1 ms; fentry: 1.5 ms
                // (0.91 and 0.67 of untraced).
                runs.push(run(rep, Mode::Untraced, w, 1000.0, None));
                runs.push(run(rep, Mode::Floor, w, 1000.0 / 1.1, bpf(200.0, 1000.0)));
                runs.push(run(
                    rep,
                    Mode::Fentry,
                    w,
                    1000.0 / 1.5 * wobble,
                    bpf(250.0 * wobble, 1000.0),
                ));
                runs.push(run(rep, Mode::Tracefs, w, 600.0, None));
                runs.push(run(rep, Mode::FentryNoStacks, w, 700.0, bpf(300.0, 1000.0)));
            }
        }
        let sessions = vec![
            session(1, Mode::Fentry, 0, Some(10)),
            session(1, Mode::Floor, 0, None),
            session(2, Mode::Floor, 255, None),
            session(1, Mode::Tracefs, 0, None),
        ];
        let data = GuestData {
            kernel_release: "6.12".into(),
            hooks: vec![],
            tracefs_probes: None,
            runs,
            sessions,
            untraced_rate: None,
            capacity: vec![],
            complete: true,
        };
        (data, plan)
    }

    #[test]
    fn modes_compare_with_the_floor_of_the_same_repetition() {
        let (data, plan) = floor_data(0.0);
        let sum = summarize_guest(&data, &plan);
        let row = |mode: Mode| {
            sum.bpf
                .iter()
                .find(|b| b.workload == "dax-faults" && b.mode == mode)
                .unwrap()
        };
        let (f, floor) = (row(Mode::Fentry), row(Mode::Floor));
        assert_eq!(f.runs_per_unit, floor.runs_per_unit);
        assert_eq!(f.ns_per_run_vs_floor.unwrap().median, 1.25);
        assert!(floor.ns_per_run_vs_floor.is_none() && floor.added_vs_floor.is_none());
        // Added per unit: fentry 0.5 ms, the floor 0.1 ms.
        let added = f.added_ns_per_unit.unwrap();
        assert!((added.median - 500_000.0).abs() < 1e-3, "{added:?}");
        assert!((f.added_vs_floor.unwrap().median - 5.0).abs() < 1e-9);
        assert!(
            (row(Mode::FentryNoStacks)
                .ns_per_run_vs_floor
                .unwrap()
                .median
                - 1.5)
                .abs()
                < 1e-9
        );
        // No rows for tracers without programs.
        assert!(sum.bpf.iter().all(|b| b.mode != Mode::Tracefs));
        // A floor session has no footer: failed only if it did not exit 0.
        let floor_sessions = sum.sessions.iter().find(|s| s.mode == Mode::Floor).unwrap();
        assert_eq!((floor_sessions.sessions, floor_sessions.failed), (2, 1));
        let md = markdown(&goals(Some(&sum), None), Some((&sum, &data)), None);
        assert!(md.contains(
            "| `dax-faults` | fentry | 29 | 1.00 per fault | 250 [250–250] | 1.25 [1.25–1.25] | "
        ));
        assert!(
            md.contains("| 500.0 [500.0–500.0] µs | 5.00 [5.00–5.00] | 0 |"),
            "{md}"
        );
        assert!(md.contains("empty programs on the same hooks (floor)"));
    }

    #[test]
    fn goals_comparing_modes_say_whether_the_ranges_overlap() {
        let (data, plan) = floor_data(0.0);
        let g = goals(Some(&summarize_guest(&data, &plan)), None);
        let by = |w: &str| g.iter().find(|g| g.what.contains(w)).unwrap();
        // fentry 0.67, tracefs 0.60 + 0.05: met, every repetition alike.
        let t = by("tracefs kprobe events (`dax-pins`)");
        assert_eq!((t.met, t.ranges_overlap), (Some(true), Some(false)));
        assert_eq!(t.verdict(), "met");
        assert_eq!(
            t.measured,
            "0.67 [0.67–0.67] vs 0.60 [0.60–0.60] + 0.05; ranges apart"
        );
        // fentry 0.67 against nostacks 0.70 / 1.2 = 0.58: met.
        let st = by("kernel stack per GUP reference");
        assert_eq!(st.met, Some(true));
        // 250 ns per run <= 1.5 x 200 ns: met.
        let fl = by("empty-program floor on the same hooks (`dax-faults`)");
        assert_eq!((fl.met, fl.ranges_overlap), (Some(true), Some(false)));
        assert_eq!(
            fl.measured,
            "1.25 [1.25–1.25]x floor; 250 [250–250] ns vs 200 [200–200] ns x 1.5; ranges apart"
        );
        assert_eq!(by("fault-heavy").met, Some(false));
        assert_eq!(by("fault-heavy").ranges_overlap, None);

        // The same medians, but fentry's repetitions spread +-30%: the
        // ranges no longer separate it from tracefs, nor from the floor's
        // bound; medians that meet the target are not claimed met.
        let (data, plan) = floor_data(0.3);
        let g = goals(Some(&summarize_guest(&data, &plan)), None);
        let by = |w: &str| g.iter().find(|g| g.what.contains(w)).unwrap();
        let t = by("tracefs kprobe events (`dax-pins`)");
        assert_eq!((t.met, t.ranges_overlap), (Some(true), Some(true)));
        assert!(t.verdict().starts_with("**unresolved**"));
        assert!(t.measured.ends_with("; ranges overlap"));
        let fl = by("empty-program floor on the same hooks (`dax-pins`)");
        assert_eq!(fl.ranges_overlap, Some(true));
        let md = markdown(&g, None, None);
        assert!(md.contains("**unresolved** (medians meet it, ranges overlap)"));
    }

    #[test]
    fn verdicts() {
        let goal = |met, ranges_overlap| Goal {
            met,
            ranges_overlap,
            ..Goal::new("x".into(), "y", "z".into(), None)
        };
        assert_eq!(goal(None, None).verdict(), "not run");
        assert_eq!(goal(Some(true), None).verdict(), "met");
        assert_eq!(goal(Some(true), Some(false)).verdict(), "met");
        assert_eq!(goal(Some(false), Some(true)).verdict(), "**missed**");
        assert_eq!(goal(Some(false), None).verdict(), "**missed**");
        assert!(
            goal(Some(true), Some(true))
                .verdict()
                .contains("unresolved")
        );
    }
}
