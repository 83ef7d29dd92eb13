//! The guest half of `cargo xtask bench`: the shell script one boot runs,
//! and reading back what it left in the share directory.
//!
//! Overhead: for each repetition, each tracing mode in turn (the order
//! rotates from one repetition to the next, so slow drift of the host
//! spreads over all modes) starts its tracer, runs every workload, and
//! stops the tracer. Every workload times its own rounds, so attaching and
//! detaching are outside the measurement. Before and after each workload
//! the script reads the kernel's run-time statistics of refscope's BPF
//! programs from `/proc/PID/fdinfo` (`run_time_ns`, `run_cnt`: what
//! `bpftool prog` shows; refscope turns the statistics on with
//! `BPF_ENABLE_STATS` for as long as it runs).
//!
//! Capacity: `refscope record` with a 1 MiB ring buffer under a producer
//! paced at rising fractions of the untraced fault rate, then flat out on
//! one and two CPUs: the highest rate without loss. Then past it: a small
//! fixed load of faults and pins with a 4 KiB ring buffer, compared with
//! the same load under the default buffer (which holds all of it): losses
//! counted, no crash, and no definite finding the lossless run lacks.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use serde::Serialize;
use serde_json::Value;

/// How a workload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// No tracer.
    Untraced,
    /// `refscope record` (fentry/fexit where the kernel allows: the default).
    Fentry,
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

impl Mode {
    pub const ALL: [Mode; 7] = [
        Mode::Untraced,
        Mode::Fentry,
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
            Mode::Kprobe => "`refscope record --attach kprobe`",
            Mode::Tracefs => "tracefs kprobe events, same functions",
            Mode::FentryNoStacks => "`refscope record --gup-stacks false`",
            Mode::FentryNoAudit => "`refscope record --no-audit`",
            Mode::FentryAuditFast => "`refscope record --audit-interval 0.5`",
        }
    }

    /// Extra `refscope record` arguments; `None` when refscope is not the
    /// tracer.
    fn record_args(self) -> Option<&'static str> {
        match self {
            Mode::Fentry => Some(""),
            Mode::Kprobe => Some("--attach kprobe"),
            Mode::FentryNoStacks => Some("--gup-stacks false"),
            Mode::FentryNoAudit => Some("--no-audit"),
            Mode::FentryAuditFast => Some("--audit-interval 0.5"),
            Mode::Untraced | Mode::Tracefs => None,
        }
    }

    pub fn is_refscope(self) -> bool {
        self.record_args().is_some()
    }
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

/// Shell functions the script starts with.
const PRELUDE: &str = r#"set -u
# Results are written to the guest's tmpfs and copied to the 9p share
# between measurements (flush): a write to 9p can stall a process for
# hundreds of milliseconds when the host is busy.
O=/tmp/out
T=/sys/kernel/tracing
TRACER=""
TP=""
mkdir -p $O/runs $O/sessions $O/cap
flush() {
    cp -r $O/. /share/ && rm -rf $O/* && mkdir -p $O/runs $O/sessions $O/cap
}
log() { echo "bench: [$(cut -d' ' -f1 /proc/uptime)] $*" >&2; }
up() { cut -d' ' -f1 /proc/uptime; }
# Kernel run-time statistics of a process's BPF programs, summed over
# programs (keyed by prog_id: link fds name the program too, without stats):
# "programs run_time_ns run_cnt recursion_misses".
bpfstats() {
    if [ -z "$1" ]; then echo "0 0 0 0"; return; fi
    cat /proc/$1/fdinfo/* 2>/dev/null | awk '
        /^prog_id:/ { id = $2 }
        /^run_time_ns:/ { t[id] = $2 }
        /^run_cnt:/ { c[id] = $2 }
        /^recursion_misses:/ { m[id] = $2 }
        END { for (i in t) { n++; T += t[i]; C += c[i]; M += m[i] }
              printf "%d %.0f %.0f %.0f\n", n, T, C, M }'
}
rec_start() { # TAG RECORD-ARGS...
    tag=$1; shift
    rm -f /tmp/ready /tmp/t.jsonl
    t0=$(up)
    refscope record --quiet -o /tmp/t.jsonl --force --ready-file /tmp/ready "$@" 2>"$O/$tag.err" &
    TRACER=$!
    i=0
    while [ ! -e /tmp/ready ]; do
        if ! kill -0 $TRACER 2>/dev/null || [ $i -gt 1800 ]; then
            log "$tag: refscope record did not attach"
            kill -9 $TRACER 2>/dev/null
            TRACER=""
            return 1
        fi
        i=$((i + 1))
        sleep 0.1
    done
    echo "$t0 $(up)" > "$O/$tag.attach"
}
rec_stop() { # TAG
    if [ -z "$TRACER" ]; then echo 255 > "$O/$1.status"; return; fi
    kill -INT $TRACER
    wait $TRACER
    echo $? > "$O/$1.status"
    tail -n 1 /tmp/t.jsonl > "$O/$1.footer"
    grep -c '"kind":"audit"' /tmp/t.jsonl > "$O/$1.audits"
    TRACER=""
}
tfs_start() { # TAG
    echo 0 > $T/tracing_on
    echo > $T/trace
    echo > $T/kprobe_events
    while read f how; do
        case "$how" in *+*|fentry|kprobe)
            echo "p:rsb/${f}_e $f a0=%di a1=%si a2=%dx a3=%cx" >> $T/kprobe_events ||
                log "tracefs: no kprobe on $f";;
        esac
        # $retval is refused (BTF) for functions returning void.
        case "$how" in *+*|fexit|kretprobe)
            echo "r:rsb/${f}_x $f ret=\$retval" >> $T/kprobe_events 2>/dev/null ||
                echo "r:rsb/${f}_x $f" >> $T/kprobe_events ||
                log "tracefs: no kretprobe on $f";;
        esac
    done < /tmp/hooks
    wc -l < $T/kprobe_events > "$O/$1.probes"
    echo 1 > $T/events/rsb/enable
    cat $T/trace_pipe > /tmp/tracefs.txt &
    TP=$!
    echo 1 > $T/tracing_on
}
tfs_stop() { # TAG
    echo 0 > $T/tracing_on
    # trace_pipe returns EOF once tracing is off and it is drained.
    sleep 0.5
    kill $TP 2>/dev/null
    wait $TP 2>/dev/null
    echo 0 > $T/events/rsb/enable
    over=$(cat $T/per_cpu/cpu*/stats | awk '/^overrun:/ { s += $2 } END { print s + 0 }')
    n=$(wc -l < /tmp/tracefs.txt)
    echo "{\"type\":\"footer\",\"events\":$n,\"lost\":$over}" > "$O/$1.footer"
    echo 0 > "$O/$1.status"
    echo > $T/kprobe_events
    rm -f /tmp/tracefs.txt
}
run() { # REP MODE WORKLOAD ARGS...
    f="$O/runs/$1-$2-$3"
    shift 3
    bpfstats "$TRACER" > "$f.bpf"
    refscope-workload --timeout 600 "$@" > "$f.json" 2> "$f.err"
    echo $? > "$f.status"
    bpfstats "$TRACER" >> "$f.bpf"
}
# Findings of the trace by rule and status: "RULE STATUS COUNT" lines.
findings() { # TAG
    refscope report --json --timeline 1 /tmp/t.jsonl 2>"$O/$1.report.err" | awk '
        /"rule":/ { r = $2; gsub(/[",]/, "", r) }
        /"status":/ { s = $2; gsub(/[",]/, "", s); n[r " " s]++ }
        END { for (k in n) print k, n[k] }' > "$O/$1.findings"
}
"#;

/// The guest script for `plan`.
pub fn script(plan: &Plan) -> String {
    let mut s = String::from(PRELUDE);
    s.push_str(
        r#"
uname -r > $O/kernel
refscope doctor --json > $O/doctor.json 2>$O/doctor.err
awk '/"function":/ { f = $2; gsub(/[",]/, "", f) }
     /"attach":/ { a = $2; gsub(/[",]/, "", a); print f, a }' $O/doctor.json > /tmp/hooks
cp /tmp/hooks $O/hooks
"#,
    );
    let n = plan.modes.len();
    for rep in 1..=plan.reps {
        for i in 0..n {
            let mode = plan.modes[(i + rep - 1) % n];
            let m = mode.name();
            let tag = format!("sessions/{rep}-{m}");
            let _ = writeln!(s, "\nlog 'repetition {rep}/{}: {m}'", plan.reps);
            let body: String = plan
                .workloads
                .iter()
                .map(|w| format!("    run {rep} {m} {} {}\n", w.name, w.args))
                .collect();
            match mode {
                Mode::Untraced => s.push_str(&body.replace("    run", "run")),
                Mode::Tracefs => {
                    let _ = write!(s, "tfs_start {tag}\n{body}tfs_stop {tag}\n");
                }
                _ => {
                    let args = mode.record_args().unwrap_or_default();
                    let _ = write!(
                        s,
                        "if rec_start {tag} {args}; then\n{body}fi\nrec_stop {tag}\nrm -f /tmp/t.jsonl\n"
                    );
                }
            }
            s.push_str("flush\n");
        }
    }
    if plan.capacity {
        s.push_str(&capacity_script(plan.cap_secs));
    }
    s.push_str("\nflush\necho ok > /share/complete\nlog 'all runs done'\n");
    s
}

fn capacity_script(secs: f64) -> String {
    let mut s = format!(
        r#"
log 'capacity: the untraced fault rate'
refscope-workload --timeout 600 fault-bench --size 8 --rounds 4 > $O/cap/untraced.json 2>$O/cap/untraced.err
R=$(sed -n 's/.*"mean_pages_per_sec":\([0-9.]*\).*/\1/p' $O/cap/untraced.json | tail -n 1)
[ -n "$R" ] || R=20000
echo "$R" > $O/cap/untraced.rate
flush
rate() {{ awk -v r=$R -v f=$1 'BEGIN {{ printf "%d", r * f }}'; }}
# Rounds of PAGES pages that last about {secs} s at RATE pages/s.
rounds() {{ awk -v x=$1 -v p=$2 'BEGIN {{ n = int(x * {secs} / p) + 1; if (n < 3) n = 3; print n }}'; }}
"#
    );
    for step in cap_steps() {
        let tag = format!("cap/{}", step.name);
        let _ = writeln!(
            s,
            "\nlog 'capacity: {} (ring buffer {})'",
            step.name, step.ring
        );
        let mut body = String::new();
        for (i, p) in step.producers.iter().enumerate() {
            let out = format!("> $O/{tag}.p{i}.json 2> $O/{tag}.p{i}.err &");
            let cmd = match p {
                Producer::Faults(Some(frac)) => format!(
                    "X=$(rate {frac}); refscope-workload --timeout 600 fault-bench --size 8 --rounds $(rounds $X 2048) --rate $X"
                ),
                Producer::Faults(None) => {
                    "refscope-workload --timeout 600 fault-bench --size 8 --rounds $(rounds $R 2048)"
                        .to_owned()
                }
                Producer::FewFaults => {
                    "refscope-workload --timeout 600 fault-bench --size 8 --rounds 3".to_owned()
                }
                Producer::FewPins => {
                    "refscope-workload --timeout 600 pin-bench --pages 1024 --batch 64 --rounds 6"
                        .to_owned()
                }
            };
            let _ = writeln!(body, "    {cmd} {out}\n    P{i}=$!");
        }
        for i in 0..step.producers.len() {
            let _ = writeln!(body, "    wait $P{i}; echo $? > $O/{tag}.p{i}.status");
        }
        // The producers' window: from before they start to after the last
        // one ends (their own round times leave out what happens between
        // rounds).
        body = format!("    w0=$(up)\n{body}    echo \"$w0 $(up)\" > $O/{tag}.window\n");
        let _ = write!(
            s,
            "if rec_start {tag} --ringbuf-size {}; then\n{body}fi\nrec_stop {tag}\n",
            step.ring
        );
        if step.findings {
            let _ = writeln!(s, "findings {tag}");
        }
        s.push_str("rm -f /tmp/t.jsonl\nflush\n");
    }
    s
}

// --- reading the results -----------------------------------------------------

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

    fn plan() -> Plan {
        Plan {
            reps: 2,
            modes: Mode::ALL.to_vec(),
            workloads: workloads(true),
            capacity: true,
            cap_secs: 2.0,
        }
    }

    #[test]
    fn the_script_rotates_modes_and_brackets_every_workload() {
        let s = script(&plan());
        // Repetition 1 starts untraced, repetition 2 with fentry.
        let first = |rep: usize| {
            let marker = format!("log 'repetition {rep}/2: ");
            let at = s.find(&marker).unwrap() + marker.len();
            s[at..].split('\'').next().unwrap().to_owned()
        };
        assert_eq!(first(1), "untraced");
        assert_eq!(first(2), "fentry");
        for w in workloads(true) {
            for m in Mode::ALL {
                for rep in 1..=2 {
                    assert!(
                        s.contains(&format!("run {rep} {} {} {}", m.name(), w.name, w.args)),
                        "{rep} {} {}",
                        m.name(),
                        w.name
                    );
                }
            }
        }
        assert!(s.contains("rec_start sessions/1-kprobe --attach kprobe"));
        assert!(s.contains("rec_start sessions/2-fentry-nostacks --gup-stacks false"));
        assert!(s.contains("tfs_start sessions/1-tracefs"));
        assert!(s.contains(&format!(
            "rec_start cap/{OVERFLOW_STEP} --ringbuf-size {OVERFLOW_RING}"
        )));
        assert!(s.contains(&format!("findings cap/{REFERENCE_STEP}")));
        assert!(s.trim_end().ends_with("log 'all runs done'"));
        // Every measurement's results reach the share before the next.
        assert_eq!(
            s.matches("\nflush\n").count(),
            2 * Mode::ALL.len() + 1 + cap_steps().len() + 1
        );
        assert!(s.contains(&format!(
            "echo \"$w0 $(up)\" > $O/cap/{OVERFLOW_STEP}.window"
        )));
    }

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
