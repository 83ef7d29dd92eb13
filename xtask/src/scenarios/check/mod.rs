//! Host-side checks of one case's outputs against its expectations: this
//! module reads what the guest copied out and compares the findings, event
//! counts and losses with the case's expectations; [`trace`] checks the
//! recorded events themselves, [`report`] the analysis against the
//! workload's own account of its mappings and the shadow audit.

mod report;
mod trace;

use std::{collections::BTreeMap, fs, path::Path, process::Command};

use serde_json::Value;

use self::{
    report::{audit_problems, exact_mappings, pagemap_oracle},
    trace::{attach_problems, invariants, mappings},
};
use super::table::{Case, Kind, Oracle};

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

/// A program of the plan that did not attach (the kernel's verifier
/// refused it, or its function moved) only shows as a warning and as
/// events missing later; here it is a failure of its own, naming the
/// program and the kernel's reason.
fn refused_programs(record_err: &str) -> Option<String> {
    let refused: Vec<&str> = record_err
        .lines()
        .filter(|l| l.contains("could not attach"))
        .collect();
    let first = refused.first()?;
    Some(format!(
        "{} planned program(s) did not attach; the first: {first:.300}",
        refused.len()
    ))
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
    if let Some(refused) = refused_programs(&read(dir, "record.err").unwrap_or_default()) {
        problems.push(refused);
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

#[cfg(test)]
mod tests {
    use super::refused_programs;

    #[test]
    fn a_planned_program_that_did_not_attach_is_a_failure() {
        let err = "refscope: warn: could not attach try_grab_folio_fexit (try_grab_folio): \
                   BPF program is too large\nrefscope: recording to /tmp/t.jsonl\n";
        let got = refused_programs(err).expect("a failure");
        assert!(got.starts_with("1 planned program(s)"), "{got}");
        assert!(got.contains("try_grab_folio_fexit"), "{got}");
        assert_eq!(
            refused_programs("refscope: recording to /tmp/t.jsonl\n"),
            None
        );
    }
}
