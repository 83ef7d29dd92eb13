//! `refscope record`: attach, write the trace, print findings as they
//! happen, and on SIGINT/SIGTERM/SIGHUP or the end of `--duration` detach,
//! drain, write the footer and print a summary.

use std::{
    fs,
    io::{BufWriter, Write},
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use refscope_core::{
    analysis::{Finding, Severity},
    trace::TraceWriter,
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use crate::probe::loader::DropCounters;
use crate::{
    audit::{self, devices_of, shadow_of},
    cli::RecordArgs,
    kernel::clock_ns,
    output::{self, create_output},
    pipeline::Pipeline,
    probe::ringbuf::RingReader,
    probe::ringbuf::{self, StallWatch},
    session::{self, Session},
    snapshot,
};
use refscope_core::event::Event;
use std::collections::BTreeMap;

/// How often the trace is flushed and drop counters polled.
const TICK: Duration = Duration::from_millis(100);

pub fn run(args: RecordArgs) -> anyhow::Result<ExitCode> {
    let command: Vec<String> = std::env::args().collect();
    // Create the output first: a bad path should fail before attaching.
    let file = create_output(&args.output, args.force)?;
    let session = match Session::start(&args.trace, command) {
        Ok(s) => s,
        Err(e) => {
            // Do not leave an empty trace behind for a run that never started.
            let _ = fs::remove_file(&args.output);
            return Err(e);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the event loop")?;
    rt.block_on(record(session, file, &args))
}

async fn record(s: Session, file: fs::File, args: &RecordArgs) -> anyhow::Result<ExitCode> {
    let path = args.output.display().to_string();
    let header = s.header.clone();
    let writer = TraceWriter::new(BufWriter::with_capacity(1 << 16, file), &header)
        .with_context(|| format!("failed to write {path}"))?;
    let attached = s.probes.attached.len();
    let Session {
        probes,
        pipeline,
        device_ranges,
        ..
    } = s;
    let crate::probe::loader::Probes {
        events,
        drops,
        mut guard,
        ..
    } = probes;
    if !args.quiet {
        eprintln!(
            "refscope: recording to {path}: kernel {}, {} model, {attached} programs attached{}",
            header.kernel_release,
            header.refcount_model.as_str(),
            match args.duration {
                Some(d) => format!(", for {d}s"),
                None => ", Ctrl-C to stop".into(),
            }
        );
    }

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let deadline = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d.max(0.0)));
    let mut tick = tokio::time::interval(TICK);

    // SAFETY: the reader owns the map (and so its fd), which stays open and
    // unchanged for as long as the AsyncFd owns the reader.
    let mut ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("cannot poll the ring buffer: {e}"))?;
    let mut sink = Sink {
        pipeline,
        writer,
        error: None,
        quiet: args.quiet,
    };
    // Mappings that exist already, after the probes are attached (so none
    // made meanwhile is missed) and before the ready file.
    session::attach_snapshot(
        &mut guard,
        &args.trace,
        &device_ranges,
        &mut SnapshotSink {
            ring: ring.get_mut(),
            sink: &mut sink,
        },
        !args.quiet,
    );
    sink.findings();
    if let Some(ready) = &args.ready_file {
        output::write_ready_file(ready)?;
    }
    let mut auditor = session::Auditor::new(&header, &args.trace);
    let mut stall = StallWatch::default();
    let end_reason = loop {
        tokio::select! {
            read = ringbuf::wait_and_read(&mut ring, |bytes| sink.record(bytes)) => {
                read.context("ring buffer poll failed")?;
                if let Some(a) = &mut auditor {
                    a.verify(&mut guard, &mut SnapshotSink { ring: ring.get_mut(), sink: &mut sink });
                }
                sink.findings();
                if sink.error.is_some() { break "error"; }
            }
            _ = tick.tick() => {
                // Safety net for missed wake-ups; it also bounds latency.
                let stop = ring.get_mut().read(|bytes| sink.record(bytes));
                if let Some(msg) = stall.check(stop, ring.get_ref().state()) {
                    log::warn!("{msg}");
                }
                log::debug!("ring {:?} after read: {stop:?}", ring.get_ref().state());
                if let Some(a) = &mut auditor {
                    let mut rec = SnapshotSink { ring: ring.get_mut(), sink: &mut sink };
                    a.verify(&mut guard, &mut rec);
                    a.tick(&mut guard, &mut rec);
                }
                sink.findings();
                sink.losses(&drops, guard.recursion_misses());
                sink.flush();
                if sink.error.is_some() { break "error"; }
                if deadline.is_some_and(|d| Instant::now() >= d) { break "duration"; }
            }
            _ = sigint.recv() => break "signal",
            _ = sigterm.recv() => break "signal",
            _ = sighup.recv() => break "signal",
        }
    };

    // Drain what is left in the ring buffer.
    ring.get_mut().read(|bytes| sink.record(bytes));
    if let Some(a) = &mut auditor {
        let mut rec = SnapshotSink {
            ring: ring.get_mut(),
            sink: &mut sink,
        };
        a.finish(&mut guard, &mut rec);
    }
    sink.losses(&drops, guard.recursion_misses());
    // Detach before the footer: nothing after it is recorded anyway.
    drop(ring);
    drop(guard);
    let end_t = clock_ns(libc::CLOCK_MONOTONIC);
    sink.pipeline.analyzer.finish(end_t);
    sink.findings();

    let Sink {
        pipeline,
        writer,
        error,
        ..
    } = sink;
    let failure = error.map(|e| anyhow::Error::new(e).context(format!("writing {path} failed")));
    let reason = match &failure {
        Some(e) => format!("error: {e:#}"),
        None => end_reason.to_owned(),
    };
    let events = writer.events_written();
    // The footer is best effort when the disk is the problem: what was
    // written before stays a valid (footer-less) trace.
    if let Ok(w) = writer.finish(end_t, &reason)
        && let Ok(f) = w.into_inner()
    {
        let _ = f.sync_all();
    }
    output::summary(
        &pipeline.analyzer,
        events,
        pipeline.decode_errors,
        Path::new(&path),
        args.quiet,
    );
    if let Some(line) = auditor.and_then(|a| a.cost.line())
        && !args.quiet
    {
        eprintln!("{line}");
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Where ring-buffer records go: analysis, then the trace. The first write
/// error stops writing and is kept (the trace up to it stays valid).
struct Sink<W: Write> {
    pipeline: Pipeline,
    writer: TraceWriter<W>,
    error: Option<std::io::Error>,
    quiet: bool,
}

impl<W: Write> Sink<W> {
    fn record(&mut self, bytes: &[u8]) {
        if let Some(ev) = self.pipeline.on_record(bytes)
            && self.error.is_none()
            && let Err(e) = self.writer.event(&ev)
        {
            self.error = Some(e);
        }
    }

    /// Write and print findings raised since the last call.
    fn findings(&mut self) {
        let new = self.pipeline.analyzer.take_new_findings();
        if self.error.is_none()
            && let Err(e) = emit_findings(&mut self.writer, new, self.quiet)
        {
            self.error = Some(e);
        }
    }

    /// Loss records for new kernel-side drops.
    fn losses(&mut self, drops: &DropCounters, misses: u64) {
        for loss in self.pipeline.poll_drops(drops, misses) {
            if !self.quiet {
                eprintln!("refscope: {}", output::loss_line(&loss));
            }
            if self.error.is_none()
                && let Err(e) = self.writer.loss(&loss)
            {
                self.error = Some(e);
            }
        }
    }

    fn flush(&mut self) {
        if self.error.is_none()
            && let Err(e) = self.writer.flush()
        {
            self.error = Some(e);
        }
    }
}

/// The attach snapshot's way into the recording: the ring buffer is drained
/// through the same sink, and snapshot events go the way records do.
struct SnapshotSink<'a, W: Write> {
    ring: &'a mut RingReader,
    sink: &'a mut Sink<W>,
}

impl<W: Write> snapshot::Sink for SnapshotSink<'_, W> {
    fn drain(&mut self) {
        let sink = &mut *self.sink;
        self.ring.read(|bytes| sink.record(bytes));
    }

    fn emit(&mut self, ev: &refscope_common::Event) {
        self.sink.record(ev.as_bytes());
    }
}

impl<W: Write> audit::Recording for SnapshotSink<'_, W> {
    fn sync(&mut self) -> bool {
        let sink = &mut *self.sink;
        self.ring
            .read_through(|bytes| sink.record(bytes), audit::SYNC_PATIENCE)
    }

    fn mm_id(&self, mm: u64) -> u64 {
        self.sink.pipeline.mm_id(mm)
    }

    fn shadow(&self, mm_id: u64) -> BTreeMap<u64, (u64, u8)> {
        shadow_of(&self.sink.pipeline.analyzer, mm_id)
    }

    fn devices(&self) -> Vec<(u64, u64)> {
        devices_of(&self.sink.pipeline.analyzer)
    }

    fn emit(&mut self, ev: &Event) {
        let sink = &mut *self.sink;
        sink.pipeline.analyzer.apply(ev);
        if sink.error.is_none()
            && let Err(e) = sink.writer.event(ev)
        {
            sink.error = Some(e);
        }
    }

    fn pause(&mut self) {
        std::thread::sleep(audit::PAUSE);
    }

    fn verify_requests(&mut self) -> Vec<(u64, u32)> {
        self.sink.pipeline.analyzer.take_verify_requests()
    }
}

/// Write new findings to the trace (flushed: they must survive a crash
/// right after) and print them (those about mappings present at attach
/// only as a count, unless they are errors).
fn emit_findings<W: Write>(
    writer: &mut TraceWriter<W>,
    findings: &[Finding],
    quiet: bool,
) -> std::io::Result<()> {
    if findings.is_empty() {
        return Ok(());
    }
    let mut at_attach = 0;
    for f in findings {
        writer.finding(f)?;
        // Findings about mappings that predate refscope come all at once
        // (one per mapping on pre-6.15 kernels): counted, not listed.
        if f.at_attach && f.severity != Severity::Error {
            at_attach += 1;
        } else if !quiet || f.severity == Severity::Error {
            eprintln!("{}", output::finding_line(f));
        }
    }
    writer.flush()?;
    if at_attach > 0 && !quiet {
        eprintln!(
            "refscope: {at_attach} finding(s) about mappings present at attach, not listed here \
             (`refscope report` shows them)"
        );
    }
    Ok(())
}
