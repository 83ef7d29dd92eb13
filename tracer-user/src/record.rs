//! `refscope record`: attach, write the trace, print findings as they
//! happen, and on SIGINT/SIGTERM/SIGHUP or the end of `--duration` detach,
//! drain, write the footer and print a summary.

use std::{
    fs,
    io::BufWriter,
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use refscope_core::{
    analysis::{Finding, Severity},
    trace::{Loss, TraceWriter},
};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    audit,
    cli::RecordArgs,
    kernel::clock_ns,
    output::{self, create_output},
    recorder::{Capture, Recorder},
    session::Session,
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
    let writer = TraceWriter::new(BufWriter::with_capacity(1 << 16, file), &header)
        .with_context(|| format!("failed to write {path}"))?;
    let attached = s.probes.attached.len();
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

    let auditor = audit::Auditor::new(&header, &args.trace);
    let mut capture = Capture::new(s.probes, auditor)?;
    let mut rec = Recorder::new(s.pipeline, Some((writer, path.clone())));
    capture.snapshot(&mut rec, &args.trace, &s.device_ranges, !args.quiet);
    print_findings(rec.findings(), args.quiet);
    if let Some(ready) = &args.ready_file {
        output::write_ready_file(ready)?;
    }
    let end_reason = loop {
        tokio::select! {
            read = capture.read(&mut rec) => {
                read.context("ring buffer poll failed")?;
                print_findings(rec.findings(), args.quiet);
                if rec.failure().is_some() { break "error"; }
            }
            _ = tick.tick() => {
                let losses = capture.tick(&mut rec);
                print_losses(&losses, args.quiet);
                print_findings(rec.findings(), args.quiet);
                rec.flush();
                if rec.failure().is_some() { break "error"; }
                if deadline.is_some_and(|d| Instant::now() >= d) { break "duration"; }
            }
            _ = sigint.recv() => break "signal",
            _ = sigterm.recv() => break "signal",
            _ = sighup.recv() => break "signal",
        }
    };

    // Detach before the footer: nothing after it is recorded anyway.
    let stopped = capture.stop(&mut rec);
    print_losses(&stopped.losses, args.quiet);
    let end_t = clock_ns(libc::CLOCK_MONOTONIC);
    print_findings(rec.end(end_t), args.quiet);
    let reason = match rec.failure() {
        Some(e) => format!("error: {e}"),
        None => end_reason.to_owned(),
    };
    let closed = rec.close(end_t, &reason, |w| {
        if let Ok(f) = w.into_inner() {
            let _ = f.sync_all();
        }
    });
    output::summary(
        &closed.pipeline.analyzer,
        closed.events,
        closed.pipeline.decode_errors,
        Path::new(&path),
        args.quiet,
    );
    if let Some(line) = stopped.audit_cost
        && !args.quiet
    {
        eprintln!("{line}");
    }
    match closed.failure {
        Some(e) => Err(anyhow::anyhow!("{e}")),
        None => Ok(ExitCode::SUCCESS),
    }
}

fn print_losses(losses: &[Loss], quiet: bool) {
    if !quiet {
        for loss in losses {
            eprintln!("refscope: {}", output::loss_line(loss));
        }
    }
}

/// Print new findings (those about mappings present at attach only as a
/// count, unless they are errors); the recorder wrote them already.
fn print_findings(findings: &[Finding], quiet: bool) {
    if findings.is_empty() {
        return;
    }
    let mut at_attach = 0;
    for f in findings {
        // Findings about mappings that predate refscope come all at once
        // (one per mapping on pre-6.15 kernels): counted, not listed.
        if f.at_attach && f.severity != Severity::Error {
            at_attach += 1;
        } else if !quiet || f.severity == Severity::Error {
            eprintln!("{}", output::finding_line(f));
        }
    }
    if at_attach > 0 && !quiet {
        eprintln!(
            "refscope: {at_attach} finding(s) about mappings present at attach, not listed here \
             (`refscope report` shows them)"
        );
    }
}
