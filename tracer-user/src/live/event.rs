//! Messages into the live view's single owner, and the producers that send
//! them: the terminal input thread, the replay reader thread, and the
//! ring-buffer reader task. Producers never touch UI state.
//!
//! Two channels reach the owner: control messages (input, signals, log
//! lines; unbounded and always served first, so a key press is never stuck
//! behind trace data) and data messages (bounded: a slow owner slows the
//! producer, and the kernel counts what it then drops).

use std::{
    fs::File,
    io::BufReader,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use refscope_core::{
    event::Event,
    replay::{Consumer, End, Stop, replay as replay_records},
    trace::{Footer, Loss, TraceReader},
};
use tokio::sync::mpsc;

/// Records per data message.
pub const BATCH: usize = 2048;
/// Data messages in flight at most.
pub const DATA_QUEUE: usize = 8;

/// Control messages: served before any data.
#[derive(Debug)]
pub enum Control {
    /// A key press, a resize...
    Input(crossterm::event::Event),
    /// The terminal cannot be read any more (closed, or an error).
    InputClosed(String),
    /// SIGINT, SIGTERM or SIGHUP.
    Signal(&'static str),
    /// A thread that feeds the view died.
    Fatal(String),
}

/// Data messages: the trace, in order.
#[derive(Debug)]
pub enum Data {
    /// Decoded events (replay); `clock` is the replay clock after them.
    Events { events: Vec<Event>, clock: u64 },
    /// Loss records (replay).
    Losses(Vec<Loss>),
    /// Replay: the replay clock moved with no event (pacing), and how much
    /// of the file has been read.
    Progress { clock: u64, bytes: u64 },
    /// Replay: the end of the trace (or an error reading it).
    End(ReplayEnd),
}

/// How a replay ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayEnd {
    /// Monotonic end of the trace (the footer's, or the last event's).
    pub end_t: u64,
    pub footer: Option<Footer>,
    /// The trace ends in an incomplete line (the recorder was killed).
    pub truncated_at: Option<u64>,
    /// The trace could not be read past some line.
    pub error: Option<String>,
}

/// Stops a producer thread when set.
pub type StopFlag = Arc<AtomicBool>;

/// How stdin, the terminal, looks right now.
#[derive(Debug, PartialEq, Eq)]
pub enum TtyState {
    Idle,
    Readable,
    /// Hung up (the terminal or SSH session went away) or in error.
    Gone,
}

/// Wait up to `timeout` for input on stdin.
pub fn tty_state(timeout: Duration) -> TtyState {
    let mut p = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, timeout.as_millis().min(1000) as libc::c_int) };
    if n < 0 {
        // EINTR (a signal): nothing to say yet.
        return TtyState::Idle;
    }
    if p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        TtyState::Gone
    } else if p.revents & libc::POLLIN != 0 {
        TtyState::Readable
    } else {
        TtyState::Idle
    }
}

/// Read terminal input on a thread until `stop`.
///
/// The thread waits on stdin itself and only asks crossterm to parse what
/// is there (without waiting): crossterm's reader loops forever, reading
/// nothing, once the terminal hangs up, so it must never be inside it then.
/// Resizes (SIGWINCH) are picked up within [`INPUT_POLL`].
pub fn spawn_input(tx: mpsc::UnboundedSender<Control>, stop: StopFlag) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name("refscope-input".into())
        .spawn(move || {
            let closed = |why: String| {
                let _ = tx.send(Control::InputClosed(why));
            };
            let body = || {
                while !stop.load(Ordering::Relaxed) {
                    if tty_state(INPUT_POLL) == TtyState::Gone {
                        return closed("the terminal hung up".into());
                    }
                    loop {
                        match crossterm::event::poll(Duration::ZERO) {
                            Ok(false) => break,
                            Ok(true) => match crossterm::event::read() {
                                Ok(ev) => {
                                    if tx.send(Control::Input(ev)).is_err() {
                                        return;
                                    }
                                }
                                Err(e) => return closed(e.to_string()),
                            },
                            Err(e) => return closed(e.to_string()),
                        }
                    }
                }
            };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
                let _ = tx.send(Control::Fatal("the terminal input thread panicked".into()));
            }
        })
        .expect("spawning a thread")
}

/// How long the input thread waits on the terminal at a time.
pub const INPUT_POLL: Duration = Duration::from_millis(50);

/// Join `t` if it finishes within `limit` (a thread stuck in a dead
/// terminal's read is left behind: the process exits anyway).
pub fn join_within(t: thread::JoinHandle<()>, limit: Duration) {
    let start = Instant::now();
    while !t.is_finished() {
        if start.elapsed() > limit {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = t.join();
}

/// Replay `reader` on a thread, pacing by event time at `speed` (0: as
/// fast as the view takes it). `t0` is the trace's start (header clock).
pub fn spawn_replay(
    reader: TraceReader<BufReader<File>>,
    t0: u64,
    speed: f64,
    tx: mpsc::Sender<Data>,
    ctl: mpsc::UnboundedSender<Control>,
    stop: StopFlag,
) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name("refscope-replay".into())
        .spawn(move || {
            let body = || replay(reader, t0, speed, &tx, &stop);
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
                let _ = ctl.send(Control::Fatal("the replay thread panicked".into()));
            }
        })
        .expect("spawning a thread")
}

/// How far ahead of the wall clock a paced batch may reach before it is
/// sent and the thread sleeps.
const PACE_SLACK: Duration = Duration::from_millis(20);
/// Progress (and the paced replay clock) is reported this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

fn replay(
    mut reader: TraceReader<BufReader<File>>,
    t0: u64,
    speed: f64,
    tx: &mpsc::Sender<Data>,
    stop: &AtomicBool,
) {
    let mut p = Pacer {
        t0,
        speed,
        tx,
        stop,
        start: Instant::now(),
        last_progress: Instant::now(),
        batch: Vec::with_capacity(BATCH),
        clock: t0,
        base: None,
        bytes: 0,
    };
    let end = match replay_records(&mut reader, &mut p) {
        Ok(end) => ReplayEnd {
            end_t: end.end_t,
            footer: end.footer,
            truncated_at: end.truncated_at,
            error: None,
        },
        // The view was closed, or asked to stop.
        Err(Stop::Consumer(Gone)) => return,
        Err(Stop::Trace { error, at }) => ReplayEnd {
            end_t: at.end_t,
            footer: at.footer,
            truncated_at: reader.truncated_at(),
            error: Some(error.to_string()),
        },
    };
    if p.send().is_err() {
        return;
    }
    let _ = tx.blocking_send(Data::Progress {
        clock: p.clock,
        bytes: reader.bytes_read(),
    });
    let _ = tx.blocking_send(Data::End(end));
}

/// The view went away or asked the replay to stop.
struct Gone;

/// Hands a trace's records to the view in batches, paced by event time at
/// `speed` (0: as fast as the view takes them).
struct Pacer<'a> {
    t0: u64,
    speed: f64,
    tx: &'a mpsc::Sender<Data>,
    stop: &'a AtomicBool,
    start: Instant,
    last_progress: Instant,
    batch: Vec<Event>,
    /// The latest event time sent.
    clock: u64,
    /// Trace time `base` plays at `start`: the recording's start, unless the
    /// header has no usable clock (then the first event).
    base: Option<u64>,
    bytes: u64,
}

impl Pacer<'_> {
    fn send(&mut self) -> Result<(), Gone> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let events = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        self.tx
            .blocking_send(Data::Events {
                events,
                clock: self.clock,
            })
            .map_err(|_| Gone)
    }

    fn check_stop(&self) -> Result<(), Gone> {
        if self.stop.load(Ordering::Relaxed) {
            Err(Gone)
        } else {
            Ok(())
        }
    }

    /// Wall time at which trace time `t` is due.
    fn due(&self, base: u64, t: u64) -> Option<Instant> {
        (self.speed > 0.0).then(|| {
            self.start + Duration::from_secs_f64(t.saturating_sub(base) as f64 / 1e9 / self.speed)
        })
    }
}

impl Consumer for Pacer<'_> {
    type Error = Gone;
    // Progress is time-based (every PROGRESS_EVERY), checked on each event.
    const PROGRESS_EVERY: u64 = 1;

    fn event(&mut self, ev: Box<Event>) -> Result<(), Gone> {
        self.check_stop()?;
        let t0 = self.t0;
        let base = *self
            .base
            .get_or_insert(if t0 != 0 && t0 <= ev.t { t0 } else { ev.t });
        if let Some(at) = self.due(base, ev.t)
            && at > Instant::now() + PACE_SLACK
        {
            self.send()?;
            // Sleep in slices: keep the clock moving and notice stop.
            while Instant::now() < at {
                self.check_stop()?;
                thread::sleep((at - Instant::now()).min(PROGRESS_EVERY));
                let now_t = base + (self.start.elapsed().as_secs_f64() * self.speed * 1e9) as u64;
                let progress = Data::Progress {
                    clock: now_t.min(ev.t).max(self.clock),
                    bytes: self.bytes,
                };
                self.tx.blocking_send(progress).map_err(|_| Gone)?;
            }
        }
        self.clock = self.clock.max(ev.t);
        self.batch.push(*ev);
        if self.batch.len() >= BATCH {
            self.send()?;
        }
        Ok(())
    }

    fn loss(&mut self, loss: &Loss) -> Result<(), Gone> {
        self.check_stop()?;
        self.send()?;
        self.tx
            .blocking_send(Data::Losses(vec![*loss]))
            .map_err(|_| Gone)
    }

    fn progress(&mut self, bytes: u64) -> Result<(), Gone> {
        self.bytes = bytes;
        if self.last_progress.elapsed() >= PROGRESS_EVERY {
            self.last_progress = Instant::now();
            self.send()?;
            self.tx
                .blocking_send(Data::Progress {
                    clock: self.clock,
                    bytes,
                })
                .map_err(|_| Gone)?;
        }
        Ok(())
    }

    fn end(&mut self, _end: &End) -> Result<(), Gone> {
        Ok(())
    }
}
