//! Numbers, times and names as the live view prints them.

use refscope_core::analysis::Severity;

/// `+1.234567s` since the start of the trace.
pub fn rel(t: u64, t0: u64) -> String {
    if t >= t0 {
        format!("+{:.3}s", (t - t0) as f64 / 1e9)
    } else {
        format!("-{:.3}s", (t0 - t) as f64 / 1e9)
    }
}

/// `+1.234567` seconds since the start, in 10 cells: microseconds while
/// they fit, fewer decimals for later times.
pub fn rel_us(t: u64, t0: u64) -> String {
    let (sign, ns) = if t >= t0 {
        ('+', t - t0)
    } else {
        ('-', t0 - t)
    };
    let secs = ns as f64 / 1e9;
    let int_digits = (ns / 1_000_000_000).max(1).ilog10() as usize + 1;
    let decimals = 8usize.saturating_sub(int_digits).min(6);
    format!("{sign}{secs:.decimals$}")
}

/// Short age: `850ms`, `4.2s`, `37s`, `5m07s`, `3h05m`.
pub fn age(now: u64, t: u64) -> String {
    let ns = now.saturating_sub(t);
    let s = ns / 1_000_000_000;
    if ns < 1_000_000_000 {
        format!("{}ms", ns / 1_000_000)
    } else if s < 10 {
        format!("{:.1}s", ns as f64 / 1e9)
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    }
}

/// `1,234,567`.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `950`, `12.3k`, `4.5M`.
pub fn compact(v: f64) -> String {
    if v < 1000.0 {
        format!("{v:.0}")
    } else if v < 1e6 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{:.1}M", v / 1e6)
    }
}

/// Width of the findings' process column and the timeline's.
pub(super) const PROCESS_W: u16 = 17;

pub(super) const WHO_W: u16 = 16;

pub(super) fn sev_label(s: Severity) -> &'static str {
    match s {
        Severity::Error => "ERR",
        Severity::Warning => "WARN",
        Severity::Info => "INFO",
    }
}

/// `comm[pid]` in at most `width` cells: the command name is cut, never
/// the pid.
pub(super) fn who_fit(pid: u32, comm: &str, width: usize) -> String {
    let pid = format!("[{pid}]");
    let room = width.saturating_sub(pid.len());
    let comm: String = comm.chars().take(room).collect();
    format!("{comm}{pid}")
}

pub(super) fn who(pid: u32, comm: &str) -> String {
    if comm.is_empty() {
        format!("[{pid}]")
    } else {
        format!("{comm}[{pid}]")
    }
}

pub(super) fn opt(v: Option<i32>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use refscope_core::analysis::TimelineEntry;

    use crate::live::ui::page::sparkline;

    #[test]
    fn formatting() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(compact(12.4), "12");
        assert_eq!(compact(12_345.0), "12.3k");
        assert_eq!(compact(4_500_000.0), "4.5M");
        assert_eq!(age(5_000_000_000, 4_150_000_000), "850ms");
        assert_eq!(age(5_000_000_000, 800_000_000), "4.2s");
        assert_eq!(age(40_000_000_000, 3_000_000_000), "37s");
        assert_eq!(age(307_000_000_000, 0), "5m07s");
        assert_eq!(age(3 * 3600 * 1_000_000_000 + 300_000_000_000, 0), "3h05m");
        assert_eq!(age(0, 10), "0ms");
        assert_eq!(rel(1_500_000_000, 1_000_000_000), "+0.500s");
        assert_eq!(rel_us(1_500_000_000, 1_000_000_000), "+0.500000");
        assert_eq!(rel_us(148_275_360_123, 1_000_000_000), "+147.27536");
        assert_eq!(rel_us(12_345_678_900_000, 0), "+12345.679");
        assert_eq!(rel_us(0, 2_000_000_000), "-2.000000");
        assert_eq!(who_fit(216, "refscope-worklo", 16), "refscope-wo[216]");
        assert_eq!(who_fit(7, "fio", 16), "fio[7]");
        assert_eq!(
            who_fit(1234567, "x", 4),
            "[1234567]",
            "the pid is never cut"
        );
    }

    #[test]
    fn sparkline_scales_logical_refcounts() {
        use refscope_common::{EventKind, HookId};
        use refscope_core::event::{Comm, Event};
        let mk = |r: i32| {
            let mut e = Event::new(EventKind::Map, HookId::InsertPfn);
            e.ref_after = Some(r);
            e.comm = Comm::default();
            TimelineEntry::from_event(&e, None)
        };
        let tl: Vec<_> = [1, 2, 1025, 2, 1].into_iter().map(mk).collect();
        let (s, lo, hi, n) = sparkline(&tl, 1, 80, false);
        assert_eq!((lo, hi, n), (0, 1024, 5));
        assert_eq!(s, "▁▁█▁▁");
        let (s, ..) = sparkline(&tl, 1, 3, true);
        assert_eq!(s, "#__", "only the newest fit, ASCII ramp");
        assert_eq!(sparkline(&[], 0, 10, false), (String::new(), 0, 0, 0));
    }
}
