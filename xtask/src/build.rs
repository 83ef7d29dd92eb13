//! `cargo xtask build`: the static `refscope` and workload binaries (with the
//! eBPF object embedded), for the host and the guest alike.
//!
//! No xtask path produces a refscope without its eBPF programs: every cargo
//! run here sets `REFSCOPE_REQUIRE_EBPF=1`, which turns tracer-user's
//! build-script fallback (an empty object, for `cargo check` and clippy on a
//! machine without bpf-linker) into an error, and every refscope a guest is
//! given is checked ([`check_programs`]).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::Parser;

use crate::util::{self, TARGET, run, step, workspace_root};

#[derive(Debug, Parser)]
pub struct Options {}

/// The built binaries.
pub struct Built {
    pub refscope: PathBuf,
    pub workload: PathBuf,
}

pub fn run_build(_: &Options) -> anyhow::Result<Built> {
    build()
}

/// `cargo <args> --release --target TARGET` with static linking, the eBPF
/// programs required.
pub fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(workspace_root())
        .args(args)
        .args(["--release", "--target", TARGET])
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        )
        .env("REFSCOPE_REQUIRE_EBPF", "1");
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
    let dir = util::release_dir();
    let built = Built {
        refscope: dir.join("refscope"),
        workload: dir.join("refscope-workload"),
    };
    check_programs(&built.refscope)?;
    Ok(built)
}

/// What a refscope built without its eBPF programs says in `--version`
/// (tracer-user/build.rs).
pub const NO_PROGRAMS_MARK: &str = "WITHOUT its eBPF programs";

/// Fail unless `refscope` has its eBPF programs embedded (asked of the
/// binary itself: it is static and runs on the host).
pub fn check_programs(refscope: &Path) -> anyhow::Result<()> {
    let out = util::output(Command::new(refscope).arg("--version"))
        .with_context(|| format!("cannot run {} --version", refscope.display()))?;
    let version = String::from_utf8_lossy(&out.stdout);
    if version.contains(NO_PROGRAMS_MARK) {
        bail!(
            "{} was built without its eBPF programs ({}): it cannot trace. \
             Rebuild it with `cargo xtask build` (which installs bpf-linker first), \
             not with a plain `cargo build` on a machine without bpf-linker",
            refscope.display(),
            version.trim()
        );
    }
    Ok(())
}
