//! Reading back what the guest script left in the share directory: per
//! workload run its rate in the best round and the BPF run-time statistics
//! around it, per tracer session its footer (events, losses), attach time
//! and audits, and per capacity step the producers' window, the rate the
//! kernel produced and the findings; all gathered in [`GuestData`].

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use serde::Serialize;
use serde_json::Value;

use super::{CapStep, Mode, Plan, cap_steps};

/// BPF run-time statistics accumulated during one workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct BpfDelta {
    pub programs: u64,
    pub run_time_ns: f64,
    pub run_cnt: f64,
    pub recursion_misses: f64,
}

/// One workload run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub rep: usize,
    pub mode: Mode,
    pub workload: String,
    pub ok: bool,
    /// Units per second in the best round (the first round is a warm-up
    /// and left out when there are three or more).
    pub per_sec: Option<f64>,
    /// Units in all rounds together.
    pub units: f64,
    pub bpf: Option<BpfDelta>,
}

/// One tracer session (a mode of a repetition).
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub rep: usize,
    pub mode: Mode,
    /// The tracer's exit status (255: it never attached).
    pub status: Option<i32>,
    pub events: Option<u64>,
    pub lost: Option<u64>,
    pub attach_secs: Option<f64>,
    /// Address spaces the shadow audit compared with their page tables.
    pub audits: Option<u64>,
}

/// One capacity step.
#[derive(Debug, Clone, Serialize)]
pub struct CapResult {
    pub name: String,
    pub ring: String,
    pub producers: usize,
    pub producers_ok: bool,
    pub status: Option<i32>,
    pub events: Option<u64>,
    pub lost: Option<u64>,
    /// From the producers' start to the end of the last one (guest
    /// uptime, 10 ms resolution).
    pub window_secs: Option<f64>,
    /// (events + lost) / window: the rate the kernel produced.
    pub rate: Option<f64>,
    /// `rule -> status -> count`, for the steps that summarise findings.
    pub findings: Option<BTreeMap<String, BTreeMap<String, u64>>>,
}

/// Everything the guest left.
#[derive(Debug, Clone, Serialize)]
pub struct GuestData {
    pub kernel_release: String,
    /// `(function, attach)` of refscope's default plan on this kernel.
    pub hooks: Vec<(String, String)>,
    /// kprobe events the tracefs mode defined (from its first session).
    pub tracefs_probes: Option<u64>,
    pub runs: Vec<Run>,
    pub sessions: Vec<Session>,
    /// Untraced fault rate of the capacity test's 8 MiB file.
    pub untraced_rate: Option<f64>,
    pub capacity: Vec<CapResult>,
    /// The script got to its end.
    pub complete: bool,
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn read_num<T: std::str::FromStr>(path: &Path) -> Option<T> {
    read(path)?.trim().parse().ok()
}

/// The `done` line of a workload's output.
fn done_line(path: &Path) -> Option<Value> {
    let text = read(path)?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|v| v["event"] == "done")
}

fn rounds_ms(done: &Value) -> Vec<f64> {
    done["throughput"]["rounds_ms"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// Units per second in the best round, skipping a warm-up round.
///
/// The best, not the median: the guest's vCPUs are threads of a host that
/// runs other work too, and being descheduled only ever adds time to a
/// round, so the fastest round is the one least disturbed. (Repetitions
/// and their spread then show what is left of the noise.)
pub fn per_sec(units_per_round: f64, rounds_ms: &[f64]) -> Option<f64> {
    let timed = if rounds_ms.len() >= 3 {
        &rounds_ms[1..]
    } else {
        rounds_ms
    };
    if timed.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let best = timed.iter().copied().fold(f64::INFINITY, f64::min);
    (best > 0.0 && best.is_finite()).then(|| units_per_round / (best / 1000.0))
}

/// `"programs run_time_ns run_cnt misses"` before and after.
pub fn parse_bpf(text: &str) -> Option<BpfDelta> {
    let rows: Vec<Vec<f64>> = text
        .lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .filter(|r: &Vec<f64>| r.len() == 4)
        .collect();
    let [a, b] = rows.as_slice() else {
        return None;
    };
    if b[0] == 0.0 {
        return None;
    }
    Some(BpfDelta {
        programs: b[0] as u64,
        run_time_ns: b[1] - a[1],
        run_cnt: b[2] - a[2],
        recursion_misses: b[3] - a[3],
    })
}

fn footer(path: &Path) -> (Option<u64>, Option<u64>) {
    let Some(v) = read(path).and_then(|t| serde_json::from_str::<Value>(t.trim()).ok()) else {
        return (None, None);
    };
    if v["type"] != "footer" {
        return (None, None);
    }
    (v["events"].as_u64(), v["lost"].as_u64())
}

/// `"START END"` (guest uptimes) -> seconds.
fn attach_secs(path: &Path) -> Option<f64> {
    let t = read(path)?;
    let v: Vec<f64> = t
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    match v.as_slice() {
        [a, b] => Some(b - a),
        _ => None,
    }
}

/// Read what the guest wrote to `dir` for `plan`.
pub fn parse(dir: &Path, plan: &Plan) -> GuestData {
    let mut runs = Vec::new();
    let mut sessions = Vec::new();
    for rep in 1..=plan.reps {
        for &mode in &plan.modes {
            let m = mode.name();
            for w in &plan.workloads {
                let base = dir.join(format!("runs/{rep}-{m}-{}", w.name));
                let ext = |e: &str| PathBuf::from(format!("{}.{e}", base.display()));
                let done = done_line(&ext("json"));
                let status: Option<i32> = read_num(&ext("status"));
                let (per, units) = match &done {
                    Some(d) => {
                        let per_round = d[w.unit_field].as_f64().unwrap_or(0.0);
                        let r = rounds_ms(d);
                        (per_sec(per_round, &r), per_round * r.len() as f64)
                    }
                    None => (None, 0.0),
                };
                runs.push(Run {
                    rep,
                    mode,
                    workload: w.name.into(),
                    ok: status == Some(0) && per.is_some(),
                    per_sec: per,
                    units,
                    bpf: read(&ext("bpf")).as_deref().and_then(parse_bpf),
                });
            }
            if mode != Mode::Untraced {
                let base = dir.join(format!("sessions/{rep}-{m}"));
                let ext = |e: &str| PathBuf::from(format!("{}.{e}", base.display()));
                let (events, lost) = footer(&ext("footer"));
                sessions.push(Session {
                    rep,
                    mode,
                    status: read_num(&ext("status")),
                    events,
                    lost,
                    attach_secs: attach_secs(&ext("attach")),
                    audits: read_num(&ext("audits")),
                });
            }
        }
    }
    let tracefs_probes = (1..=plan.reps)
        .find_map(|rep| read_num::<u64>(&dir.join(format!("sessions/{rep}-tracefs.probes"))));
    let hooks = read(&dir.join("hooks"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (f, a) = l.split_once(' ')?;
            Some((f.to_owned(), a.trim().to_owned()))
        })
        .collect();
    let capacity = if plan.capacity {
        cap_steps().iter().map(|s| parse_cap(dir, s)).collect()
    } else {
        Vec::new()
    };
    GuestData {
        kernel_release: read(&dir.join("kernel"))
            .unwrap_or_default()
            .trim()
            .to_owned(),
        hooks,
        tracefs_probes,
        runs,
        sessions,
        untraced_rate: read_num(&dir.join("cap/untraced.rate")),
        capacity,
        complete: dir.join("complete").is_file(),
    }
}

fn parse_cap(dir: &Path, step: &CapStep) -> CapResult {
    let base = dir.join(format!("cap/{}", step.name));
    let ext = |e: &str| PathBuf::from(format!("{}.{e}", base.display()));
    let mut producers_ok = true;
    for i in 0..step.producers.len() {
        let ok = read_num::<i32>(&ext(&format!("p{i}.status"))) == Some(0);
        producers_ok &= ok && done_line(&ext(&format!("p{i}.json"))).is_some();
    }
    let window = attach_secs(&ext("window")).filter(|w| *w > 0.0);
    let (events, lost) = footer(&ext("footer"));
    let rate = match (events, lost, window) {
        (Some(e), Some(l), Some(w)) if w > 0.0 => Some((e + l) as f64 / w),
        _ => None,
    };
    let findings = step.findings.then(|| {
        let mut m: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for line in read(&ext("findings")).unwrap_or_default().lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [rule, status, n] = f.as_slice()
                && let Ok(n) = n.parse::<u64>()
            {
                *m.entry((*rule).into())
                    .or_default()
                    .entry((*status).into())
                    .or_default() += n;
            }
        }
        m
    });
    CapResult {
        name: step.name.into(),
        ring: step.ring.into(),
        producers: step.producers.len(),
        producers_ok,
        status: read_num(&ext("status")),
        events,
        lost,
        window_secs: window,
        rate,
        findings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::guest::{OVERFLOW_STEP, workloads};

    #[test]
    fn rates_skip_the_warm_up_round() {
        assert_eq!(per_sec(1000.0, &[5.0, 20.0, 10.0, 30.0]), Some(100_000.0));
        assert_eq!(per_sec(1000.0, &[100.0, 20.0]), Some(50_000.0));
        assert_eq!(per_sec(1000.0, &[]), None);
        assert_eq!(per_sec(1000.0, &[1.0, 2.0, f64::NAN]), None);
    }

    #[test]
    fn bpf_deltas() {
        let d = parse_bpf("25 1000 10 0\n25 5000 30 1\n").unwrap();
        assert_eq!((d.programs, d.run_time_ns, d.run_cnt), (25, 4000.0, 20.0));
        assert_eq!(d.recursion_misses, 1.0);
        assert_eq!(parse_bpf("0 0 0 0\n0 0 0 0\n"), None);
        assert_eq!(parse_bpf("25 1 1 0\n"), None);
    }

    #[test]
    fn results_are_read_back() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("runs")).unwrap();
        fs::create_dir_all(dir.join("sessions")).unwrap();
        fs::create_dir_all(dir.join("cap")).unwrap();
        let p = Plan {
            reps: 1,
            modes: vec![Mode::Untraced, Mode::Fentry],
            workloads: workloads(true)[..1].to_vec(),
            capacity: true,
            cap_secs: 1.0,
        };
        let done = r#"{"event":"done","pages":1024,"throughput":{"rounds_ms":[50.0,10.0,10.0]}}"#;
        for m in ["untraced", "fentry"] {
            fs::write(
                dir.join(format!("runs/1-{m}-dax-faults.json")),
                format!("{{\"event\":\"ready\"}}\n{done}\n"),
            )
            .unwrap();
            fs::write(dir.join(format!("runs/1-{m}-dax-faults.status")), "0\n").unwrap();
        }
        fs::write(
            dir.join("runs/1-fentry-dax-faults.bpf"),
            "25 0 0 0\n25 3000000 3072 0\n",
        )
        .unwrap();
        fs::write(dir.join("sessions/1-fentry.status"), "0\n").unwrap();
        fs::write(
            dir.join("sessions/1-fentry.footer"),
            r#"{"type":"footer","events":3100,"lost":0,"findings":1024,"end_t":1,"end_reason":"signal"}"#,
        )
        .unwrap();
        fs::write(dir.join("sessions/1-fentry.attach"), "10.5 12.0\n").unwrap();
        fs::write(
            dir.join("hooks"),
            "insert_pfn fexit\ntry_grab_folio fentry+fexit\n",
        )
        .unwrap();
        fs::write(dir.join("cap/untraced.rate"), "60000.5\n").unwrap();
        let s = format!("cap/{OVERFLOW_STEP}");
        fs::write(dir.join(format!("{s}.status")), "0\n").unwrap();
        fs::write(
            dir.join(format!("{s}.footer")),
            r#"{"type":"footer","events":900,"lost":100}"#,
        )
        .unwrap();
        fs::write(dir.join(format!("{s}.window")), "100.00 100.07\n").unwrap();
        for i in 0..2 {
            fs::write(dir.join(format!("{s}.p{i}.status")), "0\n").unwrap();
            fs::write(dir.join(format!("{s}.p{i}.json")), format!("{done}\n")).unwrap();
        }
        fs::write(
            dir.join(format!("{s}.findings")),
            "zero_ref_mapping definite 40\npin_leak uncertain 2\n",
        )
        .unwrap();

        let g = parse(&dir, &p);
        assert!(!g.complete);
        assert_eq!(g.hooks.len(), 2);
        assert_eq!(g.untraced_rate, Some(60000.5));
        assert_eq!(g.runs.len(), 2);
        assert!(g.runs.iter().all(|r| r.ok && r.per_sec == Some(102_400.0)));
        assert_eq!(g.runs[1].units, 3072.0);
        assert_eq!(g.runs[1].bpf.unwrap().run_cnt, 3072.0);
        assert_eq!(g.sessions.len(), 1);
        assert_eq!(g.sessions[0].events, Some(3100));
        assert_eq!(g.sessions[0].attach_secs, Some(1.5));
        let over = g.capacity.iter().find(|c| c.name == OVERFLOW_STEP).unwrap();
        assert!(over.producers_ok);
        assert_eq!(over.lost, Some(100));
        assert!((over.window_secs.unwrap() - 0.07).abs() < 1e-9);
        assert!((over.rate.unwrap() - 1000.0 / 0.07).abs() < 1e-3);
        let f = over.findings.as_ref().unwrap();
        assert_eq!(f["zero_ref_mapping"]["definite"], 40);
        let missing = g.capacity.iter().find(|c| c.name == "paced-10").unwrap();
        assert!(!missing.producers_ok && missing.rate.is_none());
        let _ = fs::remove_dir_all(&dir);
    }
}
