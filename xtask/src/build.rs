//! `cargo xtask build`: the static `refscope` and workload binaries (with the
//! eBPF object embedded), for the host and the guest alike.

use std::{path::PathBuf, process::Command};

use clap::Parser;

use crate::{
    setup,
    util::{TARGET, run, step, workspace_root},
};

#[derive(Debug, Parser)]
pub struct Options {
    /// Do not run `setup` first.
    #[arg(long)]
    pub no_setup: bool,
}

/// The built binaries.
pub struct Built {
    pub refscope: PathBuf,
    pub workload: PathBuf,
}

pub fn run_build(opts: &Options) -> anyhow::Result<Built> {
    if !opts.no_setup {
        setup::run_setup(&setup::Options { no_apt: false })?;
    }
    build()
}

/// `cargo <args> --release --target TARGET` with static linking.
pub fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(workspace_root())
        .args(args)
        .args(["--release", "--target", TARGET])
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        );
    cmd
}

pub fn build() -> anyhow::Result<Built> {
    step("building refscope and the scenario workloads (static, release)");
    run(&mut cargo(&[
        "build",
        "--locked",
        "-p",
        "refscope",
        "-p",
        "refscope-workload",
    ]))?;
    let dir = workspace_root().join("target").join(TARGET).join("release");
    Ok(Built {
        refscope: dir.join("refscope"),
        workload: dir.join("refscope-workload"),
    })
}
