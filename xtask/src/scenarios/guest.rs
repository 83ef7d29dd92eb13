//! The shell that runs scenarios inside one guest boot.
//!
//! Each case: start `refscope record` (or `refscope live -o` on a
//! pseudo-terminal; writing to the guest's tmpfs: 9p
//! writes can stall for minutes when the host is loaded), wait for it to
//! attach, run the workload, stop the recorder with SIGINT, then copy the
//! trace and the workload's output to /share/<case>/. The host runs
//! `refscope report` on the copies.

use super::table::{Case, Kind, Recorder};

/// Shell functions every generated script starts with.
const PRELUDE: &str = r#"
set -u
. /lib/refscope/guest.sh
start_recording() { # CASE
    mkdir -p "/share/$1"
    rm -f /tmp/ready /tmp/t.jsonl
    # The shadow audit every 0.2 s: short workloads get audited while they
    # run, and its race handling is exercised against live faults.
    if [ "$RECORDER" = live ]; then
        vm-pty --size 120x40 --log "/share/$1/live.screen" -- \
            refscope live -o /tmp/t.jsonl --force --ready-file /tmp/ready --audit-interval 0.2 $RECORD_ARGS 2>/tmp/record.err &
    else
        refscope record -o /tmp/t.jsonl --force --ready-file /tmp/ready --audit-interval 0.2 $RECORD_ARGS 2>/tmp/record.err &
    fi
    REC=$!
    if ! wait_for /tmp/ready 300; then
        echo "$1: refscope record did not attach" >&2
        cp /tmp/record.err "/share/$1/" 2>/dev/null
        return 1
    fi
}
stop_recording() { # CASE
    sleep 0.3
    if [ "$RECORDER" = live ]; then
        # vm-pty runs it: the signal goes to refscope itself.
        kill -INT $(pidof refscope)
    else
        kill -INT "$REC"
    fi
    wait "$REC"
    echo $? > "/share/$1/record.status"
    cp /tmp/t.jsonl /tmp/record.err "/share/$1/"
    [ "$RECORDER" = live ] && cp /tmp/live.screen "/share/$1/"
    true
}
pfn_device() {
    for d in /sys/bus/nd/drivers/nd_pmem/pfn*; do
        [ -e "$d" ] && basename "$d" && return 0
    done
    return 1
}
"#;

/// The script for a boot running `cases` (in order).
pub fn script(cases: &[&Case]) -> String {
    let mut s = String::from(PRELUDE);
    for c in cases {
        s.push_str(&format!("\necho '=== {}' >&2\n", c.name));
        s.push_str(&case_script(c));
    }
    s.push_str("\necho '=== all cases ran' >&2\n");
    s
}

fn case_script(c: &Case) -> String {
    let name = &c.name;
    let wl = &c.workload;
    let recorder = match c.recorder {
        Recorder::Record => "record",
        Recorder::Live => "live",
    };
    let prefix = format!(
        "RECORD_ARGS='{}'\nRECORDER={recorder}\n",
        c.record_args.replace('\'', "")
    );
    prefix
        + &match c.kind {
            Kind::Command => format!(
                r#"mkdir -p /share/{name}
{{ {wl} ; }} > /share/{name}/out.txt 2>&1
echo $? > /share/{name}/command.status
"#
            ),
            Kind::Simple => format!(
                r#"if start_recording {name}; then
    refscope-workload --timeout 600 {wl} > /tmp/wl.json 2> /tmp/wl.err
    echo $? > /share/{name}/workload.status
    stop_recording {name}
    cp /tmp/wl.json /tmp/wl.err /share/{name}/
fi
"#
            ),
            // Unbind the device under the mapping, stop recording while the
            // mapping still exists (on 7.3.4 the process's exit oopses, so the
            // trace must be safe before), then let the workload exit.
            Kind::Unplug => format!(
                r#"if start_recording {name}; then
    rm -f /tmp/wready /tmp/release
    refscope-workload --timeout 600 {wl} --ready-file /tmp/wready --hold-until /tmp/release > /tmp/wl.json 2> /tmp/wl.err &
    WL=$!
    wait_for /tmp/wready 120
    dev=$(pfn_device) && echo "$dev" > /share/{name}/device && echo "$dev" > /sys/bus/nd/drivers/nd_pmem/unbind
    sleep 1
    stop_recording {name}
    cp /tmp/wl.json /tmp/wl.err /share/{name}/
    sync
    touch /tmp/release
    wait $WL
    echo $? > /share/{name}/workload.status
    cp /tmp/wl.json /tmp/wl.err /share/{name}/
fi
"#
            ),
            // The workload first; refscope attaches while it holds.
            Kind::Attach => format!(
                r#"mkdir -p /share/{name}
rm -f /tmp/wready /tmp/release
refscope-workload --timeout 600 {wl} --ready-file /tmp/wready --hold-until /tmp/release > /tmp/wl.json 2> /tmp/wl.err &
WL=$!
wait_for /tmp/wready 120
if start_recording {name}; then
    stop_recording {name}
fi
touch /tmp/release
wait $WL
echo $? > /share/{name}/workload.status
cp /tmp/wl.json /tmp/wl.err /share/{name}/
"#
            ),
            // refscope attaches (and takes its snapshot) while the workload
            // keeps faulting pages in; it stops faulting once refscope is
            // ready, and holds its mappings until the recording is saved.
            Kind::AttachChurn => format!(
                r#"mkdir -p /share/{name}
rm -f /tmp/wready /tmp/release /tmp/stopfault
refscope-workload --timeout 600 {wl} --stop-file /tmp/stopfault --ready-file /tmp/wready --hold-until /tmp/release > /tmp/wl.json 2> /tmp/wl.err &
WL=$!
wait_for /tmp/wready 120
if start_recording {name}; then
    sleep 0.5
    touch /tmp/stopfault
    i=0
    while ! grep -q '"faulted"' /tmp/wl.json && [ "$i" -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    stop_recording {name}
fi
touch /tmp/stopfault /tmp/release
wait $WL
echo $? > /share/{name}/workload.status
cp /tmp/wl.json /tmp/wl.err /share/{name}/
"#
            ),
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_name_every_case_and_stop_recording_before_release() {
        let table: super::super::table::Table = serde_json::from_str(
            r#"{"cases":[
              {"name":"a","about":"x","workload":"pte-touch 4","kernels":{}},
              {"name":"b","about":"y","kind":"unplug","workload":"unplug-mapped 4","kernels":{}}]}"#,
        )
        .unwrap();
        let cases: Vec<&Case> = table.cases.iter().collect();
        let s = script(&cases);
        assert!(s.contains("start_recording a") && s.contains("start_recording b"));
        let stop = s.rfind("stop_recording b").unwrap();
        let release = s.find("touch /tmp/release").unwrap();
        assert!(
            stop < release,
            "the trace must be saved before the workload exits"
        );
    }
}
