//! Helpers shared by the subcommands: paths, running commands, progress lines.

use std::{
    env,
    ffi::OsStr,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use anyhow::{Context as _, bail};

/// Environment variable overriding the cache directory.
pub const CACHE_ENV: &str = "REFSCOPE_CACHE_DIR";

/// The host triple every refscope binary is built for. Building with an
/// explicit `--target` keeps `+crt-static` away from build scripts and
/// proc-macros, and gives one static binary that runs on the host and in the
/// guest's initramfs alike.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Root of the workspace (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    // xtask lives in <root>/xtask.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Cargo's target directory, as cargo itself resolves it (CARGO_TARGET_DIR,
/// `build.target-dir` in a config file, else `<workspace>/target`): asked of
/// `cargo metadata` once, so xtask finds what cargo built wherever that is.
pub fn target_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let asked = Command::new(env!("CARGO"))
            .current_dir(workspace_root())
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--offline",
            ])
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .and_then(|v| v["target_directory"].as_str().map(PathBuf::from));
        asked.unwrap_or_else(|| match env::var_os("CARGO_TARGET_DIR") {
            Some(d) => workspace_root().join(d),
            None => workspace_root().join("target"),
        })
    })
}

/// Where `build::cargo` puts release binaries for [`TARGET`].
pub fn release_dir() -> PathBuf {
    target_dir().join(TARGET).join("release")
}

/// Where tools and downloads are cached: `$REFSCOPE_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/refscope`, else `~/.cache/refscope`.
pub fn cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = env::var_os(CACHE_ENV) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("refscope"));
    }
    match env::var_os("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".cache/refscope")),
        None => bail!("neither {CACHE_ENV}, XDG_CACHE_HOME nor HOME is set; set {CACHE_ENV}"),
    }
}

/// One line of progress on stderr.
pub fn step(msg: impl AsRef<str>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "==> {}", msg.as_ref());
}

/// A note on stderr, indented under the current step.
pub fn note(msg: impl AsRef<str>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "    {}", msg.as_ref());
}

/// Run `cmd`, inheriting stdio; fail with the command line if it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to run {}", display(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", display(cmd));
    }
    Ok(())
}

/// Run `cmd` and capture its output; fail (with its stderr) if it fails.
pub fn output(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run {}", display(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}\n{}",
            display(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(out)
}

/// Stdout of `cmd` as a string.
pub fn stdout_of(cmd: &mut Command) -> anyhow::Result<String> {
    let out = output(cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `cmd` as a shell-ish line, for messages.
pub fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&quote(arg));
    }
    s
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if s.is_empty() || s.contains([' ', '"', '\'', '$']) {
        format!("'{}'", s.replace('\'', r"'\''"))
    } else {
        s.into_owned()
    }
}

/// Whether we run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Whether we run in CI (`CI=true`).
pub fn in_ci() -> bool {
    env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A progress line for a step that takes minutes (a download, a build):
/// what is done, of how much, and an estimate of the time left. On a
/// terminal it redraws one line; otherwise (CI, logs) it prints a line at
/// most every `LOG_EVERY`, so a log shows that something is happening
/// without drowning in it.
pub struct Progress {
    what: String,
    unit: Unit,
    start: std::time::Instant,
    last: Option<std::time::Instant>,
    /// A guess of the whole duration, for when no fraction is known yet.
    expected: std::time::Duration,
    tty: bool,
}

/// How a [`Progress`] counts.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Bytes,
    Items(&'static str),
}

impl Progress {
    const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(15);
    const TTY_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
    const QUIET_START: std::time::Duration = std::time::Duration::from_secs(2);

    pub fn new(what: impl Into<String>, unit: Unit, expected: std::time::Duration) -> Self {
        use std::io::IsTerminal as _;
        Self {
            what: what.into(),
            unit,
            start: std::time::Instant::now(),
            last: None,
            expected,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Report `done` of `total` (if known); prints only when it is time to.
    pub fn update(&mut self, done: u64, total: Option<u64>) {
        let now = std::time::Instant::now();
        // A step done within a couple of seconds needs no progress line.
        if now - self.start < Self::QUIET_START {
            return;
        }
        let every = if self.tty {
            Self::TTY_EVERY
        } else {
            Self::LOG_EVERY
        };
        if self.last.is_some_and(|l| now - l < every) {
            return;
        }
        self.last = Some(now);
        let line = self.line(done, total, now - self.start);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K    {line}");
        } else {
            let _ = writeln!(err, "    {line}");
        }
        let _ = err.flush();
    }

    /// End the line (on a terminal) with how long it took.
    pub fn finish(&self) {
        let secs = self.start.elapsed().as_secs_f64();
        let mut err = std::io::stderr().lock();
        if self.tty && self.last.is_some() {
            let _ = write!(err, "\r\x1b[K");
        }
        let _ = writeln!(err, "    {}: done in {}", self.what, duration(secs));
    }

    fn line(&self, done: u64, total: Option<u64>, elapsed: std::time::Duration) -> String {
        let amount = |n: u64| match self.unit {
            Unit::Bytes => format!("{:.1} MB", n as f64 / 1e6),
            Unit::Items(_) => n.to_string(),
        };
        let counted = match (self.unit, total) {
            (Unit::Items(what), Some(t)) => format!("{}/{} {what}", amount(done), amount(t)),
            (Unit::Items(what), None) => format!("{} {what}", amount(done)),
            (Unit::Bytes, Some(t)) => format!("{} of {}", amount(done), amount(t)),
            (Unit::Bytes, None) => amount(done),
        };
        let secs = elapsed.as_secs_f64();
        let by_guess = Some(self.expected.as_secs_f64() - secs).filter(|s| *s > 0.0);
        let left = match total {
            // Past a few percent, the measured rate is the better guess for
            // bytes. Items (crates) are uneven, the last ones the slowest:
            // the guess stays a floor.
            Some(t) if t > 0 && done * 20 >= t => {
                let by_rate = secs * (t.saturating_sub(done)) as f64 / done as f64;
                match self.unit {
                    Unit::Bytes => Some(by_rate),
                    Unit::Items(_) => Some(by_rate.max(by_guess.unwrap_or(0.0))),
                }
            }
            _ => by_guess,
        };
        match left {
            Some(l) => format!(
                "{}: {counted}, {} so far, about {} left",
                self.what,
                duration(secs),
                duration(l)
            ),
            None => format!("{}: {counted}, {} so far", self.what, duration(secs)),
        }
    }
}

/// `75 s`, `3 min 5 s`.
pub fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    if s < 90 {
        format!("{s} s")
    } else {
        format!("{} min {} s", s / 60, s % 60)
    }
}

/// Run `cmd` with its output (stdout and stderr together) feeding a
/// progress line instead of the terminal: `scan` sees each line and
/// advances `done` or sets `total`. On failure the error carries the
/// output's last 40 lines.
pub fn run_with_progress(
    cmd: &mut Command,
    progress: &mut Progress,
    mut scan: impl FnMut(&str, &mut u64, &mut Option<u64>),
) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    let (reader, writer) = std::io::pipe().context("cannot create a pipe")?;
    cmd.stdin(Stdio::null())
        .stdout(writer.try_clone().context("cannot clone a pipe")?)
        .stderr(writer);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("failed to run {}", display(cmd)))?;
    // The Command holds the pipe's write end: drop it there, or the read
    // below never sees the end of the output.
    let shown = display(cmd);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    // Lines arrive on a thread; the loop below also ticks without them, so
    // a long quiet stretch (one big crate compiling) still shows the time.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(reader)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut done, mut total) = (0, None);
    let mut tail = std::collections::VecDeque::new();
    loop {
        match rx.recv_timeout(std::time::Duration::from_secs(1)) {
            Ok(line) => {
                scan(&line, &mut done, &mut total);
                if tail.len() == 40 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        progress.update(done, total);
    }
    let status = child.wait().context("waiting for a child process")?;
    if !status.success() {
        bail!(
            "{shown} failed: {status}; its last output:\n{}",
            Vec::from(tail).join("\n")
        );
    }
    progress.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn progress(unit: Unit) -> Progress {
        Progress {
            what: "x".into(),
            unit,
            start: std::time::Instant::now(),
            last: None,
            expected: Duration::from_secs(200),
            tty: false,
        }
    }

    #[test]
    fn estimates_from_the_rate_once_it_is_known() {
        let p = progress(Unit::Bytes);
        // 25 MB of 100 MB in 10 s: 30 s left.
        let l = p.line(25_000_000, Some(100_000_000), Duration::from_secs(10));
        assert_eq!(l, "x: 25.0 MB of 100.0 MB, 10 s so far, about 30 s left");
        // Too early to trust the rate: the expected duration speaks.
        let l = p.line(1, Some(100_000_000), Duration::from_secs(20));
        assert!(l.ends_with("about 3 min 0 s left"), "{l}");
        // Past the expected duration with nothing known: no estimate.
        let p = progress(Unit::Items("crates"));
        let l = p.line(3, None, Duration::from_secs(300));
        assert_eq!(l, "x: 3 crates, 5 min 0 s so far");
        // Items: the expected duration is a floor under the rate.
        let l = p.line(50, Some(100), Duration::from_secs(20));
        assert!(l.ends_with("about 3 min 0 s left"), "{l}");
    }
}
