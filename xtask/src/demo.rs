//! `cargo xtask demo`: refscope on a DAX workload in a guest, end to end,
//! with one command.
//!
//! Builds refscope and the workloads, boots the default kernel with an
//! fsdax namespace, starts `refscope record`, runs a workload
//! that maps DAX pages and pins some of them, stops the recording and prints
//! the report (findings, and the timeline of each page involved). With
//! `--tui`, `refscope live` runs on the terminal instead, sized to it.

use std::{fs::File, process::Command, process::ExitCode};

use clap::Parser;

use crate::{
    util::{note, step},
    vm::{self, KernelChoice, VmConfig},
};

#[derive(Debug, Parser)]
pub struct Options {
    /// Kernel to run on (a pinned tag, see `cargo xtask vm --help`).
    #[arg(long, value_name = "TAG")]
    pub kernel: Option<String>,
    /// Show the live view (`refscope live`) instead of record + report.
    #[arg(long)]
    pub tui: bool,
    /// Do not build first; use the binaries in target/.
    #[arg(long)]
    pub no_build: bool,
}

/// Record while the workload runs, then report. Each stage says what it
/// does; if one fails the demo says which and stops with its status.
const RECORD_AND_REPORT: &str = r#"
stage() { printf '\n== %s\n' "$*"; }
stage "refscope doctor: can this kernel be traced?"
refscope doctor | sed -n '1p;$p'
stage "refscope record, in the background"
refscope record --quiet -o /tmp/demo.jsonl --ready-file /tmp/ready 2>/tmp/record.log &
rec=$!
i=0
while [ ! -e /tmp/ready ]; do
    if ! kill -0 $rec 2>/dev/null || [ $i -gt 600 ]; then
        echo "refscope record did not get ready:" >&2
        cat /tmp/record.log >&2
        exit 1
    fi
    i=$((i + 1))
    sleep 0.1
done
echo "attached"
stage "workload: map 8 DAX pages on /mnt/dax, pin 2 of them (process_vm_readv)"
if ! refscope-workload gup-pin 2 --pages 8 >/dev/null; then
    echo "(refscope-workload gup-pin failed; mapping 4 MiB with vm-touch instead)"
    vm-touch /mnt/dax/demo 4
fi
kill -INT $rec
wait $rec || { echo "refscope record failed:" >&2; cat /tmp/record.log >&2; exit 1; }
stage "refscope report"
refscope report /tmp/demo.jsonl
"#;

/// The live view, with the workload in the background.
fn live_script(rows: u16, cols: u16) -> String {
    format!(
        r#"stty rows {rows} cols {cols}
dmesg -n 1
(sleep 3; refscope-workload churn --seconds 3600 --pin >/dev/null 2>&1 || vm-touch /mnt/dax/demo 4 --hold 3600 >/dev/null) &
refscope live
"#
    )
}

pub fn run_demo(opts: &Options) -> anyhow::Result<ExitCode> {
    let binaries = vm::guest_binaries(opts.no_build)?;
    let kernel = match &opts.kernel {
        Some(k) => k.clone(),
        None => vm::default_kernel()?,
    };
    let script = if opts.tui {
        let (rows, cols) = terminal_size().unwrap_or((24, 80));
        live_script(rows, cols)
    } else {
        RECORD_AND_REPORT.to_owned()
    };
    let mut cfg = VmConfig::new(
        KernelChoice::Pinned(kernel.clone()),
        Some(vec!["sh".into(), "-c".into(), script]),
    );
    cfg.binaries = binaries;
    cfg.tty = opts.tui;
    step(format!(
        "demo on kernel {kernel}: ext4 with DAX on emulated pmem{}",
        if opts.tui {
            " (live view; quit it to power off)"
        } else {
            ""
        }
    ));
    let outcome = vm::run(&cfg)?;
    if opts.tui {
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(b) = outcome.boot_secs {
        note(format!(
            "{kernel}: boot-to-command {b:.1} s, total {:.1} s",
            outcome.total_secs
        ));
    }
    if outcome.verdict(false).is_err() {
        eprint!("{}", outcome.failure_report(false));
    }
    Ok(ExitCode::from(outcome.exit_code(false)))
}

/// Rows and columns of the controlling terminal, if there is one.
fn terminal_size() -> Option<(u16, u16)> {
    let tty = File::open("/dev/tty").ok()?;
    let out = Command::new("stty").arg("size").stdin(tty).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|n| n.parse().ok());
    Some((it.next()??, it.next()??))
}
