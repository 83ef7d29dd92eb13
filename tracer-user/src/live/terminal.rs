//! The terminal around the view: what it can show, raw mode and the
//! alternate screen (restored exactly once, on every exit path, a panic
//! included), and the log lines held back while the view was up.

use std::{
    io::{self, Write as _},
    sync::atomic::{AtomicBool, Ordering},
};

use ratatui::Terminal;

use super::{app::TermCaps, logging};

/// How to draw on this terminal: ASCII only when the locale is not UTF-8 or
/// the terminal is a plain serial one (override: `REFSCOPE_ASCII=0|1`);
/// no colours with `NO_COLOR`.
pub fn detect_term_caps() -> TermCaps {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let utf8 = ["LC_ALL", "LC_CTYPE", "LANG"]
        .iter()
        .find_map(|k| var(k))
        .is_some_and(|v| {
            let v = v.to_ascii_lowercase();
            v.contains("utf-8") || v.contains("utf8")
        });
    let plain_term = var("TERM")
        .is_some_and(|t| matches!(t.as_str(), "dumb" | "vt100" | "vt102" | "vt220" | "ansi"));
    let ascii = match var("REFSCOPE_ASCII").as_deref() {
        Some("1" | "yes" | "true") => true,
        Some("0" | "no" | "false") => false,
        _ => !utf8 || plain_term,
    };
    TermCaps {
        ascii,
        color: var("NO_COLOR").is_none(),
    }
}

/// Raw mode and the alternate screen (what `ratatui::init` does), undone
/// exactly once: on drop, or by the panic hook before the panic message is
/// printed (a second "leave the alternate screen" would move the cursor
/// back over that message).
pub(super) struct TerminalGuard;

/// Whether the terminal is in the view's mode.
static TUI_ACTIVE: AtomicBool = AtomicBool::new(false);

impl TerminalGuard {
    pub(super) fn enter() -> anyhow::Result<(TerminalGuard, ratatui::DefaultTerminal)> {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_terminal();
                // Log lines held back while the view was up are not lost.
                print_logs(logging::release());
                previous(info);
            }));
        });
        let setup = || -> io::Result<ratatui::DefaultTerminal> {
            TUI_ACTIVE.store(true, Ordering::SeqCst);
            crossterm::terminal::enable_raw_mode()?;
            crossterm::execute!(io::stdout(), crossterm::terminal::EnterAlternateScreen)?;
            Terminal::new(ratatui::backend::CrosstermBackend::new(io::stdout()))
        };
        match setup() {
            Ok(t) => Ok((TerminalGuard, t)),
            Err(e) => {
                restore_terminal();
                Err(anyhow::Error::new(e).context("cannot set up the terminal"))
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn restore_terminal() {
    if !TUI_ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    // Errors are expected when the terminal is gone (SIGHUP).
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = crossterm::execute!(
        io::stdout(),
        crossterm::terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

/// Log lines held back while the view was up, to stderr (which may be
/// gone after a hangup: errors are ignored).
pub(super) fn print_logs(lines: impl IntoIterator<Item = (log::Level, String)>) {
    let mut err = io::stderr().lock();
    for (level, text) in lines {
        let _ = writeln!(err, "refscope: {}: {text}", level.as_str().to_lowercase());
    }
}
