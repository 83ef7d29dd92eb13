//! What each hooked kernel function means, independent of how it is attached.
//!
//! Every hook has an entry half and a return half. fentry/fexit and
//! kprobe/kretprobe wrappers in `main.rs` call them with the function's
//! arguments; a return probe that has no arguments (kretprobe) gets them
//! from the stash its entry probe left. Userspace decides which halves to
//! attach (by `refscope_common::HOOKS`): hooks that need the refcount
//! before the call always attach both.

use aya_ebpf::EbpfContext;
use refscope_common::{
    Event, EventKind, GUP_PIN_COUNTING_BIAS, HookId, REF_UNKNOWN, STASH_ARGS, Stash, flags, pfn_t,
    pmc_caller_addrs,
};

use crate::{
    emit::{new_event, stash_present, stash_put, stash_take, submit, submit_with_stack},
    kernel::{
        Folio, add_device_range, conf, current_mm, current_passes_filter, folio_of, is_device_pfn,
        is_err_ptr, is_tracked_mm, page_to_pfn, pfn_to_page, read_u32, read_u64, track_mm,
        untrack_mm, vma_mm, vmf_vma_address,
    },
};

pub type Args = [u64; STASH_ARGS];

/// `VM_FAULT_NOPAGE`: what the vmf_insert_* family returns on success.
const VM_FAULT_NOPAGE: u64 = 0x100;

mod device;
mod gup;
mod map;
mod mm;
mod remap;

pub use device::*;
pub use gup::*;
pub use map::*;
pub use mm::*;
pub use remap::*;
