//! Corrupt, truncated, wrong-version and non-trace files given to `report`
//! and `export`: an error naming the file, the line and the problem (exit
//! status 1, no partial output left behind), never a panic; a trace cut
//! short is read up to its last complete line, with a warning.
//! (`live --replay` reads through the same reader: tests/live_tmux.rs.)

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

const BIN: &str = env!("CARGO_BIN_EXE_refscope");

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fixture() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/export/fixture.jsonl");
    std::fs::read_to_string(p).expect("the fixture trace")
}

/// The fixture with line `n` (1-based) replaced.
fn with_line(n: usize, line: &str) -> Vec<u8> {
    let mut lines: Vec<String> = fixture().lines().map(str::to_owned).collect();
    lines[n - 1] = line.to_owned();
    (lines.join("\n") + "\n").into_bytes()
}

/// (file name, contents, expected message after "refscope: error: ").
/// `{f}` stands for the file's path.
fn bad_files() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let fx = fixture();
    let header = fx.lines().next().expect("header").to_owned();
    let mut binary = vec![0x89u8, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
    binary.extend((0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    // Deeper than serde_json's recursion limit, and deep enough to
    // overflow the stack if anything recursed without one.
    let depth = 1 << 20;
    let nested = format!(
        r#"{{"type":"loss","x":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let mut endless = header.clone().into_bytes();
    endless.push(b'\n');
    endless.extend(std::iter::repeat_n(b'x', 17 << 20));
    endless.push(b'\n');
    vec![
        (
            "empty.jsonl",
            Vec::new(),
            "{f}: empty file: not a refscope trace",
        ),
        (
            "image.png",
            binary,
            "{f}: line 1: not a refscope trace (line 1 is not JSON",
        ),
        (
            "notes.txt",
            b"hello\nworld\n".to_vec(),
            "{f}: line 1: not a refscope trace",
        ),
        (
            "other.json",
            b"{\"type\":\"header\",\"format\":\"perfetto\"}\n".to_vec(),
            "{f}: line 1: not a refscope trace (line 1 is not a header with \"format\":\"refscope-trace\")",
        ),
        (
            "v99.jsonl",
            fx.replacen("\"version\":1", "\"version\":99", 1)
                .into_bytes(),
            "{f}: line 1: trace format version 99 is not supported",
        ),
        (
            "bad-header.jsonl",
            header
                .replacen(
                    "\"refcount_model\":\"idle_one\"",
                    "\"refcount_model\":\"sideways\"",
                    1,
                )
                .into_bytes(),
            "{f}: line 1: not a refscope trace (invalid header: unknown variant `sideways`",
        ),
        (
            "kind.jsonl",
            with_line(
                3,
                &fx.lines().nth(2).expect("line 3").replacen(
                    "\"kind\":\"map\"",
                    "\"kind\":\"mop\"",
                    1,
                ),
            ),
            "{f}: line 3: corrupt record: unknown event kind `mop`",
        ),
        (
            "json.jsonl",
            with_line(4, r#"{"type":"event","t":"#),
            "{f}: line 4: corrupt record: EOF while parsing",
        ),
        (
            "nul.jsonl",
            with_line(5, "\0\0\0\0"),
            "{f}: line 5: corrupt record",
        ),
        (
            "utf8.jsonl",
            with_line(6, "{\"type\":\"event\",\"comm\":\"\u{fffd}\u{0}\"\u{7f}}"),
            "{f}: line 6: corrupt record",
        ),
        (
            "latin1.jsonl",
            {
                let mut b = with_line(6, "XX");
                let i = b.windows(2).position(|w| w == b"XX").expect("XX");
                b[i] = 0xff;
                b[i + 1] = 0xfe;
                b
            },
            "{f}: line 6: corrupt record",
        ),
        (
            "nested.jsonl",
            with_line(2, &nested),
            "{f}: line 2: corrupt record: recursion limit exceeded",
        ),
        (
            "number.jsonl",
            with_line(
                2,
                r#"{"type":"event","t":1e999,"cpu":0,"seq":1,"kind":"map","hook":"insert_pfn","pid":1}"#,
            ),
            "{f}: line 2: corrupt record",
        ),
        (
            "negative.jsonl",
            with_line(
                2,
                r#"{"type":"event","t":-1,"cpu":0,"seq":1,"kind":"map","hook":"insert_pfn","pid":1}"#,
            ),
            "{f}: line 2: corrupt record: invalid value: integer `-1`",
        ),
        (
            "two-headers.jsonl",
            format!("{fx}{fx}").into_bytes(),
            "{f}: line 16: record after the footer",
        ),
        (
            "second-header.jsonl",
            with_line(8, &header),
            "{f}: line 8: a second header (two traces concatenated?)",
        ),
        (
            "after-footer.jsonl",
            format!("{fx}{}\n", fx.lines().nth(1).expect("line 2")).into_bytes(),
            "{f}: line 16: record after the footer",
        ),
        (
            "endless.jsonl",
            endless,
            "{f}: line 2: longer than 16 MiB without a newline",
        ),
    ]
}

fn run(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running refscope");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn outputs(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("out"))
        .collect();
    v.sort();
    v
}

#[test]
fn bad_files_are_errors_naming_file_line_and_problem() {
    let d = Dir(std::env::temp_dir().join(format!("refscope-bad-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&d.0);
    std::fs::create_dir_all(&d.0).expect("temp dir");
    let dir = d.0.as_path();
    std::fs::create_dir(dir.join("a-directory")).expect("dir");

    let mut files = bad_files();
    files.push((
        "a-directory",
        Vec::new(),
        "{f}: line 1: read error: Is a directory",
    ));
    files.push((
        "missing.jsonl",
        Vec::new(),
        "cannot open {f}: No such file or directory",
    ));
    let commands: &[&[&str]] = &[
        &["report"],
        &["report", "--json"],
        &["export", "-f", "jsonl", "-o", "out.jsonl"],
        &["export", "-f", "perfetto", "-o", "out.pftrace"],
        &["export", "-f", "parquet", "-o", "out-parquet"],
        &[
            "export",
            "-f",
            "jsonl",
            "-o",
            "out.jsonl",
            "--rule",
            "pin_leak",
        ],
    ];
    let mut failures = String::new();
    for (name, bytes, expect) in &files {
        if !matches!(*name, "a-directory" | "missing.jsonl") {
            std::fs::write(dir.join(name), bytes).expect("write a bad file");
        }
        // `export` says what it was writing first ("exporting to OUT: ").
        let expect = expect.replace("{f}", name);
        for cmd in commands {
            let mut args = vec![cmd[0], *name];
            args.extend_from_slice(&cmd[1..]);
            let (code, err) = run(dir, &args);
            let what = format!("refscope {}", args.join(" "));
            let named = err.starts_with("refscope: error: ") && err.contains(&expect);
            if code != Some(1) || !named || err.contains("panicked") {
                let _ = writeln!(
                    failures,
                    "{what}: exit {code:?}, expected 1 and {expect:?}; stderr:\n{err}"
                );
            }
            let left = outputs(dir);
            if !left.is_empty() {
                let _ = writeln!(failures, "{what}: left {left:?} behind");
                for o in left {
                    let _ = std::fs::remove_dir_all(dir.join(&o));
                    let _ = std::fs::remove_file(dir.join(&o));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures}");
}

#[test]
fn traces_cut_short_are_read_up_to_their_last_complete_line() {
    let d = Dir(std::env::temp_dir().join(format!("refscope-cut-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&d.0);
    std::fs::create_dir_all(&d.0).expect("temp dir");
    let dir = d.0.as_path();
    let fx = fixture();
    // SIGKILL mid-line: 9 complete lines, then half of the 10th.
    let cut: usize = fx.lines().take(9).map(|l| l.len() + 1).sum::<usize>() + 40;
    std::fs::write(dir.join("killed.jsonl"), &fx.as_bytes()[..cut]).expect("write");
    // Killed between two lines: no footer, no partial line.
    let lines: Vec<&str> = fx.lines().collect();
    std::fs::write(dir.join("nofooter.jsonl"), lines[..14].join("\n") + "\n").expect("write");
    // The recording stopped on a full disk, and its footer says so.
    std::fs::write(
        dir.join("diskfull.jsonl"),
        fx.replacen(
            "\"end_reason\":\"signal\"",
            "\"end_reason\":\"error: writing t.jsonl failed: No space left on device (os error 28)\"",
            1,
        ),
    )
    .expect("write");
    let cases = [
        (
            "killed.jsonl",
            "ends in an incomplete line 10 and has no footer",
            8,
        ),
        ("nofooter.jsonl", "killed.jsonl has no footer", 13),
        (
            "diskfull.jsonl",
            "stopped on an error (writing t.jsonl failed: No space left on device",
            13,
        ),
    ];
    for (name, warning, events) in cases {
        let warning = warning.replace("killed.jsonl", name);
        let (code, err) = run(dir, &["report", name, "--json"]);
        assert_eq!(code, Some(0), "report {name}: {err}");
        assert!(
            err.contains(&warning),
            "report {name}: no warning {warning:?}:\n{err}"
        );
        let out = Command::new(BIN)
            .current_dir(dir)
            .args(["report", name, "--json"])
            .output()
            .expect("report");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report --json");
        assert_eq!(doc["events"], events, "report {name}");
        assert_eq!(doc["complete"], name == "diskfull.jsonl", "report {name}");
        let (code, err) = run(
            dir,
            &["export", name, "-f", "jsonl", "-o", "out.jsonl", "--force"],
        );
        assert_eq!(code, Some(0), "export {name}: {err}");
        assert!(err.contains("warning"), "export {name}: no warning:\n{err}");
    }
}

#[test]
fn implausible_events_are_counted_not_analysed() {
    let d = Dir(std::env::temp_dir().join(format!("refscope-odd-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&d.0);
    std::fs::create_dir_all(&d.0).expect("temp dir");
    let dir = d.0.as_path();
    // From the fuzzers: a CPU number that made a 183 GB table, an order
    // that overflowed a shift.
    let odd = with_line(
        3,
        r#"{"type":"event","t":5000002000,"cpu":2863311530,"seq":2,"kind":"map","hook":"insert_pfn","pid":200,"mm":"0x1","vaddr":"0x1000","pfn":1048577,"order":97}"#,
    );
    std::fs::write(dir.join("odd.jsonl"), odd).expect("write");
    let out = Command::new(BIN)
        .current_dir(dir)
        .args(["report", "odd.jsonl"])
        .output()
        .expect("report");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("1 invalid events ignored (no kernel produces them: corrupt input?)"),
        "{text}"
    );
}
