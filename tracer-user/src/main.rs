//! `refscope`: live eBPF tracer of page reference counts for device memory.
//!
//! This file only parses the command line, sets up logging and maps errors
//! to exit codes; each subcommand lives in its own module.

use std::process::ExitCode;

use clap::Parser as _;

use refscope::{
    cli::{Cli, Command},
    doctor, record, report,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Live(_) => not_yet("live"),
        Command::Record(args) => record::run(args),
        Command::Report(args) => report::run(args),
        Command::Export(_) => not_yet("export"),
        Command::Doctor(args) => doctor::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("refscope: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Diagnostics go to stderr, prefixed, at warn level unless -v.
fn init_logging(verbose: u8) {
    struct Stderr(log::LevelFilter);
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.level() <= self.0
        }
        fn log(&self, r: &log::Record<'_>) {
            if self.enabled(r.metadata()) {
                eprintln!(
                    "refscope: {}: {}",
                    r.level().as_str().to_lowercase(),
                    r.args()
                );
            }
        }
        fn flush(&self) {}
    }
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    if log::set_boxed_logger(Box::new(Stderr(level))).is_ok() {
        log::set_max_level(level);
    }
}

fn not_yet(what: &str) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`refscope {what}` is not implemented in this build yet")
}
