//! `cargo xtask test`: everything CI runs. Unit tests of all host crates,
//! then (when the VM harness is present) the guest tests, then a summary.

use std::time::Instant;

use clap::Parser;

use crate::{build, setup, util::step};

#[derive(Debug, Parser)]
pub struct Options {
    /// Run only the guest tests of the VM harness whose name contains this
    /// (the other groups are not run).
    #[arg(long, value_name = "SUBSTR")]
    pub vm_only: Option<String>,
    /// Run only the export group (the other groups are not run).
    #[arg(long, conflicts_with = "vm_only")]
    pub export_only: bool,
    /// Run only the demo group (the other groups are not run).
    #[arg(long, conflicts_with_all = ["vm_only", "export_only"])]
    pub demo_only: bool,
}

struct Outcome {
    name: String,
    ok: bool,
    detail: String,
    secs: f64,
}

pub fn run_test(opts: &Options) -> anyhow::Result<()> {
    let mut outcomes = Vec::new();
    if let Some(filter) = &opts.vm_only {
        vm_group(&mut outcomes, Some(filter));
        return summary(&outcomes);
    }
    if opts.export_only {
        export_group(&mut outcomes);
        return summary(&outcomes);
    }
    if opts.demo_only {
        demo_group(&mut outcomes);
        return summary(&outcomes);
    }

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

    export_group(&mut outcomes);

    demo_group(&mut outcomes);

    vm_group(&mut outcomes, None);

    scenarios_group(&mut outcomes);

    scenario_export_group(&mut outcomes);

    summary(&outcomes)
}

/// Group "scenarios": the truth table (tests/scenarios.json) on every
/// pinned kernel, one outcome per case and kernel.
fn scenarios_group(outcomes: &mut Vec<Outcome>) {
    step("scenario suite: tests/scenarios.json on 6.1, 6.12 and 7.3 (group scenarios)");
    let t = Instant::now();
    // The vm group built the guest binaries already.
    let opts = crate::scenarios::Options {
        no_build: true,
        ..Default::default()
    };
    match crate::scenarios::run(&opts) {
        Ok(results) => outcomes.extend(results.into_iter().map(|r| Outcome {
            name: format!("scenario {} on {}", r.case, r.kernel),
            ok: r.ok,
            detail: r.detail,
            secs: r.secs,
        })),
        Err(e) => outcomes.push(Outcome {
            name: "scenarios".into(),
            ok: false,
            detail: format!("{e:#}"),
            secs: t.elapsed().as_secs_f64(),
        }),
    }
}

/// Group "export": refscope's Perfetto, Parquet and JSONL exports of the
/// fixture and synthetic traces, read back by independent readers
/// (tests/export/run.py, in the venv `setup` makes). Fails, never skips,
/// when Python or its packages are missing.
fn export_group(outcomes: &mut Vec<Outcome>) {
    step("export tests: exports read back by Perfetto's schema and DuckDB (group export)");
    let t = Instant::now();
    let result = export_tests();
    outcomes.push(Outcome {
        name: "export (perfetto, parquet, jsonl)".into(),
        ok: result.is_ok(),
        detail: result.err().map(|e| format!("{e:#}")).unwrap_or_default(),
        secs: t.elapsed().as_secs_f64(),
    });
}

/// Group "scenario exports": every trace the scenario group just recorded
/// on real kernels, exported in every format and checked like the
/// synthetic ones: each export agrees with the analysis (`report --json`)
/// and with the independent simulator on mappings, references, counters
/// and findings.
fn scenario_export_group(outcomes: &mut Vec<Outcome>) {
    step("export tests on the scenario traces (group scenario exports)");
    let t = Instant::now();
    let dir = crate::util::target_dir().join("scenarios");
    let result = export_tests_with(
        &["--scenarios".as_ref(), dir.as_os_str()],
        "scenario-export-tests",
    );
    outcomes.push(Outcome {
        name: "exports of the scenario traces".into(),
        ok: result.is_ok(),
        detail: result.err().map(|e| format!("{e:#}")).unwrap_or_default(),
        secs: t.elapsed().as_secs_f64(),
    });
}

fn export_tests() -> anyhow::Result<()> {
    let synth = crate::util::release_dir().join("examples/synth_events");
    export_tests_with(&["--synth".as_ref(), synth.as_os_str()], "export-tests")
}

/// tests/export/run.py with `args` (what to check), in `target/<work>`.
fn export_tests_with(args: &[&std::ffi::OsStr], work: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;

    use crate::util::{output, run, workspace_root};

    let venv = setup::python_venv_dir()?;
    let python = venv.join("bin/python");
    if !python.is_file() {
        anyhow::bail!(
            "no Python venv at {}: the export tests need it (perfetto, duckdb); run `cargo xtask setup`",
            venv.display()
        );
    }
    output(std::process::Command::new(&python).args([
        "-c",
        "import duckdb; from perfetto.protos.perfetto.trace import perfetto_trace_pb2",
    ]))
    .with_context(|| {
        format!(
            "the export tests' Python packages ({}) are missing from {}; run `cargo xtask setup`",
            setup::PYTHON_PACKAGES.join(" "),
            venv.display()
        )
    })?;
    run(&mut build::cargo(&[
        "build",
        "--locked",
        "-p",
        "refscope",
        "--bin",
        "refscope",
        "--example",
        "synth_events",
    ]))?;
    let root = workspace_root();
    let bin = crate::util::release_dir();
    run(std::process::Command::new(&python)
        .arg(root.join("tests/export/run.py"))
        .arg("--refscope")
        .arg(bin.join("refscope"))
        .args(args)
        .arg("--workdir")
        .arg(crate::util::target_dir().join(work)))
}

/// Group "demo": the README's first command, `cargo xtask demo`, on the
/// default kernel: its record-and-report path, checked against the `demo`
/// case of tests/scenarios.json and its printed report against the same.
fn demo_group(outcomes: &mut Vec<Outcome>) {
    step("the README's first command: cargo xtask demo's record and report (group demo)");
    let t = Instant::now();
    let result = (|| -> anyhow::Result<(String, Result<(), String>)> {
        let kernel = crate::vm::default_kernel()?;
        let binaries = crate::vm::guest_binaries(false)?;
        let demo = crate::demo::record_and_report(&kernel, binaries, false)?;
        Ok((kernel.clone(), crate::demo::check(&demo, &kernel)))
    })();
    let (name, ok, detail) = match result {
        Ok((kernel, checked)) => (
            format!("demo on {kernel}"),
            checked.is_ok(),
            checked.err().unwrap_or_default(),
        ),
        Err(e) => ("demo".to_owned(), false, format!("{e:#}")),
    };
    outcomes.push(Outcome {
        name,
        ok,
        detail,
        secs: t.elapsed().as_secs_f64(),
    });
}

/// Group "vm": the VM harness's guest tests (one outcome per boot).
fn vm_group(outcomes: &mut Vec<Outcome>, filter: Option<&str>) {
    step("guest tests of the VM harness (group vm)");
    for case in crate::guest_tests::run_all(filter) {
        outcomes.push(Outcome {
            name: case.name,
            ok: case.ok,
            detail: case.detail,
            secs: case.secs,
        });
    }
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
