//! The command line. Parsing only: every subcommand's behaviour lives in its
//! own module.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "refscope",
    version,
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
}

/// Options shared by everything that attaches to the kernel.
#[derive(Debug, Clone, Args)]
pub struct TraceOpts {
    /// Only trace mappings and pins made by these processes (repeatable).
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Only trace mappings and pins made by processes with this command name.
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,

    /// Size of the kernel-to-userspace ring buffer (bytes; K/M/G suffixes).
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_size)]
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
}

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

    /// Show a recorded trace instead of the live kernel.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["output", "pids", "comm"])]
    pub replay: Option<PathBuf>,

    /// Replay speed: 1 = real time, 0 = as fast as possible.
    #[arg(long, value_name = "X", default_value_t = 1.0, requires = "replay")]
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

    /// Stop after this many seconds (default: until SIGINT/SIGTERM).
    #[arg(short, long, value_name = "SECONDS")]
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
    #[arg(long = "rule", value_name = "ID")]
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
    #[arg(long, value_name = "SECONDS")]
    pub since: Option<f64>,

    /// Only events before this many seconds into the trace.
    #[arg(long, value_name = "SECONDS")]
    pub until: Option<f64>,

    /// Only pages with a finding of this rule.
    #[arg(long = "rule", value_name = "ID")]
    pub rules: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
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
