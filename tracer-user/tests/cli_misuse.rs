//! Misuse of the command line is reported the way clap reports it: an
//! `error:` line naming the argument and the problem, a pointer to
//! `--help`, exit status 2, and nothing done (no output file created,
//! nothing attached).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

const BIN: &str = env!("CARGO_BIN_EXE_refscope");

/// A scratch directory with a copy of the fixture trace.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir() -> Dir {
    let d = std::env::temp_dir().join(format!("refscope-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/export/fixture.jsonl");
    std::fs::copy(fixture, d.join("t.jsonl")).expect("copy the fixture");
    Dir(d)
}

/// Run `refscope ARGS` in `dir`; expect a clap-style failure whose
/// message contains `expect`.
fn misuse(dir: &Path, args: &[&str], expect: &str) {
    let out = Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running refscope");
    let err = String::from_utf8_lossy(&out.stderr);
    let what = format!("refscope {}", args.join(" "));
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: exit status {:?}, not 2:\n{err}",
        out.status
    );
    assert!(
        err.starts_with("error: "),
        "{what}: not a clap error:\n{err}"
    );
    assert!(
        err.contains("For more information, try '--help'."),
        "{what}: no pointer to --help:\n{err}"
    );
    assert!(
        err.contains(expect),
        "{what}: expected {expect:?} in:\n{err}"
    );
    assert!(!err.contains("panicked"), "{what}: panicked:\n{err}");
}

#[test]
fn misuse_gets_clap_style_errors_and_does_nothing() {
    let d = dir();
    let p = d.0.as_path();
    let cases: &[(&[&str], &str)] = &[
        // Unknown things.
        (&["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (
            &["report", "t.jsonl", "--frobnicate"],
            "unexpected argument '--frobnicate'",
        ),
        (
            &["report", "t.jsonl", "--rule", "bogus"],
            "invalid value 'bogus' for '--rule <ID>'",
        ),
        (
            &[
                "export", "t.jsonl", "-f", "jsonl", "-o", "o", "--rule", "pin_lek",
            ],
            "possible values:",
        ),
        (
            &["export", "t.jsonl", "-f", "svg", "-o", "o"],
            "invalid value 'svg' for '--format",
        ),
        // Missing things.
        (&["record"], "--output <FILE>"),
        (&["report"], "<FILE>"),
        (&["export", "t.jsonl", "-o", "o"], "--format <FORMAT>"),
        // Bad ranges and numbers.
        (
            &[
                "export",
                "t.jsonl",
                "-f",
                "jsonl",
                "-o",
                "o",
                "--pfn-range",
                "0x20-0x10",
            ],
            "range start 0x20 is after its end 0x10",
        ),
        (
            &[
                "export",
                "t.jsonl",
                "-f",
                "jsonl",
                "-o",
                "o",
                "--pfn-range",
                "12",
            ],
            "is not a range",
        ),
        (
            &["export", "t.jsonl", "-f", "jsonl", "-o", "o", "--since=-1"],
            "not a non-negative number of seconds",
        ),
        (
            &[
                "export", "t.jsonl", "-f", "jsonl", "-o", "o", "--until", "nan",
            ],
            "not a non-negative number of seconds",
        ),
        (
            &["export", "t.jsonl", "-f", "jsonl", "-o", "o", "--pid", "x"],
            "invalid value 'x' for '--pid <PID>'",
        ),
        (&["report", "t.jsonl", "--pfn", "0xzz"], "is not a number"),
        (
            &["report", "t.jsonl", "--max-pages", "0"],
            "at least one page",
        ),
        (
            &["record", "-o", "r.jsonl", "--duration=-5"],
            "not a usable duration",
        ),
        (
            &["record", "-o", "r.jsonl", "--duration", "inf"],
            "not a usable duration",
        ),
        (
            &["record", "-o", "r.jsonl", "--duration", "1e300"],
            "not a usable duration",
        ),
        (
            &["record", "-o", "r.jsonl", "--ringbuf-size", "2G"],
            "larger than the largest ring buffer",
        ),
        (
            &["record", "-o", "r.jsonl", "--ringbuf-size", "0"],
            "not a usable size",
        ),
        (
            &["record", "-o", "r.jsonl", "--ringbuf-size", "12Q"],
            "is not a size",
        ),
        (
            &["record", "-o", "r.jsonl", "--comm", "a-very-long-command"],
            "the kernel keeps the first 15 bytes",
        ),
        (
            &["record", "-o", "r.jsonl", "--attach", "uprobe"],
            "invalid value 'uprobe' for '--attach",
        ),
        (
            &["live", "--replay", "t.jsonl", "--speed=-1"],
            "give 0 (as fast as possible)",
        ),
        (
            &["live", "--replay", "t.jsonl", "--speed", "1e-300"],
            "give 0 (as fast as possible)",
        ),
        // Conflicting flags.
        (
            &[
                "export", "t.jsonl", "-f", "jsonl", "-o", "o", "--since", "5", "--until", "1",
            ],
            "--since 5 must be before --until 1",
        ),
        (
            &[
                "export", "t.jsonl", "-f", "jsonl", "-o", "t.jsonl", "--force",
            ],
            "is the input trace",
        ),
        (
            &["export", "t.jsonl", "-f", "jsonl", "-o", "./t.jsonl"],
            "is the input trace",
        ),
        (
            &["record", "-o", "r.jsonl", "--ready-file", "r.jsonl"],
            "is the output trace",
        ),
        (
            &["live", "--replay", "t.jsonl", "-o", "r.jsonl"],
            "cannot be used with",
        ),
        (
            &["live", "--replay", "t.jsonl", "--pid", "1"],
            "cannot be used with",
        ),
        (
            &["live", "--replay", "t.jsonl", "--raw-kernel-addresses"],
            "cannot be used with",
        ),
        (
            &["live", "--replay", "t.jsonl", "--attach", "kprobe"],
            "cannot be used with",
        ),
        (&["live", "--speed", "2"], "--replay <FILE>"),
    ];
    for (args, expect) in cases {
        misuse(p, args, expect);
    }
    // Nothing was created, and the input survived `-o` = input.
    let mut names: Vec<String> = std::fs::read_dir(p)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["t.jsonl"]);
    let t = std::fs::read_to_string(p.join("t.jsonl")).expect("the input");
    assert!(t.ends_with("\"end_reason\":\"signal\"}\n"));
}
