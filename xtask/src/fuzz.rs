//! `cargo xtask fuzz`: run the cargo-fuzz harnesses (fuzz/) for a bounded
//! time each and report executions and findings. Not part of `cargo xtask
//! test` (a fuzzer's pass/fail is not reproducible), but every crash it
//! finds is copied to `fuzz/regressions/<target>/`, which the unit tests
//! replay (tracer-user/core/tests/fuzz_regressions.rs).
//!
//! Needs the nightly toolchain (libFuzzer's sanitizer coverage) and
//! cargo-fuzz, which is installed (pinned) when missing.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};
use clap::Parser;

use crate::util::{self, note, step, workspace_root};

/// The harnesses in fuzz/fuzz_targets/.
pub const TARGETS: &[&str] = &["trace_reader", "event_decoder"];

/// The cargo-fuzz this was written against.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

#[derive(Debug, Parser)]
pub struct Options {
    /// Seconds of fuzzing per target.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub secs: u64,
    /// Only these targets (repeatable; default: all).
    #[arg(long = "target", value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub targets: Vec<String>,
    /// libFuzzer's -max_len (bytes of one input).
    #[arg(long, default_value_t = 65536)]
    pub max_len: u64,
}

/// One target's run.
struct Run {
    target: String,
    executions: u64,
    secs: f64,
    corpus: usize,
    crash: Option<PathBuf>,
    detail: String,
}

pub fn run_fuzz(opts: &Options) -> anyhow::Result<()> {
    ensure_cargo_fuzz()?;
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    let targets: Vec<&str> = if opts.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        opts.targets.iter().map(String::as_str).collect()
    };
    step("building the fuzz targets (nightly, debug assertions on)");
    util::run(nightly_fuzz(&fuzz_dir).args(["build", "--debug-assertions"]))?;
    let mut runs = Vec::new();
    for t in &targets {
        runs.push(fuzz_one(&fuzz_dir, t, opts)?);
    }

    eprintln!();
    eprintln!(
        "{:<14} {:>12} {:>8} {:>9} {:>8}  result",
        "target", "executions", "secs", "exec/s", "corpus"
    );
    for r in &runs {
        eprintln!(
            "{:<14} {:>12} {:>8.0} {:>9.0} {:>8}  {}",
            r.target,
            r.executions,
            r.secs,
            r.executions as f64 / r.secs.max(1e-9),
            r.corpus,
            match &r.crash {
                Some(p) => format!("CRASH, saved as {}", p.display()),
                None => "no crash".into(),
            }
        );
    }
    let crashed: Vec<&Run> = runs.iter().filter(|r| r.crash.is_some()).collect();
    if crashed.is_empty() {
        return Ok(());
    }
    for r in &crashed {
        eprintln!("\n--- {} ---\n{}", r.target, r.detail);
    }
    bail!(
        "{} target(s) crashed; the inputs are in fuzz/regressions/ (replayed by \
         `cargo test -p refscope-core --test fuzz_regressions`): fix them, add a named test, commit",
        crashed.len()
    )
}

/// `cargo +nightly fuzz` in `dir`.
fn nightly_fuzz(dir: &Path) -> Command {
    // The rustup proxy (not $CARGO, which is the stable cargo itself)
    // understands `+nightly`.
    let mut cmd = Command::new("cargo");
    cmd.current_dir(dir)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR")
        .args(["+nightly", "fuzz"]);
    cmd
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        return Ok(());
    }
    step(format!("installing cargo-fuzz {CARGO_FUZZ_VERSION}"));
    util::run(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
    .context("cargo xtask fuzz needs cargo-fuzz")
}

fn fuzz_one(fuzz_dir: &Path, target: &str, opts: &Options) -> anyhow::Result<Run> {
    step(format!("fuzzing {target} for {} s", opts.secs));
    // The growing corpus stays out of the repository; the seeds and past
    // crashes are read from it every run.
    let corpus = util::target_dir().join("fuzz/corpus").join(target);
    fs::create_dir_all(&corpus)?;
    let seeds = fuzz_dir.join("seeds").join(target);
    let regressions = fuzz_dir.join("regressions").join(target);
    let log_path = util::target_dir()
        .join("fuzz")
        .join(format!("{target}.log"));
    let mut log = fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let t = Instant::now();
    let mut child = nightly_fuzz(fuzz_dir)
        .args(["run", "--debug-assertions", target])
        .arg(&corpus)
        .arg(&seeds)
        .arg(&regressions)
        .arg("--")
        .arg(format!("-max_total_time={}", opts.secs))
        .arg(format!("-max_len={}", opts.max_len))
        .args([
            "-print_final_stats=1",
            // A slow or memory-hungry input is a finding too.
            "-timeout=20",
            "-rss_limit_mb=3072",
            "-malloc_limit_mb=1024",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("failed to start cargo fuzz")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let (mut executions, mut crash_file, mut detail) = (0u64, None, Vec::<String>::new());
    let mut last_status = Instant::now();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap_or_default();
        let _ = writeln!(log, "{line}");
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            executions = n.trim().parse().unwrap_or(executions);
        }
        // libFuzzer's status lines: "#12345\tpulse  cov: ... exec/s: ...".
        if let Some(rest) = line.strip_prefix('#')
            && let Some(n) = rest.split_whitespace().next()
        {
            executions = executions.max(n.parse().unwrap_or(0));
            if last_status.elapsed().as_secs() >= 30 {
                last_status = Instant::now();
                note(format!("{target}: {line}"));
            }
        }
        if let Some(p) = line.split("Test unit written to ").nth(1) {
            crash_file = Some(PathBuf::from(p.trim()));
        }
        let crash_output =
            line.contains("panicked at") || line.contains("ERROR: libFuzzer") || !detail.is_empty();
        if crash_output && detail.len() < 40 {
            detail.push(line);
        }
    }
    let status = child.wait()?;
    let secs = t.elapsed().as_secs_f64();
    let corpus_len = fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0);
    let crash = match crash_file {
        Some(src) => {
            let src = if src.is_absolute() {
                src
            } else {
                fuzz_dir.join(src)
            };
            let name = src
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "crash".into());
            fs::create_dir_all(&regressions)?;
            let dst = regressions.join(name);
            fs::copy(&src, &dst)
                .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
            Some(dst)
        }
        None if !status.success() => bail!(
            "cargo fuzz run {target} failed ({status}) without a crash input; see {}",
            log_path.display()
        ),
        None => None,
    };
    note(format!(
        "{target}: {executions} executions in {secs:.0} s, corpus {corpus_len} inputs{}; log {}",
        if crash.is_some() { ", CRASHED" } else { "" },
        log_path.display()
    ));
    Ok(Run {
        target: target.into(),
        executions,
        secs,
        corpus: corpus_len,
        crash,
        detail: detail.join("\n"),
    })
}
