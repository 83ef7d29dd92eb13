//! Which kernel functions to hook on this kernel, and how.
//!
//! Pure: computed from the kernel's BTF, its symbol table and (when
//! readable) `available_filter_functions`, so it is unit-tested against the
//! three Debian kernels' BTF without a kernel. For every logical hook there
//! are groups of alternatives in preference order; a group attaches the
//! first alternative whose functions all exist with the signature the eBPF
//! program expects.

use std::collections::HashSet;

use refscope_common::{HookId, Prog};
use refscope_core::trace::{AttachedFunction, HookStatus};

use crate::{
    btf::{Btf, FuncInfo},
    cli::AttachMode,
    kernel::Kallsyms,
};

// The hook table is declared once, in the ABI crate.
pub use refscope_common::{HOOKS, Halves, HookDef, def_of};

/// A group: alternatives in preference order, each a set of functions that
/// together cover one kernel path.
pub struct Group {
    pub logical: &'static str,
    pub alternatives: &'static [&'static [HookId]],
    /// Tracing is pointless without at least one group of this logical hook.
    pub required: bool,
}

use HookId as H;

const fn optional(logical: &'static str, alternatives: &'static [&'static [HookId]]) -> Group {
    Group {
        logical,
        alternatives,
        required: false,
    }
}

/// The logical hooks.
pub const GROUPS: &[Group] = &[
    Group {
        logical: "map_pte",
        // 6.x FS-DAX and device-dax (devmap PTEs); special pfn maps on 7.x.
        alternatives: &[
            &[H::InsertPfn],
            &[H::VmfInsertMixed, H::VmfInsertMixedMkwrite],
        ],
        required: true,
    },
    Group {
        logical: "map_pte",
        // 7.x FS-DAX and device-dax, and drivers' vm_insert_page everywhere
        // (insert_page is inlined before 7.x: vm_insert_page is the hook there).
        alternatives: &[
            &[H::InsertPage],
            &[H::VmfInsertPageMkwrite, H::VmInsertPage],
            &[H::VmInsertPage],
        ],
        required: true,
    },
    optional(
        "map_pmd",
        &[&[H::VmfInsertPfnPmdProt], &[H::VmfInsertPfnPmd]],
    ),
    optional("map_pmd", &[&[H::VmfInsertFolioPmd]]),
    // device-dax with align=1G: 1 GiB mappings (FS-DAX never maps PUDs).
    optional(
        "map_pud",
        &[&[H::VmfInsertPfnPudProt], &[H::VmfInsertPfnPud]],
    ),
    optional("map_pud", &[&[H::VmfInsertFolioPud]]),
    optional("gup_get", &[&[H::TryGrabPage]]),
    optional("gup_get", &[&[H::TryGrabFolio]]),
    optional("gup_get", &[&[H::TryGrabFolioFast]]),
    optional("gup_put", &[&[H::GupPutFolio]]),
    // 7.x inlines gup_put_folio into unpin_user_page.
    optional("gup_put", &[&[H::UnpinUserPage]]),
    optional("gup_refused", &[&[H::CheckVmaFlags]]),
    optional("ref_put", &[&[H::PutDevmapManagedPageRefs]]),
    optional("ref_put", &[&[H::PutDevmapManagedFolioRefs]]),
    optional("free", &[&[H::FreeZoneDevicePage]]),
    optional("free", &[&[H::FreeZoneDeviceFolio]]),
    optional("unmap", &[&[H::UnmapPageRange], &[H::ZapVmaRange]]),
    // DAX huge PMDs cleared by a split, outside the unmap path.
    optional("unmap", &[&[H::SplitHugePmd]]),
    // 1 GiB device-dax PUDs cleared by a split (mprotect or a page walk
    // over part of one: /proc/PID/pagemap and smaps split them).
    optional("split_pud", &[&[H::SplitHugePud]]),
    // Copy-on-write of a DAX PTE in a private mapping: the anonymous copy
    // takes the device PTE's place, with no unmap.
    optional(
        "cow",
        &[&[H::FolioAddNewAnonRmap], &[H::PageAddNewAnonRmap]],
    ),
    optional("remap", &[&[H::MovePageTables]]),
    optional("fork", &[&[H::CopyPageRange]]),
    // Who owns the copies: the child, known once it has a pid.
    optional("fork", &[&[H::WakeUpNewTask]]),
    optional("mm_exit", &[&[H::ExitMmap]]),
    optional("pgmap", &[&[H::MemremapPages]]),
    optional("pgmap", &[&[H::MemunmapPages]]),
    optional("dax", &[&[H::KillDax]]),
    optional("dax", &[&[H::DaxHolderNotifyFailure]]),
];

/// How one function will be attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Fentry,
    Kprobe,
}

/// One function to attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attach {
    pub hook: HookId,
    pub via: Via,
    pub entry: bool,
    pub exit: bool,
}

impl Attach {
    /// The kinds of program attached to the function, entry first.
    pub fn kinds(&self) -> Vec<Prog> {
        let (e, x) = match self.via {
            Via::Fentry => (Prog::Fentry, Prog::Fexit),
            Via::Kprobe => (Prog::Kprobe, Prog::Kretprobe),
        };
        [(self.entry, e), (self.exit, x)]
            .into_iter()
            .filter(|&(wanted, _)| wanted)
            .map(|(_, prog)| prog)
            .collect()
    }

    /// Program names in the eBPF object, entry first.
    pub fn programs(&self) -> Vec<String> {
        self.kinds()
            .into_iter()
            .map(|prog| self.hook.program(prog).to_string())
            .collect()
    }

    /// `fentry+fexit`, `kprobe`, ...
    pub fn describe(&self) -> String {
        let (e, x) = match self.via {
            Via::Fentry => ("fentry", "fexit"),
            Via::Kprobe => ("kprobe", "kretprobe"),
        };
        match (self.entry, self.exit) {
            (true, true) => format!("{e}+{x}"),
            (true, false) => e.into(),
            _ => x.into(),
        }
    }
}

/// What the plan is computed from.
pub struct KernelView<'a> {
    pub btf: &'a Btf,
    pub kallsyms: &'a Kallsyms,
    /// `available_filter_functions`, when readable.
    pub ftrace: Option<&'a HashSet<String>>,
    pub kprobe_blacklist: &'a HashSet<String>,
    /// Whether kprobes exist at all on this kernel.
    pub kprobes: bool,
}

/// The plan: what to attach, and the per-logical-hook status for headers
/// and `doctor`.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub attach: Vec<Attach>,
    pub status: Vec<HookStatus>,
}

impl Plan {
    /// Leave out the logical hooks named (`--skip-hook`); a name that is
    /// no logical hook is an error listing them.
    pub fn skip(&mut self, names: &[String]) -> Result<(), String> {
        for name in names {
            if !GROUPS.iter().any(|g| g.logical == name) {
                let mut all: Vec<&str> = GROUPS.iter().map(|g| g.logical).collect();
                all.dedup();
                return Err(format!(
                    "--skip-hook {name}: no such hook; the hooks are: {}",
                    all.join(", ")
                ));
            }
            for s in self.status.iter_mut().filter(|s| s.logical == *name) {
                for f in s.functions.drain(..) {
                    self.attach.retain(|a| a.hook.function() != f.function);
                    s.skipped
                        .push(format!("{}: left out by --skip-hook", f.function));
                }
            }
        }
        Ok(())
    }

    /// Logical hooks that are required and have nothing attached.
    pub fn missing_required(&self) -> Vec<&str> {
        let mut missing: Vec<&str> = GROUPS
            .iter()
            .filter(|g| g.required)
            .map(|g| g.logical)
            .filter(|l| {
                self.status
                    .iter()
                    .filter(|s| s.logical == *l)
                    .all(|s| s.functions.is_empty())
            })
            .collect();
        missing.dedup();
        missing
    }

    pub fn is_attached(&self, hook: HookId) -> bool {
        self.attach.iter().any(|a| a.hook == hook)
    }
}

/// Check a function's BTF prototype against what the program expects.
pub fn check_signature(def: &HookDef, func: &FuncInfo) -> Result<(), String> {
    if !def.nargs.contains(&func.params.len()) {
        let expected: Vec<String> = def.nargs.iter().map(usize::to_string).collect();
        return Err(format!(
            "has {} parameters, the program expects {}",
            func.params.len(),
            expected.join(" or ")
        ));
    }
    for &(i, structs) in def.ptr_args {
        let Some(param) = func.params.get(i) else {
            return Err(format!("has no parameter {i}"));
        };
        let kind = &param.kind;
        if !structs.iter().any(|s| kind.is_ptr_to_struct(s)) {
            return Err(format!(
                "parameter {i} is {kind}, the program expects a pointer to struct {}",
                structs.join(" or struct ")
            ));
        }
    }
    Ok(())
}

/// Which halves to attach for `via`.
fn halves(h: Halves, via: Via) -> (bool, bool) {
    match (h, via) {
        (Halves::Entry, _) => (true, false),
        (Halves::Both, _) => (true, true),
        // fexit has the arguments; a kretprobe needs the entry's stash.
        (Halves::Exit, Via::Fentry) => (false, true),
        (Halves::Exit, Via::Kprobe) => (true, true),
    }
}

/// Can `hook` be attached, and how? `Err` says why not.
fn resolve(hook: HookId, mode: AttachMode, k: &KernelView<'_>) -> Result<Attach, String> {
    let def = def_of(hook).ok_or("no eBPF program for it in this build")?;
    let name = hook.function();
    let func = k.btf.func(name);
    let in_kallsyms = k.kallsyms.has_function(name);
    if func.is_none() && !in_kallsyms {
        let clones = k.kallsyms.clones_of(name);
        return Err(if clones.is_empty() {
            "not in this kernel (absent or inlined everywhere)".into()
        } else {
            format!(
                "only compiler clones exist ({}), with no stable ABI",
                clones.join(", ")
            )
        });
    }
    let func = func.ok_or("no BTF prototype to verify its signature against")?;
    check_signature(def, &func).map_err(|e| format!("signature changed: {e}"))?;
    if !in_kallsyms {
        return Err("has BTF but no symbol (inlined everywhere)".into());
    }
    let traceable = k.ftrace.is_none_or(|f| f.contains(name));
    let make = |via: Via| {
        let (entry, exit) = halves(def.halves, via);
        Attach {
            hook,
            via,
            entry,
            exit,
        }
    };
    let (fentry, kprobe) = (make(Via::Fentry), make(Via::Kprobe));
    let kprobe_ok = k.kprobes && !k.kprobe_blacklist.contains(name);
    match mode {
        AttachMode::Auto if traceable => Ok(fentry),
        AttachMode::Fentry if traceable => Ok(fentry),
        AttachMode::Fentry => Err("not in available_filter_functions (notrace)".into()),
        AttachMode::Auto | AttachMode::Kprobe if kprobe_ok => Ok(kprobe),
        AttachMode::Auto | AttachMode::Kprobe => Err(if k.kprobes {
            "kprobes refuse it (blacklisted)".into()
        } else {
            "this kernel has no kprobes".into()
        }),
    }
}

/// Compute the plan.
pub fn plan(mode: AttachMode, k: &KernelView<'_>) -> Plan {
    let mut p = Plan::default();
    for group in GROUPS {
        let mut skipped = Vec::new();
        let mut chosen = None;
        for alt in group.alternatives {
            let resolved: Result<Vec<Attach>, String> = alt
                .iter()
                .map(|&h| resolve(h, mode, k).map_err(|e| format!("{}: {e}", h.function())))
                .collect();
            match resolved {
                Ok(v) => {
                    chosen = Some(v);
                    break;
                }
                Err(e) => skipped.push(e),
            }
        }
        let functions = chosen
            .iter()
            .flatten()
            .map(|a| AttachedFunction {
                function: a.hook.function().into(),
                attach: a.describe(),
            })
            .collect();
        p.attach.extend(chosen.into_iter().flatten());
        // Several groups share a logical name: merge them.
        match p.status.iter_mut().find(|s| s.logical == group.logical) {
            Some(s) => {
                s.functions.extend::<Vec<_>>(functions);
                s.skipped.extend(skipped);
            }
            None => p.status.push(HookStatus {
                logical: group.logical.into(),
                functions,
                skipped,
            }),
        }
    }
    p
}

#[cfg(test)]
mod tests;
