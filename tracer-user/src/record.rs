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

use aya::maps::{MapData, RingBuf};

use crate::{
    cli::RecordArgs,
    output::{self, create_output},
    session::{Pipeline, Session, clock_ns},
};

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
    let mut writer = TraceWriter::new(BufWriter::with_capacity(1 << 16, file), &header)
        .with_context(|| format!("failed to write {path}"))?;
    let attached = s.probes.attached.len();
    let Session {
        probes,
        mut pipeline,
        ..
    } = s;
    let crate::probe::loader::Probes {
        events,
        drops,
        guard,
        ..
    } = probes;
    if let Some(ready) = &args.ready_file {
        fs::write(ready, format!("{}\n", std::process::id()))
            .with_context(|| format!("failed to write the ready file {}", ready.display()))?;
    }
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

    // SAFETY: the ring buffer owns its map fd, which stays open and
    // unchanged for as long as the AsyncFd owns the ring buffer.
    let mut ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("cannot poll the ring buffer: {e}"))?;
    let mut failure: Option<anyhow::Error> = None;
    let end_reason = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("ring buffer poll failed")?;
                let mut res = drain(guard.get_inner_mut(), &mut pipeline, &mut writer);
                guard.clear_ready();
                // The kernel wakes the consumer only when it has caught up: a
                // record committed between the last empty read and
                // clear_ready() would otherwise never be noticed. Re-check.
                if res.is_ok() {
                    res = drain(guard.get_inner_mut(), &mut pipeline, &mut writer);
                }
                if let Err(e) = res {
                    failure = Some(anyhow::Error::new(e).context(format!("writing {path} failed")));
                }
                if let Err(e) = emit_findings(&mut writer, pipeline.analyzer.take_new_findings(), args.quiet) {
                    failure = Some(e.context(format!("writing {path} failed")));
                }
                if failure.is_some() { break "error"; }
            }
            _ = tick.tick() => {
                // Safety net for missed wake-ups, and it bounds latency.
                if let Err(e) = drain(ring.get_mut(), &mut pipeline, &mut writer) {
                    failure = Some(anyhow::Error::new(e).context(format!("writing {path} failed")));
                }
                for loss in pipeline.poll_drops(&drops) {
                    if let Err(e) = writer.loss(&loss) {
                        failure = Some(anyhow::Error::new(e).context(format!("writing {path} failed")));
                    }
                    if !args.quiet {
                        eprintln!("refscope: lost {} events on CPU {} (ring buffer full; raise --ringbuf-size)", loss.count, loss.cpu);
                    }
                }
                if let Err(e) = writer.flush() {
                    failure = Some(anyhow::Error::new(e).context(format!("writing {path} failed")));
                }
                if failure.is_some() { break "error"; }
                if deadline.is_some_and(|d| Instant::now() >= d) { break "duration"; }
            }
            _ = sigint.recv() => break "signal",
            _ = sigterm.recv() => break "signal",
            _ = sighup.recv() => break "signal",
        }
    };

    // Drain what is left in the ring buffer (unless writing already failed).
    if failure.is_none() {
        if let Err(e) = drain(ring.get_mut(), &mut pipeline, &mut writer) {
            failure = Some(anyhow::Error::new(e).context(format!("writing {path} failed")));
        }
        for loss in pipeline.poll_drops(&drops) {
            let _ = writer.loss(&loss);
        }
    }
    // Detach before the footer: nothing after it is recorded anyway.
    drop(ring);
    drop(guard);
    let end_t = clock_ns(libc::CLOCK_MONOTONIC);
    pipeline.analyzer.finish(end_t);
    let _ = emit_findings(
        &mut writer,
        pipeline.analyzer.take_new_findings(),
        args.quiet,
    );

    let reason = match &failure {
        Some(e) => format!("error: {e:#}"),
        None => end_reason.to_owned(),
    };
    let events = writer.events_written();
    // The footer is best effort when the disk is the problem: what was
    // written before stays a valid (footer-less) trace.
    let finished = writer.finish(end_t, &reason);
    if let Ok(w) = finished
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
    match failure {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Read every available record, analyse it and write it to the trace.
fn drain<W: Write>(
    rb: &mut RingBuf<MapData>,
    pipeline: &mut Pipeline,
    writer: &mut TraceWriter<W>,
) -> std::io::Result<()> {
    while let Some(item) = rb.next() {
        if let Some(ev) = pipeline.on_record(&item) {
            writer.event(&ev)?;
        }
    }
    Ok(())
}

/// Write new findings to the trace (flushed: they must survive a crash
/// right after) and print them.
fn emit_findings<W: Write>(
    writer: &mut TraceWriter<W>,
    findings: &[Finding],
    quiet: bool,
) -> anyhow::Result<()> {
    if findings.is_empty() {
        return Ok(());
    }
    for f in findings {
        writer.finding(f)?;
        if !quiet || f.severity == Severity::Error {
            eprintln!("{}", output::finding_line(f));
        }
    }
    writer.flush()?;
    Ok(())
}
