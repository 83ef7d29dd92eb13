//! The host half of `cargo xtask bench`: absolute rates, measured where
//! time means something.
//!
//! - criterion's decode + analysis benchmark (`tracer-user/core/benches`);
//! - `refscope report` over a large synthetic trace (`synth_events`):
//!   wall time, MB/s, events/s and peak RSS (from `wait4`'s rusage of that
//!   one child, so nothing else the xtask ran counts);
//! - peak RSS per tracked page: `refscope report` over two `synth_pages`
//!   traces of different sizes, the difference over the difference;
//! - `refscope export` to each format.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::Value;

use crate::util::{self, TARGET, note, step};

/// The `report` row the goal is about.
pub const REPORT_TEXT: &str = "report (text)";
/// The per-page row the goal is about.
pub const PAGES_STATE: &str = "page state only (--timeline 0)";

/// One criterion benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct CriterionResult {
    pub group: String,
    pub bench: String,
    /// Events per second at the median time per iteration.
    pub per_sec: f64,
    /// At the bounds of criterion's confidence interval of the median.
    pub per_sec_low: f64,
    pub per_sec_high: f64,
}

/// One timed run of refscope over a trace.
#[derive(Debug, Clone, Serialize)]
pub struct TimedRun {
    pub what: String,
    pub trace_bytes: u64,
    pub events: u64,
    /// Wall time.
    pub secs: f64,
    pub cpu_secs: f64,
    /// Rates per second of CPU time (the goals are judged on these: the
    /// host is shared, and wall time includes waiting for a CPU).
    pub mb_per_sec: f64,
    pub events_per_sec: f64,
    /// Rates per second of wall time.
    pub mb_per_wall_sec: f64,
    pub max_rss_kib: u64,
    /// Size of what it wrote, for exports.
    pub output_bytes: Option<u64>,
}

/// Peak RSS per tracked page.
#[derive(Debug, Clone, Serialize)]
pub struct PagesRss {
    pub variant: String,
    pub pages_small: u64,
    pub rss_small_kib: u64,
    pub pages_big: u64,
    pub rss_big_kib: u64,
    pub bytes_per_page: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HostData {
    pub criterion: Vec<CriterionResult>,
    pub report: Vec<TimedRun>,
    pub export: Vec<TimedRun>,
    pub pages: Vec<PagesRss>,
    /// Steps that failed, with why (the rest still ran).
    pub errors: Vec<String>,
}

/// Sizes of the host runs.
#[derive(Debug, Clone)]
pub struct HostPlan {
    /// Events in the large trace (the issue asks for 10 million).
    pub big_events: u64,
    /// Events in the export trace.
    pub export_events: u64,
    /// Pages of the two per-page traces.
    pub pages: (u64, u64),
    /// criterion's warm-up and measurement seconds.
    pub criterion_secs: (u32, u32),
}

/// A finished child: wall time and its own rusage.
#[derive(Debug)]
struct Measured {
    secs: f64,
    /// User + system CPU time: unlike wall time, not inflated by waiting
    /// for a CPU the host's other work holds.
    cpu_secs: f64,
    max_rss_kib: u64,
}

/// Run `cmd` with stdout to `stdout` (or /dev/null) and measure it. Fails
/// if it fails.
fn measure(cmd: &mut Command, stdout: Option<&Path>) -> anyhow::Result<Measured> {
    let out = match stdout {
        Some(p) => Stdio::from(
            fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        ),
        None => Stdio::null(),
    };
    let t = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .spawn()
        .with_context(|| format!("failed to run {}", util::display(cmd)))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: our own child; valid pointers. Reaping it here (instead
        // of Child::wait) is what gives us its own rusage.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if rc == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            bail!("wait4({pid}): {e}");
        }
    }
    let secs = t.elapsed().as_secs_f64();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{} failed (wait status {status:#x})", util::display(cmd));
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Measured {
        secs,
        cpu_secs: tv(ru.ru_utime) + tv(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss as u64,
    })
}

fn size_of(p: &Path) -> u64 {
    if p.is_dir() {
        fs::read_dir(p)
            .map(|d| d.flatten().map(|e| size_of(&e.path())).sum())
            .unwrap_or(0)
    } else {
        fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }
}

fn bin_dir() -> PathBuf {
    util::release_dir()
}

/// Run everything; a failing part is recorded and the others still run.
pub fn run(plan: &HostPlan, work: &Path) -> HostData {
    let mut h = HostData::default();
    fs::create_dir_all(work).ok();
    let refscope = bin_dir().join("refscope");
    let examples = bin_dir().join("examples");

    step("host: criterion (decode + analysis on one core)");
    match criterion(plan, &work.join("criterion")) {
        Ok(c) => h.criterion = c,
        Err(e) => h.errors.push(format!("criterion: {e:#}")),
    }

    step(format!(
        "host: refscope report over a {}-event synthetic trace",
        plan.big_events
    ));
    let big = work.join("big.jsonl");
    let r = (|| -> anyhow::Result<Vec<TimedRun>> {
        let gen_t = Instant::now();
        measure(
            Command::new(examples.join("synth_events"))
                .args([
                    "--events",
                    &plan.big_events.to_string(),
                    "--seed",
                    "1",
                    "-o",
                ])
                .arg(&big),
            None,
        )?;
        note(format!(
            "synth_events wrote {:.0} MB in {:.1} s",
            size_of(&big) as f64 / 1e6,
            gen_t.elapsed().as_secs_f64()
        ));
        let bytes = size_of(&big);
        // Text: --json spends its time printing up to the 100,000 findings
        // the analysis keeps, not reading.
        let m = measure(Command::new(&refscope).arg("report").arg(&big), None)?;
        note(format!(
            "{REPORT_TEXT}: {:.1} s ({:.1} s CPU), peak RSS {} KiB",
            m.secs, m.cpu_secs, m.max_rss_kib
        ));
        Ok(vec![timed(REPORT_TEXT, bytes, plan.big_events, &m, None)])
    })();
    let _ = fs::remove_file(&big);
    match r {
        Ok(r) => h.report = r,
        Err(e) => h.errors.push(format!("report: {e:#}")),
    }

    step("host: peak RSS per tracked page (synth_pages, refscope report)");
    match pages(plan, work, &refscope, &examples.join("synth_pages")) {
        Ok(p) => h.pages = p,
        Err(e) => h.errors.push(format!("pages: {e:#}")),
    }

    step(format!(
        "host: refscope export of a {}-event trace",
        plan.export_events
    ));
    match export(plan, work, &refscope, &examples.join("synth_events")) {
        Ok(x) => h.export = x,
        Err(e) => h.errors.push(format!("export: {e:#}")),
    }
    for e in &h.errors {
        note(format!("FAILED: {e}"));
    }
    h
}

fn timed(what: &str, bytes: u64, events: u64, m: &Measured, output: Option<u64>) -> TimedRun {
    let cpu = m.cpu_secs.max(1e-3);
    TimedRun {
        what: what.into(),
        trace_bytes: bytes,
        events,
        secs: m.secs,
        cpu_secs: m.cpu_secs,
        mb_per_sec: bytes as f64 / 1e6 / cpu,
        events_per_sec: events as f64 / cpu,
        mb_per_wall_sec: bytes as f64 / 1e6 / m.secs,
        max_rss_kib: m.max_rss_kib,
        output_bytes: output,
    }
}

fn criterion(plan: &HostPlan, home: &Path) -> anyhow::Result<Vec<CriterionResult>> {
    let _ = fs::remove_dir_all(home);
    fs::create_dir_all(home)?;
    // Same target and flags as `cargo xtask build`, so the dependencies
    // already built for it are reused.
    let (warm, meas) = plan.criterion_secs;
    util::run(
        Command::new(env!("CARGO"))
            .current_dir(util::workspace_root())
            .args([
                "bench",
                "--locked",
                "-p",
                "refscope-core",
                "--bench",
                "analysis",
                "--target",
                TARGET,
                "--",
                "--warm-up-time",
                &warm.to_string(),
                "--measurement-time",
                &meas.to_string(),
                "--noplot",
            ])
            .env(
                "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                "-C target-feature=+crt-static",
            )
            .env("CRITERION_HOME", home),
    )?;
    let mut out = Vec::new();
    collect_criterion(home, &mut out)?;
    if out.is_empty() {
        bail!("criterion wrote no estimates under {}", home.display());
    }
    out.sort_by(|a, b| (&a.group, &a.bench).cmp(&(&b.group, &b.bench)));
    Ok(out)
}

/// Every `new/benchmark.json` + `new/estimates.json` pair under `dir`.
fn collect_criterion(dir: &Path, out: &mut Vec<CriterionResult>) -> anyhow::Result<()> {
    for e in fs::read_dir(dir)?.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        if p.file_name().is_some_and(|n| n == "new") {
            let bench = fs::read_to_string(p.join("benchmark.json"));
            let est = fs::read_to_string(p.join("estimates.json"));
            if let (Ok(b), Ok(e)) = (bench, est)
                && let Some(r) = parse_criterion(&b, &e)
            {
                out.push(r);
            }
        } else {
            collect_criterion(&p, out)?;
        }
    }
    Ok(())
}

/// One benchmark from criterion's `benchmark.json` and `estimates.json`.
pub fn parse_criterion(benchmark: &str, estimates: &str) -> Option<CriterionResult> {
    let b: Value = serde_json::from_str(benchmark).ok()?;
    let e: Value = serde_json::from_str(estimates).ok()?;
    let elements = b["throughput"]["Elements"].as_f64()?;
    let med = &e["median"];
    let ns = med["point_estimate"].as_f64()?;
    let lo = med["confidence_interval"]["lower_bound"].as_f64()?;
    let hi = med["confidence_interval"]["upper_bound"].as_f64()?;
    let rate = |ns: f64| elements / (ns / 1e9);
    Some(CriterionResult {
        group: b["group_id"].as_str()?.into(),
        bench: b["function_id"].as_str()?.into(),
        per_sec: rate(ns),
        // A longer time is a lower rate.
        per_sec_low: rate(hi),
        per_sec_high: rate(lo),
    })
}

fn pages(
    plan: &HostPlan,
    work: &Path,
    refscope: &Path,
    synth: &Path,
) -> anyhow::Result<Vec<PagesRss>> {
    let variants: [(&str, bool, &str); 3] = [
        (PAGES_STATE, false, "0"),
        (
            "page state + timelines (default --timeline 64)",
            false,
            "64",
        ),
        ("page + a live mapping (--timeline 0)", true, "0"),
    ];
    let mut out = Vec::new();
    for (variant, keep, timeline) in variants {
        let mut rss = Vec::new();
        for n in [plan.pages.0, plan.pages.1] {
            let trace = work.join(format!("pages-{n}-{keep}.jsonl"));
            let mut cmd = Command::new(synth);
            cmd.args(["--pages", &n.to_string()]);
            if keep {
                cmd.arg("--keep-mapped");
            }
            measure(cmd.arg("-o").arg(&trace), None)?;
            let m = measure(
                Command::new(refscope)
                    .args(["report", "--timeline", timeline])
                    .arg(&trace),
                None,
            );
            let _ = fs::remove_file(&trace);
            rss.push(m?.max_rss_kib);
        }
        let per = (rss[1] as f64 - rss[0] as f64) * 1024.0 / (plan.pages.1 - plan.pages.0) as f64;
        note(format!(
            "{variant}: {} KiB at {} pages, {} KiB at {}: {per:.0} bytes/page",
            rss[0], plan.pages.0, rss[1], plan.pages.1
        ));
        out.push(PagesRss {
            variant: variant.into(),
            pages_small: plan.pages.0,
            rss_small_kib: rss[0],
            pages_big: plan.pages.1,
            rss_big_kib: rss[1],
            bytes_per_page: per,
        });
    }
    Ok(out)
}

fn export(
    plan: &HostPlan,
    work: &Path,
    refscope: &Path,
    synth: &Path,
) -> anyhow::Result<Vec<TimedRun>> {
    let trace = work.join("export.jsonl");
    measure(
        Command::new(synth)
            .args([
                "--events",
                &plan.export_events.to_string(),
                "--seed",
                "2",
                "-o",
            ])
            .arg(&trace),
        None,
    )?;
    let bytes = size_of(&trace);
    let mut out = Vec::new();
    for format in ["perfetto", "parquet", "jsonl"] {
        let dest = work.join(format!("exported.{format}"));
        let m = measure(
            Command::new(refscope)
                .arg("export")
                .arg(&trace)
                .args(["--format", format, "--force", "-o"])
                .arg(&dest)
                .stderr(Stdio::null()),
            None,
        )?;
        let size = size_of(&dest);
        let _ = fs::remove_dir_all(&dest);
        let _ = fs::remove_file(&dest);
        note(format!("export {format}: {:.1} s", m.secs));
        out.push(timed(
            &format!("export --format {format}"),
            bytes,
            plan.export_events,
            &m,
            Some(size),
        ));
    }
    let _ = fs::remove_file(&trace);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criterion_estimates() {
        let b = r#"{"group_id":"idle_one","function_id":"decode+analyze","value_str":null,
                    "throughput":{"Elements":200000},"full_id":"idle_one/decode+analyze"}"#;
        let e = r#"{"mean":{"point_estimate":5.0e7},
                    "median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":4.0e7,"upper_bound":5.0e7},
                              "point_estimate":4.0e7,"standard_error":1.0}}"#;
        let r = parse_criterion(b, e).unwrap();
        assert_eq!(
            (r.group.as_str(), r.bench.as_str()),
            ("idle_one", "decode+analyze")
        );
        assert_eq!(r.per_sec, 5e6);
        assert_eq!((r.per_sec_low, r.per_sec_high), (4e6, 5e6));
        assert!(parse_criterion("{}", e).is_none());
    }

    #[test]
    fn children_are_measured_alone() {
        let m = measure(Command::new("sh").args(["-c", "exit 0"]), None).unwrap();
        assert!(m.max_rss_kib > 0 && m.secs >= 0.0);
        let err = measure(Command::new("sh").args(["-c", "exit 3"]), None).unwrap_err();
        assert!(err.to_string().contains("failed"), "{err}");
    }
}
