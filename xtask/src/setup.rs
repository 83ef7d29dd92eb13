//! `cargo xtask setup`: install what building and testing refscope needs.
//!
//! Idempotent and quiet when everything is present; one progress line per
//! step otherwise. Everything downloaded or built goes under the cache
//! directory (see `util::cache_dir`), so a second run is fast.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::Parser;

use crate::util::{self, Progress, Unit, cache_dir, note, output, run, stdout_of, step};

/// Debian packages the build, the VM harness and the tests use.
pub const APT_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "boots the test kernels"),
    ("cpio", "inspects initramfs images"),
    (
        "binutils",
        "objcopy strips debug info from the guest's binaries",
    ),
    ("kmod", "module dependency data"),
    ("xz-utils", "decompresses kernel modules"),
    ("zstd", "decompresses kernel packages"),
    ("busybox-static", "the guest userland"),
    ("e2fsprogs", "mke2fs for the guest's ext4"),
    ("xfsprogs", "mkfs.xfs for the guest's XFS"),
    (
        "debian-archive-keyring",
        "verifies the pinned guest kernels' packages",
    ),
    ("tmux", "drives the live view in end-to-end tests"),
    (
        "python3-venv",
        "the independent readers used by export tests",
    ),
];

/// The bpf-linker release refscope builds with.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// Crates `cargo install` compiles for it, and how long that took on a
/// 2-core machine: the progress line's estimate before it has a rate.
const BPF_LINKER_CRATES: u64 = 65;
const BPF_LINKER_BUILD_TIME: std::time::Duration = std::time::Duration::from_secs(150);

#[derive(Debug, Parser)]
pub struct Options {
    /// Skip the apt packages (for machines where they are managed elsewhere).
    #[arg(long)]
    pub no_apt: bool,
}

/// What a subcommand needs installed before it runs. `main` decides this
/// once per subcommand ([`crate::Cmd::needs`]); nothing else calls setup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// The Debian packages of [`APT_PACKAGES`] (QEMU, busybox, mkfs, ...).
    pub apt: bool,
    /// The nightly toolchain with rust-src.
    pub nightly: bool,
    /// bpf-linker (implies `nightly`): building refscope with its programs.
    pub bpf_linker: bool,
    /// The export tests' Python venv.
    pub python: bool,
}

impl Needs {
    /// Everything: `setup` and `test`.
    pub const ALL: Self = Self {
        apt: true,
        nightly: true,
        bpf_linker: true,
        python: true,
    };
    /// Building refscope with its eBPF programs.
    pub const BUILD: Self = Self {
        apt: false,
        nightly: true,
        bpf_linker: true,
        python: false,
    };
    /// Building refscope and booting guests.
    pub const GUEST: Self = Self {
        apt: true,
        ..Self::BUILD
    };
    /// The nightly toolchain alone (fuzzing).
    pub const NIGHTLY: Self = Self {
        apt: false,
        nightly: true,
        bpf_linker: false,
        python: false,
    };
}

/// `cargo xtask setup`.
pub fn run_setup(opts: &Options) -> anyhow::Result<()> {
    ensure(Needs {
        apt: !opts.no_apt,
        ..Needs::ALL
    })
}

/// Install what `needs` asks for: idempotent, silent when all is present,
/// one progress line per step that has work to do.
pub fn ensure(needs: Needs) -> anyhow::Result<()> {
    if needs.apt {
        apt_packages()?;
    }
    if needs.nightly || needs.bpf_linker {
        rust_toolchains()?;
    }
    if needs.bpf_linker {
        bpf_linker()?;
    }
    if needs.python {
        python_venv()?;
    }
    Ok(())
}

/// Python packages of the export tests' independent readers
/// (tests/export): Perfetto's published schema (`perfetto_trace_pb2`) and
/// DuckDB for Parquet.
pub const PYTHON_PACKAGES: &[&str] = &["perfetto==0.59.1", "protobuf==7.36.2", "duckdb==2.0.1"];

/// The export tests' venv: `<cache>/python`.
pub fn python_venv_dir() -> anyhow::Result<PathBuf> {
    Ok(cache_dir()?.join("python"))
}

/// Create the venv and install [`PYTHON_PACKAGES`] (quiet when present).
fn python_venv() -> anyhow::Result<()> {
    let dir = python_venv_dir()?;
    let python = dir.join("bin/python");
    let stamp = dir.join("refscope-requirements.txt");
    let want = PYTHON_PACKAGES.join("\n") + "\n";
    if python.is_file() && fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(());
    }
    if !util::have("python3") {
        bail!(
            "python3 is not on PATH: the export tests read refscope's Perfetto and Parquet output \
             with Python packages; install python3 and python3-venv"
        );
    }
    step(format!(
        "installing the export tests' Python packages in {} ({})",
        dir.display(),
        PYTHON_PACKAGES.join(" ")
    ));
    if !python.is_file() {
        run(Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&dir))
        .context("python3 -m venv failed; install python3-venv")?;
    }
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(PYTHON_PACKAGES))
    .context("pip install failed; check network access to PyPI")?;
    fs::write(&stamp, want).with_context(|| format!("failed to write {}", stamp.display()))
}

/// `apt-get install` whatever is missing (with sudo when not root).
fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .map(|(pkg, _)| *pkg)
        .filter(|pkg| !dpkg_installed(pkg))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(format!("installing Debian packages: {}", missing.join(" ")));
    let sudo = if util::is_root() {
        None
    } else if util::have("sudo") {
        note("not root: using sudo for apt-get");
        Some("sudo")
    } else {
        bail!(
            "these Debian packages are missing and we are not root (and there is no sudo): {}\n\
             install them as root: apt-get install {}",
            missing.join(" "),
            missing.join(" ")
        );
    };
    let apt = |args: &[&str]| {
        let mut cmd = match sudo {
            Some(sudo) => {
                let mut c = Command::new(sudo);
                c.arg("apt-get");
                c
            }
            None => Command::new("apt-get"),
        };
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-q", "-o", "Dpkg::Use-Pty=0"])
            .args(args);
        cmd
    };
    run(&mut apt(&["update", "-qq"]))
        .context("apt-get update failed; check network access to deb.debian.org")?;
    let mut install = apt(&["install", "-y", "--no-install-recommends"]);
    install.args(&missing);
    let mut progress = Progress::new(
        "apt-get install",
        Unit::Items("packages set up"),
        std::time::Duration::from_secs(90),
    );
    // "0 upgraded, 41 newly installed, ..." then a "Setting up" per package.
    util::run_with_progress(&mut install, &mut progress, |line, done, total| {
        if let Some((n, _)) = line.split_once(" newly installed")
            && let Some(n) = n.rsplit(' ').next().and_then(|n| n.parse().ok())
        {
            *total = Some(n);
        } else if line.starts_with("Setting up ") {
            *done += 1;
        }
    })
    .context("apt-get install failed")?;
    Ok(())
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.ends_with(b"install ok installed"))
}

/// The nightly toolchain with rust-src (eBPF build), and the stable one.
fn rust_toolchains() -> anyhow::Result<()> {
    if !util::have("rustup") {
        bail!(
            "rustup is not on PATH: refscope builds its eBPF programs with a rustup-managed nightly; install rustup from https://rustup.rs"
        );
    }
    let toolchains = stdout_of(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        step("installing the Rust nightly toolchain (for the eBPF programs)");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let installed = stdout_of(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        step("adding rust-src to the nightly toolchain (-Z build-std=core)");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

/// What the nightly toolchain says about itself.
struct Nightly {
    sysroot: PathBuf,
    /// Short commit hash, to key the bpf-linker build.
    commit: String,
    /// LLVM major version (bpf-linker feature `llvm-<major>`).
    llvm_major: u32,
}

fn nightly() -> anyhow::Result<Nightly> {
    let vv = stdout_of(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let field = |name: &str| {
        vv.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    let commit = field("commit-hash:").unwrap_or_default();
    let llvm = field("LLVM version:").context("`rustc +nightly -vV` printed no LLVM version")?;
    let llvm_major = llvm
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("unexpected LLVM version `{llvm}`"))?;
    let sysroot = stdout_of(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    Ok(Nightly {
        sysroot: PathBuf::from(sysroot.trim()),
        commit: commit.chars().take(9).collect(),
        llvm_major,
    })
}

/// bpf-linker, built against the nightly's own libLLVM (no system LLVM is
/// needed; the distribution's LLVM is usually the wrong major).
fn bpf_linker() -> anyhow::Result<()> {
    let tools = cache_dir()?.join("tools");
    let nightly = nightly()?;
    let name = format!(
        "bpf-linker-{BPF_LINKER_VERSION}-llvm{}-{}",
        nightly.llvm_major, nightly.commit
    );
    let prefix = tools.join(&name);
    let bin = prefix.join("bin/bpf-linker");
    let current = tools.join("bpf-linker");
    if bin.is_file()
        && Command::new(&bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        return point_link(&current, &name);
    }

    step(format!(
        "building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {} (a few minutes, once)",
        nightly.llvm_major
    ));
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("failed to create {}", lib.display()))?;
    let libllvm = fs::read_dir(nightly.sysroot.join("lib"))
        .with_context(|| format!("failed to list {}", nightly.sysroot.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") || (n.starts_with("libLLVM-") && n.ends_with(".so")))
        })
        .with_context(|| {
            format!(
                "the nightly toolchain at {} ships no libLLVM; reinstall it with `rustup toolchain install nightly`",
                nightly.sysroot.display()
            )
        })?;
    let copy = lib.join(libllvm.file_name().context("libLLVM has no file name")?);
    fs::copy(&libllvm, &copy)
        .with_context(|| format!("failed to copy {} to {}", libllvm.display(), copy.display()))?;
    let link = lib.join("libLLVM.so");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(copy.file_name().context("no file name")?, &link)
        .with_context(|| format!("failed to link {}", link.display()))?;

    let mut cmd = Command::new("cargo");
    cmd.args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--locked",
        "--root",
    ])
    .arg(&prefix)
    .args(["--no-default-features", "--features"])
    .arg(format!("llvm-{}", nightly.llvm_major))
    .env("LLVM_PREFIX", &prefix)
    // cargo install is long-winded: its "Compiling" lines feed the
    // progress line instead, and the tail is shown if it fails.
    .env("CARGO_TERM_PROGRESS_WHEN", "never")
    .env("CARGO_TERM_COLOR", "never");
    let mut progress = Progress::new(
        "bpf-linker",
        Unit::Items("crates compiled"),
        BPF_LINKER_BUILD_TIME,
    );
    util::run_with_progress(&mut cmd, &mut progress, |line, done, total| {
        if line.trim_start().starts_with("Compiling ") {
            *done += 1;
            *total = Some(BPF_LINKER_CRATES.max(*done + 1));
        }
    })
    .with_context(|| {
        format!(
            "building bpf-linker failed. It builds against the nightly's libLLVM; if the \
             nightly's LLVM major is newer than bpf-linker {BPF_LINKER_VERSION} supports, pin an \
             older nightly or raise BPF_LINKER_VERSION in xtask/src/setup.rs"
        )
    })?;
    output(Command::new(&bin).arg("--version"))
        .context("the freshly built bpf-linker does not run")?;
    point_link(&current, &name)
}

/// Point `tools/bpf-linker` at the current build (tracer-user/build.rs looks there).
fn point_link(link: &Path, target: &str) -> anyhow::Result<()> {
    if fs::read_link(link).is_ok_and(|t| t == Path::new(target)) {
        return Ok(());
    }
    let _ = fs::remove_file(link);
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("failed to link {} -> {target}", link.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// README, docs/vm.md and `cargo xtask --help` say what installs what:
    /// every Debian package setup installs is named in docs/vm.md.
    #[test]
    fn docs_name_every_package_setup_installs() {
        let vm = fs::read_to_string(util::workspace_root().join("docs/vm.md")).unwrap();
        for (pkg, _) in APT_PACKAGES {
            assert!(
                vm.contains(&format!("`{pkg}`")),
                "docs/vm.md does not name the Debian package `{pkg}` that setup installs"
            );
        }
    }
}
