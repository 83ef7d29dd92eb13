//! `refscope`: live eBPF tracer of page reference counts for device memory.
//!
//! This file only parses the command line, sets up logging and maps errors
//! to exit codes; each subcommand lives in its own module.

use std::process::ExitCode;

use clap::Parser as _;

mod cli;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Live(_) => not_yet("live"),
        Command::Record(_) => not_yet("record"),
        Command::Report(_) => not_yet("report"),
        Command::Export(_) => not_yet("export"),
        Command::Doctor(_) => not_yet("doctor"),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("refscope: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn not_yet(what: &str) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`refscope {what}` is not implemented in this build yet")
}
