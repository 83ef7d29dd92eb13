//! `refscope export`: a recorded trace as Perfetto (native protobuf
//! TrackEvent), Parquet (`events` and `findings` tables) or a filtered JSONL
//! trace, streamed in one pass with bounded memory (docs/export.md).
//!
//! One pass reads the trace record by record and feeds each event to the
//! analysis core (refcounts, the pgmap of each page, findings: the same
//! ones `refscope report` computes), which also emits the mapping and
//! GUP-reference lifetimes it pairs (`refscope_core::analysis::lifetimes`);
//! a [`Format`] writes what the
//! [`filter::Filter`] selects. `--rule` needs the findings before the first
//! event is written, so it adds a first analysis pass over the file.
//! Memory is the analysis state (pages, live mappings and pins) and the
//! writers' buffers (one Parquet row group), never the trace.

pub mod filter;
pub mod jsonl;
pub mod parquet;
pub mod perfetto;
pub mod proto;

use std::{
    collections::HashSet,
    fs::{self, File},
    io::{BufRead, BufReader, BufWriter},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use refscope_core::{
    analysis::{Analyzer, Change, Finding},
    event::Event,
    replay::{Consumer, End, Stop, replay},
    trace::{Footer, Header, Loss, TraceReader},
};

use self::filter::Filter;
use crate::{
    cli::{ExportArgs, ExportFormat},
    output::{self, Progress, create_output},
    pipeline::analyzer_for,
    report,
};

/// What a format sees besides the event.
pub struct Context<'a> {
    pub header: &'a Header,
    /// With lifetimes tracked: `live_maps()` and `live_pins()`.
    pub analyzer: &'a Analyzer,
    pub filter: &'a Filter,
    /// `--until` has passed.
    pub window_closed: bool,
}

impl Context<'_> {
    /// Index in `analyzer.pgmaps()` of the device of `pfn`: the page's own
    /// when the analysis knows it, else the device whose range holds it
    /// (the analysis leaves the pages under a PMD mapping without one).
    pub fn pgmap_index(&self, pfn: u64) -> Option<usize> {
        let pgmaps = self.analyzer.pgmaps();
        self.analyzer
            .page(pfn)
            .and_then(|v| v.pgmap)
            .and_then(|g| pgmaps.iter().position(|x| std::ptr::eq(x, g)))
            .or_else(|| {
                pgmaps
                    .iter()
                    .position(|g| g.ranges.iter().any(|&(lo, hi)| lo <= pfn && pfn < hi))
            })
    }

    /// The logical refcount of `pfn` after an event that read one: the
    /// analysis' (the raw `_refcount` minus its device's idle bias).
    pub fn logical_ref(&self, pfn: u64) -> Option<i32> {
        self.analyzer.page(pfn)?.logical_ref
    }

    pub fn gup_is_pin(&self, ev: &Event) -> bool {
        self.header.gup_flags.decode(ev.arg_flags.0).pin
    }

    /// Whether a finding is exported: its page(s), process and time are
    /// selected (with `--rule`, every finding on the selected pages is).
    pub fn finding_ok(&self, f: &Finding) -> bool {
        self.filter.time_ok(f.t_ns) && self.filter.life_ok(f.pfn, f.order, f.pid)
    }
}

/// An export format.
pub trait Format {
    /// The first event at or after `--since` is next: lifetimes live now
    /// start in the export at `t`.
    fn window_open(&mut self, cx: &Context<'_>, t: u64) -> anyhow::Result<()>;
    /// `--until` was reached at `t`.
    fn window_close(&mut self, cx: &Context<'_>, t: u64) -> anyhow::Result<()>;
    /// One event (already applied), the lifetime changes it made, whether
    /// the filter selects it, and the findings it raised.
    fn event(
        &mut self,
        cx: &Context<'_>,
        ev: &Event,
        changes: &[Change],
        selected: bool,
        findings: &[Finding],
    ) -> anyhow::Result<()>;
    fn loss(&mut self, _cx: &Context<'_>, _loss: &Loss) -> anyhow::Result<()> {
        Ok(())
    }
    /// A finding record of the input (as reported live).
    fn live_finding(&mut self, _cx: &Context<'_>, _f: &Finding) -> anyhow::Result<()> {
        Ok(())
    }
    /// End of the trace at `end_t`: lifetimes still live end (`changes`),
    /// `findings` were raised at the end; `cx.analyzer.findings()` has all.
    fn finish(
        &mut self,
        cx: &Context<'_>,
        end_t: u64,
        changes: &[Change],
        findings: &[Finding],
        footer: Option<&Footer>,
    ) -> anyhow::Result<()>;
}

/// What the pass saw.
#[derive(Debug, Default)]
pub struct Totals {
    pub events: u64,
    pub selected: u64,
    pub findings: usize,
    pub end_t: u64,
    pub has_footer: bool,
    /// The footer's `end_reason`.
    pub end_reason: Option<String>,
    pub truncated_at: Option<u64>,
}

/// Stream `reader` through the analysis into `format`.
pub fn stream<R: BufRead, S: Format>(
    mut reader: TraceReader<R>,
    size: u64,
    filter: &Filter,
    format: &mut S,
) -> anyhow::Result<Totals> {
    let header = reader.header().clone();
    let mut analyzer = analyzer_for(&header, 0);
    analyzer.track_lifetimes();
    let mut x = Exporting {
        analyzer,
        header,
        changes: Vec::new(),
        filter,
        format,
        progress: Progress::new("exporting", size),
        selected: 0,
        opened: filter.since.is_none(),
        closed: false,
    };
    let end = replay(&mut reader, &mut x);
    x.progress.done();
    let end = end.map_err(|stop| match stop {
        Stop::Trace { error, .. } => anyhow::Error::from(error),
        Stop::Consumer(e) => e,
    })?;
    Ok(Totals {
        events: end.events,
        selected: x.selected,
        findings: x.analyzer.findings().len(),
        end_t: end.end_t,
        has_footer: end.footer.is_some(),
        end_reason: end.footer.map(|f| f.end_reason),
        truncated_at: end.truncated_at,
    })
}

/// One export pass: the analysis (and its lifetimes), fed by the replay,
/// feeding the format.
struct Exporting<'a, S> {
    header: Header,
    analyzer: Analyzer,
    changes: Vec<Change>,
    filter: &'a Filter,
    format: &'a mut S,
    progress: Progress,
    selected: u64,
    /// `--since` has passed (or there is none).
    opened: bool,
    /// `--until` has passed.
    closed: bool,
}

/// The format's view of an [`Exporting`] (fields, so the format stays
/// borrowable).
macro_rules! context {
    ($x:expr) => {
        Context {
            header: &$x.header,
            analyzer: &$x.analyzer,
            filter: $x.filter,
            window_closed: $x.closed,
        }
    };
}

impl<S: Format> Consumer for Exporting<'_, S> {
    type Error = anyhow::Error;

    fn event(&mut self, ev: Box<Event>) -> anyhow::Result<()> {
        let ev = &*ev;
        if let Some(since) = self.filter.since
            && !self.opened
            && ev.t >= since
        {
            self.opened = true;
            self.format.window_open(&context!(self), since)?;
        }
        if let Some(until) = self.filter.until
            && !self.closed
            && ev.t >= until
        {
            self.closed = true;
            self.format.window_close(&context!(self), until)?;
        }
        let n0 = self.analyzer.findings().len();
        self.analyzer.apply(ev);
        self.changes.clear();
        self.analyzer.take_changes(&mut self.changes);
        let selected = !self.closed && self.filter.event_ok(ev, &self.changes);
        self.selected += u64::from(selected);
        self.format.event(
            &context!(self),
            ev,
            &self.changes,
            selected,
            &self.analyzer.findings()[n0..],
        )
    }

    fn loss(&mut self, loss: &Loss) -> anyhow::Result<()> {
        self.analyzer.apply_loss(loss);
        self.format.loss(&context!(self), loss)
    }

    fn live_finding(&mut self, f: &Finding) -> anyhow::Result<()> {
        self.format.live_finding(&context!(self), f)
    }

    fn progress(&mut self, bytes: u64) -> anyhow::Result<()> {
        self.progress.update(bytes);
        Ok(())
    }

    fn end(&mut self, end: &End) -> anyhow::Result<()> {
        let n0 = self.analyzer.findings().len();
        self.analyzer.finish(end.end_t);
        self.changes.clear();
        self.analyzer.take_changes(&mut self.changes);
        self.format.finish(
            &context!(self),
            end.end_t,
            &self.changes,
            &self.analyzer.findings()[n0..],
            end.footer.as_ref(),
        )
    }
}

/// Seconds into the trace as absolute monotonic ns.
fn abs_ns(t0: u64, secs: f64, what: &str) -> anyhow::Result<u64> {
    if !secs.is_finite() || secs < 0.0 {
        bail!("{what} must be a non-negative number of seconds, not {secs}");
    }
    Ok(t0.saturating_add((secs * 1e9).round() as u64))
}

fn open(path: &Path) -> anyhow::Result<(TraceReader<BufReader<File>>, u64)> {
    let name = path.display().to_string();
    let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let reader = TraceReader::new(BufReader::with_capacity(1 << 20, file), &name)?;
    Ok((reader, size))
}

/// Build the filter from the command line (`--rule` runs the first pass).
pub fn filter_for(args: &ExportArgs, header: &Header) -> anyhow::Result<Filter> {
    let rules = report::parse_rules(&args.rules)?;
    let t0 = header.clock.monotonic_ns;
    let mut filter = Filter {
        pid: args.pid,
        pfn_range: args.pfn_range,
        since: args.since.map(|s| abs_ns(t0, s, "--since")).transpose()?,
        until: args.until.map(|s| abs_ns(t0, s, "--until")).transpose()?,
        pages: None,
    };
    if let (Some(s), Some(u)) = (filter.since, filter.until)
        && s >= u
    {
        bail!("--since must be before --until");
    }
    if let Some((lo, hi)) = filter.pfn_range
        && lo > hi
    {
        bail!("--pfn-range: START {lo:#x} is after END {hi:#x}");
    }
    if !rules.is_empty() {
        let a = report::analyse(
            &args.file,
            0,
            crate::cli::DEFAULT_MAX_PAGES,
            crate::cli::DEFAULT_MAX_FINDINGS,
        )?;
        let pages: HashSet<u64> = a
            .analyzer
            .findings()
            .iter()
            .filter(|f| rules.contains(&f.rule))
            .flat_map(|f| f.pfn..f.pfn + (1u64 << f.order.min(20)))
            .collect();
        log::info!(
            "--rule: {} page(s) have a finding of {}",
            pages.len(),
            args.rules.join(", ")
        );
        filter.pages = Some(pages);
    }
    Ok(filter)
}

/// Removes a partly written output unless the export succeeded.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

/// Removes a directory made for a failed export (only if left empty).
struct CleanupDir(Option<PathBuf>);

impl Drop for CleanupDir {
    fn drop(&mut self) {
        if let Some(d) = &self.0 {
            let _ = fs::remove_dir(d);
        }
    }
}

pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    // Read the header first: a file that is not a trace fails before any
    // output is created.
    let (reader, size) = open(&args.file)?;
    let header = reader.header().clone();
    let filter = filter_for(&args, &header)?;
    let out = &args.output;
    let (totals, what) = match args.format {
        ExportFormat::Perfetto => {
            let file = create_output(out, args.force)?;
            let mut cleanup = Cleanup(vec![out.clone()]);
            let mut format =
                perfetto::Perfetto::new(BufWriter::with_capacity(1 << 20, file), &header)
                    .with_context(|| format!("cannot write {}", out.display()))?;
            let totals = stream(reader, size, &filter, &mut format)
                .with_context(|| format!("exporting to {}", out.display()))?;
            cleanup.0.clear();
            let s = &format.stats;
            let what = format!(
                "{} tracks, {} slices, {} counter samples, {} instants, {} flows, {} findings",
                s.tracks, s.slices, s.counters, s.instants, s.flows, s.findings
            );
            if s.clamped > 0 {
                log::info!(
                    "{} timestamps were raised to keep the Perfetto trace in time order",
                    s.clamped
                );
            }
            (totals, what)
        }
        ExportFormat::Parquet => {
            // A directory made for this export goes too if it fails (the
            // file cleanup below runs first: locals drop in reverse).
            let made = fs::symlink_metadata(out).is_err();
            let dir = parquet::prepare_dir(out)?;
            let mut dir_cleanup = CleanupDir(made.then(|| dir.clone()));
            let mut format = parquet::ParquetFormat::create(&dir, args.force, &header, &filter)?;
            let mut cleanup = Cleanup(format.paths());
            let totals = stream(reader, size, &filter, &mut format)
                .with_context(|| format!("exporting to {}", out.display()))?;
            let (events, findings) = format.close()?;
            cleanup.0.clear();
            dir_cleanup.0 = None;
            (
                totals,
                format!(
                    "{events} event rows and {findings} finding rows in {}",
                    dir.display()
                ),
            )
        }
        ExportFormat::Jsonl => {
            let file = create_output(out, args.force)?;
            let mut cleanup = Cleanup(vec![out.clone()]);
            let mut format = jsonl::Jsonl::new(BufWriter::with_capacity(1 << 20, file), &header)
                .with_context(|| format!("cannot write {}", out.display()))?;
            let totals = stream(reader, size, &filter, &mut format)
                .with_context(|| format!("exporting to {}", out.display()))?;
            cleanup.0.clear();
            let what = format!("{} events", format.written());
            (totals, what)
        }
    };
    output::trace_end_warnings(
        &args.file,
        totals.end_reason.as_deref(),
        totals.has_footer,
        totals.truncated_at,
        "exported",
    );
    eprintln!(
        "refscope: exported {} of {} events ({} findings in the trace): {what}",
        totals.selected, totals.events, totals.findings
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/export/fixture.jsonl")
    }

    fn perfetto(filter: &Filter) -> (perfetto::Stats, Vec<u8>, Totals) {
        let (reader, size) = open(&fixture()).unwrap();
        let header = reader.header().clone();
        let mut format = perfetto::Perfetto::new(Vec::new(), &header).unwrap();
        let totals = stream(reader, size, filter, &mut format).unwrap();
        let stats = format.stats.clone();
        (stats, format.into_inner(), totals)
    }

    #[test]
    fn fixture_exports_the_hand_computed_counts() {
        // tests/export/fixture.jsonl: 3 mappings (two overlapping on one
        // page, one PMD), 3 GUP references (2 released, 1 left at exit),
        // 9 events with a refcount, 9 findings.
        let (s, bytes, totals) = perfetto(&Filter::default());
        assert_eq!(totals.events, 13);
        assert_eq!(totals.findings, 9);
        assert_eq!(
            (
                s.tracks, s.slices, s.counters, s.flows, s.findings, s.instants
            ),
            (15, 6, 9, 2, 9, 14),
            "{s:?}"
        );
        assert_eq!(s.clamped, 0);
        // The first packet: Trace.packet (0a), length, then
        // trusted_packet_sequence_id = 1 (50 01) and
        // sequence_flags = SEQ_INCREMENTAL_STATE_CLEARED (68 01).
        assert_eq!(bytes[0], 0x0a);
        assert_eq!(&bytes[2..6], [0x50, 0x01, 0x68, 0x01]);
    }

    #[test]
    fn filters_narrow_the_perfetto_export() {
        let t0 = 5_000_000_000;
        // Only pfn 0x100010 (the two overlapping mappings and two refs).
        let f = Filter {
            pfn_range: Some((0x10_0010, 0x10_0010)),
            ..Filter::default()
        };
        let (s, _, totals) = perfetto(&f);
        // Its 6 page events, the unmap and the mm_exit that end its mappings.
        assert_eq!(totals.selected, 8);
        assert_eq!((s.slices, s.flows, s.counters), (4, 2, 6), "{s:?}");
        // A window [t0+3.5us, t0+7.5us): the two mappings and the pin live
        // at its start begin there (no flow for the pin taken before it).
        let f = Filter {
            since: Some(t0 + 3_500),
            until: Some(t0 + 7_500),
            ..Filter::default()
        };
        let (s, _, _) = perfetto(&f);
        assert_eq!(
            s.slices, 4,
            "2 mappings, 1 pin, 1 get live or begun in the window"
        );
        assert_eq!(s.flows, 1, "only the get that began in the window");
    }

    #[test]
    fn findings_are_those_of_report() {
        let a = report::analyse(
            &fixture(),
            64,
            crate::cli::DEFAULT_MAX_PAGES,
            crate::cli::DEFAULT_MAX_FINDINGS,
        )
        .unwrap();
        let (reader, size) = open(&fixture()).unwrap();
        let header = reader.header().clone();
        struct Collect(Vec<Finding>);
        impl Format for Collect {
            fn window_open(&mut self, _: &Context<'_>, _: u64) -> anyhow::Result<()> {
                Ok(())
            }
            fn window_close(&mut self, _: &Context<'_>, _: u64) -> anyhow::Result<()> {
                Ok(())
            }
            fn event(
                &mut self,
                _: &Context<'_>,
                _: &Event,
                _: &[Change],
                _: bool,
                _: &[Finding],
            ) -> anyhow::Result<()> {
                Ok(())
            }
            fn finish(
                &mut self,
                cx: &Context<'_>,
                _: u64,
                _: &[Change],
                _: &[Finding],
                _: Option<&Footer>,
            ) -> anyhow::Result<()> {
                self.0 = cx.analyzer.findings().to_vec();
                Ok(())
            }
        }
        let mut c = Collect(Vec::new());
        stream(reader, size, &Filter::default(), &mut c).unwrap();
        let strip = |f: &Finding| Finding {
            timeline: Vec::new(),
            ..f.clone()
        };
        let ours: Vec<Finding> = c.0.iter().map(strip).collect();
        let theirs: Vec<Finding> = a.analyzer.findings().iter().map(strip).collect();
        assert_eq!(ours, theirs);
        assert_eq!(header.refcount_model.as_str(), "idle_one");
    }
}
