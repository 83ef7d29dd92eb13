//! Checks of `refscope report --json` output against the workload's own
//! account: the live and installed mapping counts, the shadow audit (it
//! ran, and found no drift beyond what the case expects) and, for
//! `oracle: pagemap` cases, the `mapped_after_unplug` findings page by page
//! against what `/proc/self/pagemap` showed before the unbind.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::scenarios::table::Count;

/// The workload's mappings, each counted once: the report's live mappings
/// at the end and its installed count equal the number the workload
/// reports (it holds them while the recording stops).
pub(super) fn exact_mappings(workload: &str, report: &Value) -> Vec<String> {
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

/// The shadow audit must have run and found the shadow equal to the
/// kernel's page tables: any divergence is a kernel path refscope missed.
/// `must_run`: the case holds its mappings until the unbind, so the audit
/// confirming the accusations must be in the trace (elsewhere a workload
/// may come and go between two audits). A run that lost events may drift:
/// correcting what was lost is the audit's job. Divergences an older event
/// explained after the read (`drift_late`) are not drift.
pub(super) fn audit_problems(report: &Value, want: Option<Count>, must_run: bool) -> Vec<String> {
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
pub(super) fn pagemap_oracle(workload: &str, report: &Value) -> Vec<String> {
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
