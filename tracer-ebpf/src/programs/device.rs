//! Programs of the device lifecycle hooks.

use super::super::*;

// ---------------------------------------------------------------- devices --

// memremap_pages(struct dev_pagemap *pgmap, int nid) -> void *
check!(HookId::MemremapPages, Fexit, Some(2), memremap_pages_fexit);
#[fexit]
pub fn memremap_pages_fexit(ctx: FExitContext) -> u32 {
    let a = args::<_, 2>(&ctx);
    hooks::memremap_exit(Some(&a), ctx.ret::<u64>().unwrap_or(0), false);
    0
}
check!(HookId::MemremapPages, Kprobe, None, memremap_pages_kprobe);
#[kprobe]
pub fn memremap_pages_kprobe(ctx: ProbeContext) -> u32 {
    hooks::stash_args(HookId::MemremapPages, &kprobe_args(&ctx));
    0
}
check!(
    HookId::MemremapPages,
    Kretprobe,
    None,
    memremap_pages_kretprobe
);
#[kretprobe]
pub fn memremap_pages_kretprobe(ctx: RetProbeContext) -> u32 {
    hooks::memremap_exit(None, ctx.ret::<u64>(), true);
    0
}

// memunmap_pages(struct dev_pagemap *pgmap)
entry_hook!(
    HookId::MemunmapPages,
    1,
    memunmap_pages_fentry,
    memunmap_pages_kprobe,
    |a, k| { hooks::memunmap_entry(&a, k) }
);
check!(HookId::MemunmapPages, Fexit, Some(1), memunmap_pages_fexit);
#[fexit]
pub fn memunmap_pages_fexit(ctx: FExitContext) -> u32 {
    let a = args::<_, 1>(&ctx);
    hooks::memunmap_exit(Some(&a), false);
    0
}
check!(
    HookId::MemunmapPages,
    Kretprobe,
    None,
    memunmap_pages_kretprobe
);
#[kretprobe]
pub fn memunmap_pages_kretprobe(_ctx: RetProbeContext) -> u32 {
    hooks::memunmap_exit(None, true);
    0
}

// kill_dax(struct dax_device *dax_dev)
entry_hook!(
    HookId::KillDax,
    1,
    kill_dax_fentry,
    kill_dax_kprobe,
    |a, k| { hooks::dax_entry(HookId::KillDax, EventKind::DaxKill, &a, k) }
);

// dax_holder_notify_failure(struct dax_device *dax_dev, u64 off, u64 len, int mf_flags)
entry_hook!(
    HookId::DaxHolderNotifyFailure,
    4,
    dax_holder_notify_failure_fentry,
    dax_holder_notify_failure_kprobe,
    |a, k| hooks::dax_entry(
        HookId::DaxHolderNotifyFailure,
        EventKind::HolderNotify,
        &a,
        k
    )
);
