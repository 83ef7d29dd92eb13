//! The hook table: every kernel function refscope's eBPF object has
//! programs for, what those programs expect of it, and the names of the
//! programs and maps in the object. Declared once, here:
//! - the eBPF crate checks each program it defines against [`HOOKS`] at
//!   compile time ([`expects`]: name, kind, arguments read), and each map's
//!   name against [`maps`];
//! - userspace plans (`probe::plan`) and loads (`probe::loader`) by them;
//! - a test of the built object checks that every program the plan can ask
//!   for is in it.

named_enum! {
    /// The kernel function an event came from.
    pub enum HookId: u8 {
        InsertPfn = 1 => "insert_pfn",
        VmfInsertMixed = 2 => "vmf_insert_mixed",
        VmfInsertMixedMkwrite = 3 => "vmf_insert_mixed_mkwrite",
        InsertPage = 4 => "insert_page",
        VmfInsertPageMkwrite = 5 => "vmf_insert_page_mkwrite",
        VmInsertPage = 6 => "vm_insert_page",
        VmfInsertPfnPmdProt = 7 => "vmf_insert_pfn_pmd_prot",
        VmfInsertPfnPmd = 8 => "vmf_insert_pfn_pmd",
        VmfInsertFolioPmd = 9 => "vmf_insert_folio_pmd",
        TryGrabPage = 10 => "try_grab_page",
        TryGrabFolio = 11 => "try_grab_folio",
        TryGrabFolioFast = 12 => "try_grab_folio_fast",
        GupPutFolio = 13 => "gup_put_folio",
        PutDevmapManagedPageRefs = 14 => "__put_devmap_managed_page_refs",
        PutDevmapManagedFolioRefs = 15 => "__put_devmap_managed_folio_refs",
        FreeZoneDevicePage = 16 => "free_zone_device_page",
        FreeZoneDeviceFolio = 17 => "free_zone_device_folio",
        UnmapPageRange = 18 => "unmap_page_range",
        ZapVmaRange = 19 => "__zap_vma_range",
        ExitMmap = 20 => "exit_mmap",
        MemremapPages = 21 => "memremap_pages",
        MemunmapPages = 22 => "memunmap_pages",
        KillDax = 23 => "kill_dax",
        DaxHolderNotifyFailure = 24 => "dax_holder_notify_failure",
        UnpinUserPage = 25 => "unpin_user_page",
        SplitHugePmd = 26 => "__split_huge_pmd",
        MovePageTables = 27 => "move_page_tables",
        CopyPageRange = 28 => "copy_page_range",
        CheckVmaFlags = 29 => "check_vma_flags",
        WakeUpNewTask = 30 => "wake_up_new_task",
        PageAddNewAnonRmap = 31 => "page_add_new_anon_rmap",
        FolioAddNewAnonRmap = 32 => "folio_add_new_anon_rmap",
        VmfInsertPfnPudProt = 33 => "vmf_insert_pfn_pud_prot",
        VmfInsertPfnPud = 34 => "vmf_insert_pfn_pud",
        VmfInsertFolioPud = 35 => "vmf_insert_folio_pud",
        SplitHugePud = 36 => "__split_huge_pud",
        /// Userspace only: the attach-time snapshot.
        Snapshot = 64 => "snapshot",
        /// Userspace only: the shadow audit (a read of the kernel's page tables).
        Audit = 65 => "audit",
    }
}

impl HookId {
    /// The kernel function this hook attaches to.
    pub const fn function(self) -> &'static str {
        self.as_str()
    }
}

/// Which halves of a hook must be attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Halves {
    /// Reported at return; with kprobes the entry half stashes the arguments.
    Exit,
    /// Entry (refcount before, arguments) and return (refcount after).
    Both,
    /// Reported at entry only.
    Entry,
}

/// What the eBPF program for a hook expects of the kernel function.
pub struct HookDef {
    pub hook: HookId,
    pub halves: Halves,
    /// Accepted numbers of parameters (the program reads only the ones its
    /// handler needs; functions whose arity differs between kernels list
    /// each arity its handler was checked against).
    pub nargs: &'static [usize],
    /// Parameters that must be pointers to one of these structs.
    pub ptr_args: &'static [(usize, &'static [&'static str])],
}

macro_rules! def {
    ($hook:ident, $halves:ident, [$($n:literal),+] $(, $i:literal => [$($s:literal),+])*) => {
        HookDef {
            hook: HookId::$hook,
            halves: Halves::$halves,
            nargs: &[$($n),+],
            ptr_args: &[$(($i, &[$($s),+])),*],
        }
    };
}

/// Every hook the eBPF object implements.
pub const HOOKS: &[HookDef] = &[
    def!(InsertPfn, Exit, [5], 0 => ["vm_area_struct"]),
    def!(VmfInsertMixed, Exit, [3], 0 => ["vm_area_struct"]),
    def!(VmfInsertMixedMkwrite, Exit, [3], 0 => ["vm_area_struct"]),
    def!(InsertPage, Exit, [5], 0 => ["vm_area_struct"], 2 => ["page"]),
    def!(VmfInsertPageMkwrite, Exit, [3], 0 => ["vm_fault"], 1 => ["page"]),
    def!(VmInsertPage, Exit, [3], 0 => ["vm_area_struct"], 2 => ["page"]),
    def!(VmfInsertPfnPmdProt, Exit, [4], 0 => ["vm_fault"]),
    def!(VmfInsertPfnPmd, Exit, [3], 0 => ["vm_fault"]),
    def!(VmfInsertFolioPmd, Exit, [3], 0 => ["vm_fault"], 1 => ["folio"]),
    def!(VmfInsertPfnPudProt, Exit, [4], 0 => ["vm_fault"]),
    def!(VmfInsertPfnPud, Exit, [3], 0 => ["vm_fault"]),
    def!(VmfInsertFolioPud, Exit, [3], 0 => ["vm_fault"], 1 => ["folio"]),
    def!(TryGrabPage, Both, [2], 0 => ["page"]),
    def!(TryGrabFolio, Both, [3], 0 => ["page", "folio"]),
    def!(TryGrabFolioFast, Both, [3], 0 => ["page"]),
    def!(GupPutFolio, Both, [3], 0 => ["folio"]),
    def!(PutDevmapManagedPageRefs, Both, [2], 0 => ["page"]),
    def!(PutDevmapManagedFolioRefs, Both, [2], 0 => ["folio"]),
    def!(FreeZoneDevicePage, Entry, [1], 0 => ["page"]),
    def!(FreeZoneDeviceFolio, Entry, [1], 0 => ["folio"]),
    def!(UnmapPageRange, Entry, [5], 1 => ["vm_area_struct"]),
    def!(ZapVmaRange, Entry, [5], 1 => ["vm_area_struct"]),
    def!(ExitMmap, Entry, [1], 0 => ["mm_struct"]),
    def!(MemremapPages, Exit, [2], 0 => ["dev_pagemap"]),
    def!(MemunmapPages, Both, [1], 0 => ["dev_pagemap"]),
    def!(KillDax, Entry, [1], 0 => ["dax_device"]),
    def!(DaxHolderNotifyFailure, Entry, [4], 0 => ["dax_device"]),
    def!(UnpinUserPage, Both, [1], 0 => ["page"]),
    // 6.x: (vma, pmd, address, freeze, folio); 7.x drops folio.
    def!(SplitHugePmd, Entry, [5, 4], 0 => ["vm_area_struct"]),
    def!(SplitHugePud, Entry, [3], 0 => ["vm_area_struct"]),
    // 6.1: 6 args, 6.12: 7 (for_stack); 7.x: one struct pagetable_move_control *.
    def!(MovePageTables, Exit, [6, 7, 1]),
    def!(CopyPageRange, Exit, [2], 0 => ["vm_area_struct"], 1 => ["vm_area_struct"]),
    def!(CheckVmaFlags, Exit, [2], 0 => ["vm_area_struct"]),
    def!(WakeUpNewTask, Entry, [1], 0 => ["task_struct"]),
    def!(PageAddNewAnonRmap, Entry, [3], 0 => ["page"], 1 => ["vm_area_struct"]),
    def!(FolioAddNewAnonRmap, Entry, [4], 0 => ["folio"], 1 => ["vm_area_struct"]),
];

/// The table's entry for `hook`.
pub const fn def_of(hook: HookId) -> Option<&'static HookDef> {
    let mut i = 0;
    while i < HOOKS.len() {
        if HOOKS[i].hook as u8 == hook as u8 {
            return Some(&HOOKS[i]);
        }
        i += 1;
    }
    None
}

/// The kinds of tracing program; a program's name is the hooked
/// function's, leading underscores dropped, then `_` and [`Prog::suffix`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prog {
    Fentry,
    Fexit,
    Kprobe,
    Kretprobe,
}

impl Prog {
    pub const fn suffix(self) -> &'static str {
        match self {
            Prog::Fentry => "fentry",
            Prog::Fexit => "fexit",
            Prog::Kprobe => "kprobe",
            Prog::Kretprobe => "kretprobe",
        }
    }

    /// The halves that need a program of this kind.
    const fn serves(self, halves: Halves) -> bool {
        match (self, halves) {
            // An exit-reported hook's kprobe stashes the arguments for its
            // kretprobe; with fentry, the fexit reads them itself.
            (Prog::Fentry, Halves::Exit) => false,
            (Prog::Fexit | Prog::Kretprobe, Halves::Entry) => false,
            _ => true,
        }
    }
}

impl HookId {
    /// The name of this hook's `prog` program in the eBPF object.
    pub fn program(self, prog: Prog) -> ProgramName {
        ProgramName(self, prog)
    }

    /// The function name without its leading underscores.
    const fn program_base(self) -> &'static [u8] {
        let mut f = self.function().as_bytes();
        while let [b'_', rest @ ..] = f {
            f = rest;
        }
        f
    }
}

/// A program name, displayed as `{function}_{suffix}` (see [`Prog`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramName(HookId, Prog);

impl core::fmt::Display for ProgramName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let base = core::str::from_utf8(self.0.program_base()).map_err(|_| core::fmt::Error)?;
        write!(f, "{base}_{}", self.1.suffix())
    }
}

/// `a == b`, usable in constants.
pub const fn str_eq(a: &str, b: &str) -> bool {
    bytes_eq(a.as_bytes(), b.as_bytes())
}

const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether a program named `name`, of kind `prog`, that reads `nargs`
/// arguments with `bpf_get_func_arg` (fentry/fexit; `None` for kprobes,
/// which read registers) is what [`HOOKS`] declares for `hook`. The eBPF
/// crate asserts this for every program at compile time. A program may
/// read [`crate::STASH_ARGS`] arguments of a function with fewer (the
/// helper fails for the missing ones, and the handler checks the arity).
pub const fn expects(hook: HookId, prog: Prog, nargs: Option<usize>, name: &str) -> bool {
    let Some(def) = def_of(hook) else {
        return false;
    };
    let (base, suffix, name) = (
        hook.program_base(),
        prog.suffix().as_bytes(),
        name.as_bytes(),
    );
    if name.len() != base.len() + 1 + suffix.len() {
        return false;
    }
    let (n_base, rest) = name.split_at(base.len());
    let (sep, n_suffix) = rest.split_at(1);
    if !(bytes_eq(n_base, base) && sep[0] == b'_' && bytes_eq(n_suffix, suffix)) {
        return false;
    }
    if !prog.serves(def.halves) {
        return false;
    }
    match nargs {
        None => true,
        Some(n) if n == crate::STASH_ARGS => true,
        Some(n) => {
            let mut i = 0;
            while i < def.nargs.len() {
                if def.nargs[i] == n {
                    return true;
                }
                i += 1;
            }
            false
        }
    }
}

/// Names of the object's maps (and of its one global, `CONFIG`): the eBPF
/// crate checks each map's static against these at compile time.
pub mod maps {
    pub const EVENTS: &str = "EVENTS";
    pub const DROPS: &str = "DROPS";
    pub const CONFIG: &str = "CONFIG";
    pub const DEVICE_RANGES: &str = "DEVICE_RANGES";
    pub const TRACKED_MMS: &str = "TRACKED_MMS";
    pub const SNAP_PAGES: &str = "SNAP_PAGES";
    pub const PT_WALK: &str = "PT_WALK";
}

/// The programs that are not hooks: the attach snapshot's and the audit's.
pub mod programs {
    /// Task iterator: the address spaces to snapshot.
    pub const SNAPSHOT_TASKS: &str = "snapshot_tasks";
    /// Reads refcounts of a batch of pages.
    pub const SNAPSHOT_REFS: &str = "snapshot_refs";
    /// Walks page tables for the audit.
    pub const WALK_TABLES: &str = "walk_tables";

    /// Empty programs (return 0, no maps, no helpers), one per kind:
    /// `refscope bench-floor` attaches one copy wherever the plan attaches
    /// a hook's program of that kind, so the benchmark measures the
    /// trampoline's (or probe's) own cost on the same functions.
    pub const FLOOR_FENTRY: &str = "floor_fentry";
    pub const FLOOR_FEXIT: &str = "floor_fexit";
    pub const FLOOR_KPROBE: &str = "floor_kprobe";
    pub const FLOOR_KRETPROBE: &str = "floor_kretprobe";

    /// The empty program standing in for a hook's program of kind `prog`.
    pub const fn floor(prog: super::Prog) -> &'static str {
        match prog {
            super::Prog::Fentry => FLOOR_FENTRY,
            super::Prog::Fexit => FLOOR_FEXIT,
            super::Prog::Kprobe => FLOOR_KPROBE,
            super::Prog::Kretprobe => FLOOR_KRETPROBE,
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;

    #[test]
    fn every_hook_with_programs_is_in_the_table_once() {
        for hook in HookId::ALL {
            let n = HOOKS.iter().filter(|d| d.hook == *hook).count();
            let userspace_only = matches!(hook, HookId::Snapshot | HookId::Audit);
            assert_eq!(n, usize::from(!userspace_only), "{hook:?}");
        }
    }

    #[test]
    fn program_names_follow_the_function() {
        assert_eq!(
            HookId::InsertPfn.program(Prog::Fexit).to_string(),
            "insert_pfn_fexit"
        );
        assert_eq!(
            HookId::ZapVmaRange.program(Prog::Kprobe).to_string(),
            "zap_vma_range_kprobe"
        );
        for d in HOOKS {
            for prog in [Prog::Fentry, Prog::Fexit, Prog::Kprobe, Prog::Kretprobe] {
                let name = d.hook.program(prog).to_string();
                assert_eq!(
                    expects(d.hook, prog, None, &name),
                    prog.serves(d.halves),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn expects_rejects_a_wrong_name_kind_or_arity() {
        let h = HookId::InsertPfn;
        assert!(expects(h, Prog::Fexit, Some(5), "insert_pfn_fexit"));
        assert!(expects(
            h,
            Prog::Fexit,
            Some(crate::STASH_ARGS),
            "insert_pfn_fexit"
        ));
        assert!(!expects(h, Prog::Fexit, Some(4), "insert_pfn_fexit"));
        assert!(!expects(h, Prog::Fexit, Some(5), "insert_pfn_fentry"));
        assert!(!expects(h, Prog::Fentry, Some(5), "insert_pfn_fentry"));
        assert!(!expects(h, Prog::Fexit, Some(5), "insert_pfm_fexit"));
        assert!(!expects(
            HookId::Snapshot,
            Prog::Fexit,
            None,
            "snapshot_fexit"
        ));
        assert!(!expects(
            HookId::ExitMmap,
            Prog::Kretprobe,
            None,
            "exit_mmap_kretprobe"
        ));
    }
}
