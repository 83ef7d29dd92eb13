//! The command line. Parsing only: every subcommand's behaviour lives in its
//! own module.

use std::{path::PathBuf, time::Duration};

use clap::{
    Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum,
    builder::PossibleValuesParser, error::ErrorKind,
};
use refscope_core::analysis::RuleId;

#[derive(Debug, Parser)]
#[command(
    name = "refscope",
    version = env!("REFSCOPE_VERSION"),
    about = "Live eBPF tracer of page reference counts for device memory (FS-DAX, device-dax, ZONE_DEVICE)",
    long_about = "refscope shows, for each device page (FS-DAX on pmem/CXL, device-dax, other \
                  ZONE_DEVICE memory), who mapped it, who pinned it, its reference count at each \
                  step, and whether a PTE still points at it when it should not.\n\n\
                  Tracing (live, record, doctor's checks) needs root (CAP_BPF + CAP_PERFMON + \
                  CAP_SYS_ADMIN) and a kernel with BTF. report and export work anywhere."
)]
pub struct Cli {
    /// More diagnostics on stderr (-v: info, -vv: debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Live view of device pages, mappings, pins and findings (ratatui).
    Live(LiveArgs),
    /// Record a trace to a file (JSON Lines) and print findings as they happen.
    Record(RecordArgs),
    /// Analyse a recorded trace: findings with the timeline of each page.
    Report(ReportArgs),
    /// Convert a trace for offline analysis (Perfetto, Parquet, filtered JSONL).
    Export(ExportArgs),
    /// Check whether this kernel and these privileges can trace, and how.
    Doctor(DoctorArgs),
    /// For `cargo xtask bench` only (hidden): attach an empty program
    /// wherever `record` would attach one of refscope's, and wait for
    /// SIGINT/SIGTERM/SIGHUP.
    #[command(name = "bench-floor", hide = true)]
    BenchFloor(BenchFloorArgs),
}

/// Options shared by everything that attaches to the kernel.
#[derive(Debug, Clone, Args)]
pub struct TraceOpts {
    /// Only trace mappings and pins made by these processes (repeatable).
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Only trace mappings and pins made by processes with this command name
    /// (as the kernel keeps it: at most 15 bytes).
    #[arg(long, value_name = "NAME", value_parser = parse_comm)]
    pub comm: Option<String>,

    /// Size of the kernel-to-userspace ring buffer (bytes; K/M/G suffixes;
    /// rounded up to a power of two, 4K to 1G).
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_ringbuf_size)]
    pub ringbuf_size: u64,

    /// How to attach: fentry/fexit where the kernel allows (default), or
    /// kprobes everywhere.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach: AttachMode,

    /// Write kernel addresses (mm, struct page, pgmap) as they are instead of
    /// hashing them with a per-trace secret salt.
    #[arg(long)]
    pub raw_kernel_addresses: bool,

    /// Do not seed the state with mappings that exist at attach time.
    #[arg(long)]
    pub no_snapshot: bool,

    /// Capture a kernel stack for each GUP reference (who pinned the page).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub gup_stacks: bool,

    /// Events kept per page in the timeline.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub timeline: usize,

    /// Pages tracked at most: past it the least recently used idle pages
    /// are forgotten (and counted as evicted), so memory stays bounded.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PAGES, value_parser = parse_max_pages)]
    pub max_pages: usize,

    /// Findings kept at most (with their timelines); later ones are only
    /// counted, so memory stays bounded on kernels where every mapping is
    /// a finding.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_FINDINGS)]
    pub max_findings: usize,

    /// Compare the shadow of device mappings with the kernel's page tables
    /// every SECS seconds, correct it and record each divergence (0: only
    /// to confirm findings, and once at the end).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_AUDIT_INTERVAL, value_parser = parse_audit_interval)]
    pub audit_interval: f64,

    /// Never read page tables: no drift is measured, and findings that
    /// accuse a mapping are reported unconfirmed.
    #[arg(long)]
    pub no_audit: bool,

    /// Do not attach this logical hook (e.g. `cow`; `refscope doctor`
    /// lists them): to rule a hook out, or to see what the audit reports
    /// without it. Repeatable.
    #[arg(long = "skip-hook", value_name = "NAME")]
    pub skip_hooks: Vec<String>,
}

/// `--audit-interval` by default (its cost: docs/benchmarks.md).
pub const DEFAULT_AUDIT_INTERVAL: f64 = 10.0;

fn parse_audit_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds (0 or more)")),
    }
}

/// `--max-pages` by default (what the caps cost in memory:
/// docs/reliability.md).
pub const DEFAULT_MAX_PAGES: usize = 1_000_000;
/// `--max-findings` by default.
pub const DEFAULT_MAX_FINDINGS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AttachMode {
    /// fentry/fexit where available, kprobes otherwise, per function.
    Auto,
    /// kprobes/kretprobes only.
    Kprobe,
    /// fentry/fexit only (fail where unavailable).
    Fentry,
}

#[derive(Debug, Args)]
pub struct LiveArgs {
    #[command(flatten)]
    pub trace: TraceOpts,

    /// Also record the trace to this file.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,

    /// Create this file once every hook is attached and the mappings that
    /// existed are seen (for scripts).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,

    /// Show a recorded trace instead of the live kernel.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = [
            "output", "force", "pids", "comm", "ringbuf_size", "attach",
            "raw_kernel_addresses", "no_snapshot", "gup_stacks", "ready_file",
        ]
    )]
    pub replay: Option<PathBuf>,

    /// Replay speed: 1 = real time, 0 = as fast as possible (0.01 to 10000).
    #[arg(long, value_name = "X", default_value_t = 1.0, requires = "replay", value_parser = parse_speed)]
    pub speed: f64,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub trace: TraceOpts,

    /// Trace file to write (JSON Lines). Created 0600; never overwritten
    /// unless --force.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: PathBuf,

    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,

    /// Stop after this many seconds (default: until SIGINT/SIGTERM/SIGHUP).
    #[arg(short, long, value_name = "SECONDS", value_parser = parse_duration)]
    pub duration: Option<f64>,

    /// Create this file once every hook is attached (for scripts).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,

    /// Do not print findings to stderr as they happen.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Trace file written by `refscope record` or `refscope live -o`.
    pub file: PathBuf,

    /// One JSON document on stdout instead of text.
    #[arg(long)]
    pub json: bool,

    /// Only findings of this rule (repeatable).
    #[arg(long = "rule", value_name = "ID", value_parser = rule_ids())]
    pub rules: Vec<String>,

    /// Only this page.
    #[arg(long, value_name = "PFN", value_parser = parse_u64)]
    pub pfn: Option<u64>,

    /// Only findings involving this process.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Events kept per page in the timeline.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub timeline: usize,

    /// Pages tracked at most (as for `record`): memory stays bounded on
    /// any trace.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PAGES, value_parser = parse_max_pages)]
    pub max_pages: usize,

    /// Findings kept at most (as for `record`); later ones are only counted.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_FINDINGS)]
    pub max_findings: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Perfetto,
    Parquet,
    Jsonl,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Trace file written by `refscope record`.
    pub file: PathBuf,

    #[arg(short, long, value_enum)]
    pub format: ExportFormat,

    /// Output file (for parquet: a directory, or a file prefix).
    #[arg(short = 'o', long, value_name = "OUT")]
    pub output: PathBuf,

    /// Replace the output if it exists.
    #[arg(long)]
    pub force: bool,

    /// Only events of this process.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Only pages in START-END (inclusive; decimal or 0x hex).
    #[arg(long, value_name = "START-END", value_parser = parse_pfn_range)]
    pub pfn_range: Option<(u64, u64)>,

    /// Only events at or after this many seconds into the trace.
    #[arg(long, value_name = "SECONDS", value_parser = parse_offset)]
    pub since: Option<f64>,

    /// Only events before this many seconds into the trace.
    #[arg(long, value_name = "SECONDS", value_parser = parse_offset)]
    pub until: Option<f64>,

    /// Only pages with a finding of this rule.
    #[arg(long = "rule", value_name = "ID", value_parser = rule_ids())]
    pub rules: Vec<String>,
}

/// `refscope bench-floor`: what the benchmark's `floor` mode runs
/// (docs/benchmarks.md).
#[derive(Debug, Args)]
pub struct BenchFloorArgs {
    /// The plan of `record --attach MODE`: the empty programs go where
    /// its programs would, with the same kinds (fentry/fexit or
    /// kprobe/kretprobe).
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach: AttachMode,

    /// As for `record`: leave this logical hook out (repeatable).
    #[arg(long = "skip-hook", value_name = "NAME")]
    pub skip_hooks: Vec<String>,

    /// Create this file once every program is attached (for scripts).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

impl Cli {
    /// Parse the command line, then check what clap cannot express (one
    /// argument against another, the filesystem): misuse is reported the
    /// way clap reports it (usage, exit status 2), before anything runs.
    pub fn parse_checked() -> Cli {
        let mut cmd = Cli::command();
        let cli = cmd
            .try_get_matches_from_mut(std::env::args_os())
            .and_then(|m| Cli::from_arg_matches(&m))
            .unwrap_or_else(|e| e.exit());
        if let Err((sub, kind, msg)) = cli.check() {
            let mut sub_cmd = cmd.find_subcommand_mut(sub).cloned().unwrap_or(cmd);
            sub_cmd = sub_cmd.bin_name(format!("refscope {sub}"));
            sub_cmd.error(kind, msg).exit();
        }
        cli
    }

    /// Conflicts between values: `(subcommand, kind, message)`.
    pub fn check(&self) -> Result<(), (&'static str, ErrorKind, String)> {
        match &self.command {
            Command::Export(a) => {
                if let (Some(s), Some(u)) = (a.since, a.until)
                    && s >= u
                {
                    return Err((
                        "export",
                        ErrorKind::ArgumentConflict,
                        format!("--since {s} must be before --until {u}"),
                    ));
                }
                if same_file(&a.file, &a.output) {
                    return Err((
                        "export",
                        ErrorKind::ArgumentConflict,
                        format!(
                            "the output {} is the input trace: refscope would destroy what it reads",
                            a.output.display()
                        ),
                    ));
                }
            }
            Command::Record(a) => {
                if let Some(r) = &a.ready_file
                    && (r == &a.output || same_file(r, &a.output))
                {
                    return Err((
                        "record",
                        ErrorKind::ArgumentConflict,
                        format!(
                            "--ready-file {} is the output trace: it would overwrite it",
                            r.display()
                        ),
                    ));
                }
            }
            Command::Live(LiveArgs {
                ready_file: Some(r),
                output: Some(o),
                ..
            }) if r == o || same_file(r, o) => {
                return Err((
                    "live",
                    ErrorKind::ArgumentConflict,
                    format!(
                        "--ready-file {} is the output trace: it would overwrite it",
                        r.display()
                    ),
                ));
            }
            Command::Live(_) | Command::Report(_) | Command::Doctor(_) | Command::BenchFloor(_) => {
            }
        }
        Ok(())
    }
}

/// Whether two paths name the same existing file.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// `--rule`: one of the rule ids.
fn rule_ids() -> PossibleValuesParser {
    PossibleValuesParser::new(RuleId::ALL.iter().map(|r| r.id()))
}

/// `--comm`: the kernel keeps 15 bytes of a command name (TASK_COMM_LEN
/// 16 with the NUL); a longer name would silently match nothing.
pub fn parse_comm(s: &str) -> Result<String, String> {
    match s.len() {
        0 => Err("an empty command name matches nothing".into()),
        1..=15 => Ok(s.to_owned()),
        n => Err(format!(
            "`{s}` is {n} bytes; the kernel keeps the first 15 bytes of a command name: use `{}`",
            s.get(..15).unwrap_or(s)
        )),
    }
}

/// `--duration`: a positive, representable number of seconds.
pub fn parse_duration(s: &str) -> Result<f64, String> {
    let d: f64 = s
        .trim()
        .parse()
        .map_err(|e| format!("`{s}` is not a number of seconds: {e}"))?;
    if d.is_nan() || d <= 0.0 || Duration::try_from_secs_f64(d).is_err() {
        return Err(format!(
            "`{s}` is not a usable duration: give a positive number of seconds"
        ));
    }
    Ok(d)
}

/// `--since`, `--until`: seconds into the trace, 0 or more.
pub fn parse_offset(s: &str) -> Result<f64, String> {
    let d: f64 = s
        .trim()
        .parse()
        .map_err(|e| format!("`{s}` is not a number of seconds: {e}"))?;
    if d.is_nan() || d < 0.0 || d.is_infinite() {
        return Err(format!("`{s}` is not a non-negative number of seconds"));
    }
    Ok(d)
}

/// `--speed`: 0 (as fast as possible) or a factor from 0.01 to 10000.
pub fn parse_speed(s: &str) -> Result<f64, String> {
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|e| format!("`{s}` is not a number: {e}"))?;
    if x == 0.0 || (0.01..=10_000.0).contains(&x) {
        Ok(x)
    } else {
        Err(format!(
            "`{s}`: give 0 (as fast as possible) or a factor from 0.01 to 10000"
        ))
    }
}

/// `--ringbuf-size`: [`parse_size`], at most 1G (the largest ring buffer
/// refscope maps).
pub fn parse_ringbuf_size(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if n > 1 << 30 {
        return Err(format!("`{s}` is larger than the largest ring buffer, 1G"));
    }
    Ok(n)
}

/// `--max-pages`: at least 1.
pub fn parse_max_pages(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("at least one page must be tracked".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("`{s}` is not a number of pages: {e}")),
    }
}

/// `4096`, `0x1000`.
pub fn parse_u64(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("`{s}` is not a number: {e}"))
}

/// `START-END`, inclusive, START <= END.
pub fn parse_pfn_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("`{s}` is not a range; expected START-END, e.g. 0x48000-0x48fff"))?;
    let (start, end) = (parse_u64(a)?, parse_u64(b)?);
    if start > end {
        return Err(format!("range start {start:#x} is after its end {end:#x}"));
    }
    Ok((start, end))
}

/// `16M`, `4096`, `1G`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|e| format!("`{s}` is not a size: {e}"))?;
    n.checked_mul(mult)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("`{s}` is not a usable size"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_and_ranges() {
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("x").is_err());
        assert_eq!(parse_pfn_range("0x10-0x20"), Ok((0x10, 0x20)));
        assert!(parse_pfn_range("0x20-0x10").is_err());
        assert!(parse_pfn_range("12").is_err());
        assert_eq!(parse_u64("0x1000"), Ok(4096));
    }
}
