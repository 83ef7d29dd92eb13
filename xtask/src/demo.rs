//! `cargo xtask demo`: refscope on a DAX workload in a guest, end to end,
//! with one command (the README's first).
//!
//! Builds refscope and the workloads, boots the default kernel with an
//! fsdax namespace, starts `refscope record`, runs the `demo` case's
//! workload of tests/scenarios.json (map DAX pages, pin some), stops the
//! recording and prints the report; then says, for someone who has never
//! seen refscope, what ran, what was found and why it matters, and what to
//! try next. With `--tui`, `refscope live` runs on the terminal instead.
//!
//! `cargo xtask test` runs the same path ([`record_and_report`]) as its
//! `demo` group and checks it against the `demo` case's expectations
//! ([`check`]): if the README's first command breaks, the tests fail.

use std::{
    fmt::Write as _,
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::Context as _;
use clap::Parser;
use serde_json::Value;

use crate::{
    scenarios,
    util::{self, note, step},
    vm::{self, KernelChoice, VmConfig, VmOutcome},
};

#[derive(Debug, Parser)]
pub struct Options {
    /// Kernel to run on (a pinned tag, see `cargo xtask vm --help`).
    #[arg(long, value_name = "TAG")]
    pub kernel: Option<String>,
    /// Show the live view (`refscope live`) instead of record + report.
    #[arg(long)]
    pub tui: bool,
    /// Do not build first; use the binaries in the target directory.
    #[arg(long)]
    pub no_build: bool,
}

/// The scenario case whose workload and expectations the demo uses.
pub const CASE: &str = "demo";

/// Record while the workload runs, then report. Each stage says what it
/// does; if one fails the demo says which and stops with its status. What
/// the host checks is copied to /share/demo in the layout of a scenario
/// case (trace, statuses, workload output) plus the printed report.
fn record_and_report_script(workload: &str) -> String {
    format!(
        r#"set -u
stage() {{ printf '\n== %s\n' "$*"; }}
out=/share/{CASE}
mkdir -p "$out"
stage "refscope doctor: can this kernel be traced?"
refscope doctor | sed -n '1p;$p'
stage "refscope record -o /tmp/demo.jsonl, in the background"
refscope record --quiet -o /tmp/demo.jsonl --ready-file /tmp/ready 2>/tmp/record.err &
rec=$!
i=0
while [ ! -e /tmp/ready ]; do
    if ! kill -0 $rec 2>/dev/null || [ $i -gt 600 ]; then
        echo "refscope record did not attach:" >&2
        cat /tmp/record.err >&2
        cp /tmp/record.err "$out/"
        exit 1
    fi
    i=$((i + 1))
    sleep 0.1
done
echo "attached"
stage "workload: refscope-workload {workload}"
echo "maps 8 pages of a file on /mnt/dax (ext4 with DAX on emulated pmem), pins 2 of them"
echo "with process_vm_readv (GUP), unpins, unmaps"
refscope-workload --timeout 600 {workload} >/tmp/wl.json 2>/tmp/wl.err
echo $? > "$out/workload.status"
sleep 0.3
kill -INT $rec
wait $rec
echo $? > "$out/record.status"
cp /tmp/demo.jsonl "$out/t.jsonl"
cp /tmp/record.err /tmp/wl.json /tmp/wl.err "$out/"
if [ "$(cat "$out/workload.status")" != 0 ]; then
    echo "the workload failed:" >&2
    cat /tmp/wl.err >&2
    exit 1
fi
if [ "$(cat "$out/record.status")" != 0 ]; then
    echo "refscope record failed:" >&2
    cat /tmp/record.err >&2
    exit 1
fi
stage "refscope report /tmp/demo.jsonl"
refscope report /tmp/demo.jsonl > "$out/report.txt"
status=$?
cat "$out/report.txt"
exit $status
"#
    )
}

/// The live view, with the workload in the background.
fn live_script(rows: u16, cols: u16) -> String {
    format!(
        r#"stty rows {rows} cols {cols}
dmesg -n 1
(sleep 3; refscope-workload churn --seconds 3600 --pin >/dev/null 2>&1) &
refscope live
"#
    )
}

pub fn run_demo(opts: &Options) -> anyhow::Result<ExitCode> {
    let kernel = match &opts.kernel {
        Some(k) => k.clone(),
        None => vm::default_kernel()?,
    };
    let binaries = vm::guest_binaries(opts.no_build)?;
    if opts.tui {
        let (rows, cols) = terminal_size().unwrap_or((24, 80));
        let mut cfg = VmConfig::new(
            KernelChoice::Pinned(kernel.clone()),
            Some(vec!["sh".into(), "-c".into(), live_script(rows, cols)]),
        );
        cfg.binaries = binaries;
        cfg.tty = true;
        step(format!(
            "demo on kernel {kernel}: the live view over a DAX workload (quit it with q to power off)"
        ));
        vm::run(&cfg)?;
        return Ok(ExitCode::SUCCESS);
    }
    let demo = record_and_report(&kernel, binaries, true)?;
    if let Some(b) = demo.outcome.boot_secs {
        note(format!(
            "{kernel}: boot-to-command {b:.1} s, total {:.1} s",
            demo.outcome.total_secs
        ));
    }
    if let Err(why) = demo.outcome.verdict(false) {
        eprint!("{}", demo.outcome.failure_report(false));
        anyhow::bail!("the demo failed on {kernel}: {why}");
    }
    match summary(&demo, &kernel) {
        Ok(text) => print!("{text}"),
        Err(e) => note(format!("(no summary: {e:#})")),
    }
    Ok(ExitCode::SUCCESS)
}

/// One run of the demo's record-and-report path.
pub struct Demo {
    pub outcome: VmOutcome,
    /// What the guest copied out (`t.jsonl`, `report.txt`, statuses).
    pub dir: PathBuf,
    /// The refscope that ran (static: it runs on the host too).
    pub refscope: PathBuf,
}

/// Boot `kernel`, record the demo workload, print the report (when `echo`).
pub fn record_and_report(kernel: &str, binaries: Vec<PathBuf>, echo: bool) -> anyhow::Result<Demo> {
    let case = scenarios::case(CASE)?;
    let refscope = binaries
        .iter()
        .find(|p| p.file_name().is_some_and(|n| n == "refscope"))
        .context("refscope is not among the guest's binaries")?
        .clone();
    let share = util::target_dir().join("demo").join(kernel);
    let _ = fs::remove_dir_all(&share);
    fs::create_dir_all(&share).with_context(|| format!("cannot create {}", share.display()))?;
    let mut cfg = VmConfig::new(
        KernelChoice::Pinned(kernel.to_owned()),
        Some(vec![
            "sh".into(),
            "-c".into(),
            record_and_report_script(&case.workload),
        ]),
    );
    cfg.binaries = binaries;
    cfg.share = Some(share.clone());
    cfg.echo_output = echo;
    step(format!(
        "demo on kernel {kernel}: ext4 with DAX on emulated pmem, refscope record, a workload, refscope report"
    ));
    let outcome = vm::run(&cfg)?;
    Ok(Demo {
        outcome,
        dir: share.join(CASE),
        refscope,
    })
}

/// The demo's outputs against the `demo` case's expectations for `kernel`
/// (the scenario suite's own checks), and the printed report against the
/// findings they hold. Err: every problem, one per line.
pub fn check(demo: &Demo, kernel: &str) -> Result<(), String> {
    let mut problems = Vec::new();
    if let Err(why) = demo.outcome.verdict(false) {
        problems.push(format!(
            "the demo's guest failed: {why}\n--- guest stderr ---\n{}",
            String::from_utf8_lossy(&demo.outcome.stderr).trim_end()
        ));
    }
    let case = scenarios::case(CASE).map_err(|e| format!("{e:#}"))?;
    let oops = demo.outcome.has(vm::IncidentKind::Oops);
    let observed = scenarios::check(&case, kernel, &demo.dir, &demo.refscope, oops);
    match &observed {
        Ok(_) => {}
        Err(e) => problems.push(e.clone()),
    }
    match fs::read_to_string(demo.dir.join("report.txt")) {
        Err(e) => problems.push(format!("the demo printed no report: {e}")),
        Ok(text) => {
            if let Some(expect) = case.kernels.get(kernel) {
                problems.extend(report_problems(&text, &expect.findings));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// What the printed report must say for `expected` findings (rule ->
/// count): a heading per rule with its count, or "no findings".
fn report_problems(
    text: &str,
    expected: &std::collections::BTreeMap<String, scenarios::Count>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if !text.starts_with("refscope report: kernel ") {
        problems.push("the printed report does not start with its header".into());
    }
    let expected: Vec<_> = expected.iter().filter(|(_, n)| !n.matches(0)).collect();
    if expected.is_empty() && !text.contains("\nno findings") {
        problems.push("the printed report should say `no findings`".into());
    }
    for (rule, n) in expected {
        // "warning zero_ref_mapping: 8 finding(s)"
        let heading = text.lines().find_map(|l| {
            let (_, rest) = l.split_once(' ')?;
            let count = rest.strip_prefix(rule.as_str())?.strip_prefix(": ")?;
            count.strip_suffix(" finding(s)")?.parse::<u64>().ok()
        });
        match heading {
            Some(got) if n.matches(got) => {}
            Some(got) => {
                problems.push(format!("the printed report has {got} {rule}, expected {n}"))
            }
            None => problems.push(format!("the printed report has no {rule} heading")),
        }
    }
    problems
}

/// What ran, what was found and why it matters, what to try next.
fn summary(demo: &Demo, kernel: &str) -> anyhow::Result<String> {
    let trace = demo.dir.join("t.jsonl");
    let out = util::output(
        Command::new(&demo.refscope)
            .args(["report", "--json"])
            .arg(&trace),
    )?;
    let report: Value = serde_json::from_slice(&out.stdout).context("report --json")?;
    Ok(summary_text(&report, kernel, &demo.dir, &demo.refscope))
}

fn summary_text(report: &Value, kernel: &str, dir: &Path, refscope: &Path) -> String {
    let mut s = String::new();
    let model = report["refcount_model"].as_str().unwrap_or("?");
    let _ = writeln!(s, "\n== What you just saw");
    let _ = writeln!(
        s,
        "{}",
        wrap(&format!(
            "refscope traced a guest running Debian's kernel {} ({}). It recorded {} events \
             ({} lost) from its eBPF programs while a workload mapped pages of a file on a DAX \
             filesystem (the page tables point straight at persistent memory, no page cache), \
             pinned some of them the way O_DIRECT, RDMA or vhost do, and unmapped them. \
             The report above lists each finding with the timeline of its page: every map, \
             pin, unpin and unmap, with the page's reference count at that step.",
            report["kernel_release"].as_str().unwrap_or(kernel),
            match model {
                "idle_one" =>
                    "a pre-6.15 kernel: an idle FS-DAX page has _refcount 1 and a mapping takes no reference on it",
                "refcounted" =>
                    "a 6.15+ kernel: an idle device page has _refcount 0 and every mapping holds a reference",
                other => other,
            },
            report["events"].as_u64().unwrap_or(0),
            report["lost"].as_u64().unwrap_or(0),
        ))
    );
    let mut counts: Vec<(String, String, u64)> = Vec::new();
    for f in report["findings"].as_array().into_iter().flatten() {
        let rule = f["rule"].as_str().unwrap_or("?").to_owned();
        let sev = f["severity"].as_str().unwrap_or("?").to_owned();
        match counts.iter_mut().find(|c| c.0 == rule && c.1 == sev) {
            Some(c) => c.2 += 1,
            None => counts.push((rule, sev, 1)),
        }
    }
    let _ = writeln!(s, "\n== What it found, and why it matters");
    if counts.is_empty() {
        let _ = writeln!(
            s,
            "{}",
            wrap(
                "No findings: on this kernel every DAX mapping holds a reference on its page, \
                 so nothing maps a page whose count says it is free. Run the same demo on a \
                 pre-6.15 kernel (--kernel 6.12) to see the model whose mappings hold none."
            )
        );
    }
    for (rule, sev, n) in &counts {
        let why = report["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["id"] == rule.as_str())
            .and_then(|r| r["explanation"].as_str())
            .unwrap_or("");
        let _ = writeln!(s, "{n} {rule} ({sev})");
        let _ = writeln!(s, "{}", indent(&wrap(why), "    "));
    }
    let others: Vec<&str> = scenarios::KERNELS
        .iter()
        .copied()
        .filter(|k| *k != kernel)
        .collect();
    let _ = writeln!(s, "\n== Try next");
    let _ = writeln!(
        s,
        "  cargo xtask demo --tui              the live view of a DAX workload in the guest (q quits)"
    );
    for k in others {
        let _ = writeln!(
            s,
            "  cargo xtask demo --kernel {k:<8}  the same on {k} ({})",
            if k.starts_with("6.") {
                "pre-6.15 refcount model"
            } else {
                "6.15+ refcount model"
            }
        );
    }
    let _ = writeln!(
        s,
        "  cargo xtask vm                      a shell in the guest: refscope, refscope-workload, /mnt/dax"
    );
    let _ = writeln!(
        s,
        "  {} report {}\n                                      the trace, again (--json for scripts)",
        relative(refscope).display(),
        relative(&dir.join("t.jsonl")).display()
    );
    let _ = writeln!(s, "  On a DAX host (README, \"On a real host\"):");
    let _ = writeln!(
        s,
        "    cargo build --release && sudo target/release/refscope doctor"
    );
    let _ = writeln!(
        s,
        "    sudo refscope live       sudo refscope record -o dax.jsonl       refscope report dax.jsonl"
    );
    let _ = writeln!(
        s,
        "  docs/rules.md explains every rule with a real example."
    );
    s
}

/// `path` relative to the current directory when it is under it.
fn relative(path: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
}

/// Wrap at 92 columns.
fn wrap(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > 92 {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| format!("{by}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Rows and columns of the controlling terminal, if there is one.
fn terminal_size() -> Option<(u16, u16)> {
    let tty = File::open("/dev/tty").ok()?;
    let out = Command::new("stty").arg("size").stdin(tty).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|n| n.parse().ok());
    Some((it.next()??, it.next()??))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::scenarios::Count;

    const REPORT: &str = "refscope report: kernel 6.12.117+deb12-amd64 on guest, idle_one model (x)\n\
        123 events over 1.0s, 8 pages, 0 lost\nhooks: map: insert_pfn (fentry)\n\n\
        warning zero_ref_mapping: 8 finding(s)\n  A PTE...\n\n\
        info pin_on_idle_page: 2 finding(s)\n  GUP...\n";

    fn expect(pairs: &[(&str, u64)]) -> BTreeMap<String, Count> {
        pairs
            .iter()
            .map(|(r, n)| ((*r).to_owned(), Count::Exactly(*n)))
            .collect()
    }

    #[test]
    fn the_printed_report_is_checked_rule_by_rule() {
        let ok = expect(&[("zero_ref_mapping", 8), ("pin_on_idle_page", 2)]);
        assert!(report_problems(REPORT, &ok).is_empty());
        let more = expect(&[("zero_ref_mapping", 9), ("pin_on_idle_page", 2)]);
        assert_eq!(
            report_problems(REPORT, &more),
            ["the printed report has 8 zero_ref_mapping, expected 9"]
        );
        let other = expect(&[("mapped_after_unplug", 1)]);
        assert_eq!(
            report_problems(REPORT, &other),
            ["the printed report has no mapped_after_unplug heading"]
        );
        // A kernel that must give none: the report must say so.
        assert_eq!(
            report_problems(REPORT, &expect(&[])),
            ["the printed report should say `no findings`"]
        );
        assert!(
            report_problems("refscope report: kernel 7.3\n\nno findings\n", &expect(&[]))
                .is_empty()
        );
        assert!(!report_problems("garbage", &expect(&[])).is_empty());
    }

    #[test]
    fn the_summary_explains_each_rule_once() {
        let report: Value = serde_json::json!({
            "refcount_model": "idle_one", "kernel_release": "6.12.117", "events": 10, "lost": 0,
            "rules": [{"id": "zero_ref_mapping", "explanation": "Why it matters."}],
            "findings": [
                {"rule": "zero_ref_mapping", "severity": "warning"},
                {"rule": "zero_ref_mapping", "severity": "warning"}
            ]
        });
        let s = summary_text(&report, "6.12", Path::new("/t"), Path::new("/r"));
        assert!(
            s.contains("2 zero_ref_mapping (warning)\n    Why it matters."),
            "{s}"
        );
        assert!(s.contains("--kernel 7.3"), "{s}");
        assert!(!s.contains("--kernel 6.12"), "{s}");
        assert!(s.contains("pre-6.15 kernel"), "{s}");
    }
}
