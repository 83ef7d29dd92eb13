//! The floor: empty programs, one per kind. They return at once, touch no
//! map and call no helper, so what they cost where they are attached is the
//! attachment's own cost (the fentry/fexit trampoline, or the kprobe's
//! trap) plus an empty program's call: no tracer on the same hooks can cost
//! less. `refscope bench-floor` attaches a copy of the matching one
//! wherever refscope's plan attaches a hook's program (docs/benchmarks.md,
//! "floor"). Never attached by `record` or `live`.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};

abi_name!(floor_fentry, refscope_common::programs::FLOOR_FENTRY);
abi_name!(floor_fexit, refscope_common::programs::FLOOR_FEXIT);
abi_name!(floor_kprobe, refscope_common::programs::FLOOR_KPROBE);
abi_name!(floor_kretprobe, refscope_common::programs::FLOOR_KRETPROBE);

#[fentry]
pub fn floor_fentry(_ctx: FEntryContext) -> u32 {
    0
}

#[fexit]
pub fn floor_fexit(_ctx: FExitContext) -> u32 {
    0
}

#[kprobe]
pub fn floor_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[kretprobe]
pub fn floor_kretprobe(_ctx: RetProbeContext) -> u32 {
    0
}
