//! refscope's task runner: `cargo xtask <subcommand>` (alias in .cargo/config.toml).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod build;
mod clippy;
mod demo;
mod fuzz;
mod guest_tests;
mod scenarios;
mod setup;
mod soak;
mod test;
mod util;
mod vm;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, test and demo refscope",
    after_help = "Every subcommand that builds refscope or boots a guest first installs what it \
                  needs, idempotently and quietly when all is there: Debian packages (apt-get, \
                  with sudo when not root: QEMU, busybox, kmod, mkfs tools, tmux, python3-venv), \
                  the nightly's rust-src, bpf-linker built against the nightly's LLVM (minutes, \
                  once), and, for `test`, a Python venv for the export readers. Guest kernels are \
                  downloaded (pinned, SHA-256 checked) the first time a guest boots them. \
                  Everything goes under ~/.cache/refscope (REFSCOPE_CACHE_DIR overrides it). \
                  --no-setup skips the installs, for the inner loop."
)]
struct Cli {
    /// Do not install anything first (setup's checks are skipped too).
    #[arg(long, global = true)]
    no_setup: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install what building and testing needs (apt packages, rust-src,
    /// bpf-linker); idempotent.
    Setup(setup::Options),
    /// Build the static refscope and workload binaries (eBPF object embedded).
    Build(build::Options),
    /// Run all tests: unit tests, then guest tests; prints a summary.
    Test(test::Options),
    /// Lint the host crates and the eBPF crate.
    Clippy(clippy::Options),
    /// Boot a pinned Debian kernel in QEMU with emulated pmem and a DAX
    /// filesystem at /mnt/dax, and run a command in it (docs/vm.md).
    Vm(vm::Options),
    /// refscope on a DAX workload in a guest: record, then the report
    /// (--tui: the live view).
    Demo(demo::Options),
    /// The end-to-end truth table: scenarios x kernels, checked against
    /// tests/scenarios.json (--table rewrites the README table).
    Scenarios(scenarios::Options),
    /// Benchmarks: tracing overhead in a guest (vs untraced and tracefs
    /// kprobes), pipeline capacity, host-side throughput and memory
    /// (docs/benchmarks.md). Not part of `test`.
    Bench(bench::Options),
    /// Fuzz the trace reader and the event decoder (cargo-fuzz, nightly)
    /// for a bounded time each; crashes go to fuzz/regressions/.
    Fuzz(fuzz::Options),
    /// Memory over a long recording: >= 10 minutes of DAX churn in a
    /// guest, refscope's RSS sampled, a plateau required (not in `test`).
    Soak(soak::Options),
}

impl Cmd {
    /// What must be installed before this subcommand runs. The one place
    /// that decides it: a subcommand that builds refscope needs bpf-linker
    /// (no xtask path builds refscope without its eBPF programs), one that
    /// boots a guest needs the Debian packages too.
    fn needs(&self) -> setup::Needs {
        use setup::Needs;
        match self {
            // `setup` installs everything itself (it has --no-apt).
            Cmd::Setup(_) => Needs::default(),
            Cmd::Test(_) => Needs::ALL,
            Cmd::Build(_) | Cmd::Clippy(_) => Needs::BUILD,
            Cmd::Vm(_) | Cmd::Demo(_) | Cmd::Scenarios(_) | Cmd::Bench(_) | Cmd::Soak(_) => {
                Needs::GUEST
            }
            Cmd::Fuzz(_) => Needs::NIGHTLY,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.no_setup
        && let Err(err) = setup::ensure(cli.command.needs())
    {
        eprintln!("xtask: error: {err:#}");
        eprintln!("xtask: (installing what this command needs failed; see above)");
        return ExitCode::FAILURE;
    }
    let result = match &cli.command {
        Cmd::Setup(o) => setup::run_setup(o),
        Cmd::Build(o) => build::run_build(o).map(|b| {
            println!("{}", b.refscope.display());
            println!("{}", b.workload.display());
        }),
        Cmd::Test(o) => test::run_test(o),
        Cmd::Clippy(o) => clippy::run_clippy(o),
        Cmd::Scenarios(o) => scenarios::run_cli(o),
        Cmd::Bench(o) => bench::run_bench(o),
        Cmd::Fuzz(o) => fuzz::run_fuzz(o),
        Cmd::Soak(o) => soak::run_soak(o),
        // Its exit status is the guest command's.
        Cmd::Vm(o) => match vm::run_cli(o) {
            Ok(code) => return code,
            Err(err) => Err(err),
        },
        Cmd::Demo(o) => match demo::run_demo(o) {
            Ok(code) => return code,
            Err(err) => Err(err),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
