//! Checks of the recorded trace itself (the JSONL events and their
//! header): the invariants every trace must satisfy (page events in a
//! device range, GUP deltas matching the flags), a map event for every
//! mapping the workload reports, and events of a `--attach kprobe` case all
//! coming through kprobes.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// What must hold for every trace (issue 4): page events lie in a device
/// range (no event from other processes' ordinary pages), and GUP deltas
/// match the flags (+1 per FOLL_GET, +1024 per FOLL_PIN on small folios).
pub(super) fn invariants(header: &Value, events: &[Value]) -> Vec<String> {
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
pub(super) fn mappings(workload: &str, events: &[Value]) -> Vec<String> {
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

/// A case recorded with `--attach kprobe` must have seen every probe event
/// through a kprobe (entry or return): a run that used fentry silently
/// would prove nothing about the fallback.
pub(super) fn attach_problems(record_args: &str, events: &[Value]) -> Vec<String> {
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
    fn mappings_must_match_map_events() {
        let wl = r#"{"event":"done","pid":7,"mappings":[{"vaddr":"0x1000","pfn":150},{"vaddr":"0x2000","pfn":151}]}"#;
        let events: Vec<Value> = vec![
            serde_json::from_str(r#"{"kind":"map","pid":7,"vaddr":"0x1000","pfn":150}"#).unwrap(),
        ];
        let p = mappings(wl, &events);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("1 of 2"), "{p:?}");
    }
}
