//! Host-side checks of one case's outputs against its expectations.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
    process::Command,
};

use serde_json::Value;

use super::table::{Case, Count, Kind, Oracle};

/// What the trace and the report showed.
#[derive(Debug, Default)]
pub struct Observed {
    /// Rule id -> (findings, severity).
    pub findings: BTreeMap<String, (u64, String)>,
    /// Event kind -> count.
    pub events: BTreeMap<String, u64>,
    pub oops: bool,
    pub lost: u64,
    /// Divergences the shadow audit found, shown when the case expects
    /// some (a hook left out on purpose).
    pub drift: Option<u64>,
    /// `command` cases: the command's output.
    pub output: Option<String>,
}

impl Observed {
    /// A README table cell: the findings, or "none".
    pub fn cell(&self) -> String {
        let mut parts: Vec<String> = self
            .findings
            .iter()
            .map(|(rule, (n, sev))| format!("{n} `{rule}` ({sev})"))
            .collect();
        if let Some(out) = &self.output {
            return out.clone();
        }
        if parts.is_empty() {
            parts.push("no findings".into());
        }
        if self.lost > 0 {
            parts.push(format!("{} events lost", self.lost));
        }
        if let Some(d) = self.drift {
            parts.push(format!("drift {d}"));
        }
        if self.oops {
            parts.push("then the known oops".into());
        }
        parts.join(", ")
    }
}

fn read(dir: &Path, file: &str) -> Result<String, String> {
    fs::read_to_string(dir.join(file)).map_err(|e| format!("{}: {e}", dir.join(file).display()))
}

fn status(dir: &Path, file: &str) -> Option<i32> {
    read(dir, file).ok().and_then(|s| s.trim().parse().ok())
}

/// Check `case` on `kernel`; `dir` holds what the guest copied out (the
/// layout the suite's guest script writes).
pub fn check(
    case: &Case,
    kernel: &str,
    dir: &Path,
    refscope: &Path,
    oops: bool,
) -> Result<Observed, String> {
    let Some(expect) = case.kernels.get(kernel) else {
        return Err(format!(
            "case `{}` has no expectations for {kernel}",
            case.name
        ));
    };
    if case.kind == Kind::Command {
        return check_command(case, kernel, dir);
    }
    let mut problems = Vec::new();
    if !dir.join("t.jsonl").exists() {
        let err = read(dir, "record.err").unwrap_or_default();
        return Err(format!(
            "no trace was copied out (the case did not run)\n{err}"
        ));
    }
    match status(dir, "record.status") {
        Some(0) => {}
        other => problems.push(format!(
            "refscope record exited with {other:?}: {}",
            read(dir, "record.err")
                .unwrap_or_default()
                .lines()
                .last()
                .unwrap_or_default()
        )),
    }
    // An unplug case's workload exit is not awaited when it oopses.
    let wl_status = status(dir, "workload.status");
    if !(case.kind == Kind::Unplug && expect.oops) && wl_status != Some(0) {
        problems.push(format!(
            "the workload exited with {wl_status:?}: {}",
            read(dir, "wl.err").unwrap_or_default().trim_end()
        ));
    }

    let trace = read(dir, "t.jsonl")?;
    let mut lines = trace.lines();
    let header: Value = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or("the trace has no header")?;
    let events: Vec<Value> = lines
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "event")
        .collect();
    let mut obs = Observed {
        oops,
        ..Observed::default()
    };
    for e in &events {
        *obs.events
            .entry(e["kind"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    if events.is_empty() {
        problems.push("the tracer recorded no event for the scenario".into());
    }
    problems.extend(attach_problems(&case.record_args, &events));

    // The report, as a user would get it.
    let out = Command::new(refscope)
        .arg("report")
        .arg("--json")
        .arg(dir.join("t.jsonl"))
        .output()
        .map_err(|e| format!("cannot run {}: {e}", refscope.display()))?;
    if !out.status.success() {
        return Err(format!(
            "refscope report failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let report: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("refscope report --json is not JSON: {e}"))?;
    fs::write(dir.join("report.json"), &out.stdout).ok();
    for f in report["findings"].as_array().into_iter().flatten() {
        let rule = f["rule"].as_str().unwrap_or("?").to_owned();
        let sev = f["severity"].as_str().unwrap_or("?").to_owned();
        let e = obs.findings.entry(rule).or_insert((0, sev));
        e.0 += 1;
    }

    // Findings: exact for listed rules; nothing serious beyond them.
    for (rule, n) in &expect.findings {
        let got = obs.findings.get(rule).map_or(0, |f| f.0);
        if !n.matches(got) {
            problems.push(format!("expected {n} {rule}, got {got}"));
        }
    }
    let unlisted_serious = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| {
            !expect
                .findings
                .contains_key(f["rule"].as_str().unwrap_or(""))
        })
        .filter(|f| f["severity"] != "info");
    for f in unlisted_serious {
        if !(expect.uncertain_ok && f["status"] == "uncertain") {
            problems.push(format!(
                "unexpected {} {} ({}): {}",
                f["status"].as_str().unwrap_or("?"),
                f["rule"].as_str().unwrap_or("?"),
                f["severity"].as_str().unwrap_or("?"),
                f["explanation"].as_str().unwrap_or("")
            ));
        }
    }
    let lost = report["lost"].as_u64().unwrap_or(0);
    obs.lost = lost;
    match expect.lost {
        Some(c) if !c.matches(lost) => {
            problems.push(format!("expected {c} lost events, got {lost}"))
        }
        None if lost > 0 => problems.push(format!("{lost} events were lost")),
        _ => {}
    }
    problems.extend(audit_problems(&report, expect.drift, case.oracle.is_some()));
    if expect.drift.is_some() {
        let st = &report["stats"];
        obs.drift = Some(
            st["drift_missing"].as_u64().unwrap_or(0) + st["drift_stale"].as_u64().unwrap_or(0),
        );
    }
    for (kind, count) in &expect.events {
        let got = obs.events.get(kind).copied().unwrap_or(0);
        if !count.matches(got) {
            problems.push(format!("expected {count} {kind} events, got {got}"));
        }
    }
    if let Some(c) = expect.at_attach {
        let n = report["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["at_attach"] == true)
            .count() as u64;
        if !c.matches(n) {
            problems.push(format!(
                "expected {c} findings marked as present at attach, got {n}"
            ));
        }
    }
    problems.extend(invariants(&header, &events));
    if case.check_mappings {
        let wl = read(dir, "wl.json").unwrap_or_default();
        problems.extend(mappings(&wl, &events));
        if case.exact_mappings {
            problems.extend(exact_mappings(&wl, &report));
        }
    }
    if case.oracle == Some(Oracle::Pagemap) {
        let wl = read(dir, "wl.json").unwrap_or_default();
        problems.extend(pagemap_oracle(&wl, &report));
    }
    if problems.is_empty() {
        Ok(obs)
    } else {
        Err(format!(
            "{}\n(observed findings: {}; events: {:?})",
            problems.join("\n"),
            obs.cell(),
            obs.events
        ))
    }
}

/// A `command` case: exit status 0 and the expected output.
fn check_command(case: &Case, kernel: &str, dir: &Path) -> Result<Observed, String> {
    let expect = &case.kernels[kernel];
    let out = read(dir, "out.txt")?;
    let mut problems = Vec::new();
    if status(dir, "command.status") != Some(0) {
        problems.push(format!(
            "`{}` exited with {:?}",
            case.workload,
            status(dir, "command.status")
        ));
    }
    for s in &expect.stdout {
        if !out.contains(s.as_str()) {
            problems.push(format!("output lacks `{s}`"));
        }
    }
    if problems.is_empty() {
        Ok(Observed {
            output: Some(out.lines().last().unwrap_or_default().to_owned()),
            ..Observed::default()
        })
    } else {
        Err(format!(
            "{}
--- output ---
{out}",
            problems.join("\n")
        ))
    }
}

/// What must hold for every trace (issue 4): page events lie in a device
/// range (no event from other processes' ordinary pages), and GUP deltas
/// match the flags (+1 per FOLL_GET, +1024 per FOLL_PIN on small folios).
fn invariants(header: &Value, events: &[Value]) -> Vec<String> {
    let mut p = Vec::new();
    let mut ranges: Vec<(u64, u64)> = header["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| Some((d["pfn_start"].as_u64()?, d["pfn_end"].as_u64()?)))
        .collect();
    for e in events {
        if e["kind"] == "pgmap_add"
            && let (Some(a), Some(b)) = (e["pfn"].as_u64(), e["pfn_end"].as_u64())
        {
            ranges.push((a, b));
        }
    }
    let page_kinds = ["map", "gup_get", "gup_put", "ref_put", "free"];
    let outside: Vec<u64> = events
        .iter()
        .filter(|e| page_kinds.contains(&e["kind"].as_str().unwrap_or("")))
        .filter_map(|e| e["pfn"].as_u64())
        .filter(|pfn| !ranges.iter().any(|&(a, b)| a <= *pfn && *pfn < b))
        .collect();
    if !ranges.is_empty() && !outside.is_empty() {
        p.push(format!(
            "{} page events outside the device ranges {ranges:x?} (e.g. pfn {:#x})",
            outside.len(),
            outside[0]
        ));
    }
    let pin_bit = header["gup_flags"]["foll_pin"].as_u64().unwrap_or(0);
    let bias = header["gup_flags"]["pin_bias"].as_i64().unwrap_or(1024);
    // Pages of a 1 GiB device-dax mapping belong to one large folio (the
    // device's vmemmap_shift): a pin adds `refs` to its _refcount and counts
    // itself in _pincount instead of adding the pin bias.
    let large: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e["kind"] == "map" && e["order"].as_u64() == Some(18))
        .filter_map(|e| e["pfn"].as_u64())
        .map(|pfn| (pfn, pfn + (1 << 18)))
        .collect();
    for e in events.iter().filter(|e| e["kind"] == "gup_get") {
        let failed = e["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "failed"));
        let (Some(b), Some(a)) = (e["ref_before"].as_i64(), e["ref_after"].as_i64()) else {
            continue;
        };
        if failed || e["order"].as_u64().unwrap_or(0) > 0 {
            continue;
        }
        let flags = u64::from_str_radix(
            e["arg_flags"]
                .as_str()
                .unwrap_or("0x0")
                .trim_start_matches("0x"),
            16,
        )
        .unwrap_or(0);
        let refs = e["refs"].as_i64().unwrap_or(1).max(1);
        let in_large = e["pfn"]
            .as_u64()
            .is_some_and(|pfn| large.iter().any(|&(a, b)| a <= pfn && pfn < b));
        let want = if flags & pin_bit != 0 && !in_large {
            refs * bias
        } else {
            refs
        };
        if a - b != want {
            p.push(format!(
                "gup_get on pfn {:#x}: refcount {b} -> {a}, expected +{want}",
                e["pfn"].as_u64().unwrap_or(0)
            ));
        }
    }
    p
}

/// Every mapping the workload reports has a map event with the same
/// virtual address and pfn in a process of the workload.
fn mappings(workload: &str, events: &[Value]) -> Vec<String> {
    let mut p = Vec::new();
    let mut want: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut pids: BTreeSet<u64> = BTreeSet::new();
    for line in workload.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if !["done", "ready", "faulted"].contains(&v["event"].as_str().unwrap_or("")) {
            continue;
        }
        if let Some(pid) = v["pid"].as_u64() {
            pids.insert(pid);
        }
        for m in v["mappings"].as_array().into_iter().flatten() {
            let va = u64::from_str_radix(
                m["vaddr"].as_str().unwrap_or("").trim_start_matches("0x"),
                16,
            );
            if let (Ok(va), Some(pfn)) = (va, m["pfn"].as_u64()) {
                want.insert((va, pfn));
            }
        }
    }
    if want.is_empty() {
        p.push("the workload reported no mappings".into());
        return p;
    }
    let seen: BTreeSet<(u64, u64)> = events
        .iter()
        // A probe saw it installed, or the attach snapshot found it.
        .filter(|e| e["kind"] == "map" || e["kind"] == "attach_map")
        .filter(|e| e["pid"].as_u64().is_some_and(|pid| pids.contains(&pid)))
        .filter_map(|e| {
            let va = u64::from_str_radix(e["vaddr"].as_str()?.trim_start_matches("0x"), 16).ok()?;
            Some((va, e["pfn"].as_u64()?))
        })
        .collect();
    let missing: Vec<&(u64, u64)> = want.difference(&seen).collect();
    if !missing.is_empty() {
        p.push(format!(
            "{} of {} mappings have no map event with the same address and pfn, e.g. {:#x} -> pfn {:#x}",
            missing.len(),
            want.len(),
            missing[0].0,
            missing[0].1
        ));
    }
    p
}

/// The workload's mappings, each counted once: the report's live mappings
/// at the end and its installed count equal the number the workload
/// reports (it holds them while the recording stops).
fn exact_mappings(workload: &str, report: &Value) -> Vec<String> {
    let mut want: BTreeSet<String> = BTreeSet::new();
    for line in workload.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if ["ready", "faulted"].contains(&v["event"].as_str().unwrap_or("")) {
            for m in v["mappings"].as_array().into_iter().flatten() {
                want.insert(m["vaddr"].as_str().unwrap_or("").to_owned());
            }
        }
    }
    let n = want.len() as u64;
    let mut p = Vec::new();
    let live = report["mappings"].as_u64();
    let installed = report["stats"]["mappings_installed"].as_u64();
    if live != Some(n) {
        p.push(format!(
            "the workload holds {n} mappings, the report has {live:?} live mappings"
        ));
    }
    if installed != Some(n) {
        p.push(format!(
            "the workload made {n} mappings, the report counts {installed:?} installs"
        ));
    }
    p
}

fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// One mapped page: (pid, virtual address, pfn).
type Page = (u64, u64, u64);

fn page_str((pid, va, pfn): Page) -> String {
    format!("pid {pid} vaddr {va:#x} pfn {pfn:#x}")
}

/// A case recorded with `--attach kprobe` must have seen every probe event
/// through a kprobe (entry or return): a run that used fentry silently
/// would prove nothing about the fallback.
fn attach_problems(record_args: &str, events: &[Value]) -> Vec<String> {
    let args: Vec<&str> = record_args.split_whitespace().collect();
    let want_kprobe = args.windows(2).any(|w| w == ["--attach", "kprobe"]);
    if !want_kprobe {
        return Vec::new();
    }
    let mut other: BTreeMap<String, u64> = BTreeMap::new();
    for e in events {
        let via = e["attach"].as_str().unwrap_or("?");
        if matches!(via, "fentry" | "fexit" | "?") {
            *other
                .entry(format!("{} via {via}", e["kind"].as_str().unwrap_or("?")))
                .or_default() += 1;
        }
    }
    if other.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "recorded with --attach kprobe, yet events came through other attachments: {other:?}"
    )]
}

/// The shadow audit must have run and found the shadow equal to the
/// kernel's page tables: any divergence is a kernel path refscope missed.
/// `must_run`: the case holds its mappings until the unbind, so the audit
/// confirming the accusations must be in the trace (elsewhere a workload
/// may come and go between two audits). A run that lost events may drift:
/// correcting what was lost is the audit's job. Divergences an older event
/// explained after the read (`drift_late`) are not drift.
fn audit_problems(report: &Value, want: Option<Count>, must_run: bool) -> Vec<String> {
    let mut p = Vec::new();
    if report["audited"] != true {
        p.push("the recording did not audit its shadow against the page tables".into());
        return p;
    }
    let stats = &report["stats"];
    if must_run && stats["audits"].as_u64().unwrap_or(0) == 0 {
        p.push("the shadow audit never ran (no `audit` event in the trace)".into());
    }
    if report["lost"].as_u64().unwrap_or(0) > 0 && want.is_none() {
        return p;
    }
    let drift =
        stats["drift_missing"].as_u64().unwrap_or(0) + stats["drift_stale"].as_u64().unwrap_or(0);
    if let Some(want) = want {
        if !want.matches(drift) {
            p.push(format!(
                "expected {want} divergence(s) from the shadow audit (a hook is left out), got {drift}"
            ));
        }
        return p;
    }
    if drift > 0 {
        let first: Vec<String> = report["drift"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["late"] != true)
            .take(5)
            .map(|d| {
                format!(
                    "{} pfn {} at {} of pid {}: {}",
                    d["kind"].as_str().unwrap_or("?"),
                    d["pfn"],
                    d["vaddr"].as_str().unwrap_or("?"),
                    d["pid"],
                    d["hint"].as_str().unwrap_or("?")
                )
            })
            .collect();
        p.push(format!(
            "the shadow audit found {drift} divergence(s) from the kernel's page tables: {}",
            first.join("; ")
        ));
    }
    p
}

/// `oracle: pagemap`: the last `oracle` line of each workload process lists
/// every present page of its mappings as `/proc/self/pagemap` showed them
/// right before the unbind. The report's `mapped_after_unplug` findings,
/// page by page (a finding of order k covers 2^k pages), must be exactly
/// those (pid, vaddr, pfn): every difference is listed.
fn pagemap_oracle(workload: &str, report: &Value) -> Vec<String> {
    let mut last: BTreeMap<u64, Value> = BTreeMap::new();
    for line in workload.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["event"] == "oracle"
            && v["source"] == "pagemap"
            && let Some(pid) = v["pid"].as_u64()
        {
            last.insert(pid, v);
        }
    }
    if last.is_empty() {
        return vec!["oracle: the workload printed no pagemap `oracle` line".into()];
    }
    let mut p = Vec::new();
    let mut want: BTreeSet<Page> = BTreeSet::new();
    for (pid, v) in &last {
        for page in v["pages"].as_array().into_iter().flatten() {
            let va = page["vaddr"].as_str().and_then(parse_hex);
            match (va, page["pfn"].as_u64()) {
                (Some(va), Some(pfn)) => {
                    want.insert((*pid, va, pfn));
                }
                _ => p.push(format!(
                    "oracle: pid {pid} reported a page without address or pfn (pagemap hides pfns without CAP_SYS_ADMIN): {page}"
                )),
            }
        }
    }
    if want.is_empty() {
        p.push("oracle: the workload's pagemap shows no present page".into());
        return p;
    }
    let mut got: BTreeMap<Page, u64> = BTreeMap::new();
    for f in report["findings"].as_array().into_iter().flatten() {
        if f["rule"] != "mapped_after_unplug" {
            continue;
        }
        if f["status"] != "definite" {
            p.push(format!(
                "oracle: a mapped_after_unplug finding is {}, not confirmed by the page table: {}",
                f["status"], f["explanation"]
            ));
        }
        let (Some(pid), Some(va), Some(pfn)) = (
            f["pid"].as_u64(),
            f["vaddr"].as_str().and_then(parse_hex),
            f["pfn"].as_u64(),
        ) else {
            p.push(format!(
                "oracle: a mapped_after_unplug finding without pid, vaddr or pfn: {f}"
            ));
            continue;
        };
        let order = f["order"].as_u64().unwrap_or(0).min(18);
        for i in 0..1u64 << order {
            *got.entry((pid, va + i * 4096, pfn + i)).or_default() += 1;
        }
    }
    let missing: Vec<Page> = want
        .iter()
        .filter(|k| !got.contains_key(k))
        .copied()
        .collect();
    let extra: Vec<Page> = got.keys().filter(|k| !want.contains(k)).copied().collect();
    let twice: Vec<(Page, u64)> = got
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, n)| (*k, *n))
        .collect();
    if !missing.is_empty() || !extra.is_empty() || !twice.is_empty() {
        p.push(format!(
            "oracle: the mapped_after_unplug findings are not the {} pages pagemap showed before the unbind: {} missing, {} extra, {} found more than once",
            want.len(),
            missing.len(),
            extra.len(),
            twice.len()
        ));
        p.extend(
            missing
                .into_iter()
                .map(|k| format!("  missing: {}", page_str(k))),
        );
        p.extend(
            extra
                .into_iter()
                .map(|k| format!("  extra:   {}", page_str(k))),
        );
        p.extend(
            twice
                .into_iter()
                .map(|(k, n)| format!("  {n} times: {}", page_str(k))),
        );
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gup_deltas_and_device_ranges_are_checked() {
        let header: Value = serde_json::from_str(
            r#"{"devices":[{"pfn_start":100,"pfn_end":200}],"gup_flags":{"foll_pin":524288,"pin_bias":1024}}"#,
        )
        .unwrap();
        let ok: Vec<Value> = vec![
            serde_json::from_str(r#"{"kind":"map","pfn":150}"#).unwrap(),
            serde_json::from_str(r#"{"kind":"gup_get","pfn":150,"ref_before":1,"ref_after":1025,"arg_flags":"0x80000","refs":1}"#).unwrap(),
            serde_json::from_str(r#"{"kind":"gup_get","pfn":151,"ref_before":2,"ref_after":3,"arg_flags":"0x2","refs":1}"#).unwrap(),
        ];
        assert!(
            invariants(&header, &ok).is_empty(),
            "{:?}",
            invariants(&header, &ok)
        );
        let bad: Vec<Value> = vec![
            serde_json::from_str(r#"{"kind":"map","pfn":5}"#).unwrap(),
            serde_json::from_str(r#"{"kind":"gup_get","pfn":150,"ref_before":1,"ref_after":2,"arg_flags":"0x80000","refs":1}"#).unwrap(),
        ];
        let p = invariants(&header, &bad);
        assert_eq!(p.len(), 2, "{p:?}");
    }

    #[test]
    fn a_kprobe_case_fails_on_an_event_through_fentry() {
        let ev = |kind: &str, via: &str| -> Value {
            serde_json::json!({"type": "event", "kind": kind, "attach": via})
        };
        let events = [
            ev("map", "kretprobe"),
            ev("unmap", "kprobe"),
            ev("audit", "audit"),
        ];
        assert!(attach_problems("--attach kprobe", &events).is_empty());
        assert!(attach_problems("", &[ev("map", "fexit")]).is_empty());
        let mixed = [ev("map", "kprobe"), ev("remap", "fentry")];
        let p = attach_problems("--ringbuf-size 4096 --attach kprobe", &mixed);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("remap via fentry"), "{p:?}");
    }

    #[test]
    fn any_drift_or_a_missing_audit_fails_a_scenario() {
        let r = |s: &str| -> Value { serde_json::from_str(s).unwrap() };
        let clean = r(
            r#"{"audited":true,"stats":{"audits":3,"drift_missing":0,"drift_stale":0},"drift":[]}"#,
        );
        assert!(audit_problems(&clean, None, true).is_empty());
        let off = r(r#"{"audited":false,"stats":{}}"#);
        assert_eq!(audit_problems(&off, None, false).len(), 1);
        let never = r(r#"{"audited":true,"stats":{"audits":0,"drift_missing":0,"drift_stale":0}}"#);
        assert_eq!(audit_problems(&never, None, true).len(), 1);
        assert!(audit_problems(&never, None, false).is_empty());
        let drift = r(
            r#"{"audited":true,"stats":{"audits":2,"drift_missing":0,"drift_stale":1},"drift":[{"kind":"stale","pfn":5,"vaddr":"0x1000","pid":7,"hint":"replaced in place (cow)"}]}"#,
        );
        let p = audit_problems(&drift, None, true);
        assert!(
            p.len() == 1 && p[0].contains("1 divergence") && p[0].contains("cow"),
            "{p:?}"
        );
        // A case that leaves a hook out expects its drift, exactly.
        let one: Count = serde_json::from_str("\"1\"").unwrap();
        let p = audit_problems(&drift, Some(one), true);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(audit_problems(&clean, Some(one), true).len(), 1);
        // Events lost: the audit correcting them is not a failure.
        let lossy = r(
            r#"{"audited":true,"lost":5,"stats":{"audits":2,"drift_missing":3,"drift_stale":0},"drift":[]}"#,
        );
        assert!(audit_problems(&lossy, None, false).is_empty());
    }

    #[test]
    fn mappings_must_match_map_events() {
        let wl = r#"{"event":"done","pid":7,"mappings":[{"vaddr":"0x1000","pfn":150},{"vaddr":"0x2000","pfn":151}]}"#;
        let events: Vec<Value> = vec![
            serde_json::from_str(r#"{"kind":"map","pid":7,"vaddr":"0x1000","pfn":150}"#).unwrap(),
        ];
        let p = mappings(wl, &events);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("1 of 2"), "{p:?}");
    }

    #[test]
    fn the_pagemap_oracle_must_match_the_findings_page_by_page() {
        let wl = concat!(
            r#"{"event":"oracle","source":"pagemap","pid":7,"pages":[{"vaddr":"0x1000","pfn":150}]}"#,
            "\n",
            r#"{"event":"oracle","source":"pagemap","pid":7,"pages":[{"vaddr":"0x5000","pfn":150},{"vaddr":"0x6000","pfn":151},{"vaddr":"0x7000","pfn":152}]}"#,
            "\n",
            r#"{"event":"ready","pid":7}"#,
        );
        let report = |findings: &str| -> Value {
            serde_json::from_str(&format!(r#"{{"findings":[{findings}]}}"#)).unwrap()
        };
        let f = |va: &str, pfn: u64| {
            format!(
                r#"{{"rule":"mapped_after_unplug","status":"definite","pid":7,"vaddr":"{va}","pfn":{pfn},"order":0}}"#
            )
        };
        // The last oracle line of the pid counts; other rules are ignored.
        let ok = report(
            &[
                f("0x5000", 150),
                f("0x6000", 151),
                f("0x7000", 152),
                r#"{"rule":"zero_ref_mapping","pid":7,"vaddr":"0x1000","pfn":150}"#.into(),
            ]
            .join(","),
        );
        assert!(
            pagemap_oracle(wl, &ok).is_empty(),
            "{:?}",
            pagemap_oracle(wl, &ok)
        );
        // Moved to the wrong place: each address is named.
        let bad = report(&[f("0x5000", 150), f("0x9000", 151), f("0x9000", 151)].join(","));
        let p = pagemap_oracle(wl, &bad);
        assert!(
            p[0].contains("2 missing, 1 extra, 1 found more than once"),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|l| l.contains("missing: pid 7 vaddr 0x6000 pfn 0x97")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|l| l.contains("missing: pid 7 vaddr 0x7000 pfn 0x98")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|l| l.contains("extra:   pid 7 vaddr 0x9000 pfn 0x97")),
            "{p:?}"
        );
        // A PMD finding covers its 512 pages.
        let pmd = r#"{"event":"oracle","source":"pagemap","pid":7,"pages":[{"vaddr":"0x200000","pfn":512},{"vaddr":"0x201000","pfn":513}]}"#;
        let one = report(
            r#"{"rule":"mapped_after_unplug","status":"definite","pid":7,"vaddr":"0x200000","pfn":512,"order":1}"#,
        );
        assert!(pagemap_oracle(pmd, &one).is_empty());
        // Right pages, but not confirmed by the page table: a failure.
        let unconfirmed = report(
            r#"{"rule":"mapped_after_unplug","status":"unconfirmed","pid":7,"vaddr":"0x200000","pfn":512,"order":1}"#,
        );
        let p = pagemap_oracle(pmd, &unconfirmed);
        assert!(p.len() == 1 && p[0].contains("unconfirmed"), "{p:?}");
        // No oracle, or hidden pfns: a failure, never a pass.
        assert_eq!(pagemap_oracle(r#"{"event":"ready"}"#, &ok).len(), 1);
        let hidden = r#"{"event":"oracle","source":"pagemap","pid":7,"pages":[{"vaddr":"0x1000","pfn":null}]}"#;
        assert!(!pagemap_oracle(hidden, &ok).is_empty());
    }
}
