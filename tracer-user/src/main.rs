//! `refscope`: live eBPF tracer of page reference counts for device memory.
//!
//! This file only parses the command line, sets up logging and maps errors
//! to exit codes; each subcommand lives in its own module.

use std::process::ExitCode;

use refscope::{
    bench_floor,
    cli::{Cli, Command},
    doctor, export, live, record, report,
};

fn main() -> ExitCode {
    let cli = Cli::parse_checked();
    match cli.command {
        // The live view routes logs away from the terminal it owns.
        Command::Live(_) => live::init_logging(cli.verbose),
        _ => init_logging(cli.verbose),
    }
    let traces = match &cli.command {
        Command::Record(_) | Command::Doctor(_) | Command::BenchFloor(_) => true,
        Command::Live(args) => args.replay.is_none(),
        Command::Report(_) | Command::Export(_) => false,
    };
    if traces && let Some(notice) = refscope::probe::no_programs_notice() {
        eprintln!("{notice}");
    }
    let result = match cli.command {
        Command::Live(args) => live::run(args),
        Command::Record(args) => record::run(args),
        Command::Report(args) => report::run(args),
        Command::Export(args) => export::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::BenchFloor(args) => bench_floor::run(args),
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
            // Other crates' (aya's) debug output only from -vvvv on: it is
            // long and slows loading down.
            let own = m.target().starts_with("refscope");
            m.level() <= self.0
                && (own
                    || m.level() <= log::Level::Info
                    || self.0 == log::LevelFilter::Trace && m.level() <= log::Level::Debug)
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
