//! The plan for the three Debian kernels, from their (minimized) BTF.

use std::collections::HashSet;

use super::*;
use crate::btf::testing::fixture;

/// A symbol table holding every function the fixture has BTF for (on these
/// kernels every hooked function with BTF is also a plain symbol).
fn kallsyms_for(btf: &Btf) -> Kallsyms {
    let mut text = String::from("ffffffff82415730 D vmemmap_base\n");
    for d in HOOKS {
        if btf.func(d.hook.function()).is_some() {
            text.push_str(&format!("ffffffff81000000 t {}\n", d.hook.function()));
        }
    }
    Kallsyms::parse(&text)
}

fn plan_for(
    version: &str,
    mode: AttachMode,
    ftrace: Option<&HashSet<String>>,
    kprobes: bool,
) -> Plan {
    let btf = fixture(version);
    let ks = kallsyms_for(&btf);
    plan(
        mode,
        &KernelView {
            btf: &btf,
            kallsyms: &ks,
            ftrace,
            kprobe_blacklist: &HashSet::new(),
            kprobes,
        },
    )
}

fn chosen(p: &Plan, logical: &str) -> Vec<String> {
    let mut v: Vec<String> = p
        .status
        .iter()
        .filter(|s| s.logical == logical)
        .flat_map(|s| {
            s.functions
                .iter()
                .map(|f| format!("{} {}", f.function, f.attach))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn linux_6_1() {
    let p = plan_for("6.1", AttachMode::Auto, None, true);
    assert_eq!(
        chosen(&p, "map_pte"),
        ["insert_pfn fexit", "vm_insert_page fexit"]
    );
    assert_eq!(chosen(&p, "map_pmd"), ["vmf_insert_pfn_pmd_prot fexit"]);
    assert_eq!(chosen(&p, "map_pud"), ["vmf_insert_pfn_pud_prot fexit"]);
    assert_eq!(chosen(&p, "split_pud"), ["__split_huge_pud fentry"]);
    assert_eq!(
        chosen(&p, "gup_get"),
        ["try_grab_folio fentry+fexit", "try_grab_page fentry+fexit"]
    );
    assert_eq!(
        chosen(&p, "gup_put"),
        ["gup_put_folio fentry+fexit", "unpin_user_page fentry+fexit"]
    );
    assert_eq!(
        chosen(&p, "ref_put"),
        ["__put_devmap_managed_page_refs fentry+fexit"]
    );
    assert_eq!(chosen(&p, "free"), ["free_zone_device_page fentry"]);
    assert_eq!(
        chosen(&p, "unmap"),
        ["__split_huge_pmd fentry", "unmap_page_range fentry"]
    );
    assert_eq!(chosen(&p, "remap"), ["move_page_tables fexit"]);
    assert_eq!(
        chosen(&p, "fork"),
        ["copy_page_range fexit", "wake_up_new_task fentry"]
    );
    assert_eq!(chosen(&p, "cow"), ["page_add_new_anon_rmap fentry"]);
    assert_eq!(chosen(&p, "gup_refused"), ["check_vma_flags fexit"]);
    assert_eq!(chosen(&p, "mm_exit"), ["exit_mmap fentry"]);
    assert_eq!(
        chosen(&p, "pgmap"),
        ["memremap_pages fexit", "memunmap_pages fentry+fexit"]
    );
    assert_eq!(
        chosen(&p, "dax"),
        ["dax_holder_notify_failure fentry", "kill_dax fentry"]
    );
    assert!(p.missing_required().is_empty());
}

#[test]
fn linux_6_12() {
    let p = plan_for("6.12", AttachMode::Auto, None, true);
    assert_eq!(
        chosen(&p, "map_pte"),
        ["insert_pfn fexit", "vm_insert_page fexit"]
    );
    assert_eq!(chosen(&p, "map_pmd"), ["vmf_insert_pfn_pmd fexit"]);
    assert_eq!(chosen(&p, "map_pud"), ["vmf_insert_pfn_pud fexit"]);
    assert_eq!(chosen(&p, "split_pud"), ["__split_huge_pud fentry"]);
    assert_eq!(
        chosen(&p, "gup_get"),
        [
            "try_grab_folio fentry+fexit",
            "try_grab_folio_fast fentry+fexit"
        ]
    );
    assert_eq!(
        chosen(&p, "ref_put"),
        ["__put_devmap_managed_folio_refs fentry+fexit"]
    );
    assert_eq!(chosen(&p, "free"), ["free_zone_device_folio fentry"]);
    assert_eq!(
        chosen(&p, "unmap"),
        ["__split_huge_pmd fentry", "unmap_page_range fentry"]
    );
    assert_eq!(
        chosen(&p, "fork"),
        ["copy_page_range fexit", "wake_up_new_task fentry"]
    );
    assert_eq!(chosen(&p, "cow"), ["folio_add_new_anon_rmap fentry"]);
}

#[test]
fn linux_7_3() {
    let p = plan_for("7.3", AttachMode::Auto, None, true);
    assert_eq!(
        chosen(&p, "map_pte"),
        ["insert_page fexit", "insert_pfn fexit"]
    );
    assert_eq!(
        chosen(&p, "map_pmd"),
        ["vmf_insert_folio_pmd fexit", "vmf_insert_pfn_pmd fexit"]
    );
    assert_eq!(
        chosen(&p, "map_pud"),
        ["vmf_insert_folio_pud fexit", "vmf_insert_pfn_pud fexit"]
    );
    assert_eq!(chosen(&p, "split_pud"), ["__split_huge_pud fentry"]);
    assert_eq!(
        chosen(&p, "ref_put"),
        Vec::<String>::new(),
        "no devmap put path on 6.15+"
    );
    assert_eq!(
        chosen(&p, "unmap"),
        ["__split_huge_pmd fentry", "__zap_vma_range fentry"]
    );
    assert_eq!(
        chosen(&p, "remap"),
        ["move_page_tables fexit"],
        "7.x one-argument form"
    );
    assert_eq!(
        chosen(&p, "fork"),
        ["copy_page_range fexit", "wake_up_new_task fentry"]
    );
    assert_eq!(chosen(&p, "cow"), ["folio_add_new_anon_rmap fentry"]);
    let skipped = &p
        .status
        .iter()
        .find(|s| s.logical == "unmap")
        .unwrap()
        .skipped;
    assert!(
        skipped[0].starts_with("unmap_page_range: not in this kernel"),
        "{skipped:?}"
    );
}

#[test]
fn kprobe_mode_attaches_both_halves_of_return_hooks() {
    let p = plan_for("6.12", AttachMode::Kprobe, None, true);
    assert_eq!(
        chosen(&p, "map_pte"),
        [
            "insert_pfn kprobe+kretprobe",
            "vm_insert_page kprobe+kretprobe"
        ]
    );
    assert_eq!(
        chosen(&p, "unmap"),
        ["__split_huge_pmd kprobe", "unmap_page_range kprobe"]
    );
    assert_eq!(chosen(&p, "split_pud"), ["__split_huge_pud kprobe"]);
    let a = p
        .attach
        .iter()
        .find(|a| a.hook == HookId::InsertPfn)
        .unwrap();
    assert_eq!(a.programs(), ["insert_pfn_kprobe", "insert_pfn_kretprobe"]);
    let a = p
        .attach
        .iter()
        .find(|a| a.hook == HookId::PutDevmapManagedFolioRefs)
        .unwrap();
    assert_eq!(
        a.programs(),
        [
            "put_devmap_managed_folio_refs_kprobe",
            "put_devmap_managed_folio_refs_kretprobe"
        ]
    );
}

#[test]
fn notrace_functions_fall_back_to_kprobes_and_kprobe_less_kernels_cannot() {
    let mut ftrace: HashSet<String> = HOOKS.iter().map(|d| d.hook.function().to_owned()).collect();
    ftrace.remove("insert_pfn");
    let p = plan_for("6.12", AttachMode::Auto, Some(&ftrace), true);
    assert!(chosen(&p, "map_pte").contains(&"insert_pfn kprobe+kretprobe".to_owned()));

    let p = plan_for("6.12", AttachMode::Auto, Some(&ftrace), false);
    let st = p.status.iter().find(|s| s.logical == "map_pte").unwrap();
    assert!(
        st.skipped.iter().any(|s| s.contains("no kprobes")),
        "{:?}",
        st.skipped
    );
    // insert_pfn is gone, vmf_insert_mixed(_mkwrite) take over.
    assert!(chosen(&p, "map_pte").contains(&"vmf_insert_mixed fexit".to_owned()));
}

#[test]
fn nothing_attachable_is_reported() {
    let btf = fixture("6.12");
    let ks = Kallsyms::parse("ffffffff82415730 D vmemmap_base\n");
    let p = plan(
        AttachMode::Auto,
        &KernelView {
            btf: &btf,
            kallsyms: &ks,
            ftrace: None,
            kprobe_blacklist: &HashSet::new(),
            kprobes: true,
        },
    );
    assert_eq!(p.missing_required(), ["map_pte"]);
    assert!(p.attach.is_empty());
}

#[test]
fn signature_changes_are_caught() {
    let btf = fixture("6.12");
    // try_grab_page's program expects (struct page *, flags): 6.12's
    // try_grab_folio takes a folio and three arguments.
    let def = def_of(HookId::TryGrabPage).unwrap();
    let err = check_signature(def, &btf.func("try_grab_folio").unwrap()).unwrap_err();
    assert!(err.contains("3 parameters, the program expects 2"), "{err}");
    let def = def_of(HookId::TryGrabFolioFast).unwrap();
    let err = check_signature(def, &btf.func("try_grab_folio").unwrap()).unwrap_err();
    assert!(err.contains("parameter 0 is struct folio *"), "{err}");
    for d in HOOKS {
        if let Some(f) = btf.func(d.hook.function()) {
            check_signature(d, &f).unwrap_or_else(|e| panic!("{}: {e}", d.hook.function()));
        }
    }
}

#[test]
fn skip_hook_leaves_a_logical_hook_out_and_says_so() {
    let mut p = plan_for("6.12", AttachMode::Auto, None, true);
    let before = p.attach.len();
    let cow: Vec<String> = chosen(&p, "cow");
    assert!(!cow.is_empty());
    p.skip(&["cow".to_owned()]).unwrap();
    assert!(chosen(&p, "cow").is_empty());
    assert_eq!(p.attach.len(), before - cow.len());
    let skipped: Vec<&String> = p
        .status
        .iter()
        .filter(|s| s.logical == "cow")
        .flat_map(|s| s.skipped.iter())
        .collect();
    assert!(
        skipped.iter().any(|s| s.contains("--skip-hook")),
        "{skipped:?}"
    );
    // The rest is untouched; a name that is no hook lists the real ones.
    assert!(!chosen(&p, "map_pte").is_empty());
    let err = p.skip(&["nope".to_owned()]).unwrap_err();
    assert!(err.contains("map_pte") && err.contains("cow"), "{err}");
}
