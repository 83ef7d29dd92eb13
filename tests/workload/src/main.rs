//! Scenario workloads for refscope's guest tests (see docs/workload.md).
//!
//! Each subcommand maps device memory (a file on an FS-DAX mount, or a
//! device-dax device), drives one kernel path (PTE/PMD faults, GUP pins,
//! fork, layout breaks, long-term pins, device removal) and prints one JSON
//! object per line on stdout describing what it did and what a tracer
//! should see. Progress goes to stderr.

mod ctx;
mod json;
mod pagemap;
mod scenarios;
mod sys;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{
    ctx::{Ctx, GlobalArgs},
    scenarios::{bench, devdax, gup, layout, touch, unplug},
};

#[derive(Debug, Parser)]
#[command(
    name = "refscope-workload",
    version,
    about = "Scenario workloads that exercise device-page mappings, pins and unplug",
    after_help = "Every scenario prints JSON lines on stdout: a `ready` line at its hold point and a \
                  final `done` line per process, each with scenario, event, pid, t_ns (CLOCK_MONOTONIC), \
                  mappings [{vaddr, pfn, order, file, offset, pm, device}] and pins. \
                  See docs/workload.md."
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Map file(s) on the DAX mount, touch N pages (PTE faults), unmap.
    PteTouch(touch::PteTouch),
    /// A 2 MiB-aligned mapping of a 2 MiB-aligned extent: a PMD fault.
    PmdTouch(touch::PmdTouch),
    /// Pin K of N mapped pages with process_vm_readv (FOLL_PIN).
    GupPin(gup::GupPin),
    /// O_DIRECT read from a non-DAX block device into a DAX-mapped buffer
    /// (fast GUP).
    Odirect(gup::Odirect),
    /// A shared DAX mapping inherited across fork; both processes touch.
    Fork(touch::Fork),
    /// Truncate a mapped file, optionally while page references are held.
    TruncateMapped(layout::TruncateMapped),
    /// Punch a hole in a mapped file, optionally while references are held.
    PunchHole(layout::PunchHole),
    /// io_uring fixed buffers (FOLL_LONGTERM) on DAX memory: refused on
    /// fsdax; reported, not an error.
    LongtermPin(gup::LongtermPin),
    /// Map and touch, then (or while the test) unbind the pmem device.
    UnplugMapped(unplug::UnplugMapped),
    /// Map and touch, move the mapping with mremap next to an untouched
    /// neighbour, then (or while the test) unbind the pmem device.
    UnplugMremap(unplug::UnplugMremap),
    /// Copy-on-write in a private DAX mapping, then the unbind.
    UnplugCow(unplug::UnplugCow),
    /// fork of a process holding a private DAX mapping, then the unbind.
    UnplugForkPrivate(unplug::UnplugForkPrivate),
    /// fork of a process holding a shared DAX mapping with a guard region
    /// (VM_MAYBE_GUARD: fork copies its page table), then unbind.
    UnplugForkGuard(unplug::UnplugForkGuard),
    /// Map a device-dax device (/dev/daxX.Y), touch, pin, unmap.
    Devdax(devdax::DevDax),
    /// Continuous map/touch/unmap for soak tests.
    Churn(bench::Churn),
    /// Keep faulting new DAX pages (a tracer attaches meanwhile).
    SnapshotChurn(touch::SnapshotChurn),
    /// Fault throughput: map a large DAX file, touch every page, unmap.
    FaultBench(bench::FaultBench),
    /// Pin throughput: process_vm_readv over mapped DAX pages.
    PinBench(bench::PinBench),
    /// The fault-bench baseline on anonymous memory (no device memory).
    AnonBench(bench::AnonBench),
    /// fork + exec + wait loop (no device memory): process churn.
    ExecBench(bench::ExecBench),
}

impl Cmd {
    fn name(&self) -> &'static str {
        match self {
            Cmd::PteTouch(_) => "pte-touch",
            Cmd::PmdTouch(_) => "pmd-touch",
            Cmd::GupPin(_) => "gup-pin",
            Cmd::Odirect(_) => "odirect",
            Cmd::Fork(_) => "fork",
            Cmd::TruncateMapped(_) => "truncate-mapped",
            Cmd::PunchHole(_) => "punch-hole",
            Cmd::LongtermPin(_) => "longterm-pin",
            Cmd::UnplugMapped(_) => "unplug-mapped",
            Cmd::UnplugMremap(_) => "unplug-mremap",
            Cmd::UnplugCow(_) => "unplug-cow",
            Cmd::UnplugForkPrivate(_) => "unplug-fork-private",
            Cmd::UnplugForkGuard(_) => "unplug-fork-guard",
            Cmd::Devdax(_) => "devdax",
            Cmd::Churn(_) => "churn",
            Cmd::SnapshotChurn(_) => "snapshot-churn",
            Cmd::FaultBench(_) => "fault-bench",
            Cmd::PinBench(_) => "pin-bench",
            Cmd::AnonBench(_) => "anon-bench",
            Cmd::ExecBench(_) => "exec-bench",
        }
    }
}

fn run(ctx: &Ctx, cmd: &Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::PteTouch(a) => touch::pte_touch(ctx, a),
        Cmd::PmdTouch(a) => touch::pmd_touch(ctx, a),
        Cmd::GupPin(a) => gup::gup_pin(ctx, a),
        Cmd::Odirect(a) => gup::odirect(ctx, a),
        Cmd::Fork(a) => touch::fork(ctx, a),
        Cmd::TruncateMapped(a) => layout::truncate_mapped(ctx, a),
        Cmd::PunchHole(a) => layout::punch_hole(ctx, a),
        Cmd::LongtermPin(a) => gup::longterm_pin(ctx, a),
        Cmd::UnplugMapped(a) => unplug::unplug_mapped(ctx, a),
        Cmd::UnplugMremap(a) => unplug::unplug_mremap(ctx, a),
        Cmd::UnplugCow(a) => unplug::unplug_cow(ctx, a),
        Cmd::UnplugForkPrivate(a) => unplug::unplug_fork_private(ctx, a),
        Cmd::UnplugForkGuard(a) => unplug::unplug_fork_guard(ctx, a),
        Cmd::Devdax(a) => devdax::devdax(ctx, a),
        Cmd::Churn(a) => bench::churn(ctx, a),
        Cmd::SnapshotChurn(a) => touch::snapshot_churn(ctx, a),
        Cmd::FaultBench(a) => bench::fault_bench(ctx, a),
        Cmd::PinBench(a) => bench::pin_bench(ctx, a),
        Cmd::AnonBench(a) => bench::anon_bench(ctx, a),
        Cmd::ExecBench(a) => bench::exec_bench(ctx, a),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = sys::install_signal_handlers() {
        eprintln!("refscope-workload: error: {e:#}");
        return ExitCode::FAILURE;
    }
    sys::arm_timeout(cli.global.timeout);
    let ctx = Ctx::new(cli.global.clone(), cli.cmd.name());
    match run(&ctx, &cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "refscope-workload[{}] {}: error: {e:#}",
                sys::getpid(),
                ctx.scenario
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_typical_invocations() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("refscope-workload").chain(args.iter().copied()))
        };
        assert!(parse(&["pte-touch", "8"]).is_ok());
        assert!(parse(&["pte-touch", "8", "--files", "2", "--reverse", "--read"]).is_ok());
        assert!(parse(&["pte-touch", "8", "--read", "--write"]).is_err());
        assert!(parse(&["pte-touch", "8", "--files", "2", "--reverse", "--pin", "3"]).is_ok());
        assert!(parse(&["pte-touch", "8", "--map-sync", "--no-fill", "--keep-files"]).is_ok());
        assert!(
            parse(&[
                "pte-touch",
                "8",
                "--hold-until",
                "/tmp/x",
                "--ready-file",
                "/tmp/r"
            ])
            .is_ok()
        );
        assert!(
            parse(&[
                "--dir", "/tmp", "gup-pin", "2", "--pages", "8", "--reader", "child"
            ])
            .is_ok()
        );
        assert!(parse(&["gup-pin", "2", "--reader", "self"]).is_ok());
        assert!(parse(&["unplug-mapped", "4", "--unbind", "pfn0.0", "--hold-signal"]).is_ok());
        assert!(
            parse(&[
                "unplug-mremap",
                "8",
                "--adjacent",
                "2",
                "--unbind",
                "pfn0.0"
            ])
            .is_ok()
        );
        assert!(parse(&["unplug-mremap", "--adjacent", "0", "--munmap"]).is_ok());
        assert!(parse(&["devdax", "/dev/dax0.0", "--align", "2M"]).is_ok());
        assert!(parse(&["fault-bench", "--size", "64", "--rounds", "2"]).is_ok());
        assert!(parse(&["fault-bench", "--size", "1G"]).is_ok());
        assert!(parse(&["churn", "--seconds", "1.5"]).is_ok());
        assert!(parse(&["churn", "--pause", "50ms"]).is_ok());
        assert!(
            parse(&[
                "truncate-mapped",
                "8",
                "--hold-ref",
                "vmsplice",
                "--release-after",
                "500ms"
            ])
            .is_ok()
        );
        assert!(parse(&["punch-hole", "8", "--hole-start", "2", "--hole-pages", "2"]).is_ok());
        assert!(parse(&["odirect", "4", "--source", "loop", "--pre-touch", "none"]).is_ok());
        assert!(parse(&["longterm-pin", "--devdax", "/dev/dax0.0"]).is_ok());
        assert!(parse(&["snapshot-churn", "--pages", "100", "--interval", "1ms"]).is_ok());
        assert!(parse(&["anon-bench", "--size", "8", "--pins"]).is_ok());
        assert!(parse(&["pin-bench", "--anon"]).is_ok());
        assert!(parse(&["exec-bench", "--count", "10", "--program", "/bin/true"]).is_ok());
        assert!(parse(&["fault-bench", "--size", "8", "--rate", "5000"]).is_ok());
        assert!(parse(&["nope"]).is_err());
    }
}
