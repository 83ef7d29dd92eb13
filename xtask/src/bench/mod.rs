//! `cargo xtask bench`: what refscope costs, measured against the untraced
//! kernel and against the kernel's own tracer in the same run (issue 9,
//! docs/benchmarks.md).
//!
//! Two halves:
//!  1. `guest`: one boot of a pinned kernel under QEMU runs the overhead
//!     workloads untraced and under each tracer, interleaved and repeated,
//!     reads the kernel's BPF run-time statistics, and drives `refscope
//!     record` to and past its capacity. Under TCG absolute guest times
//!     mean nothing: only ratios between runs of the same boot are
//!     published.
//!  2. `host`: absolute rates where time is real: criterion's decode +
//!     analysis benchmark, `refscope report` and `export` throughput, and
//!     peak RSS per tracked page and for a 10-million-event trace.
//!
//! Results: `target/bench/bench.md` (the tables) and `target/bench/bench.json`
//! (everything, raw and summarised); `--docs` puts the tables in
//! docs/benchmarks.md. Goals missed are marked, never a failure: this is
//! not part of CI's pass/fail (`cargo xtask test` does not run it).

mod guest;
mod host;
mod report;
mod stats;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use serde::Serialize;

use crate::{
    build,
    util::{self, note, step},
    vm::{self, KernelChoice, VmConfig},
};

#[derive(Debug, Parser)]
pub struct Options {
    /// Kernel for the guest half (a pinned tag; default: the default kernel).
    #[arg(long, value_name = "TAG")]
    pub kernel: Option<String>,
    /// Repetitions of every (mode, workload) run in the guest.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub reps: usize,
    /// Small sizes and few repetitions: checks the harness end to end in a
    /// few minutes; the numbers are not for publishing.
    #[arg(long)]
    pub quick: bool,
    /// Only the guest half.
    #[arg(long, conflicts_with = "host_only")]
    pub guest_only: bool,
    /// Only the host half.
    #[arg(long)]
    pub host_only: bool,
    /// Events in the large trace `refscope report` reads.
    #[arg(long, value_name = "N", default_value_t = 10_000_000)]
    pub events: u64,
    /// Rewrite the table in docs/benchmarks.md from this run.
    #[arg(long)]
    pub docs: bool,
    /// Do not build first; use what target/ has.
    #[arg(long)]
    pub no_build: bool,
    /// A second refscope (built from an older commit, e.g. with `cargo
    /// xtask build` in a worktree): its `record`, with its defaults, runs
    /// as mode `baseline` in the same boot and rotation, so before and
    /// after are measured side by side.
    #[arg(long, value_name = "PATH", conflicts_with = "host_only")]
    pub baseline: Option<PathBuf>,
}

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize)]
struct Machine {
    cpu: String,
    cpus: usize,
    memory_gib: f64,
    host_kernel: String,
    qemu: String,
    rustc: String,
    accel: Option<String>,
    guest_kernel: Option<String>,
    /// 1-minute load average at the start and the end: other work on the
    /// host is the main source of noise (guest vCPUs are host threads).
    load_start: Option<f64>,
    load_end: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Output<'a> {
    command: String,
    date: String,
    total_secs: f64,
    machine: &'a Machine,
    goals: &'a [report::Goal],
    guest_plan: Option<GuestPlanOut>,
    guest_error: Option<String>,
    guest_summary: Option<&'a report::GuestSummary>,
    guest: Option<&'a guest::results::GuestData>,
    host: Option<&'a host::HostData>,
}

#[derive(Debug, Serialize)]
struct GuestPlanOut {
    reps: usize,
    modes: Vec<guest::Mode>,
    workloads: Vec<guest::Workload>,
}

pub fn run_bench(opts: &Options) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let load_start = loadavg();
    let root = util::workspace_root();
    let out_dir = util::target_dir().join("bench");
    fs::create_dir_all(&out_dir)?;
    // What follows `bench` (global options such as --no-setup may come
    // before it).
    let command = public_command(std::env::args().skip(1));

    let mut binaries = if opts.host_only {
        Vec::new()
    } else {
        vm::guest_binaries(opts.no_build)?
    };
    if let Some(path) = &opts.baseline {
        binaries.push(baseline_binary(path, &out_dir)?);
    }
    if !opts.guest_only && !opts.no_build {
        step("building the synthetic trace generators");
        util::run(&mut build::cargo(&[
            "build",
            "--locked",
            "-p",
            "refscope",
            "--bin",
            "refscope",
            "--example",
            "synth_events",
            "--example",
            "synth_pages",
        ]))?;
    }

    let plan = guest::Plan {
        reps: if opts.quick { 2 } else { opts.reps.max(1) },
        modes: guest::modes(opts.baseline.is_some()),
        workloads: guest::workloads(opts.quick),
        capacity: true,
        cap_secs: if opts.quick { 1.0 } else { 3.0 },
    };
    let mut accel = None;
    let mut guest_error = None;
    let guest_data = if opts.host_only {
        None
    } else {
        let share = out_dir.join("guest");
        let _ = fs::remove_dir_all(&share);
        fs::create_dir_all(&share)?;
        let kernel = match &opts.kernel {
            Some(k) => k.clone(),
            None => vm::default_kernel()?,
        };
        step(format!(
            "guest: {} repetitions x {} modes x {} workloads, then the capacity steps, on {kernel} (one boot)",
            plan.reps,
            plan.modes.len(),
            plan.workloads.len()
        ));
        let mut cfg = VmConfig::new(
            KernelChoice::Pinned(kernel.clone()),
            Some(vec!["sh".into(), "-c".into(), guest::shell::script(&plan)]),
        );
        cfg.binaries = binaries;
        cfg.share = Some(share.clone());
        cfg.echo_output = true;
        cfg.timeout = guest_timeout(&plan, opts.quick);
        let gt = Instant::now();
        match vm::run(&cfg) {
            Ok(o) => {
                accel = Some(o.accel.to_owned());
                let _ = fs::write(out_dir.join("guest-console.log"), &o.console);
                if let Err(why) = o.verdict(false) {
                    eprint!("{}", o.failure_report(false));
                    guest_error = Some(why);
                }
                note(format!(
                    "guest: {:.0} s (accel {})",
                    gt.elapsed().as_secs_f64(),
                    o.accel
                ));
            }
            Err(e) => guest_error = Some(format!("{e:#}")),
        }
        Some(guest::results::parse(&share, &plan))
    };
    if let Some(g) = &guest_data
        && !g.complete
        && guest_error.is_none()
    {
        guest_error = Some("the guest script did not get to its end".into());
    }

    let host_data = (!opts.guest_only).then(|| {
        let hp = host::HostPlan {
            big_events: if opts.quick {
                opts.events.min(500_000)
            } else {
                opts.events
            },
            export_events: if opts.quick { 100_000 } else { 1_000_000 },
            // Both sizes leave FxHashMap's table half full (just after a
            // doubling), and stay below report's default --max-pages
            // (1 Mi), past which idle pages are evicted.
            pages: if opts.quick {
                (1 << 15, 1 << 17)
            } else {
                (1 << 17, 1 << 19)
            },
            criterion_secs: if opts.quick { (1, 2) } else { (1, 3) },
        };
        host::run(&hp, &out_dir.join("host"))
    });

    let summary = guest_data
        .as_ref()
        .map(|g| report::summarize_guest(g, &plan));
    let goals = report::goals(summary.as_ref(), host_data.as_ref());
    let mut machine = machine(accel, guest_data.as_ref().map(|g| g.kernel_release.clone()));
    machine.load_start = load_start;
    machine.load_end = loadavg();
    let md = report::table::markdown(
        &goals,
        summary.as_ref().zip(guest_data.as_ref()),
        host_data.as_ref(),
    );
    let total_secs = t0.elapsed().as_secs_f64();
    let date = util::stdout_of(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let header = header(&machine, &command, &date, total_secs);
    let full = format!("{header}\n{md}");
    fs::write(out_dir.join("bench.md"), &full)
        .with_context(|| format!("cannot write {}", out_dir.join("bench.md").display()))?;
    let out = Output {
        command: command.clone(),
        date,
        total_secs,
        machine: &machine,
        goals: &goals,
        guest_plan: guest_data.as_ref().map(|_| GuestPlanOut {
            reps: plan.reps,
            modes: plan.modes.clone(),
            workloads: plan.workloads.clone(),
        }),
        guest_error: guest_error.clone(),
        guest_summary: summary.as_ref(),
        guest: guest_data.as_ref(),
        host: host_data.as_ref(),
    };
    fs::write(
        out_dir.join("bench.json"),
        serde_json::to_string_pretty(&out)?,
    )
    .with_context(|| format!("cannot write {}", out_dir.join("bench.json").display()))?;
    println!("{full}");
    step(format!(
        "wrote bench.md and bench.json in {} ({:.0} s in all)",
        out_dir.display(),
        total_secs
    ));
    if opts.docs {
        write_docs(&root.join("docs/benchmarks.md"), &full)?;
    }
    if let Some(e) = guest_error {
        anyhow::bail!("the guest half failed: {e}");
    }
    if let Some(h) = &host_data
        && !h.errors.is_empty()
    {
        anyhow::bail!("host measurements failed: {}", h.errors.join("; "));
    }
    Ok(())
}

/// The `--baseline` binary, checked (it must be able to trace) and copied
/// as `out_dir/refscope-baseline`, the name the guest runs it by.
fn baseline_binary(path: &Path, out_dir: &Path) -> anyhow::Result<PathBuf> {
    if !path.is_file() {
        anyhow::bail!("--baseline {}: no such file", path.display());
    }
    build::check_programs(path).context("--baseline: that refscope cannot trace")?;
    let to = out_dir.join(guest::BASELINE_BIN);
    fs::copy(path, &to)
        .with_context(|| format!("cannot copy {} to {}", path.display(), to.display()))?;
    note(format!(
        "baseline: {} runs as `{}` (mode baseline)",
        path.display(),
        guest::BASELINE_BIN
    ));
    Ok(to)
}

/// How long the guest may take: boot and capacity steps, and a budget per
/// (repetition, mode) of four workloads with attaching and detaching
/// (about 3 times what a quiet host needs).
fn guest_timeout(plan: &guest::Plan, quick: bool) -> Duration {
    let per = if quick { 30 } else { 45 };
    Duration::from_secs(300 + (plan.reps * plan.modes.len()) as u64 * per)
}

/// The command line as published: what follows `bench`, with a path given
/// to `--baseline` reduced to its file name (no machine paths in the docs).
fn public_command(args: impl Iterator<Item = String>) -> String {
    let mut out = vec!["cargo xtask bench".to_owned()];
    let mut path_next = false;
    for a in args.skip_while(|a| a != "bench").skip(1) {
        let name = |p: &str| {
            Path::new(p)
                .file_name()
                .map_or_else(|| p.to_owned(), |n| n.to_string_lossy().into_owned())
        };
        if path_next {
            out.push(name(&a));
            path_next = false;
        } else if let Some(p) = a.strip_prefix("--baseline=") {
            out.push(format!("--baseline={}", name(p)));
        } else {
            path_next = a == "--baseline";
            out.push(a);
        }
    }
    out.join(" ")
}

fn header(m: &Machine, command: &str, date: &str, secs: f64) -> String {
    format!(
        "Run `{command}` on {date}, {:.0} min in all.\n\
         Host: {} ({} CPUs), {:.0} GiB RAM, Linux {}, {}, {}; load average {} at the start, {} at the end.\n\
         Guest: Linux {} under QEMU ({}), 2 vCPUs, 2 GiB, ext4 -o dax on emulated pmem.\n",
        secs / 60.0,
        m.cpu,
        m.cpus,
        m.memory_gib,
        m.host_kernel,
        m.qemu,
        m.rustc,
        m.load_start.map_or("?".into(), |l| format!("{l:.1}")),
        m.load_end.map_or("?".into(), |l| format!("{l:.1}")),
        m.guest_kernel.as_deref().unwrap_or("(not run)"),
        m.accel.as_deref().unwrap_or("-"),
    )
}

fn machine(accel: Option<String>, guest_kernel: Option<String>) -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("unknown CPU")
        .to_owned();
    let memory_gib = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let first_line = |cmd: &mut Command| {
        util::stdout_of(cmd)
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
            .unwrap_or_else(|| "unknown".into())
    };
    Machine {
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib,
        host_kernel: first_line(Command::new("uname").arg("-r")),
        qemu: first_line(Command::new("qemu-system-x86_64").arg("--version")),
        rustc: first_line(Command::new("rustc").arg("--version")),
        accel,
        guest_kernel: guest_kernel.filter(|k| !k.is_empty()),
        load_start: None,
        load_end: None,
    }
}

fn loadavg() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

const BEGIN: &str = "<!-- bench:begin (cargo xtask bench --docs) -->";
const END: &str = "<!-- bench:end -->";

/// Replace the text between the markers of `path` with `table`.
fn write_docs(path: &Path, table: &str) -> anyhow::Result<()> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (Some(a), Some(b)) = (text.find(BEGIN), text.find(END)) else {
        anyhow::bail!(
            "{} has no table markers ({BEGIN} ... {END})",
            path.display()
        );
    };
    let new = format!("{}{BEGIN}\n{table}{}", &text[..a], &text[b..]);
    fs::write(path, new).with_context(|| format!("cannot write {}", path.display()))?;
    step(format!("{} table rewritten", path.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::public_command;

    #[test]
    fn the_published_command_has_no_machine_path() {
        let args = |s: &str| {
            s.split(' ')
                .map(String::from)
                .collect::<Vec<_>>()
                .into_iter()
        };
        assert_eq!(
            public_command(args(
                "--no-setup bench --docs --baseline /tmp/x/refscope-old --reps 7"
            )),
            "cargo xtask bench --docs --baseline refscope-old --reps 7"
        );
        assert_eq!(
            public_command(args("bench --baseline=/a/b/refscope-base")),
            "cargo xtask bench --baseline=refscope-base"
        );
    }
}
