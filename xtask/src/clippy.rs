//! `cargo xtask clippy`: lint the host crates, then the eBPF crate for its
//! own target (it cannot be linted for the host).

use std::process::Command;

use clap::Parser;

use crate::util::{run, step, workspace_root};

#[derive(Debug, Parser)]
pub struct Options {
    /// Extra arguments for clippy (after `--`), e.g. `-D warnings`.
    #[arg(last = true)]
    pub clippy_args: Vec<String>,
}

pub fn run_clippy(opts: &Options) -> anyhow::Result<()> {
    let root = workspace_root();
    step("clippy: host crates");
    run(Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["clippy", "--locked", "--all-targets", "--"])
        .args(&opts.clippy_args))?;

    step("clippy: tracer-ebpf (bpfel-unknown-none, nightly)");
    // From inside tracer-ebpf/ so its rust-toolchain.toml (nightly) and
    // .cargo/config.toml (target, build-std) apply.
    run(Command::new("rustup")
        .current_dir(root.join("tracer-ebpf"))
        .args(["run", "nightly", "cargo", "clippy", "--locked", "--bins"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "--cfg=bpf_target_arch=\"x86_64\"",
        )
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .arg("--")
        .args(&opts.clippy_args))?;
    Ok(())
}
