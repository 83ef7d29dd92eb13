//! Hardening guest tests (issue 10), run by `cargo xtask test` with the
//! harness's own cases (guest_tests.rs): two boots.
//!
//! - 6.12, [`SIGNALS`]: `record` and `live -o` stopped by SIGINT, SIGTERM,
//!   SIGHUP (and for live a real terminal hangup) must leave a trace with
//!   a footer; SIGKILL a trace valid up to its last complete line that
//!   `report` reads with a warning; a full disk (a 64 KiB tmpfs) mid-
//!   recording a clear error, a clean stop and a readable trace; a
//!   read-only output directory an error before attaching; and nothing
//!   stays attached afterwards. Every trace has hashed kernel addresses.
//! - 7.3, [`PRIVILEGES`]: record, live and doctor as a user without root,
//!   with only CAP_BPF + CAP_PERFMON, without CAP_SYS_ADMIN, without BTF,
//!   with kptr_restrict=2, and under lockdown=confidentiality: each must
//!   say which and what to do, and leave no output file behind.
//!
//! The guest writes statuses, stderr and traces to /share; the checks
//! read them there and run the host's `refscope report` on the traces.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::util;
use crate::vm::{VmConfig, VmOutcome};

/// Signals, SIGKILL, a full disk, a read-only directory (6.12).
pub const SIGNALS: &str = r#"set -u
. /lib/refscope/guest.sh
S=/share
export TERM=xterm LANG=C.UTF-8
dmesg -n 1
load() { # SECONDS of DAX faults
    refscope-workload --timeout 300 churn --seconds "$1" --pages 8 --files 2 >/dev/null 2>&1 \
        || echo "churn failed: $?" >&2
}
record_until() { # NAME SIGNAL DIR
    rm -f /tmp/ready
    refscope record -o "$3/$1.jsonl" --ready-file /tmp/ready 2>"$S/$1.err" &
    pid=$!
    if wait_for_data /tmp/ready 300; then
        load 1
        if [ "$2" = none ]; then
            # Until it stops by itself (a full disk), at most 60 s.
            i=0
            while alive "$pid" && [ "$i" -lt 60 ]; do load 1; i=$((i + 1)); done
            alive "$pid" && kill -INT "$pid"
        else
            kill -"$2" "$pid"
        fi
    else
        echo "harness: refscope record did not get ready" >>"$S/$1.err"
        kill -9 "$pid"
    fi
    wait "$pid"
    echo $? >"$S/$1.status"
    cp "$3/$1.jsonl" "$S/" 2>/dev/null
}
live_until() { # NAME SIGNAL|hangup DIR
    rm -f /tmp/hangup
    vm-pty --size 120x40 --hangup-file /tmp/hangup --log "$S/$1.screen" -- \
        refscope live -o "$3/$1.jsonl" 2>"$S/$1.err" &
    vpid=$!
    if wait_for_data "$3/$1.jsonl" 300; then
        load 1
        [ "$3" = /tmp ] || { load 2; load 2; }
        case "$2" in
            hangup) touch /tmp/hangup ;;
            *) kill -"$2" $(pidof refscope) ;;
        esac
    else
        echo "harness: refscope live did not start recording" >>"$S/$1.err"
        kill -9 $(pidof refscope)
    fi
    wait "$vpid"
    echo $? >"$S/$1.status"
    cp "$3/$1.jsonl" "$S/" 2>/dev/null
}

for sig in INT TERM HUP KILL; do
    echo "=== record, SIG$sig" >&2
    record_until "record-$sig" "$sig" /tmp
done
for sig in INT TERM HUP hangup KILL; do
    echo "=== live, $sig" >&2
    live_until "live-$sig" "$sig" /tmp
done

echo "=== record, full disk" >&2
mkdir -p /tmp/small && mount -t tmpfs -o size=64k tmpfs /tmp/small
record_until record-diskfull none /tmp/small
umount /tmp/small
echo "=== live, full disk" >&2
mount -t tmpfs -o size=64k tmpfs /tmp/small
live_until live-diskfull TERM /tmp/small
umount /tmp/small

echo "=== record, read-only output" >&2
mkdir -p /tmp/ro && mount -t tmpfs -o ro tmpfs /tmp/ro
refscope record -o /tmp/ro/t.jsonl -d 1 2>"$S/record-readonly.err"
echo $? >"$S/record-readonly.status"
ls -A /tmp/ro >"$S/record-readonly.ls"

# Everything refscope attached is gone, SIGKILL included.
sleep 2
cat /sys/kernel/tracing/enabled_functions >"$S/enabled_functions" 2>&1
cat /sys/kernel/debug/kprobes/list >"$S/kprobes" 2>&1
echo "=== done" >&2
"#;

/// Missing privileges, BTF, kallsyms addresses, and lockdown (7.3).
pub const PRIVILEGES: &str = r#"set -u
S=/share
export TERM=xterm LANG=C.UTF-8
mkdir -p /tmp/u && chown 65534:65534 /tmp/u
cd /tmp/u
as() { # NAME UID CAPS CMD...: as UID with exactly CAPS
    n=$1 u=$2 c=$3
    shift 3
    vm-runas "$u" --caps "$c" -- "$@" >"$S/$n.out" 2>"$S/$n.err" </dev/null
    echo $? >"$S/$n.status"
}
run() { # NAME CMD...: as root
    n=$1
    shift
    "$@" >"$S/$n.out" 2>"$S/$n.err" </dev/null
    echo $? >"$S/$n.status"
}
echo "=== not root" >&2
as nobody-record 65534 "" refscope record -o /tmp/u/a.jsonl -d 1
as nobody-live 65534 "" vm-pty -- refscope live
as nobody-doctor 65534 "" refscope doctor
echo "=== CAP_BPF and CAP_PERFMON only" >&2
as bpf-record 65534 bpf,perfmon refscope record -o /tmp/u/b.jsonl -d 1
as bpf-live 65534 bpf,perfmon vm-pty -- refscope live
as bpf-doctor 65534 bpf,perfmon refscope doctor
echo "=== CAP_BPF, CAP_PERFMON, CAP_SYSLOG: no CAP_SYS_ADMIN" >&2
as nosysadmin-record 65534 bpf,perfmon,syslog refscope record -o /tmp/u/c.jsonl -d 1
as nosysadmin-doctor 65534 bpf,perfmon,syslog refscope doctor
ls -A /tmp/u >"$S/unprivileged.leftovers"
echo "=== no BTF" >&2
: >/tmp/empty
mount --bind /tmp/empty /sys/kernel/btf/vmlinux
echo $? >"$S/nobtf.mount"
run nobtf-record refscope record -o /tmp/nobtf.jsonl -d 1
run nobtf-live vm-pty -- refscope live
run nobtf-doctor refscope doctor
umount /sys/kernel/btf/vmlinux
echo "=== kptr_restrict=2" >&2
echo 2 >/proc/sys/kernel/kptr_restrict
run kptr-record refscope record -o /tmp/kptr.jsonl -d 1
run kptr-doctor refscope doctor
echo 0 >/proc/sys/kernel/kptr_restrict
echo "=== lockdown=confidentiality (last: it cannot be lifted)" >&2
[ -e /sys/kernel/security/lockdown ] || mount -t securityfs securityfs /sys/kernel/security
cat /sys/kernel/security/lockdown >"$S/lockdown.before" 2>&1
echo confidentiality >/sys/kernel/security/lockdown
echo $? >"$S/lockdown.set"
cat /sys/kernel/security/lockdown >"$S/lockdown.after" 2>&1
run lockdown-record refscope record -o /tmp/lockdown.jsonl -d 1
run lockdown-live vm-pty -- refscope live
run lockdown-doctor refscope doctor
ls -A /tmp/*.jsonl >"$S/root.leftovers" 2>/dev/null
echo "=== done" >&2
"#;

/// Both boots run many attaches under TCG.
pub fn long_timeout(cfg: &mut VmConfig) {
    cfg.timeout = Duration::from_secs(1200);
}

/// The refscope the guest ran (static: it runs on the host too).
fn refscope() -> PathBuf {
    util::release_dir().join("refscope")
}

fn read(share: &Path, name: &str) -> String {
    fs::read_to_string(share.join(name)).unwrap_or_else(|e| format!("<{name}: {e}>"))
}

fn status(share: &Path, name: &str) -> Option<i32> {
    read(share, &format!("{name}.status")).trim().parse().ok()
}

/// How a recording must have ended.
#[derive(Clone, Copy, PartialEq)]
enum End {
    /// A footer with `end_reason` "signal".
    Signal,
    /// No footer (SIGKILL); a partial last line is allowed.
    Killed,
    /// No footer, a partial last line allowed (the disk filled up).
    DiskFull,
}

/// A trace from the guest: every complete line is a JSON record, the first
/// the header, events were recorded, the end is as `end` says; then the
/// host's `refscope report --json` reads it (with a warning when it has no
/// footer) and counts the same events.
fn check_trace(share: &Path, name: &str, end: End) -> Result<(), String> {
    let path = share.join(format!("{name}.jsonl"));
    let bytes = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    let partial = &text[complete.len()..];
    if !partial.is_empty() && end == End::Signal {
        return Err(format!("{name}: ends in a partial line: {partial:.80}"));
    }
    let mut events = 0u64;
    let mut footer = None;
    // Kernel addresses are hashed by default: struct page ids must not
    // look like vmemmap addresses (0xffff...), as raw ones all would.
    let (mut ids, mut kernel_like) = (0u64, 0u64);
    for (i, line) in complete.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("{name}: line {}: not JSON ({e}): {line:.100}", i + 1))?;
        let ty = v["type"].as_str().unwrap_or_default();
        if i == 0 && (ty != "header" || v["format"] != "refscope-trace") {
            return Err(format!(
                "{name}: line 1 is not a refscope header: {line:.100}"
            ));
        }
        if i == 0 && v["kernel_addresses"] != "hashed" {
            return Err(format!(
                "{name}: the header says kernel_addresses {}, not hashed",
                v["kernel_addresses"]
            ));
        }
        // Every field that holds a kernel address as an id.
        for field in ["mm", "page", "pgmap", "src_mm"] {
            if let Some(id) = v[field].as_str() {
                ids += 1;
                kernel_like += u64::from(id.starts_with("0xffff"));
            }
        }
        if footer.is_some() {
            return Err(format!("{name}: line {} after the footer", i + 1));
        }
        match ty {
            "event" => events += 1,
            "footer" => footer = Some(v),
            _ => {}
        }
    }
    if events == 0 {
        return Err(format!("{name}: no event was recorded"));
    }
    if ids == 0 || kernel_like * 2 > ids {
        return Err(format!(
            "{name}: {kernel_like} of {ids} kernel-object ids (mm, page, pgmap) look like raw kernel addresses"
        ));
    }
    match (end, &footer) {
        (End::Signal, Some(f)) if f["end_reason"] == "signal" && f["events"] == events => {}
        (End::Signal, f) => {
            return Err(format!(
                "{name}: expected a footer with end_reason signal and {events} events, got {f:?}"
            ));
        }
        (End::Killed | End::DiskFull, Some(f)) => {
            return Err(format!(
                "{name}: a footer after SIGKILL or a full disk: {f}"
            ));
        }
        (End::Killed | End::DiskFull, None) => {}
    }
    let out = Command::new(refscope())
        .args(["report", "--json"])
        .arg(&path)
        .output()
        .map_err(|e| format!("cannot run refscope report: {e}"))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "{name}: refscope report failed ({}): {err}",
            out.status
        ));
    }
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{name}: report --json is not JSON: {e}"))?;
    if doc["events"] != events || doc["complete"] != footer.is_some() {
        return Err(format!(
            "{name}: report counts {} events (complete {}), the trace has {events} (footer {})",
            doc["events"],
            doc["complete"],
            footer.is_some()
        ));
    }
    let warned = err.contains("has no footer") || err.contains("ends in an incomplete line");
    if footer.is_none() != warned {
        return Err(format!(
            "{name}: report's warnings do not fit the trace: {err}"
        ));
    }
    Ok(())
}

/// Status, stderr phrases and trace of one stopped run.
fn check_run(
    share: &Path,
    name: &str,
    want_status: i32,
    phrases: &[&str],
    end: End,
) -> Result<(), String> {
    let got = status(share, name);
    let err = read(share, &format!("{name}.err"));
    if got != Some(want_status) {
        return Err(format!(
            "{name}: exit status {got:?}, expected {want_status}; stderr:\n{}",
            tail(&err)
        ));
    }
    for p in phrases {
        if !err.contains(p) {
            return Err(format!("{name}: stderr lacks {p:?}:\n{}", tail(&err)));
        }
    }
    if err.contains("panicked") || err.contains("harness:") {
        return Err(format!("{name}: {}", tail(&err)));
    }
    check_trace(share, name, end)
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// The checks of [`SIGNALS`].
pub fn signals_checked(o: &VmOutcome, share: &Path) -> Result<(), String> {
    o.verdict(false)?;
    let mut failures = String::new();
    let mut check = |r: Result<(), String>| {
        if let Err(e) = r {
            let _ = writeln!(failures, "{e}");
        }
    };
    const ENOSPC: &str = "No space left on device";
    for sig in ["INT", "TERM", "HUP"] {
        check(check_run(
            share,
            &format!("record-{sig}"),
            0,
            &[],
            End::Signal,
        ));
    }
    for how in ["INT", "TERM", "HUP", "hangup"] {
        check(check_run(
            share,
            &format!("live-{how}"),
            0,
            &[],
            End::Signal,
        ));
    }
    check(check_run(share, "record-KILL", 137, &[], End::Killed));
    check(check_run(share, "live-KILL", 137, &[], End::Killed));
    let writing = "refscope: error: writing /tmp/small/";
    check(check_run(
        share,
        "record-diskfull",
        1,
        &[writing, ENOSPC],
        End::DiskFull,
    ));
    check(check_run(
        share,
        "live-diskfull",
        1,
        &[writing, ENOSPC],
        End::DiskFull,
    ));
    // The view said so while it went on.
    let screen = fs::read(share.join("live-diskfull.screen")).unwrap_or_default();
    if !String::from_utf8_lossy(&screen).contains("recording FAILED") {
        check(Err(
            "live-diskfull: the view never showed 'recording FAILED'".into(),
        ));
    }
    let ro = read(share, "record-readonly.err");
    if status(share, "record-readonly") != Some(1)
        || !ro.contains("refscope: error: cannot create /tmp/ro/t.jsonl: Read-only file system")
        || !read(share, "record-readonly.ls").trim().is_empty()
    {
        check(Err(format!("record-readonly: {ro}")));
    }
    for f in ["enabled_functions", "kprobes"] {
        let left = read(share, f);
        if !left.trim().is_empty() {
            check(Err(format!(
                "still attached after every refscope ended ({f}):\n{}",
                tail(&left)
            )));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// The checks of [`PRIVILEGES`]: (run, exit status, phrases in its stderr
/// (record, live) or stdout (doctor), phrases that must not appear).
const PRIVILEGE_CASES: &[(&str, i32, &[&str], &[&str])] = &[
    (
        "nobody-record",
        1,
        &[
            "refscope: error: refscope needs root",
            "(uid 65534) lacks CAP_BPF CAP_PERFMON CAP_SYSLOG CAP_SYS_ADMIN: run it with sudo",
        ],
        &[],
    ),
    (
        "nobody-live",
        1,
        &["(uid 65534) lacks CAP_BPF CAP_PERFMON CAP_SYSLOG CAP_SYS_ADMIN: run it with sudo"],
        &[],
    ),
    (
        "nobody-doctor",
        1,
        &[
            "[FAIL] privileges   uid 65534 with no relevant capabilities",
            "run with sudo",
            "[ok  ] kprobes",
            "refscope cannot trace here:",
        ],
        // Not what a user without root can see.
        &["CONFIG_KPROBES off", "tracefs is not mounted"],
    ),
    (
        "bpf-record",
        1,
        &["(uid 65534) has CAP_BPF CAP_PERFMON but lacks CAP_SYSLOG CAP_SYS_ADMIN"],
        &[],
    ),
    (
        "bpf-live",
        1,
        &["(uid 65534) has CAP_BPF CAP_PERFMON but lacks CAP_SYSLOG CAP_SYS_ADMIN"],
        &[],
    ),
    (
        "bpf-doctor",
        1,
        &["[FAIL] privileges   uid 65534 with CAP_BPF CAP_PERFMON"],
        &["refscope can trace"],
    ),
    (
        "nosysadmin-record",
        1,
        &["/proc/iomem shows zero addresses: refscope needs CAP_SYS_ADMIN"],
        &[],
    ),
    (
        "nosysadmin-doctor",
        1,
        &["[FAIL] iomem", "CAP_SYS_ADMIN"],
        &["refscope can trace"],
    ),
    (
        "nobtf-record",
        1,
        &["refscope: error: invalid btf in /sys/kernel/btf/vmlinux"],
        &[],
    ),
    (
        "nobtf-live",
        1,
        &["invalid btf in /sys/kernel/btf/vmlinux"],
        &[],
    ),
    ("nobtf-doctor", 1, &["[FAIL] btf"], &[]),
    (
        "kptr-record",
        1,
        &["/proc/kallsyms shows zero addresses", "kptr_restrict"],
        &[],
    ),
    ("kptr-doctor", 1, &["[FAIL] kallsyms", "kptr_restrict"], &[]),
    (
        "lockdown-record",
        1,
        &["refscope: error: kernel lockdown is in confidentiality mode"],
        // One reason, not a warning per program.
        &["could not attach"],
    ),
    (
        "lockdown-live",
        1,
        &["kernel lockdown is in confidentiality mode"],
        &["could not attach"],
    ),
    (
        "lockdown-doctor",
        1,
        &["[FAIL] load", "kernel lockdown is in confidentiality mode"],
        &[],
    ),
];

pub fn privileges_checked(o: &VmOutcome, share: &Path) -> Result<(), String> {
    o.verdict(false)?;
    let mut failures = String::new();
    for (name, want, phrases, forbidden) in PRIVILEGE_CASES {
        let got = status(share, name);
        let text = if name.ends_with("doctor") {
            read(share, &format!("{name}.out"))
        } else {
            read(share, &format!("{name}.err"))
        };
        let missing: Vec<&&str> = phrases.iter().filter(|p| !text.contains(**p)).collect();
        let present: Vec<&&str> = forbidden.iter().filter(|p| text.contains(**p)).collect();
        if got != Some(*want)
            || !missing.is_empty()
            || !present.is_empty()
            || text.contains("panicked")
        {
            let _ = writeln!(
                failures,
                "{name}: exit {got:?} (expected {want}), missing {missing:?}, unwanted {present:?}:\n{}",
                tail(&text)
            );
        }
    }
    for (f, want) in [
        ("nobtf.mount", "0"),
        ("lockdown.set", "0"),
        ("unprivileged.leftovers", ""),
        ("root.leftovers", ""),
    ] {
        let got = read(share, f);
        if got.trim() != want {
            let _ = writeln!(failures, "{f}: {got:?}, expected {want:?}");
        }
    }
    if !read(share, "lockdown.after").contains("[confidentiality]") {
        let _ = writeln!(
            failures,
            "lockdown was not set: {}",
            read(share, "lockdown.after")
        );
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}
