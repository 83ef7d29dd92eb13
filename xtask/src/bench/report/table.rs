//! The markdown `cargo xtask bench` publishes in docs/benchmarks.md and
//! target/bench/: the goals with their verdicts, then the guest's tables
//! (overhead ratios, in-kernel cost, tracer sessions, capacity) and the
//! host's (criterion, `refscope report` and `export` throughput, memory),
//! with the number formatting they share.

use std::fmt::Write as _;

use super::{Goal, GuestSummary};
use crate::bench::{
    guest::{Mode, results::GuestData},
    host::HostData,
    stats::Spread,
};

fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// A spread of durations given in nanoseconds, in the unit its median
/// reads best in: `850 ns`, `39.1 µs [31.1–47.2]`, `4.38 ms [...]`.
fn duration(x: Option<Spread>) -> String {
    let Some(x) = x else { return "-".into() };
    let (div, unit, digits) = match x.median.abs() {
        m if m >= 1e6 => (1e6, "ms", 2),
        m if m >= 1e3 => (1e3, "µs", 1),
        _ => (1.0, "ns", 0),
    };
    format!("{} {unit}", x.map(|v| v / div).show(digits))
}

fn pct(x: Option<Spread>) -> String {
    x.map_or("-".into(), |x| {
        let p = |v: f64| format!("{:.0}%", v * 100.0);
        if x.n == 1 {
            p(x.median)
        } else {
            format!("{} [{}–{}]", p(x.median), p(x.min), p(x.max))
        }
    })
}

/// The markdown published in docs/benchmarks.md and target/bench/.
pub fn markdown(
    goals: &[Goal],
    g: Option<(&GuestSummary, &GuestData)>,
    h: Option<&HostData>,
) -> String {
    let mut s = String::new();
    s.push_str("#### Goals\n\n| goal | target | measured | |\n|---|---|---|---|\n");
    for goal in goals {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            goal.what,
            goal.target,
            goal.measured,
            goal.verdict()
        );
    }
    if let Some((sum, data)) = g {
        guest_tables(&mut s, sum, data);
    }
    if let Some(h) = h {
        host_tables(&mut s, h);
    }
    s
}

fn guest_tables(s: &mut String, sum: &GuestSummary, data: &GuestData) {
    let modes: Vec<Mode> = sum
        .overhead
        .first()
        .map(|r| r.ratios.iter().map(|(m, _)| *m).collect())
        .unwrap_or_default();
    let _ = write!(
        s,
        "\n#### Overhead in the guest (kernel {}; throughput relative to untraced, median [min–max] over repetitions)\n\n| workload | untraced rate (TCG, for scale) |",
        data.kernel_release
    );
    for m in &modes {
        let _ = write!(s, " {} |", m.describe());
    }
    let _ = write!(s, "\n|---|---|{}\n", "---|".repeat(modes.len()));
    for r in &sum.overhead {
        let _ = write!(
            s,
            "| `{}`: {} | {} |",
            r.workload,
            r.about,
            r.untraced_per_sec
                .map_or("-".into(), |u| format!("{} {}/s", si(u.median), r.unit))
        );
        for m in &modes {
            let _ = write!(s, " {} |", r.ratio(*m).map_or("-".into(), |x| x.show(2)));
        }
        s.push('\n');
    }
    s.push_str(
        "\n#### In-kernel cost of the tracers' programs (kernel BPF run-time statistics, all repetitions; \
         x floor: over the empty programs' of the same repetition)\n\n\
         | workload | mode | programs | runs per unit | ns per run (TCG) | x floor | BPF time per unit / untraced unit | BPF share of the added time | added time per unit (TCG) | x floor | recursion misses |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for b in &sum.bpf {
        let x = |v: Option<Spread>| v.map_or("-".into(), |x| x.show(2));
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {:.2} per {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            b.workload,
            b.mode.name(),
            b.programs,
            b.runs_per_unit,
            b.unit.trim_end_matches('s'),
            b.ns_per_run.map_or("-".into(), |x| x.show(0)),
            x(b.ns_per_run_vs_floor),
            pct(b.share_of_untraced),
            pct(b.share_of_added),
            duration(b.added_ns_per_unit),
            x(b.added_vs_floor),
            b.recursion_misses
        );
    }
    s.push_str(
        "\n#### Tracer sessions (one per repetition and mode, all four workloads)\n\n\
         | mode | sessions | failed | events per session | lost | attach time (TCG) | page-table audits per session |\n|---|---|---|---|---|---|---|\n",
    );
    for r in &sum.sessions {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.mode.name(),
            r.sessions,
            r.failed,
            r.events.map_or("-".into(), |e| si(e.median)),
            r.lost,
            r.attach_secs
                .map_or("-".into(), |a| format!("{:.1} s", a.median)),
            r.audits.map_or("-".into(), |a| format!("{:.0}", a.median))
        );
    }
    if !data.capacity.is_empty() {
        let _ = write!(
            s,
            "\n#### Pipeline capacity in the guest (`refscope record`, fentry; untraced fault rate {} faults/s)\n\n\
             | step | ring buffer | producers | event rate (TCG) | x untraced fault rate | lost | exit | definite findings | uncertain findings |\n\
             |---|---|---|---|---|---|---|---|---|\n",
            data.untraced_rate.map_or("?".into(), si)
        );
        for c in &data.capacity {
            let (def, unc) = match &c.findings {
                Some(f) => {
                    let by = |st: &str| {
                        let v: Vec<String> = f
                            .iter()
                            .filter_map(|(r, m)| m.get(st).map(|n| format!("{r} {n}")))
                            .collect();
                        if v.is_empty() {
                            "none".into()
                        } else {
                            v.join(", ")
                        }
                    };
                    (by("definite"), by("uncertain"))
                }
                None => ("-".into(), "-".into()),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.name,
                c.ring,
                c.producers,
                c.rate.map_or("-".into(), |r| format!("{}/s", si(r))),
                match (c.rate, data.untraced_rate) {
                    (Some(r), Some(u)) if u > 0.0 => format!("{:.2}", r / u),
                    _ => "-".into(),
                },
                c.lost.map_or("-".into(), |l| l.to_string()),
                c.status.map_or("-".into(), |x| x.to_string()),
                def,
                unc
            );
        }
    }
}

fn host_tables(s: &mut String, h: &HostData) {
    if !h.criterion.is_empty() {
        s.push_str(
            "\n#### Host: userspace pipeline on one core (criterion, `tracer-user/core/benches/analysis.rs`)\n\n\
             | model | stage | events/s (median) | range |\n|---|---|---|---|\n",
        );
        for c in &h.criterion {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {}–{} |",
                c.group,
                c.bench,
                si(c.per_sec),
                si(c.per_sec_low),
                si(c.per_sec_high)
            );
        }
    }
    if !h.report.is_empty() {
        s.push_str(
            "\n#### Host: `refscope report` and `export` (rates per CPU second, wall time alongside; peak RSS from wait4)\n\n\
             | run | trace | events | CPU time | wall time | MB/s | events/s | peak RSS |\n|---|---|---|---|---|---|---|---|\n",
        );
        for r in h.report.iter().chain(&h.export) {
            let _ = writeln!(
                s,
                "| {} | {:.0} MB | {} | {:.1} s | {:.1} s | {:.0} | {} | {:.0} MiB |",
                r.what,
                r.trace_bytes as f64 / 1e6,
                si(r.events as f64),
                r.cpu_secs,
                r.secs,
                r.mb_per_sec,
                si(r.events_per_sec),
                r.max_rss_kib as f64 / 1024.0
            );
        }
    }
    if !h.pages.is_empty() {
        s.push_str(
            "\n#### Host: memory per tracked page (`refscope report` peak RSS, difference between two trace sizes)\n\n\
             | state | pages | peak RSS | pages | peak RSS | bytes per page |\n|---|---|---|---|---|---|\n",
        );
        for p in &h.pages {
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} MiB | {} | {:.0} MiB | {:.0} |",
                p.variant,
                si(p.pages_small as f64),
                p.rss_small_kib as f64 / 1024.0,
                si(p.pages_big as f64),
                p.rss_big_kib as f64 / 1024.0,
                p.bytes_per_page
            );
        }
    }
}
