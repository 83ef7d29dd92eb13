//! Paths that change mappings outside insert and unmap.

use super::*;

/// `__split_huge_pmd(vma, pmd, address, freeze[, folio])` and
/// `__split_huge_pud(vma, pud, address)`: on a DAX VMA the huge entry
/// (`4096 << order` bytes) is cleared (and refaulted at a smaller size
/// later), outside the unmap path.
#[inline(always)]
pub fn split_huge_entry(a: &Args, kprobe: bool, hook: HookId, order: u8) {
    let mm = vma_mm(a[0]);
    if !is_tracked_mm(mm) {
        return;
    }
    let mut ev = new_event(EventKind::PmdSplit, hook, kprobe);
    ev.mm = mm;
    ev.order = order;
    ev.vaddr = a[2] & !((4096u64 << order) - 1);
    ev.vaddr_end = ev.vaddr + (4096u64 << order);
    submit(ev);
}

/// The arguments of a return-reported hook: the fexit's own, or the stash
/// its kprobe left.
#[inline(always)]
fn args_or_stash(hook: HookId, args: Option<&Args>) -> Option<Args> {
    match args {
        Some(a) => Some(*a),
        None => stash_take(hook).map(|s| s.args),
    }
}

/// `move_page_tables` returned: `ret` bytes were moved (mremap).
/// 6.x: `(vma, old_addr, new_vma, new_addr, len, ...)`, plain values the
/// function only copies. 7.x: `(struct pagetable_move_control *pmc)`, whose
/// `old_addr`/`new_addr` the function realigns and advances while it moves:
/// at return they are the end of the range, not its start. The caller's
/// addresses are derived from the fields it never writes (`old_end`,
/// `len_in`) and the lockstep of the two it does ([`pmc_caller_addrs`]
/// says why this is exact on every return path).
#[inline(always)]
pub fn move_page_tables_exit(args: Option<&Args>, ret: u64, kprobe: bool) {
    let Some(a) = args_or_stash(HookId::MovePageTables, args) else {
        return;
    };
    let (vma, old, new) = if conf!(move_pmc) != 0 {
        let pmc = a[0];
        let field = |off: u32| read_u64(pmc + off as u64);
        let (Some(vma), Some(old_addr), Some(new_addr), Some(old_end), Some(len_in)) = (
            field(conf!(pmc_old_off)),
            field(conf!(pmc_old_addr_off)),
            field(conf!(pmc_new_addr_off)),
            field(conf!(pmc_old_end_off)),
            field(conf!(pmc_len_in_off)),
        ) else {
            return;
        };
        let (old, new) = pmc_caller_addrs(old_addr, new_addr, old_end, len_in);
        (vma, old, new)
    } else {
        (a[0], a[1], a[3])
    };
    let mm = vma_mm(vma);
    if ret == 0 || !is_tracked_mm(mm) {
        return;
    }
    let mut ev = new_event(EventKind::Remap, HookId::MovePageTables, kprobe);
    ev.mm = mm;
    ev.vaddr = old;
    ev.vaddr_end = old.wrapping_add(ret);
    ev.aux = new;
    ev.ret = ret as i64;
    submit(ev);
}

/// `copy_page_range(dst_vma, src_vma)` returned (fork): when the source
/// VMA has anonymous pages, or the child's VMA has a flag that makes fork
/// copy page tables (`vma_needs_copy`: uffd-wp, guard regions, PFNMAP,
/// MIXEDMAP; `copy_on_fork_mask`), its present PTEs, DAX ones included,
/// were copied.
#[inline(always)]
pub fn copy_page_range_exit(args: Option<&Args>, ret: u64, kprobe: bool) {
    let Some(a) = args_or_stash(HookId::CopyPageRange, args) else {
        return;
    };
    let (dst, src) = (a[0], a[1]);
    let src_mm = vma_mm(src);
    if ret as i32 != 0 || !is_tracked_mm(src_mm) {
        return;
    }
    if read_u64(src + conf!(vma_anon_vma_off) as u64).unwrap_or(0) == 0
        && read_u64(dst + conf!(vma_flags_off) as u64).unwrap_or(0) & conf!(copy_on_fork_mask) == 0
    {
        // Other file mappings are not copied: the child refaults.
        return;
    }
    let mut ev = new_event(EventKind::CopyRange, HookId::CopyPageRange, kprobe);
    ev.mm = vma_mm(dst);
    ev.aux = src_mm;
    ev.vaddr = read_u64(src + conf!(vma_start_off) as u64).unwrap_or(0);
    ev.vaddr_end = read_u64(src + conf!(vma_end_off) as u64).unwrap_or(0);
    if !track_mm(ev.mm, 0) {
        ev.flags |= flags::MM_TABLE_FULL;
    }
    submit(ev);
}

/// `S_DAX` in `inode.i_flags` (include/linux/fs.h: `1 << 13` on every
/// kernel with CONFIG_FS_DAX since 4.x; a macro, so not in BTF).
const S_DAX: u32 = 1 << 13;

/// `{page,folio}_add_new_anon_rmap(page|folio, vma, address[, flags])`: a
/// new anonymous page is being mapped at `address`. When the VMA maps a DAX
/// file (private, so copy-on-write), whatever device PTE was there has just
/// been cleared (`wp_page_copy` clears it, then maps the copy; a fault that
/// lost a race never gets here): report the end of that mapping. One hook
/// covers the copy-on-write of every kernel (`wp_page_copy` is inlined on
/// 6.12 and 7.x) and uprobes' page replacement too.
#[inline(always)]
pub fn anon_rmap_entry(a: &Args, hook: HookId, kprobe: bool) {
    let vma = a[1];
    let mm = vma_mm(vma);
    // Cheapest test first: this runs on every anonymous fault.
    if !is_tracked_mm(mm) {
        return;
    }
    let file = read_u64(vma + conf!(vma_file_off) as u64).unwrap_or(0);
    if file == 0 {
        return;
    }
    let inode = read_u64(file + conf!(file_inode_off) as u64).unwrap_or(0);
    if inode == 0 || read_u32(inode + conf!(inode_flags_off) as u64).unwrap_or(0) & S_DAX == 0 {
        return;
    }
    let mut ev = new_event(EventKind::Unmap, hook, kprobe);
    ev.mm = mm;
    ev.vaddr = a[2] & !4095;
    ev.vaddr_end = ev.vaddr + 4096;
    submit(ev);
}

/// `wake_up_new_task(p)`: a new task starts. When it is a new process (not
/// a thread) with an address space of its own that fork filled with device
/// mappings (`copy_page_range` tracked it), say whose it is: the copies were
/// made in the parent's context, before the child had a pid.
#[inline(always)]
pub fn wake_up_new_task_entry(a: &Args, kprobe: bool) {
    let task = a[0];
    let mm = read_u64(task + conf!(task_mm_off) as u64).unwrap_or(0);
    // Cheapest test first: most new tasks have an mm nobody tracks.
    if !is_tracked_mm(mm) || mm == current_mm() {
        // vfork and CLONE_VM share the parent's mm: nothing changes hands.
        return;
    }
    let tgid = read_u32(task + conf!(task_tgid_off) as u64).unwrap_or(0);
    let pid = read_u32(task + conf!(task_pid_off) as u64).unwrap_or(0);
    if tgid == 0 || pid != tgid {
        return;
    }
    let mut ev = new_event(EventKind::TaskNew, HookId::WakeUpNewTask, kprobe);
    ev.mm = mm;
    ev.tgid = tgid;
    ev.tid = pid;
    submit(ev);
}

/// `check_vma_flags(vma, gup_flags)` returned: report FOLL_LONGTERM
/// refusals (-EOPNOTSUPP) in tracked address spaces.
#[inline(always)]
pub fn check_vma_flags_exit(args: Option<&Args>, ret: u64, kprobe: bool) {
    const EOPNOTSUPP: i32 = 95;
    let Some(a) = args_or_stash(HookId::CheckVmaFlags, args) else {
        return;
    };
    if ret as i32 != -EOPNOTSUPP || a[1] & u64::from(conf!(foll_longterm)) == 0 {
        return;
    }
    let mm = vma_mm(a[0]);
    if !is_tracked_mm(mm) {
        return;
    }
    let mut ev = new_event(EventKind::GupRefused, HookId::CheckVmaFlags, kprobe);
    ev.mm = mm;
    ev.vaddr = read_u64(a[0] + conf!(vma_start_off) as u64).unwrap_or(0);
    ev.vaddr_end = read_u64(a[0] + conf!(vma_end_off) as u64).unwrap_or(0);
    ev.arg_flags = a[1];
    ev.ret = ret as i32 as i64;
    ev.flags |= flags::FAILED;
    submit(ev);
}
