//! Helpers shared by the subcommands: paths, running commands, progress lines.

use std::{
    env,
    ffi::OsStr,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use anyhow::{Context as _, bail};

/// Environment variable overriding the cache directory.
pub const CACHE_ENV: &str = "REFSCOPE_CACHE_DIR";

/// The host triple every refscope binary is built for. Building with an
/// explicit `--target` keeps `+crt-static` away from build scripts and
/// proc-macros, and gives one static binary that runs on the host and in the
/// guest's initramfs alike.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Root of the workspace (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    // xtask lives in <root>/xtask.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where tools and downloads are cached: `$REFSCOPE_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/refscope`, else `~/.cache/refscope`.
pub fn cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = env::var_os(CACHE_ENV) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("refscope"));
    }
    match env::var_os("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".cache/refscope")),
        None => bail!("neither {CACHE_ENV}, XDG_CACHE_HOME nor HOME is set; set {CACHE_ENV}"),
    }
}

/// One line of progress on stderr.
pub fn step(msg: impl AsRef<str>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "==> {}", msg.as_ref());
}

/// A note on stderr, indented under the current step.
pub fn note(msg: impl AsRef<str>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "    {}", msg.as_ref());
}

/// Run `cmd`, inheriting stdio; fail with the command line if it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to run {}", display(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", display(cmd));
    }
    Ok(())
}

/// Run `cmd` and capture its output; fail (with its stderr) if it fails.
pub fn output(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run {}", display(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}\n{}",
            display(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(out)
}

/// Stdout of `cmd` as a string.
pub fn stdout_of(cmd: &mut Command) -> anyhow::Result<String> {
    let out = output(cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `cmd` as a shell-ish line, for messages.
pub fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&quote(arg));
    }
    s
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if s.is_empty() || s.contains([' ', '"', '\'', '$']) {
        format!("'{}'", s.replace('\'', r"'\''"))
    } else {
        s.into_owned()
    }
}

/// Whether we run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Whether we run in CI (`CI=true`).
pub fn in_ci() -> bool {
    env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}
