//! refscope's eBPF programs.
//!
//! For every hooked kernel function there is an fentry/fexit pair and a
//! kprobe/kretprobe pair running the same logic (`hooks.rs`); userspace picks
//! one attach type per function at start-up, from what the running kernel
//! offers. Program names are `<function without leading underscores>_<type>`,
//! e.g. `insert_pfn_fexit`. The names, kinds and arities are declared once,
//! in `refscope_common::hooks`, and every program here is checked against
//! that table at compile time (`check!`), every map against its names
//! (`abi_name!`).
#![no_std]
#![no_main]

/// Compile time: the item `$name` (a map's static, whose name is the map's
/// name in the object, or a program) has the name the ABI declares.
macro_rules! abi_name {
    ($name:ident, $abi:path) => {
        const _: () = assert!(
            refscope_common::hooks::str_eq(stringify!($name), $abi),
            concat!(
                stringify!($name),
                ": not the name refscope_common declares for it"
            )
        );
    };
}

mod emit;
mod floor;
mod hooks;
mod kernel;
mod snapshot;

use aya_ebpf::{EbpfContext, helpers::generated::bpf_get_func_arg};
use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use hooks::{
    Addr, Args, GrabRet, GrabSpec, MapSpec, PutFlags, PutSpec, Refs, Ret, Target, UnmapSpec, Write,
};
use refscope_common::{EventKind, HookId, PMD_ORDER, PUD_ORDER, Prog, STASH_ARGS};

/// The first `N` arguments of an fentry/fexit program, as plain integers.
///
/// Read with `bpf_get_func_arg` (5.17+) rather than from the context: a
/// context read of a `struct page *` argument yields a typed BTF pointer,
/// on which the verifier forbids the arithmetic pfn conversion needs (and
/// storing it in a map), while the helper hands back a scalar. It also
/// checks the index at run time, so functions whose arity differs between
/// kernels can share a program (`N` = the largest arity).
#[inline(always)]
fn args<C: EbpfContext, const N: usize>(ctx: &C) -> Args {
    let mut a: Args = [0; STASH_ARGS];
    let mut i = 0;
    while i < N && i < STASH_ARGS {
        let mut v = 0u64;
        // SAFETY: the helper writes one u64 to `v` or fails.
        if unsafe { bpf_get_func_arg(ctx.as_ptr(), i as u32, &mut v) } == 0 {
            a[i] = v;
        }
        i += 1;
    }
    a
}

#[inline(always)]
fn kprobe_args(ctx: &ProbeContext) -> Args {
    let mut a: Args = [0; STASH_ARGS];
    let mut i = 0;
    while i < STASH_ARGS {
        a[i] = ctx.arg(i).unwrap_or(0);
        i += 1;
    }
    a
}

/// Compile time: program `$name` of kind `$prog`, reading `$n` arguments
/// (`None`: a kprobe's registers), is what the ABI's hook table declares
/// for `$hook` (name, kind, arity; see `refscope_common::hooks::expects`).
macro_rules! check {
    ($hook:expr, $prog:ident, $n:expr, $name:ident) => {
        const _: () = assert!(
            refscope_common::hooks::expects($hook, Prog::$prog, $n, stringify!($name)),
            concat!(
                stringify!($name),
                ": not what refscope_common::HOOKS declares for its hook"
            )
        );
    };
}

/// A map hook: fexit alone in fentry mode; kprobe + kretprobe otherwise.
macro_rules! map_hook {
    ($spec:expr, $n:literal, $fexit:ident, $kprobe:ident, $kretprobe:ident) => {
        check!($spec.hook, Fexit, Some($n), $fexit);
        check!($spec.hook, Kprobe, None, $kprobe);
        check!($spec.hook, Kretprobe, None, $kretprobe);
        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            let a = args::<_, $n>(&ctx);
            hooks::map_exit(&$spec, Some(&a), ctx.ret::<u64>().ok(), false);
            0
        }
        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            hooks::map_entry(&$spec, &kprobe_args(&ctx));
            0
        }
        #[kretprobe]
        pub fn $kretprobe(ctx: RetProbeContext) -> u32 {
            hooks::map_exit(&$spec, None, Some(ctx.ret::<u64>()), true);
            0
        }
    };
}

/// A hook with both halves in either mode: `$entry(&spec, &args)` and
/// `$exit(spec, args, ret, kprobe)`.
macro_rules! grab_hook {
    ($spec:expr, $n:literal, $fentry:ident, $fexit:ident, $kprobe:ident, $kretprobe:ident) => {
        check!($spec.hook, Fentry, Some($n), $fentry);
        check!($spec.hook, Fexit, Some($n), $fexit);
        check!($spec.hook, Kprobe, None, $kprobe);
        check!($spec.hook, Kretprobe, None, $kretprobe);
        #[fentry]
        pub fn $fentry(ctx: FEntryContext) -> u32 {
            hooks::grab_entry(&$spec, &args::<_, $n>(&ctx));
            0
        }
        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            let a = args::<_, $n>(&ctx);
            let ret = ctx.ret::<u64>().unwrap_or(0);
            hooks::grab_exit(&ctx, &$spec, Some(&a), ret, false);
            0
        }
        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            hooks::grab_entry(&$spec, &kprobe_args(&ctx));
            0
        }
        #[kretprobe]
        pub fn $kretprobe(ctx: RetProbeContext) -> u32 {
            let ret = ctx.ret::<u64>();
            hooks::grab_exit(&ctx, &$spec, None, ret, true);
            0
        }
    };
}

macro_rules! put_hook {
    ($spec:expr, $n:literal, $fentry:ident, $fexit:ident, $kprobe:ident, $kretprobe:ident) => {
        check!($spec.hook, Fentry, Some($n), $fentry);
        check!($spec.hook, Fexit, Some($n), $fexit);
        check!($spec.hook, Kprobe, None, $kprobe);
        check!($spec.hook, Kretprobe, None, $kretprobe);
        #[fentry]
        pub fn $fentry(ctx: FEntryContext) -> u32 {
            hooks::put_entry(&$spec, &args::<_, $n>(&ctx));
            0
        }
        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            let a = args::<_, $n>(&ctx);
            hooks::put_exit(&$spec, Some(&a), ctx.ret::<u64>().ok(), false);
            0
        }
        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            hooks::put_entry(&$spec, &kprobe_args(&ctx));
            0
        }
        #[kretprobe]
        pub fn $kretprobe(ctx: RetProbeContext) -> u32 {
            hooks::put_exit(&$spec, None, Some(ctx.ret::<u64>()), true);
            0
        }
    };
}

/// Entry programs of `$hook`: `$body(args, kprobe)`.
macro_rules! entry_hook {
    ($hook:expr, $n:literal, $fentry:ident, $kprobe:ident, |$a:ident, $k:ident| $body:expr) => {
        check!($hook, Fentry, Some($n), $fentry);
        check!($hook, Kprobe, None, $kprobe);
        #[fentry]
        pub fn $fentry(ctx: FEntryContext) -> u32 {
            let $a = args::<_, $n>(&ctx);
            let $k = false;
            $body;
            0
        }
        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            let $a = kprobe_args(&ctx);
            let $k = true;
            $body;
            0
        }
    };
}

// The programs: after the macros above, which they use.
mod programs;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program with a reachable panic path, so this
    // is never called; it only has to exist for no_std.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
