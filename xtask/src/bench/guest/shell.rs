//! The shell script one boot of `cargo xtask bench` runs: a prelude of
//! shell functions (starting and stopping each tracer, timing a workload
//! between two reads of the BPF run-time statistics, summarising findings,
//! copying results to the 9p share), then every repetition's modes in
//! rotating order with their workloads, then the capacity steps. What the
//! script writes is read back by [`super::results`].

use std::fmt::Write as _;

use super::{Plan, Producer, Tracer, cap_steps};

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
# Start a tracer that creates /tmp/ready once it is attached, and wait
# for that: COMMAND... gets --ready-file appended.
tracer_start() { # TAG COMMAND...
    tag=$1; shift
    rm -f /tmp/ready /tmp/t.jsonl
    t0=$(up)
    "$@" --ready-file /tmp/ready 2>"$O/$tag.err" &
    TRACER=$!
    i=0
    while [ ! -e /tmp/ready ]; do
        if ! kill -0 $TRACER 2>/dev/null || [ $i -gt 1800 ]; then
            log "$tag: $1 $2 did not attach"
            kill -9 $TRACER 2>/dev/null
            TRACER=""
            return 1
        fi
        i=$((i + 1))
        sleep 0.1
    done
    echo "$t0 $(up)" > "$O/$tag.attach"
}
tracer_stop() { # TAG
    if [ -z "$TRACER" ]; then echo 255 > "$O/$1.status"; return 1; fi
    kill -INT $TRACER
    wait $TRACER
    echo $? > "$O/$1.status"
    TRACER=""
}
rec_start() { # TAG BIN RECORD-ARGS...
    tag=$1; bin=$2; shift 2
    tracer_start "$tag" "$bin" record --quiet -o /tmp/t.jsonl --force "$@"
}
rec_stop() { # TAG
    tracer_stop "$1" || return
    tail -n 1 /tmp/t.jsonl > "$O/$1.footer"
    grep -c '"kind":"audit"' /tmp/t.jsonl > "$O/$1.audits"
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
            match mode.tracer() {
                Tracer::None => s.push_str(&body.replace("    run", "run")),
                Tracer::Tracefs => {
                    let _ = write!(s, "tfs_start {tag}\n{body}tfs_stop {tag}\n");
                }
                Tracer::Floor => {
                    let _ = write!(
                        s,
                        "if tracer_start {tag} refscope bench-floor; then\n{body}fi\ntracer_stop {tag}\n"
                    );
                }
                Tracer::Record { bin, args } => {
                    let sep = if args.is_empty() { "" } else { " " };
                    let _ = write!(
                        s,
                        "if rec_start {tag} {bin}{sep}{args}; then\n{body}fi\nrec_stop {tag}\nrm -f /tmp/t.jsonl\n"
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
            "if rec_start {tag} refscope --ringbuf-size {}; then\n{body}fi\nrec_stop {tag}\n",
            step.ring
        );
        if step.findings {
            let _ = writeln!(s, "findings {tag}");
        }
        s.push_str("rm -f /tmp/t.jsonl\nflush\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::guest::{
        BASELINE_BIN, OVERFLOW_RING, OVERFLOW_STEP, REFERENCE_STEP, modes, workloads,
    };

    fn plan() -> Plan {
        Plan {
            reps: 2,
            modes: modes(true),
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
            for m in modes(true) {
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
        assert!(s.contains("rec_start sessions/1-kprobe refscope --attach kprobe"));
        assert!(s.contains("rec_start sessions/2-fentry-nostacks refscope --gup-stacks false"));
        assert!(s.contains(&format!(
            "rec_start sessions/1-baseline {BASELINE_BIN}; then"
        )));
        assert!(s.contains("rec_start sessions/2-fentry refscope; then"));
        assert!(s.contains("tracer_start sessions/2-floor refscope bench-floor; then"));
        assert!(s.contains("tfs_start sessions/1-tracefs"));
        assert!(s.contains(&format!(
            "rec_start cap/{OVERFLOW_STEP} refscope --ringbuf-size {OVERFLOW_RING}"
        )));
        assert!(s.contains(&format!("findings cap/{REFERENCE_STEP}")));
        assert!(s.trim_end().ends_with("log 'all runs done'"));
        // Every measurement's results reach the share before the next.
        assert_eq!(
            s.matches("\nflush\n").count(),
            2 * modes(true).len() + 1 + cap_steps().len() + 1
        );
        assert!(s.contains(&format!(
            "echo \"$w0 $(up)\" > $O/cap/{OVERFLOW_STEP}.window"
        )));
    }
}
