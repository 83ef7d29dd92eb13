//! `cargo xtask test`: everything CI runs. Unit tests of all host crates,
//! then (when the VM harness is present) the guest tests, then a summary.

use std::time::Instant;

use clap::Parser;

use crate::{build, setup, util::step};

#[derive(Debug, Parser)]
pub struct Options {
    /// Do not run `setup` first.
    #[arg(long)]
    pub no_setup: bool,
}

struct Outcome {
    name: String,
    ok: bool,
    detail: String,
    secs: f64,
}

pub fn run_test(opts: &Options) -> anyhow::Result<()> {
    if !opts.no_setup {
        setup::run_setup(&setup::Options { no_apt: false })?;
    }
    let mut outcomes = Vec::new();

    let t = Instant::now();
    step("unit tests (host crates)");
    let unit = crate::util::run(&mut build::cargo(&[
        "test",
        "--locked",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
    ]));
    outcomes.push(Outcome {
        name: "unit tests".into(),
        ok: unit.is_ok(),
        detail: unit.err().map(|e| format!("{e:#}")).unwrap_or_default(),
        secs: t.elapsed().as_secs_f64(),
    });

    summary(&outcomes)
}

fn summary(outcomes: &[Outcome]) -> anyhow::Result<()> {
    eprintln!();
    eprintln!("refscope test summary");
    eprintln!("{:-<60}", "");
    for o in outcomes {
        eprintln!(
            "{:<6} {:<40} {:>7.1}s",
            if o.ok { "PASS" } else { "FAIL" },
            o.name,
            o.secs
        );
        if !o.ok && !o.detail.is_empty() {
            for line in o.detail.lines().take(20) {
                eprintln!("       {line}");
            }
        }
    }
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    eprintln!("{:-<60}", "");
    if failed > 0 {
        anyhow::bail!("{failed} of {} test groups failed", outcomes.len());
    }
    eprintln!("all {} test groups passed", outcomes.len());
    Ok(())
}
