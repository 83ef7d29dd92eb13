//! End-to-end: `refscope live --replay` in a real terminal (tmux), driven
//! with send-keys and read with capture-pane. Needs tmux (installed by
//! `cargo xtask setup`); fails, never skips, without it.

use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use refscope::live::synth::Synth;

const BIN: &str = env!("CARGO_BIN_EXE_refscope");
const WAIT: Duration = Duration::from_secs(20);

/// A private tmux server with one 120x40 session running `command`, then
/// printing its exit status and the terminal's modes (to check that raw
/// mode was undone) and staying open to be captured.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, command: &str, size: (u16, u16)) -> Tmux {
        let version = Command::new("tmux").arg("-V").output();
        match version {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!("`tmux -V` failed: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => panic!(
                "tmux is needed to drive `refscope live` in a real terminal, and it cannot be run ({e}): \
                 install it (`cargo xtask setup` does, or `apt-get install tmux`)"
            ),
        }
        let t = Tmux {
            socket: format!("refscope-test-{}-{name}", std::process::id()),
        };
        let script = format!(
            "{command}; echo refscope-exit=$?; stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ' '; echo refscope-end; sleep 600"
        );
        t.tmux(&[
            "new-session",
            "-d",
            "-s",
            "main",
            "-x",
            &size.0.to_string(),
            "-y",
            &size.1.to_string(),
            "sh",
            "-c",
            &script,
        ]);
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .env_remove("TMUX")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("running tmux");
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn capture(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "main"])
    }

    /// Keys one at a time, with a pause: an Esc followed at once by another
    /// key would read as Alt+key.
    fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.tmux(&["send-keys", "-t", "main", k]);
            thread::sleep(Duration::from_millis(150));
        }
    }

    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.capture();
            if ok(&screen) {
                return screen;
            }
            if start.elapsed() > WAIT {
                panic!("timed out waiting for {what}; the screen:\n{screen}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// A scratch directory, removed when the test ends (passed or not).
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(name: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("refscope-live-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    TempDir(d)
}

fn synth_trace(dir: &Path) -> (Synth, PathBuf) {
    let s = Synth::default();
    let path = dir.join("synth.jsonl");
    let f = std::fs::File::create(&path).expect("trace file");
    s.write(std::io::BufWriter::new(f))
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .expect("writing the trace");
    (s, path)
}

fn live_command(trace: &Path, extra_env: &str) -> String {
    format!(
        "env LANG=C.UTF-8 RUST_BACKTRACE=0 {extra_env} '{BIN}' live --replay '{}' --speed 0",
        trace.display()
    )
}

/// The terminal is back in cooked mode (line editing and echo).
fn assert_restored(screen: &str) {
    let modes = screen
        .lines()
        .find(|l| l.contains("icanon"))
        .unwrap_or_else(|| panic!("no stty output:\n{screen}"));
    let words: Vec<&str> = modes.split_whitespace().collect();
    assert!(
        words.contains(&"icanon") && words.contains(&"echo"),
        "the terminal was left in raw mode ({modes}):\n{screen}"
    );
}

#[test]
fn replay_shows_the_bad_page_and_its_timeline() {
    let dir = temp_dir("main");
    let (s, trace) = synth_trace(&dir);
    let bad = format!("{:#x}", s.bad_pfn());
    let t = Tmux::start("main", &live_command(&trace, ""), (120, 40));

    // The findings pane is the entry point: the newest error is the bad
    // page, selected.
    let screen = t.wait_for("the replay to finish with its findings", |s| {
        s.contains("done") && s.contains("mapped_after_unplug")
    });
    let row = screen
        .lines()
        .find(|l| l.contains("mapped_after_unplug"))
        .expect("finding row");
    assert!(
        row.contains(&bad) && row.contains("stale_map[7777]") && row.contains("ERR"),
        "{screen}"
    );
    assert!(
        screen.contains("longterm_pin_fsdax") && screen.contains("pin_leak"),
        "{screen}"
    );
    assert!(screen.contains("drops 3"), "{screen}");

    // Enter opens the page: its timeline shows the mapping, the device
    // removal under it, and the unmap that found the memmap gone.
    t.keys(&["Enter"]);
    let screen = t.wait_for("the page view", |s| s.contains("Timeline"));
    assert!(screen.contains(&format!("Page {bad}")), "{screen}");
    assert!(
        screen.contains("fs_dax removed") && screen.contains("memmap gone"),
        "{screen}"
    );
    let kinds: Vec<(&str, &str)> = screen
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() > 3 && w[0].starts_with("│+")).then(|| (w[1], w[2]))
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("map", "stale_map[7777]"),
            ("pgmap_remove", "ndctl[2718]"),
            ("unmap", "stale_map[7777]"),
        ],
        "{screen}"
    );
    assert!(screen.contains("vmf_insert_page_mkwrite") && screen.contains("unmap_page_range"));

    // Back, filter to one process, help, quit.
    t.keys(&["Escape", "/", "pid:6100", "Enter"]);
    let screen = t.wait_for("the filter", |s| s.contains("filter pid:6100"));
    assert!(!screen.contains("mapped_after_unplug"), "{screen}");
    t.keys(&["?"]);
    t.wait_for("the help", |s| s.contains("pause the display"));
    t.keys(&["Escape", "q"]);
    let screen = t.wait_for("refscope to exit", |s| s.contains("refscope-end"));
    assert!(screen.contains("refscope-exit=0"), "{screen}");
    assert!(
        !screen.contains("Findings"),
        "the alternate screen was left:\n{screen}"
    );
    assert_restored(&screen);
}

#[test]
fn corrupt_trace_is_reported_with_its_line() {
    let dir = temp_dir("corrupt");
    let (_, trace) = synth_trace(&dir);
    let text = std::fs::read_to_string(&trace).expect("read");
    let mut lines: Vec<&str> = text.lines().collect();
    let broken = lines[500].replacen("\"kind\":\"map\"", "\"kind\":\"mop\"", 1);
    assert_ne!(broken, lines[500], "line 501 is a map event");
    lines[500] = &broken;
    std::fs::write(&trace, lines.join("\n") + "\n").expect("write");

    let t = Tmux::start("corrupt", &live_command(&trace, ""), (120, 40));
    let screen = t.wait_for("the read error", |s| s.contains("read error"));
    assert!(
        screen.contains("line 501: corrupt record") && screen.contains("unknown event kind `mop`"),
        "{screen}"
    );
    t.keys(&["q"]);
    let screen = t.wait_for("refscope to exit", |s| s.contains("refscope-end"));
    assert!(screen.contains("refscope-exit=1"), "{screen}");
    assert!(
        screen.contains("refscope: error:")
            && screen.contains("synth.jsonl: line 501: corrupt record"),
        "the error is printed after the view closes:\n{screen}"
    );
    assert_restored(&screen);
}

#[test]
fn terminal_is_restored_after_a_panic() {
    let dir = temp_dir("panic");
    let (_, trace) = synth_trace(&dir);
    let t = Tmux::start(
        "panic",
        &live_command(&trace, "REFSCOPE_LIVE_TEST_PANIC=1"),
        (120, 40),
    );
    let screen = t.wait_for("refscope to exit", |s| s.contains("refscope-end"));
    assert!(screen.contains("refscope-exit=101"), "{screen}");
    assert!(
        screen.contains("panicking on purpose"),
        "the panic message is readable:\n{screen}"
    );
    assert_restored(&screen);
}

/// Kill `pid` on drop if it is still there (a failed test must not leave
/// a refscope behind).
struct Reap(Option<u32>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(pid) = self.0
            && Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

#[test]
fn exits_when_the_terminal_goes_away() {
    let dir = temp_dir("hangup");
    let (_, trace) = synth_trace(&dir);
    // A shell stays the session leader, as a login shell would: the kernel
    // may not send SIGHUP to refscope itself when the terminal hangs up.
    let pidfile = dir.join("pid");
    let inner = format!(
        "sh -c \"echo \\$\\$ > '{}'; exec {}\"",
        pidfile.display(),
        live_command(&trace, "")
    );
    let t = Tmux::start("hangup", &inner, (120, 40));
    t.wait_for("the replay", |s| s.contains("done"));
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    let _reap = Reap(Some(pid));
    let alive = || Path::new(&format!("/proc/{pid}")).exists();
    assert!(alive());
    drop(t); // kill-server: the pty goes away
    let start = Instant::now();
    while alive() && start.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(50));
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        !alive() || stat.contains(") Z "),
        "refscope is still running after its terminal went away: {stat}"
    );
}

#[test]
fn not_a_terminal_is_a_clear_error() {
    let dir = temp_dir("notty");
    let (_, trace) = synth_trace(&dir);
    let out = Command::new(BIN)
        .args(["live", "--replay"])
        .arg(&trace)
        .output()
        .expect("run refscope");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refscope live needs a terminal"), "{err}");
}

/// `live --replay` of files that are not (usable) traces: an error naming
/// the file, the line and the problem, exit status 1, no panic, and the
/// terminal left alone. (A bad line in the middle: see
/// corrupt_trace_is_reported_with_its_line; report and export get the
/// full list in tests/bad_input.rs.)
#[test]
fn replay_of_bad_files_names_file_line_and_problem() {
    let dir = temp_dir("badfiles");
    let (_, trace) = synth_trace(&dir);
    let good = std::fs::read_to_string(&trace).expect("read");
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "empty.jsonl",
            Vec::new(),
            "empty file: not a refscope trace".into(),
        ),
        (
            "notes.txt",
            b"hello\n".to_vec(),
            "line 1: not a refscope trace".into(),
        ),
        (
            "v7.jsonl",
            good.replacen("\"version\":1", "\"version\":7", 1)
                .into_bytes(),
            "line 1: trace format version 7 is not supported".into(),
        ),
        (
            "binary.bin",
            (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect(),
            "line 1: not a refscope trace".into(),
        ),
        ("missing.jsonl", Vec::new(), "cannot open".into()),
    ];
    let mut script = String::new();
    for (name, bytes, _) in &cases {
        let path = dir.join(name);
        if *name != "missing.jsonl" {
            std::fs::write(&path, bytes).expect("write");
        }
        script.push_str(&format!(
            "{} 2>'{d}/{name}.err'; echo $? >'{d}/{name}.status'; ",
            live_command(&path, ""),
            d = dir.display()
        ));
    }
    script.push_str("true");
    let t = Tmux::start("badfiles", &script, (120, 40));
    let screen = t.wait_for("every replay to exit", |s| s.contains("refscope-end"));
    assert_restored(&screen);
    for (name, _, expect) in &cases {
        let status = std::fs::read_to_string(dir.join(format!("{name}.status"))).expect("status");
        let err = std::fs::read_to_string(dir.join(format!("{name}.err"))).expect("stderr");
        assert_eq!(status.trim(), "1", "{name}: {err}");
        assert!(
            err.starts_with("refscope: error: ")
                && err.contains(name)
                && err.contains(expect.as_str()),
            "{name}: expected {expect:?}:\n{err}"
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}
