//! `refscope live`: the ratatui live view of device pages, mappings, pins
//! and findings, over the running kernel (optionally recording the trace,
//! as `record` does) or over a recorded trace (`--replay`).
//!
//! - [`app`]: the one owner of the view's state (no I/O),
//! - [`event`]: messages into it and the threads/tasks that produce them,
//! - [`ui`]: rendering, a pure function of the state,
//! - this module: setup, the owner's event loop, and the I/O around it
//!   (recording, the kernel's drop counters and BPF statistics, the
//!   terminal, restored on every exit path).

pub mod app;
pub mod event;
pub mod filter;
pub mod keys;
pub mod layout;
mod logging;
pub mod synth;
mod terminal;
pub mod ui;

#[cfg(test)]
mod tests;

use std::{
    fs::{self, File},
    io::{self, BufReader, BufWriter, IsTerminal as _},
    path::Path,
    process::ExitCode,
    sync::{Arc, atomic::AtomicBool, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use ratatui::{Terminal, backend::Backend};
use refscope_core::trace::{TraceReader, TraceWriter};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

pub use self::logging::init as init_logging;
pub use self::terminal::detect_term_caps;
use self::terminal::{TerminalGuard, print_logs};
use self::{
    app::{App, Mode, TICK},
    event::{Control, DATA_QUEUE, Data, StopFlag},
};
use crate::{
    audit,
    cli::LiveArgs,
    hash::AddrMapper,
    kernel::clock_ns,
    output::{self, create_output},
    pipeline::Pipeline,
    probe::loader,
    recorder::{Capture, Recorder},
    session::Session,
};

/// At most this many frames per second.
const FRAME: Duration = Duration::from_millis(50);
/// How often the BPF run-time statistics are read.
const BPF_STATS_EVERY: Duration = Duration::from_secs(1);

pub fn run(args: LiveArgs) -> anyhow::Result<ExitCode> {
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        bail!(
            "refscope live needs a terminal (stdin and stdout must be a tty); \
             use `refscope record -o FILE` to trace without one"
        );
    }
    if !(args.speed >= 0.0 && args.speed.is_finite()) {
        bail!(
            "--speed must be 0 (as fast as possible) or a positive factor, not {}",
            args.speed
        );
    }
    let result = match args.replay.clone() {
        Some(path) => run_replay(&args, &path),
        None => run_live(args),
    };
    // Whatever was logged while the view was up, on every path.
    print_logs(logging::release());
    result
}

/// Where the trace goes with `-o` (the same trace `refscope record`
/// writes).
type Out = BufWriter<File>;

/// What the owner loop drives besides the view: the recorder (analysis
/// and the optional trace) and, when live, the kernel capture.
struct Tracer {
    rec: Recorder<Out>,
    capture: Option<Capture>,
    /// When the BPF run-time statistics were last read (live).
    stats_at: Option<Instant>,
}

impl Tracer {
    /// A replayed record: into the analysis, then the view is told.
    fn data(&mut self, app: &mut App, d: Data) {
        match d {
            Data::Events { events, clock } => {
                for ev in &events {
                    self.rec.apply(ev);
                }
                app.on_data(clock);
            }
            Data::Losses(losses) => {
                for l in &losses {
                    self.rec.loss(l);
                }
                app.on_data(0);
            }
            Data::Progress { clock, bytes } => app.on_progress(clock, bytes),
            Data::End(end) => {
                self.rec.end(end.end_t);
                app.on_replay_end(self.rec.pipeline(), end);
            }
        }
    }

    /// New records were read from the ring buffer.
    fn read(&mut self, app: &mut App) {
        app.on_data(self.rec.analyzer().last_t());
        self.findings(app);
    }

    /// Findings go to the trace as they are raised (the view folds them
    /// in on its own ticks).
    fn findings(&mut self, app: &mut App) {
        self.rec.findings();
        self.report_failure(app);
    }

    fn report_failure(&mut self, app: &mut App) {
        if app.recording_error().is_none()
            && let Some(e) = self.rec.failure()
        {
            log::error!("{e}; the recording stopped");
            app.on_recording_error(e);
        }
    }

    fn tick(&mut self, app: &mut App) {
        if let Some(capture) = &mut self.capture {
            let seen = |a: &refscope_core::analysis::Analyzer| (a.stats().events, a.lost());
            let before = seen(self.rec.analyzer());
            let losses = capture.tick(&mut self.rec);
            for l in &losses {
                log::warn!("{}", output::loss_line(l));
            }
            if seen(self.rec.analyzer()) != before {
                app.on_data(self.rec.analyzer().last_t());
            }
            if self.stats_at.is_none_or(|t| t.elapsed() >= BPF_STATS_EVERY) {
                self.stats_at = Some(Instant::now());
                let (time, runs) = loader::run_stats();
                app.on_bpf_stats(time, runs);
            }
            self.findings(app);
        }
        self.rec.flush();
        self.report_failure(app);
    }
}

/// Why the loop ended.
struct End {
    reason: &'static str,
    error: Option<anyhow::Error>,
    /// The terminal is gone (SIGHUP, unreadable): print nothing more on it.
    hangup: bool,
}

/// The owner's event loop: control first, then ticks, then data; draws at
/// most every [`FRAME`], and only when something changed.
async fn owner_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    ctl: &mut mpsc::UnboundedReceiver<Control>,
    data: &mut mpsc::Receiver<Data>,
    tracer: &mut Tracer,
    live: bool,
) -> End
where
    B::Error: Send + Sync + 'static,
{
    let start = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_draw: Option<Instant> = None;
    let mut data_open = true;
    let mut end = End {
        reason: "quit",
        error: None,
        hangup: false,
    };
    // For the end-to-end test that the terminal is restored on a panic.
    let test_panic = std::env::var_os("REFSCOPE_LIVE_TEST_PANIC").is_some();
    loop {
        if app.should_quit() {
            return end;
        }
        if app.dirty() && last_draw.is_none_or(|t| t.elapsed() >= FRAME) {
            let drawn = match app.take_repaint() {
                true => terminal.clear(),
                false => Ok(()),
            }
            .and_then(|()| {
                terminal
                    .draw(|f| ui::render(app, tracer.rec.pipeline(), f))
                    .map(|_| ())
            });
            if let Err(e) = drawn {
                if event::tty_state(Duration::ZERO) == event::TtyState::Gone {
                    end.reason = "signal";
                    end.hangup = true;
                } else {
                    end.error = Some(anyhow::Error::new(e).context("drawing failed"));
                    end.reason = "error: the terminal failed";
                }
                return end;
            }
            app.drawn();
            last_draw = Some(Instant::now());
            if test_panic && app.replay().is_some_and(|r| r.end.is_some()) {
                panic!("REFSCOPE_LIVE_TEST_PANIC is set: panicking on purpose");
            }
        }
        let redraw_at = app
            .dirty()
            .then(|| last_draw.map_or_else(Instant::now, |t| t + FRAME));
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            biased;
            msg = ctl.recv() => match msg {
                Some(Control::Input(ev)) => app.on_input(tracer.rec.pipeline(), ev),
                Some(Control::Signal(name)) => {
                    log::info!("{name}: stopping");
                    end.reason = "signal";
                    end.hangup |= name == "SIGHUP";
                    app.request_quit();
                }
                Some(Control::InputClosed(why)) => {
                    end.hangup = true;
                    log::warn!("the terminal cannot be read any more ({why}): stopping");
                    end.reason = "signal";
                    app.request_quit();
                }
                Some(Control::Fatal(why)) => {
                    end.error = Some(anyhow::anyhow!("{why}"));
                    end.reason = "error: internal error";
                    app.request_quit();
                }
                None => app.request_quit(),
            },
            _ = tick.tick() => {
                // SIGHUP does not always reach us (we are not the session
                // leader): notice a dead terminal here too.
                if event::tty_state(Duration::ZERO) == event::TtyState::Gone {
                    end.reason = "signal";
                    end.hangup = true;
                    app.request_quit();
                }
                for (level, text) in logging::drain() {
                    app.on_log(level, text);
                }
                tracer.tick(app);
                let now_t = live.then(|| clock_ns(libc::CLOCK_MONOTONIC));
                app.on_tick(tracer.rec.pipeline(), start.elapsed(), now_t);
            }
            _ = tokio::time::sleep_until(redraw_at.unwrap_or(far).into()), if redraw_at.is_some() => {}
            read = ring_read(&mut tracer.capture, &mut tracer.rec) => match read {
                Ok(()) => tracer.read(app),
                Err(e) => {
                    end.error = Some(anyhow::Error::new(e).context("ring buffer poll failed"));
                    end.reason = "error: ring buffer poll failed";
                    app.request_quit();
                }
            },
            d = data.recv(), if data_open => match d {
                Some(d) => tracer.data(app, d),
                None => data_open = false,
            },
        }
    }
}

/// Read the ring buffer into the recorder when it is readable (live);
/// never ready in a replay.
async fn ring_read(capture: &mut Option<Capture>, rec: &mut Recorder<Out>) -> io::Result<()> {
    match capture {
        Some(c) => c.read(rec).await,
        None => std::future::pending().await,
    }
}

fn signals(tx: mpsc::UnboundedSender<Control>) -> anyhow::Result<()> {
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
                _ = hup.recv() => "SIGHUP",
            };
            if tx.send(Control::Signal(name)).is_err() {
                return;
            }
        }
    });
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start the event loop")
}

// --------------------------------------------------------------- replay --

fn run_replay(args: &LiveArgs, path: &Path) -> anyhow::Result<ExitCode> {
    let name = path.display().to_string();
    let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let reader = TraceReader::new(BufReader::with_capacity(1 << 20, file), &name)?;
    let header = reader.header().clone();
    let mut pipeline = Pipeline::new(&header, args.trace.timeline, AddrMapper::new(true), None);
    pipeline.analyzer.set_max_pages(args.trace.max_pages);
    pipeline.analyzer.set_max_findings(args.trace.max_findings);
    let mode = Mode::Replay {
        file: name,
        speed: args.speed,
        total_bytes,
    };
    let mut app = App::new(header.clone(), mode, detect_term_caps());
    let mut tracer = Tracer {
        rec: Recorder::new(pipeline, None),
        capture: None,
        stats_at: None,
    };
    let rt = runtime()?;
    let error = rt.block_on(async {
        let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
        let (data_tx, mut data_rx) = mpsc::channel(DATA_QUEUE);
        signals(ctl_tx.clone())?;
        let stop: StopFlag = Arc::new(AtomicBool::new(false));
        let replay = event::spawn_replay(
            reader,
            header.clock.monotonic_ns,
            args.speed,
            data_tx,
            ctl_tx.clone(),
            stop.clone(),
        );
        logging::capture();
        let (guard, mut terminal) = TerminalGuard::enter()?;
        let input = event::spawn_input(ctl_tx, stop.clone());
        if let Ok(s) = terminal.size() {
            app.on_resize(s.width, s.height);
        }
        let end = owner_loop(
            &mut terminal,
            &mut app,
            &mut ctl_rx,
            &mut data_rx,
            &mut tracer,
            false,
        )
        .await;
        stop.store(true, Ordering::Relaxed);
        drop(data_rx);
        drop(guard);
        print_logs(logging::release());
        event::join_within(input, Duration::from_millis(500));
        let _ = replay.join();
        if let Some(e) = end.error {
            return Err(e);
        }
        Ok::<_, anyhow::Error>(
            app.replay()
                .and_then(|r| r.end.as_ref())
                .and_then(|e| e.error.clone()),
        )
    })?;
    match error {
        // The view showed the state up to the bad line; say why it stopped.
        Some(e) => bail!("{e}"),
        None => Ok(ExitCode::SUCCESS),
    }
}

// ----------------------------------------------------------------- live --

fn run_live(args: LiveArgs) -> anyhow::Result<ExitCode> {
    let command: Vec<String> = std::env::args().collect();
    // Create the output first: a bad path should fail before attaching.
    let file = match &args.output {
        Some(p) => Some(create_output(p, args.force)?),
        None => None,
    };
    // Attach warnings go to the log pane (and stderr if attaching fails).
    logging::capture();
    let session = match Session::start(&args.trace, command) {
        Ok(s) => s,
        Err(e) => {
            print_logs(logging::release());
            if let Some(p) = &args.output {
                let _ = fs::remove_file(p);
            }
            return Err(e);
        }
    };
    live(session, file, &args)
}

fn live(session: Session, file: Option<File>, args: &LiveArgs) -> anyhow::Result<ExitCode> {
    let Session {
        header,
        probes,
        pipeline,
        device_ranges,
        ..
    } = session;
    let path = args.output.as_ref().map(|p| p.display().to_string());
    let trace = match (file, &path) {
        (Some(f), Some(p)) => Some((
            TraceWriter::new(BufWriter::with_capacity(1 << 16, f), &header)
                .with_context(|| format!("failed to write {p}"))?,
            p.clone(),
        )),
        _ => None,
    };
    let mode = Mode::Live {
        recording: path.clone(),
    };
    let auditor = audit::Auditor::new(&header, &args.trace);
    let mut app = App::new(header.clone(), mode, detect_term_caps());
    let rt = runtime()?;
    rt.block_on(async {
        let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
        // Live data comes from the ring buffer, read by the owner loop.
        let (_data_tx, mut data_rx) = mpsc::channel(1);
        signals(ctl_tx.clone())?;
        let mut capture = Capture::new(probes, auditor)?;
        let mut rec = Recorder::new(pipeline, trace);
        // Mappings that exist already (before the screen is taken over, so
        // its progress shows on the terminal).
        capture.snapshot(&mut rec, &args.trace, &device_ranges, true);
        let mut tracer = Tracer {
            rec,
            capture: Some(capture),
            stats_at: None,
        };
        tracer.read(&mut app);
        if let Some(ready) = &args.ready_file {
            output::write_ready_file(ready)?;
        }
        let stop: StopFlag = Arc::new(AtomicBool::new(false));

        let (guard, mut terminal) = TerminalGuard::enter()?;
        let input = event::spawn_input(ctl_tx, stop.clone());
        if let Ok(s) = terminal.size() {
            app.on_resize(s.width, s.height);
        }
        let mut end = owner_loop(
            &mut terminal,
            &mut app,
            &mut ctl_rx,
            &mut data_rx,
            &mut tracer,
            true,
        )
        .await;
        stop.store(true, Ordering::Relaxed);
        drop(guard);

        // Drain what is left in the ring, the last audit and losses, as
        // `record` does; detach before the footer: nothing after it is
        // recorded anyway.
        let Tracer {
            mut rec, capture, ..
        } = tracer;
        let stopped = capture.map(|c| c.stop(&mut rec));
        for l in stopped.iter().flat_map(|s| &s.losses) {
            log::warn!("{}", output::loss_line(l));
        }
        let end_t = clock_ns(libc::CLOCK_MONOTONIC);
        rec.end(end_t);
        event::join_within(input, Duration::from_millis(500));

        let reason = match (&end.error, rec.failure()) {
            (Some(e), _) => format!("error: {e:#}"),
            (None, Some(e)) => format!("error: {e}"),
            (None, None) => end.reason.to_owned(),
        };
        let closed = rec.close(end_t, &reason, |w| {
            if let Ok(f) = w.into_inner() {
                let _ = f.sync_all();
            }
        });
        if let Some(p) = &path {
            if !end.hangup {
                output::summary(
                    &closed.pipeline.analyzer,
                    closed.events,
                    closed.pipeline.decode_errors,
                    Path::new(p),
                    false,
                );
                if let Some(line) = stopped.and_then(|s| s.audit_cost) {
                    eprintln!("{line}");
                }
            }
            if end.error.is_none()
                && let Some(e) = closed.failure
            {
                end.error = Some(anyhow::anyhow!("{e}"));
            }
        }
        match end.error {
            Some(e) => Err(e),
            None => Ok(ExitCode::SUCCESS),
        }
    })
}
