//! Log routing for `refscope live`: while the view owns the terminal, log
//! records are buffered (the owner drains them into the log pane) instead
//! of being written over the screen; otherwise they go to stderr, formatted
//! as the other subcommands do.

use std::sync::{Mutex, PoisonError};

/// Buffered records while the view is up; `None` when logging to stderr.
static CAPTURED: Mutex<Option<Vec<(log::Level, String)>>> = Mutex::new(None);
/// Records kept at most between two drains.
const MAX_BUFFERED: usize = 10_000;

struct Logger(log::LevelFilter);

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.0
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let mut captured = CAPTURED.lock().unwrap_or_else(PoisonError::into_inner);
        match captured.as_mut() {
            Some(buf) => {
                if buf.len() < MAX_BUFFERED {
                    buf.push((r.level(), r.args().to_string()));
                }
            }
            None => eprintln!(
                "refscope: {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            ),
        }
    }

    fn flush(&self) {}
}

/// Install the logger (instead of `main`'s stderr logger) for `live`.
pub fn init(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    if log::set_boxed_logger(Box::new(Logger(level))).is_ok() {
        log::set_max_level(level);
    }
}

/// From now on, buffer log records.
pub fn capture() {
    let mut c = CAPTURED.lock().unwrap_or_else(PoisonError::into_inner);
    c.get_or_insert_with(Vec::new);
}

/// Records buffered since the last drain.
pub fn drain() -> Vec<(log::Level, String)> {
    let mut c = CAPTURED.lock().unwrap_or_else(PoisonError::into_inner);
    c.as_mut().map(std::mem::take).unwrap_or_default()
}

/// Stop buffering: later records go to stderr. Returns what was left.
pub fn release() -> Vec<(log::Level, String)> {
    let mut c = CAPTURED.lock().unwrap_or_else(PoisonError::into_inner);
    c.take().unwrap_or_default()
}
