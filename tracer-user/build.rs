//! Builds the eBPF programs (tracer-ebpf) and leaves the object in OUT_DIR,
//! where `src/probe/object.rs` embeds it with `include_bytes_aligned!`.
//!
//! bpf-linker is looked up on PATH, then in refscope's tool cache (where
//! `cargo xtask setup` installs it). Without it the build still succeeds
//! (so `cargo check`, `cargo clippy` and rust-analyzer work on a machine
//! without the eBPF toolchain), with a warning, and the resulting binary
//! refuses to trace with an error that says how to fix it, and says so in
//! `--version` and in the first line of `record`, `live` and `doctor`.
//! `REFSCOPE_SKIP_EBPF=1` skips the eBPF build on purpose.
//! `REFSCOPE_REQUIRE_EBPF=1` (set by every `cargo xtask` build) makes a
//! missing bpf-linker an error instead: no xtask path produces a refscope
//! that cannot trace.

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow};

const OBJECT: &str = "refscope-ebpf";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=REFSCOPE_SKIP_EBPF");
    println!("cargo:rerun-if-env-changed=REFSCOPE_REQUIRE_EBPF");
    println!("cargo:rerun-if-env-changed=REFSCOPE_CACHE_DIR");
    println!("cargo:rerun-if-env-changed=PATH");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let object = out_dir.join(OBJECT);

    if env::var("REFSCOPE_SKIP_EBPF").is_ok_and(|v| v == "1" || v == "true") {
        return stub(&object, "REFSCOPE_SKIP_EBPF is set");
    }
    let Some(linker_dir) = find_bpf_linker() else {
        return stub(
            &object,
            "bpf-linker was not found on PATH or in the refscope tool cache; run `cargo xtask setup`",
        );
    };
    // aya-build runs `rustup run nightly cargo build` for the eBPF crate,
    // which finds the linker through PATH.
    let mut path = OsString::from(&linker_dir);
    if let Some(old) = env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { env::set_var("PATH", path) };
    // aya-build turns every line its cargo prints on stderr into a
    // `cargo:warning`, which cargo shows again on every later build: quiet
    // that cargo, so warnings mean warnings (compiler diagnostics still come
    // through, from its JSON messages).
    // SAFETY: as above.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };

    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir.join("../tracer-ebpf");
    let ebpf_dir = ebpf_dir
        .canonicalize()
        .with_context(|| format!("failed to find {}", ebpf_dir.display()))?;
    let root_dir = ebpf_dir.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context("failed to build the eBPF programs (tracer-ebpf)")?;
    if !object.exists() {
        return Err(anyhow!("the eBPF build produced no {}", object.display()));
    }
    println!(
        "cargo:rustc-env=REFSCOPE_VERSION={}",
        env::var("CARGO_PKG_VERSION")?
    );
    Ok(())
}

/// Leave an empty object: the binary reports it at run time. Unless the
/// programs are required, in which case this is the build's error.
fn stub(object: &Path, why: &str) -> anyhow::Result<()> {
    if env::var("REFSCOPE_REQUIRE_EBPF").is_ok_and(|v| v == "1" || v == "true") {
        return Err(anyhow!(
            "refscope's eBPF programs cannot be built: {why}. \
             (REFSCOPE_REQUIRE_EBPF is set: `cargo xtask` never builds a refscope that cannot trace; \
             `cargo xtask setup` installs bpf-linker, or drop --no-setup)"
        ));
    }
    println!("cargo:warning=refscope is built WITHOUT its eBPF programs: {why}");
    // `--version` and the tracing commands say so (src/probe/mod.rs).
    println!("cargo:rustc-env=REFSCOPE_NO_EBPF={why}");
    println!(
        "cargo:rustc-env=REFSCOPE_VERSION={} (built WITHOUT its eBPF programs: it cannot trace)",
        env::var("CARGO_PKG_VERSION")?
    );
    fs::write(object, b"").with_context(|| format!("failed to write {}", object.display()))
}

/// The directory holding `bpf-linker`, if any.
fn find_bpf_linker() -> Option<PathBuf> {
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            if dir.join("bpf-linker").is_file() {
                return Some(dir);
            }
        }
    }
    let cache = match env::var_os("REFSCOPE_CACHE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let base = env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            base.join("refscope")
        }
    };
    // `cargo xtask setup` installs into tools/bpf-linker-<version>-<llvm>/bin
    // and points tools/bpf-linker at the current one.
    let dir = cache.join("tools/bpf-linker/bin");
    println!("cargo:rerun-if-changed={}", dir.display());
    dir.join("bpf-linker").is_file().then_some(dir)
}
