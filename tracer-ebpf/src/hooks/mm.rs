//! Unmap and address-space teardown.

use super::*;

#[derive(Clone, Copy)]
pub struct UnmapSpec {
    pub hook: HookId,
    pub vma: usize,
    pub start: usize,
    pub end: usize,
}

/// A range of a tracked address space is being zapped. Reported at entry,
/// before any page of it is released, so userspace drops the shadow
/// mappings before it sees the frees they cause.
#[inline(always)]
pub fn unmap_entry(spec: &UnmapSpec, a: &Args, kprobe: bool) {
    let mm = vma_mm(a[spec.vma]);
    if !is_tracked_mm(mm) {
        return;
    }
    let mut ev = new_event(EventKind::Unmap, spec.hook, kprobe);
    ev.mm = mm;
    ev.vaddr = a[spec.start];
    ev.vaddr_end = a[spec.end];
    submit(ev);
}

/// `exit_mmap(mm)`: the address space is going away.
#[inline(always)]
pub fn exit_mmap_entry(a: &Args, kprobe: bool) {
    let mm = a[0];
    if !is_tracked_mm(mm) {
        return;
    }
    let mut ev = new_event(EventKind::MmExit, HookId::ExitMmap, kprobe);
    ev.mm = mm;
    submit(ev);
    untrack_mm(mm);
}
