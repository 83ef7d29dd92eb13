//! The kernel side, seen from userspace: which hooks to attach on this
//! kernel (`plan`), the programs' configuration from BTF (`config`), and
//! loading/attaching (`loader`, the only aya user besides the reader and
//! `snapshot`, the kernel half of the attach-time snapshot).

pub mod config;
pub mod loader;
pub mod plan;
pub mod ringbuf;
pub mod snapshot;

use refscope_common::DropStats;

/// Where the kernel's per-CPU drop counters come from (the programs' map,
/// [`loader::DropCounters`]; a plain list in tests). No aya type crosses
/// it, so what reads the counters can be tested without a kernel.
pub trait DropSource {
    /// Each CPU's counters, or `None` when they cannot be read now.
    fn per_cpu(&self) -> Option<Vec<DropStats>>;
}

impl DropSource for Vec<DropStats> {
    fn per_cpu(&self) -> Option<Vec<DropStats>> {
        Some(self.clone())
    }
}

/// Why this binary was built without its eBPF programs (tracer-user's
/// build.rs), or `None` when they are embedded.
pub const BUILT_WITHOUT_PROGRAMS: Option<&str> = option_env!("REFSCOPE_NO_EBPF");

/// The line `record`, `live` and `doctor` print first when the binary
/// cannot trace, before anything else can go wrong.
pub fn no_programs_notice() -> Option<String> {
    BUILT_WITHOUT_PROGRAMS.map(|why| {
        format!(
            "refscope: this binary was built WITHOUT its eBPF programs ({why}): it cannot trace. \
             Build it with `cargo xtask build` (installs bpf-linker), or `cargo xtask setup` then rebuild."
        )
    })
}

/// The useful part of a load error: the verifier's complaint is the line(s)
/// just before its "processed N insns" statistics; keep those.
pub fn verifier_summary(err: &str) -> String {
    let err = err
        .trim_end()
        .trim_end_matches("Verifier output:")
        .trim_end();
    let lines: Vec<&str> = err.lines().collect();
    match lines.iter().position(|l| l.starts_with("processed ")) {
        Some(i) => {
            let first = lines.first().copied().unwrap_or_default();
            let why = lines[i.saturating_sub(3)..i].join(" | ");
            format!("{first} ... {why}")
        }
        None => lines[lines.len().saturating_sub(4)..].join(" | "),
    }
}
