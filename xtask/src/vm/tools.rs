//! Small guest helpers built by xtask (not workspace crates): compiled with
//! `rustc` from a single std-only source file into a static binary, cached
//! by the hash of source and compiler.

use std::{fs, path::PathBuf, process::Command};

use anyhow::Context as _;

use super::apt::sha256;
use crate::util::{self, TARGET, step};

const VM_TOUCH: &str = include_str!("vm-touch.rs");
const VM_PTY: &str = include_str!("vm-pty.rs");
const VM_RUNAS: &str = include_str!("vm-runas.rs");

/// `/bin/vm-touch` (see vm-touch.rs).
pub fn vm_touch() -> anyhow::Result<PathBuf> {
    build("vm-touch", VM_TOUCH)
}

/// Every helper, for the guest's `/bin`: vm-touch, vm-pty (a command on a
/// pseudo-terminal of its own) and vm-runas (as another user, with chosen
/// capabilities).
pub fn all() -> anyhow::Result<Vec<PathBuf>> {
    Ok(vec![
        vm_touch()?,
        build("vm-pty", VM_PTY)?,
        build("vm-runas", VM_RUNAS)?,
    ])
}

fn build(name: &str, source: &str) -> anyhow::Result<PathBuf> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = util::stdout_of(Command::new(&rustc).arg("-V")).with_context(|| {
        format!("`{rustc} -V` failed; the guest helper {name} is built with rustc")
    })?;
    let key = sha256(format!("{source}\n{version}\n{TARGET}").as_bytes());
    let dir = util::cache_dir()?.join("vm/tools");
    // <cache>/vm/tools/<key>/<name>: installed in the guest by file name.
    let out = dir.join(&key[..16]).join(name);
    if out.is_file() {
        return Ok(out);
    }
    step(format!("building the guest helper {name}"));
    let parent = out.parent().context("no parent")?;
    fs::create_dir_all(parent).with_context(|| format!("failed to create {}", parent.display()))?;
    let src = dir.join(format!("{name}.rs"));
    fs::write(&src, source).with_context(|| format!("failed to write {}", src.display()))?;
    let tmp = out.with_extension("tmp");
    util::output(
        Command::new(&rustc)
            .args(["--edition", "2024", "--crate-name", &name.replace('-', "_")])
            .args(["-C", "opt-level=2", "-C", "target-feature=+crt-static"])
            .args(["--target", TARGET, "-o"])
            .arg(&tmp)
            .arg(&src),
    )
    .with_context(|| format!("failed to compile the guest helper {name}"))?;
    fs::rename(&tmp, &out).with_context(|| format!("failed to move {}", tmp.display()))?;
    Ok(out)
}
