//! `refscope report`: the analysis core over a recorded trace, streaming
//! with bounded memory; findings grouped by rule with each page's timeline,
//! or one JSON document (`--json`, field names documented in
//! docs/trace-format.md).

use std::{
    fs::File,
    io::{BufReader, Write},
    path::Path,
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use refscope_core::{
    analysis::{Analyzer, Finding, RuleId, Severity, Status, TimelineEntry},
    event::Event,
    replay::{Consumer, End, Stop, replay},
    trace::{Header, Loss, TraceReader},
};
use serde::Serialize;

use crate::{
    cli::ReportArgs,
    output::{self, Progress},
    pipeline::analyzer_for,
};

/// Findings printed per rule in text mode (all are in `--json`).
const TEXT_FINDINGS_PER_RULE: usize = 20;

/// A trace read through the analysis core.
pub struct Analysed {
    pub header: Header,
    pub analyzer: Analyzer,
    pub events: u64,
    /// Line number of an incomplete last line, if the trace was cut short.
    pub truncated_at: Option<u64>,
    pub has_footer: bool,
    /// The footer's `end_reason` (`signal`, `duration`, `error: ...`).
    pub end_reason: Option<String>,
    pub end_t: u64,
}

/// Read and analyse `path`, showing progress on a terminal for large files;
/// at most `max_pages` pages and `max_findings` findings are kept
/// (`--max-pages`, `--max-findings`).
pub fn analyse(
    path: &Path,
    timeline: usize,
    max_pages: usize,
    max_findings: usize,
) -> anyhow::Result<Analysed> {
    let name = path.display().to_string();
    let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = TraceReader::new(BufReader::with_capacity(1 << 20, file), &name)?;
    let header = reader.header().clone();
    let mut analyzer = analyzer_for(&header, timeline);
    analyzer.set_max_pages(max_pages);
    analyzer.set_max_findings(max_findings);
    let mut progress = Progress::new("reading", size);
    let end = replay(
        &mut reader,
        &mut Reading {
            analyzer: &mut analyzer,
            progress: &mut progress,
        },
    );
    progress.done();
    let end = end.map_err(|stop| match stop {
        Stop::Trace { error, .. } => anyhow::Error::from(error),
    })?;
    Ok(Analysed {
        header,
        has_footer: end.footer.is_some(),
        end_reason: end.footer.map(|f| f.end_reason),
        truncated_at: end.truncated_at,
        analyzer,
        events: end.events,
        end_t: end.end_t,
    })
}

/// The analysis, with a progress line.
struct Reading<'a> {
    analyzer: &'a mut Analyzer,
    progress: &'a mut Progress,
}

impl Consumer for Reading<'_> {
    type Error = std::convert::Infallible;
    fn event(&mut self, ev: Box<Event>) -> Result<(), Self::Error> {
        self.analyzer.event(ev)
    }
    fn loss(&mut self, loss: &Loss) -> Result<(), Self::Error> {
        self.analyzer.loss(loss)
    }
    fn progress(&mut self, bytes: u64) -> Result<(), Self::Error> {
        self.progress.update(bytes);
        Ok(())
    }
    fn end(&mut self, end: &End) -> Result<(), Self::Error> {
        self.analyzer.end(end)
    }
}

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let rules = parse_rules(&args.rules)?;
    let a = analyse(&args.file, args.timeline, args.max_pages, args.max_findings)?;
    output::trace_end_warnings(
        &args.file,
        a.end_reason.as_deref(),
        a.has_footer,
        a.truncated_at,
        "analysed",
    );
    let findings: Vec<&Finding> = a
        .analyzer
        .findings()
        .iter()
        .filter(|f| rules.is_empty() || rules.contains(&f.rule))
        .filter(|f| args.pfn.is_none_or(|p| f.pfn == p))
        .filter(|f| {
            args.pid
                .is_none_or(|p| f.pid == p || f.timeline.iter().any(|e| e.pid == p))
        })
        .collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &json_doc(&a, &findings))?;
        writeln!(out)?;
    } else {
        write_text(&mut out, &a, &findings)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `--rule` values, checked against the known rules.
pub fn parse_rules(ids: &[String]) -> anyhow::Result<Vec<RuleId>> {
    ids.iter()
        .map(|id| match RuleId::from_id(id) {
            Some(r) => Ok(r),
            None => bail!(
                "unknown rule `{id}`; rules are: {}",
                RuleId::ALL
                    .iter()
                    .map(|r| r.id())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
        .collect()
}

#[derive(Serialize)]
struct JsonDoc<'a> {
    refcount_model: &'static str,
    kernel_release: &'a str,
    kernel_addresses: &'a str,
    events: u64,
    lost: u64,
    pages: usize,
    mappings: usize,
    complete: bool,
    stats: &'a refscope_core::analysis::Stats,
    /// Divergences the shadow audit found (`stats.drift_*` counts them all).
    drift: &'a [refscope_core::analysis::Drift],
    /// Whether the recording audited its shadow (false: no drift can show).
    audited: bool,
    rules: Vec<JsonRule>,
    findings: &'a [&'a Finding],
}

#[derive(Serialize)]
struct JsonRule {
    id: &'static str,
    severity: Severity,
    explanation: &'static str,
}

fn json_doc<'a>(a: &'a Analysed, findings: &'a [&'a Finding]) -> JsonDoc<'a> {
    let model = a.header.refcount_model;
    JsonDoc {
        refcount_model: model.as_str(),
        kernel_release: &a.header.kernel_release,
        kernel_addresses: &a.header.kernel_addresses,
        events: a.events,
        lost: a.analyzer.lost(),
        pages: a.analyzer.page_count(),
        mappings: a.analyzer.mapping_count(),
        complete: a.has_footer,
        stats: a.analyzer.stats(),
        drift: a.analyzer.drift(),
        audited: a.header.audit.is_some(),
        rules: RuleId::ALL
            .iter()
            .map(|&r| JsonRule {
                id: r.id(),
                severity: r.severity(model),
                explanation: r.explanation(),
            })
            .collect(),
        findings,
    }
}

fn write_text(out: &mut impl Write, a: &Analysed, findings: &[&Finding]) -> std::io::Result<()> {
    let h = &a.header;
    writeln!(
        out,
        "refscope report: kernel {} on {}, {} model ({})",
        h.kernel_release,
        h.hostname,
        h.refcount_model.as_str(),
        h.refcount_model.describe()
    )?;
    let secs = a.end_t.saturating_sub(h.clock.monotonic_ns) as f64 / 1e9;
    writeln!(
        out,
        "{} events over {secs:.1}s, {} pages, {} lost{}",
        a.events,
        a.analyzer.page_count(),
        a.analyzer.lost(),
        if a.has_footer {
            ""
        } else {
            ", trace incomplete"
        }
    )?;
    if let Some(line) = output::caps_line(&a.analyzer) {
        writeln!(out, "{line}")?;
    }
    let hooks: Vec<String> = h
        .hooks
        .iter()
        .map(|s| {
            let f: Vec<String> = s
                .functions
                .iter()
                .map(|f| format!("{} ({})", f.function, f.attach))
                .collect();
            format!(
                "{}: {}",
                s.logical,
                if f.is_empty() {
                    "none".into()
                } else {
                    f.join(", ")
                }
            )
        })
        .collect();
    writeln!(out, "hooks: {}", hooks.join("; "))?;
    match output::audit_line(&a.analyzer) {
        Some(line) => writeln!(out, "{line}")?,
        None if h.audit.is_none() => writeln!(
            out,
            "shadow audit: off (findings about mappings are unconfirmed)"
        )?,
        None => {}
    }
    for d in a.analyzer.drift().iter().take(TEXT_FINDINGS_PER_RULE) {
        writeln!(
            out,
            "  drift: {}{} pfn {:#x}{} at {} of pid {} ({}) mm {}, +{:.6}s: {}",
            if d.late { "late " } else { "" },
            match d.kind {
                refscope_core::analysis::DriftKind::Missing => "missing",
                refscope_core::analysis::DriftKind::Stale => "stale",
            },
            d.pfn,
            if d.order > 0 { " (PMD)" } else { "" },
            d.vaddr,
            d.pid,
            d.comm,
            d.mm,
            d.t.saturating_sub(h.clock.monotonic_ns) as f64 / 1e9,
            d.hint,
        )?;
    }
    if findings.is_empty() {
        writeln!(out, "\nno findings")?;
        return Ok(());
    }
    let mut rules: Vec<(RuleId, Severity)> = Vec::new();
    for f in findings {
        if !rules.contains(&(f.rule, f.severity)) {
            rules.push((f.rule, f.severity));
        }
    }
    rules.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    for (rule, sev) in rules {
        let group: Vec<&&Finding> = findings
            .iter()
            .filter(|f| f.rule == rule && f.severity == sev)
            .collect();
        writeln!(out, "\n{sev} {rule}: {} finding(s)", group.len())?;
        writeln!(out, "  {}", wrap(rule.explanation(), 100, "  "))?;
        for f in group.iter().take(TEXT_FINDINGS_PER_RULE) {
            write_finding(out, f, h.clock.monotonic_ns)?;
        }
        if group.len() > TEXT_FINDINGS_PER_RULE {
            writeln!(
                out,
                "  ... {} more (see --json, or narrow with --pfn/--pid)",
                group.len() - TEXT_FINDINGS_PER_RULE
            )?;
        }
    }
    Ok(())
}

fn write_finding(out: &mut impl Write, f: &Finding, t0: u64) -> std::io::Result<()> {
    writeln!(
        out,
        "\n  #{} pfn {:#x}{} mm {} vaddr {} pid {} ({}) at +{:.6}s{}{}{}",
        f.id,
        f.pfn,
        if f.order > 0 {
            format!(" order {}", f.order)
        } else {
            String::new()
        },
        f.mm,
        f.vaddr,
        f.pid,
        f.comm,
        f.t_ns.saturating_sub(t0) as f64 / 1e9,
        match f.status {
            Status::Uncertain => " [uncertain: events lost]",
            Status::Unconfirmed => " [unconfirmed: page table not checked]",
            Status::Definite => "",
        },
        if f.at_attach {
            " [present at attach]"
        } else {
            ""
        },
        if f.occurrences > 1 {
            format!(" [x{}]", f.occurrences)
        } else {
            String::new()
        },
    )?;
    writeln!(out, "    {}", f.explanation)?;
    writeln!(
        out,
        "    {:>12}  {:<13} {:<32} {:>7} {:<16} {:>11}  detail",
        "t (s)", "event", "hook", "pid", "comm", "refcount"
    )?;
    for e in &f.timeline {
        writeln!(out, "    {}", timeline_line(e, t0))?;
    }
    Ok(())
}

/// One timeline row (shared with the live view).
pub fn timeline_line(e: &TimelineEntry, t0: u64) -> String {
    let refs = match (e.ref_before, e.ref_after) {
        (Some(b), Some(a)) => format!("{b}->{a}"),
        (None, Some(a)) => format!("->{a}"),
        (Some(b), None) => format!("{b}->"),
        (None, None) => "-".into(),
    };
    let mut detail = Vec::new();
    if e.vaddr.0 != 0 {
        detail.push(format!("va {}", e.vaddr));
    }
    if e.order > 0 {
        detail.push(format!("order {}", e.order));
    }
    if let Some(g) = e.gup {
        detail.push(format!("{} x{}", g.as_str(), e.refs.max(1)));
    } else if e.refs != 0 {
        detail.push(format!("refs {}", e.refs));
    }
    for (bit, name) in [
        (refscope_common::flags::FAILED, "failed"),
        (refscope_common::flags::MEMMAP_UNREADABLE, "memmap gone"),
        (refscope_common::flags::WRITE, "write"),
        (refscope_common::flags::AT_ATTACH, "at attach"),
    ] {
        if e.flags.has(bit) {
            detail.push(name.into());
        }
    }
    format!(
        "{:>12.6}  {:<13} {:<32} {:>7} {:<16} {:>11}  {}",
        e.t.saturating_sub(t0) as f64 / 1e9,
        e.kind.as_str(),
        e.hook.as_str(),
        e.pid,
        e.comm.to_string(),
        refs,
        detail.join(", ")
    )
}

fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut col = 0;
    for word in text.split_whitespace() {
        if col > 0 && col + word.len() + 1 > width {
            out.push('\n');
            out.push_str(indent);
            col = 0;
        } else if col > 0 {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += word.len();
    }
    out
}
