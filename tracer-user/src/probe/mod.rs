//! The kernel side, seen from userspace: which hooks to attach on this
//! kernel (`plan`), the programs' configuration from BTF (`config`), and
//! loading/attaching (`loader`, the only aya user besides the reader and
//! `seed`, the kernel half of the attach-time snapshot).

pub mod config;
pub mod loader;
pub mod plan;
pub mod ringbuf;
pub mod seed;

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
