//! `cargo xtask scenarios`: the end-to-end suite. Runs each scenario of
//! tests/scenarios.json inside the pinned kernels, records it with
//! refscope, analyses the trace on the host with `refscope report --json`,
//! and compares findings and events with the checked-in expectations.
//! `--table` regenerates the README's truth table from the run.

mod check;
mod guest;
mod table;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context as _;
use clap::Parser;

pub use check::{Observed, check};
use table::Kind;
pub use table::{Case, Count};

use crate::{
    util::{self, note, step},
    vm::{self, Align, Fs, KernelChoice, MemmapOn, NsMode, PmemKind, VmConfig},
};

/// The kernels the suite runs on, in table order.
pub const KERNELS: &[&str] = &["6.1", "6.12", "7.3"];

#[derive(Debug, Parser, Default)]
pub struct Options {
    /// Only these kernels (comma-separated tags).
    #[arg(long, value_delimiter = ',')]
    pub kernel: Vec<String>,
    /// Only cases whose name contains one of these (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Rewrite the README's scenario table from this run (all cases must
    /// have run: no --kernel/--only).
    #[arg(long)]
    pub table: bool,
    /// Do not rebuild refscope and the workload.
    #[arg(long)]
    pub no_build: bool,
}

/// The result of one case on one kernel.
pub struct CaseResult {
    pub case: String,
    pub kernel: String,
    pub ok: bool,
    pub detail: String,
    pub secs: f64,
    pub observed: Option<Observed>,
}

pub fn table_path() -> PathBuf {
    util::workspace_root().join("tests/scenarios.json")
}

/// One case of tests/scenarios.json, by name.
pub fn case(name: &str) -> anyhow::Result<Case> {
    table::load(&table_path())?
        .cases
        .into_iter()
        .find(|c| c.name == name)
        .with_context(|| format!("tests/scenarios.json has no case `{name}`"))
}

/// `cargo xtask scenarios`.
pub fn run_cli(opts: &Options) -> anyhow::Result<()> {
    let results = run(opts)?;
    let failed: Vec<&CaseResult> = results.iter().filter(|r| !r.ok).collect();
    for r in &results {
        eprintln!(
            "{:<4} {:<24} {:<5} {:>6.1}s",
            if r.ok { "PASS" } else { "FAIL" },
            r.case,
            r.kernel,
            r.secs
        );
        if !r.ok {
            for l in r.detail.lines().take(12) {
                eprintln!("       {l}");
            }
        }
    }
    if opts.table {
        let t = table::load(&table_path())?;
        write_table(&t, &results)?;
    }
    if !failed.is_empty() {
        anyhow::bail!("{} of {} scenario runs failed", failed.len(), results.len());
    }
    Ok(())
}

/// Run the selected cases; one guest boot per (kernel, boot config), and a
/// boot of its own for each unplug case (it destroys the device).
pub fn run(opts: &Options) -> anyhow::Result<Vec<CaseResult>> {
    let t = table::load(&table_path())?;
    if opts.table && (!opts.kernel.is_empty() || !opts.only.is_empty()) {
        anyhow::bail!("--table needs a full run: drop --kernel and --only");
    }
    let binaries = vm::guest_binaries(opts.no_build)?;
    let refscope = binaries
        .iter()
        .find(|p| p.file_name().is_some_and(|n| n == "refscope"))
        .context("refscope is not built")?
        .clone();
    let selected =
        |c: &Case| opts.only.is_empty() || opts.only.iter().any(|o| c.name.contains(o.as_str()));
    let mut results = Vec::new();
    for &kernel in KERNELS {
        if !opts.kernel.is_empty() && !opts.kernel.iter().any(|k| k == kernel) {
            continue;
        }
        let cases: Vec<&Case> = t
            .cases
            .iter()
            .filter(|c| selected(c) && c.kernels.contains_key(kernel))
            .collect();
        // Group into boots.
        let mut boots: BTreeMap<(table::Boot, String), Vec<&Case>> = BTreeMap::new();
        for c in cases {
            let key = match c.kind {
                Kind::Simple | Kind::Command | Kind::Attach | Kind::AttachChurn => String::new(),
                Kind::Unplug => c.name.clone(),
            };
            boots.entry((c.boot.clone(), key)).or_default().push(c);
        }
        for ((boot, _), cases) in boots {
            results.extend(run_boot(kernel, &boot, &cases, &binaries, &refscope));
        }
    }
    Ok(results)
}

fn run_boot(
    kernel: &str,
    boot: &table::Boot,
    cases: &[&Case],
    binaries: &[PathBuf],
    refscope: &Path,
) -> Vec<CaseResult> {
    let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    step(format!(
        "scenarios on {kernel} ({boot}): {}",
        names.join(", ")
    ));
    let t = Instant::now();
    let share = util::target_dir()
        .join("scenarios")
        .join(format!(
            "{kernel}-{}",
            boot.to_string().replace([' ', ','], "-")
        ))
        .join(names.join("+"));
    let expect_oops = cases.iter().any(|c| c.kernels[kernel].oops);
    let outcome = (|| -> anyhow::Result<vm::VmOutcome> {
        let _ = fs::remove_dir_all(&share);
        fs::create_dir_all(&share).with_context(|| format!("cannot create {}", share.display()))?;
        let mut cfg = VmConfig::new(
            KernelChoice::Pinned(kernel.into()),
            Some(vec!["sh".into(), "-c".into(), guest::script(cases)]),
        );
        cfg.binaries = binaries.to_vec();
        cfg.share = Some(share.clone());
        cfg.echo_output = false;
        cfg.fs = if boot.fs == "xfs" { Fs::Xfs } else { Fs::Ext4 };
        cfg.align = match boot.align.as_str() {
            "2m" => Align::M2,
            "1g" => Align::G1,
            _ => Align::K4,
        };
        if cfg.align == Align::G1 {
            // A 1 GiB-aligned device: the pfn info block rounds the data
            // up to the next GiB, so 2 GiB of pmem leave one usable GiB.
            // QEMU's NVDIMM sits GiB-aligned above 4 GiB; a memmap= region
            // that big would run into the PCI hole.
            cfg.pmem = PmemKind::Nvdimm;
            cfg.pmem_mib = 2048;
        }
        cfg.mode = if boot.mode == "devdax" {
            NsMode::Devdax
        } else {
            NsMode::Fsdax
        };
        cfg.memmap_on = if boot.memmap == "ram" {
            MemmapOn::Ram
        } else {
            MemmapOn::Pmem
        };
        cfg.timeout = std::time::Duration::from_secs(120 + 240 * cases.len() as u64);
        vm::run(&cfg)
    })();
    let secs = t.elapsed().as_secs_f64() / cases.len() as f64;
    let boot_failure = match &outcome {
        Err(e) => Some(format!("could not run the guest: {e:#}")),
        Ok(o) => o.verdict(expect_oops).err().map(|why| {
            let detail = format!(
                "guest: {why}\n--- guest stderr ---\n{}\n{}",
                String::from_utf8_lossy(&o.stderr).trim_end(),
                o.failure_report(false)
            );
            if util::in_ci() {
                eprintln!("--- full console ---\n{}", o.console);
            }
            detail
        }),
    };
    if let Ok(o) = &outcome
        && let Some(b) = o.boot_secs
    {
        note(format!(
            "{kernel}: boot-to-command {b:.1} s, {:.0} s in all",
            o.total_secs
        ));
    }
    let oops_seen = outcome
        .as_ref()
        .is_ok_and(|o| o.has(vm::IncidentKind::Oops));
    cases
        .iter()
        .map(|c| {
            let dir = share.join(&c.name);
            let checked = check(c, kernel, &dir, refscope, oops_seen);
            let (ok, detail, observed) = match (&boot_failure, checked) {
                (Some(b), Ok(obs)) => (false, b.clone(), Some(obs)),
                (Some(b), Err(e)) => (false, format!("{e}\n{b}"), None),
                (None, Ok(obs)) => (true, String::new(), Some(obs)),
                (None, Err(e)) => (false, e, None),
            };
            if !ok {
                eprintln!("FAIL {} on {kernel}: {detail}", c.name);
            }
            CaseResult {
                case: c.name.clone(),
                kernel: kernel.into(),
                ok,
                detail,
                secs,
                observed,
            }
        })
        .collect()
}

const BEGIN: &str = "<!-- scenarios:begin (cargo xtask scenarios --table) -->";
const END: &str = "<!-- scenarios:end -->";

/// Rewrite the README's table between the markers from `results`.
fn write_table(t: &table::Table, results: &[CaseResult]) -> anyhow::Result<()> {
    let md = render_table(t, results);
    let readme = util::workspace_root().join("README.md");
    let text = fs::read_to_string(&readme).context("cannot read README.md")?;
    let (Some(a), Some(b)) = (text.find(BEGIN), text.find(END)) else {
        anyhow::bail!("README.md has no scenario table markers ({BEGIN} ... {END})");
    };
    let new = format!("{}{BEGIN}\n{md}{}", &text[..a], &text[b..]);
    fs::write(&readme, new).context("cannot write README.md")?;
    step("README.md scenario table regenerated");
    Ok(())
}

pub fn render_table(t: &table::Table, results: &[CaseResult]) -> String {
    let mut md = format!(
        "| scenario | guest | {} |\n|---|---|{}\n",
        KERNELS.join(" | "),
        "---|".repeat(KERNELS.len())
    );
    for c in &t.cases {
        let cells: Vec<String> = KERNELS
            .iter()
            .map(|k| {
                if !c.kernels.contains_key(*k) {
                    return "not run".into();
                }
                match results.iter().find(|r| r.case == c.name && r.kernel == *k) {
                    Some(r) => {
                        let mut cell = r
                            .observed
                            .as_ref()
                            .map_or_else(|| "?".into(), Observed::cell);
                        if !r.ok {
                            cell.push_str(" **(FAILED)**");
                        }
                        cell
                    }
                    None => "not run".into(),
                }
            })
            .collect();
        md.push_str(&format!(
            "| `{}`: {} | {} | {} |\n",
            c.name,
            c.about,
            c.boot,
            cells.join(" | ")
        ));
    }
    md
}
