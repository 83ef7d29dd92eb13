//! Known facts of the three Debian kernels refscope targets, checked against
//! minimized BTF fixtures (`tests/fixtures/btf/*.btf`), plus the ignored
//! tests that regenerate those fixtures from the kernel images.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::super::raw::KIND_FUNC;
use super::super::{Btf, BtfError, Linkage, Pointee, ValueKind};
use super::minimize::{Roots, minimize};

/// Everything refscope asks the kernel's BTF about; the fixtures keep these.
pub const ROOTS: Roots<'static> = Roots {
    structs: &[
        "page",
        "folio",
        "vm_area_struct",
        "vm_fault",
        "mm_struct",
        "task_struct",
        "dev_pagemap",
        "range",
        "folio_batch",
        "pagetable_move_control",
        "file",
        "inode",
    ],
    funcs: &[
        "insert_pfn",
        "vmf_insert_mixed",
        "vmf_insert_mixed_mkwrite",
        "vmf_insert_page_mkwrite",
        "insert_page",
        "vm_insert_page",
        "vmf_insert_pfn_pmd",
        "vmf_insert_pfn_pmd_prot",
        "vmf_insert_folio_pmd",
        "vmf_insert_pfn_pud",
        "vmf_insert_pfn_pud_prot",
        "vmf_insert_folio_pud",
        "try_grab_page",
        "try_grab_folio",
        "try_grab_folio_fast",
        "gup_put_folio",
        "__put_devmap_managed_page_refs",
        "__put_devmap_managed_folio_refs",
        "free_zone_device_page",
        "free_zone_device_folio",
        "unmap_page_range",
        "__zap_vma_range",
        "zap_vma_range",
        "exit_mmap",
        "memremap_pages",
        "memunmap_pages",
        "kill_dax",
        "dax_holder_notify_failure",
        "unpin_user_page",
        "__split_huge_pmd",
        "__split_huge_pud",
        "move_page_tables",
        "copy_page_range",
        "check_vma_flags",
        "wake_up_new_task",
        "page_add_new_anon_rmap",
        "folio_add_new_anon_rmap",
    ],
    enums: &["memory_type"],
    // Two anonymous enums since 6.2: the public FOLL_* (include/linux/mm_types.h)
    // and the mm-internal ones (mm/internal.h).
    // 7.x numbers the VMA flags in an anonymous enum (VM_COPY_ON_FORK).
    enumerators: &["FOLL_WRITE", "FOLL_PIN", "VMA_MAYBE_GUARD_BIT"],
};

/// Kernel versions with a fixture, and the default image each one is
/// regenerated from (overridable with `REFSCOPE_BTF_SRC_<6_1|6_12|7_3>`).
const KERNELS: [(&str, &str); 3] = [
    ("6.1", "/tmp/kimg/6.1/boot/vmlinuz-6.1.0-56-amd64"),
    ("6.12", "/tmp/kimg/6.12/boot/vmlinuz-6.12.117+deb12-amd64"),
    (
        "7.3",
        "/tmp/kimg/7.3/usr/lib/modules/7.3.4+deb13-amd64/vmlinuz",
    ),
];

fn fixture_path(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/btf")
        .join(format!("{version}.btf"))
}

fn fixture(version: &str) -> Btf {
    Btf::from_file(fixture_path(version)).expect("fixture parses")
}

fn source_image(version: &str) -> PathBuf {
    let var = format!("REFSCOPE_BTF_SRC_{}", version.replace('.', "_"));
    let default = KERNELS
        .iter()
        .find(|k| k.0 == version)
        .map(|k| k.1)
        .expect("known version");
    std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
}

/// `scripts/extract-vmlinux` from `REFSCOPE_EXTRACT_VMLINUX`, or from any
/// kernel source tree unpacked under /tmp/ksrc.
fn extract_vmlinux_script() -> PathBuf {
    if let Some(path) = std::env::var_os("REFSCOPE_EXTRACT_VMLINUX") {
        return PathBuf::from(path);
    }
    let root = Path::new("/tmp/ksrc");
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|version| {
            std::fs::read_dir(version.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|tree| tree.path().join("scripts/extract-vmlinux"))
        .filter(|script| script.is_file())
        .collect();
    found.sort();
    found
        .pop()
        .expect("set REFSCOPE_EXTRACT_VMLINUX to a kernel tree's scripts/extract-vmlinux")
}

/// Raw BTF of a kernel given as a raw `.BTF` blob, an ELF (vmlinux or a
/// module) or a compressed vmlinuz.
pub fn kernel_btf(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if bytes.starts_with(&[0x9f, 0xeb]) {
        return bytes;
    }
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let tmp = std::env::temp_dir().join(format!(
        "refscope-btf-{}-{}",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let elf = if bytes.starts_with(b"\x7fELF") {
        path.to_owned()
    } else {
        let out = tmp.join("vmlinux");
        let file = std::fs::File::create(&out).expect("create vmlinux");
        run(Command::new("sh")
            .arg(extract_vmlinux_script())
            .arg(path)
            .stdout(file));
        out
    };
    let section = tmp.join("btf");
    run(Command::new("objcopy")
        .arg(format!("--dump-section=.BTF={}", section.display()))
        .arg(&elf)
        .arg(tmp.join("elf-copy")));
    let btf = std::fs::read(&section).expect("dumped .BTF");
    let _ = std::fs::remove_dir_all(&tmp);
    btf
}

/// Every member of `struct name` at every depth, with offsets and kinds:
/// two BTFs that agree on this agree on every `member()` answer.
fn dump_struct(btf: &Btf, name: &str) -> Vec<String> {
    fn walk(btf: &Btf, id: u32, prefix: &str, base: u64, depth: u32, out: &mut Vec<String>) {
        let t = btf.raw(id);
        for (name_off, ty, offset) in t.members() {
            let name = String::from_utf8_lossy(btf.str_bytes(name_off));
            let path = if name.is_empty() {
                format!("{prefix}<anon>")
            } else {
                format!("{prefix}{name}")
            };
            let bits = if t.kflag() {
                u64::from(offset & 0xff_ffff)
            } else {
                u64::from(offset)
            };
            let bitfield = if t.kflag() { offset >> 24 } else { 0 };
            out.push(format!(
                "{path} bit={} bitfield={bitfield} size={:?} kind={:?}",
                base + bits,
                btf.size_of(ty),
                btf.value_kind(ty)
            ));
            let inner = btf.skip_modifiers(ty).expect("no cycles");
            if btf.raw(inner).is_composite() && depth < 16 {
                walk(btf, inner, &format!("{path}."), base + bits, depth + 1, out);
            }
        }
    }
    let Some(id) = btf.struct_id(name) else {
        return vec!["absent".into()];
    };
    let mut out = vec![format!("size={}", btf.raw(id).size_or_type)];
    walk(btf, id, "", 0, 0, &mut out);
    out
}

fn dump_enum(btf: &Btf, id: u32) -> Vec<(String, i64)> {
    btf.raw(id)
        .enumerators()
        .map(|(off, v)| (String::from_utf8_lossy(btf.str_bytes(off)).into_owned(), v))
        .collect()
}

/// Asserts that `small` answers every question about `ROOTS` like `full`.
fn assert_equivalent(full: &Btf, small: &Btf) {
    for name in ROOTS.structs {
        assert_eq!(
            dump_struct(full, name),
            dump_struct(small, name),
            "struct {name}"
        );
        assert_eq!(full.struct_size(name), small.struct_size(name));
    }
    for name in ROOTS.funcs {
        let strip = |f: Option<super::super::FuncInfo>| {
            f.map(|mut f| {
                f.type_id = 0;
                f
            })
        };
        assert_eq!(
            strip(full.func(name)),
            strip(small.func(name)),
            "func {name}"
        );
    }
    for name in ROOTS.enums {
        let full_ids = full.find_types(name, |k| k != KIND_FUNC);
        let small_ids = small.find_types(name, |k| k != KIND_FUNC);
        let full_enums: Vec<_> = full_ids.iter().map(|&id| dump_enum(full, id)).collect();
        let small_enums: Vec<_> = small_ids.iter().map(|&id| dump_enum(small, id)).collect();
        assert_eq!(full_enums, small_enums, "enum {name}");
    }
    for name in ROOTS.enumerators {
        let Some(&(id, _)) = full.find_enumerators(name).first() else {
            assert_eq!(small.enum_value(name), None);
            continue;
        };
        for (enumerator, value) in dump_enum(full, id) {
            assert_eq!(small.enum_value(&enumerator), Some(value), "{enumerator}");
        }
    }
}

#[test]
#[ignore = "needs the Debian kernel images (see tests/fixtures/btf/README.md); rewrites the fixtures"]
fn regenerate_btf_fixtures() {
    for (version, _) in KERNELS {
        let image = source_image(version);
        let full_bytes = kernel_btf(&image);
        let full = Btf::parse(&full_bytes).expect("kernel btf parses");
        let small_bytes = minimize(&full, &ROOTS);
        let small = Btf::parse(&small_bytes).expect("minimized btf parses");
        assert_equivalent(&full, &small);
        let path = fixture_path(version);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("fixture dir");
        std::fs::write(&path, &small_bytes).expect("write fixture");
        println!(
            "{version}: {} -> {} bytes ({} -> {} types) from {}",
            full_bytes.len(),
            small_bytes.len(),
            full.type_count(),
            small.type_count(),
            image.display()
        );
    }
}

#[test]
#[ignore = "needs the Debian kernel images; checks the fixtures are what regeneration would write"]
fn fixtures_are_up_to_date() {
    for (version, _) in KERNELS {
        let full = Btf::parse(&kernel_btf(&source_image(version))).expect("kernel btf parses");
        let committed = std::fs::read(fixture_path(version)).expect("fixture");
        assert!(
            minimize(&full, &ROOTS) == committed,
            "{version}: fixture is stale, run regenerate_btf_fixtures"
        );
    }
}

#[test]
#[ignore = "needs the Debian 7.3 image and its device_dax module"]
fn real_module_split_btf() {
    let vmlinux = Btf::parse(&kernel_btf(&source_image("7.3"))).expect("vmlinux");
    let module = std::env::var_os("REFSCOPE_BTF_MODULE").map_or_else(
        || {
            // The Debian package ships modules xz-compressed.
            let ko = std::env::temp_dir().join(format!("refscope-dax-{}.ko", std::process::id()));
            let out = std::fs::File::create(&ko).expect("create");
            run(Command::new("xz")
                .arg("-dc")
                .arg("/tmp/kimg/7.3/usr/lib/modules/7.3.4+deb13-amd64/kernel/drivers/dax/device_dax.ko.xz")
                .stdout(out));
            ko
        },
        PathBuf::from,
    );
    let module_bytes = kernel_btf(&module);
    assert!(
        Btf::parse(&module_bytes).is_err(),
        "split btf must not parse without its base"
    );
    let module = Btf::parse_split(&module_bytes, &vmlinux).expect("module btf");
    assert!(module.type_count() > vmlinux.type_count());
    // The module's own records are functions whose prototypes use base
    // types; base types stay visible through the split.
    let probe = module.func("dev_dax_probe").expect("module function");
    assert!(probe.type_id >= vmlinux.type_count(), "from the module");
    assert_eq!(probe.param_names(), ["dev_dax"]);
    assert_eq!(probe.params[0].kind, ValueKind::ptr_to_struct("dev_dax"));
    assert_eq!(probe.ret, ValueKind::int(4, true));
    let check = module.func("__check_vma").expect("__check_vma");
    assert_eq!(
        check.param_names(),
        ["dev_dax", "flags", "start", "end", "file", "func"]
    );
    assert!(vmlinux.func("dev_dax_probe").is_none());
    assert!(module.func("vm_insert_page").is_some());
    assert_eq!(module.struct_size("page"), Some(64));
    assert_eq!(
        module.member_offset("page", "_refcount").expect("refcount"),
        52
    );
    println!(
        "device_dax: {} module types",
        module.type_count() - vmlinux.type_count()
    );
}

#[test]
#[ignore = "timing; run with --release --nocapture"]
fn parse_time_of_running_kernel() {
    let bytes = std::fs::read(super::super::SYS_FS_VMLINUX).expect("vmlinux btf");
    let runs = 20;
    let mut parse = Vec::new();
    let mut first_query = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let btf = Btf::parse(&bytes).expect("parses");
        let parsed = start.elapsed();
        let refcount = btf.member_offset("page", "_refcount").expect("_refcount");
        let enumerator = btf.enum_value("MEMORY_DEVICE_FS_DAX");
        let queried = start.elapsed();
        assert!(refcount > 0 && enumerator.is_some());
        parse.push(parsed);
        first_query.push(queried);
    }
    parse.sort();
    first_query.sort();
    println!(
        "{} bytes, {} types: parse median {:?} (min {:?}); parse + name indexes + first queries median {:?}",
        bytes.len(),
        Btf::parse(&bytes).expect("parses").type_count(),
        parse[runs / 2],
        parse[0],
        first_query[runs / 2]
    );
    if !cfg!(debug_assertions) {
        assert!(first_query[runs / 2].as_millis() < 100);
    }
}

/// Reads the running kernel's BTF when this machine exposes it.
#[test]
fn running_kernel_has_struct_page() {
    let path = Path::new(super::super::SYS_FS_VMLINUX);
    if std::fs::metadata(path).is_err() {
        eprintln!("skipped: {} is not readable here", path.display());
        return;
    }
    let btf = Btf::from_sys_fs().expect("running kernel's btf parses");
    let size = btf.struct_size("page").expect("struct page");
    assert!(
        size >= 56 && size.is_multiple_of(8),
        "sizeof(struct page) = {size}"
    );
    let refcount = btf.member_offset("page", "_refcount").expect("_refcount");
    assert!(refcount < size);
    assert!(btf.func("vm_insert_page").is_some());
}

// ---------------------------------------------------------------------------
// Facts of the three Debian kernels (docs/kernel-hooks.md section 5), read
// from the committed fixtures.

fn ptr(name: &str) -> ValueKind {
    ValueKind::ptr_to_struct(name)
}

#[test]
fn struct_page_layout_is_stable() {
    for (version, _) in KERNELS {
        let btf = fixture(version);
        assert_eq!(btf.struct_size("page"), Some(64), "{version}");
        assert_eq!(
            btf.member_offset("page", "_refcount").expect("_refcount"),
            52,
            "{version}"
        );
        assert_eq!(
            btf.member_offset("page", "_refcount.counter")
                .expect("counter"),
            52
        );
        assert_eq!(
            btf.member_offset("page", "memcg_data").expect("memcg_data"),
            56
        );
        assert_eq!(btf.member_offset("page", "flags").expect("flags"), 0);
        let refcount = btf.member("page", "_refcount").expect("_refcount");
        assert_eq!(refcount.size, 4);
        assert_eq!(
            refcount.kind,
            ValueKind::Struct {
                name: None,
                size: 4
            },
            "atomic_t is a typedef of an anonymous struct"
        );
        assert_eq!(
            btf.member_offset("folio", "_refcount")
                .expect("folio _refcount"),
            52
        );
    }
}

#[test]
fn folio_grew_after_6_1() {
    assert_eq!(fixture("6.1").struct_size("folio"), Some(112));
    assert_eq!(fixture("6.12").struct_size("folio"), Some(256));
    assert_eq!(fixture("7.3").struct_size("folio"), Some(256));
}

#[test]
fn compound_head_was_renamed_in_7_3() {
    for version in ["6.1", "6.12"] {
        let btf = fixture(version);
        assert_eq!(
            btf.member_offset("page", "compound_head")
                .expect("compound_head"),
            8
        );
        assert!(!btf.has_member("page", "compound_info"), "{version}");
    }
    let btf = fixture("7.3");
    assert!(!btf.has_member("page", "compound_head"));
    assert_eq!(
        btf.member_offset("page", "compound_info")
            .expect("compound_info"),
        8
    );
    let err = btf
        .member_offset("page", "compound_head")
        .expect_err("renamed");
    assert_eq!(err.to_string(), "struct page has no member `compound_head`");
}

#[test]
fn pgmap_moved_from_page_to_folio() {
    for (version, _) in KERNELS {
        let btf = fixture(version);
        let member = btf.member("page", "pgmap");
        if version == "7.3" {
            assert!(member.is_err(), "7.3 has no page->pgmap");
        } else {
            let member = member.expect("page->pgmap");
            assert_eq!(member.offset, 8, "{version}");
            assert_eq!(member.kind, ptr("dev_pagemap"));
        }
    }
    let btf = fixture("7.3");
    let pgmap = btf.member("folio", "pgmap").expect("folio->pgmap");
    assert_eq!(pgmap.offset, 8);
    assert_eq!(pgmap.kind, ptr("dev_pagemap"));
}

#[test]
fn vm_fault_vma_is_inside_a_const_anonymous_struct() {
    for (version, _) in KERNELS {
        let btf = fixture(version);
        let vma = btf.member("vm_fault", "vma").expect("vm_fault.vma");
        assert_eq!(vma.offset, 0, "{version}");
        assert_eq!(vma.kind, ptr("vm_area_struct"));
        assert_eq!(
            btf.member_offset("vm_fault", "address").expect("address"),
            24
        );
        assert_eq!(
            btf.member_offset("vm_area_struct", "vm_mm").expect("vm_mm"),
            16
        );
    }
}

#[test]
fn dev_pagemap_fields() {
    for (version, _) in KERNELS {
        let btf = fixture(version);
        assert_eq!(btf.struct_size("range"), Some(16));
        let range = btf.member_offset("dev_pagemap", "range").expect("range");
        assert_eq!(
            btf.member_offset("dev_pagemap", "range.start")
                .expect("start"),
            range
        );
        assert_eq!(
            btf.member_offset("dev_pagemap", "range.end").expect("end"),
            range + 8
        );
        assert_eq!(
            btf.member_offset("dev_pagemap", "ranges").expect("ranges"),
            range
        );
        let ty = btf.member("dev_pagemap", "type").expect("type");
        assert_eq!(
            ty.kind,
            ValueKind::Enum {
                name: Some("memory_type".to_owned()),
                size: 4,
                signed: false
            }
        );
        assert!(btf.has_member("dev_pagemap", "nr_range"));
        let err = btf
            .member_offset("dev_pagemap", "range.nope")
            .expect_err("no such member");
        assert_eq!(
            err.to_string(),
            "struct dev_pagemap has no member `range.nope`"
        );
        assert_eq!(
            btf.enum_value_in("memory_type", "MEMORY_DEVICE_PRIVATE"),
            Some(1)
        );
        assert_eq!(btf.enum_value("MEMORY_DEVICE_FS_DAX"), Some(3), "{version}");
    }
}

#[test]
fn task_struct_mm() {
    for (version, _) in KERNELS {
        let btf = fixture(version);
        let mm = btf.member("task_struct", "mm").expect("task_struct.mm");
        assert_eq!(mm.kind, ptr("mm_struct"), "{version}");
        assert_eq!(mm.size, 8);
    }
}

#[test]
fn try_grab_folio_changed_signature() {
    let btf = fixture("6.1");
    let f = btf.func("try_grab_folio").expect("6.1 try_grab_folio");
    assert_eq!(f.param_names(), ["page", "refs", "flags"]);
    assert_eq!(f.params[0].kind, ptr("page"));
    assert_eq!(f.ret, ptr("folio"));
    btf.check_func(
        "try_grab_folio",
        &ptr("folio"),
        &[
            ptr("page"),
            ValueKind::int(4, true),
            ValueKind::int(4, false),
        ],
    )
    .expect("6.1 signature");

    for version in ["6.12", "7.3"] {
        let btf = fixture(version);
        let f = btf.func("try_grab_folio").expect("try_grab_folio");
        assert_eq!(f.param_names(), ["folio", "refs", "flags"], "{version}");
        assert_eq!(f.params[0].kind, ptr("folio"));
        assert_eq!(f.ret, ValueKind::int(4, true));
        let err = btf
            .check_func(
                "try_grab_folio",
                &ptr("folio"),
                &[
                    ptr("page"),
                    ValueKind::int(4, true),
                    ValueKind::int(4, false),
                ],
            )
            .expect_err("signature changed");
        assert_eq!(
            err.to_string(),
            "try_grab_folio: parameter 0 (`folio`) is `struct folio *`, expected `struct page *`"
        );
    }
}

#[test]
fn hooks_present_per_kernel() {
    let has = |version: &str, func: &str| fixture(version).func(func).is_some();
    assert!(!has("6.1", "vmf_insert_page_mkwrite"));
    assert!(!has("6.12", "vmf_insert_page_mkwrite"));
    assert!(has("7.3", "vmf_insert_page_mkwrite"));
    assert!(has("6.1", "__put_devmap_managed_page_refs"));
    assert!(has("6.1", "free_zone_device_page"));
    assert!(!has("6.1", "free_zone_device_folio"));
    assert!(has("6.12", "free_zone_device_folio"));
    assert!(has("7.3", "free_zone_device_folio"));
    assert!(has("6.12", "try_grab_folio_fast"));
    assert!(has("6.12", "gup_put_folio"));

    let btf = fixture("7.3");
    let f = btf.func("vmf_insert_page_mkwrite").expect("7.3");
    assert_eq!(f.param_names(), ["vmf", "page", "write"]);
    assert_eq!(
        f.params.iter().map(|p| p.kind.clone()).collect::<Vec<_>>(),
        [ptr("vm_fault"), ptr("page"), ValueKind::Bool]
    );
    assert_eq!(f.linkage, Linkage::Static);
}

#[test]
fn insert_hooks_take_pfn_t_by_value_until_7_3() {
    for version in ["6.1", "6.12"] {
        let btf = fixture(version);
        let f = btf.func("vmf_insert_mixed").expect("vmf_insert_mixed");
        assert_eq!(f.param_names(), ["vma", "addr", "pfn"], "{version}");
        assert_eq!(
            f.params[2].kind,
            ValueKind::Struct {
                name: None,
                size: 8
            },
            "pfn_t is an 8-byte struct passed by value"
        );
        assert_eq!(f.params[0].kind, ptr("vm_area_struct"));
        assert_eq!(btf.type_size("pfn_t"), Some(8));
    }
    // 7.3 dropped pfn_t: the pfn is a plain unsigned long.
    let btf = fixture("7.3");
    for func in ["vmf_insert_mixed", "insert_pfn"] {
        let f = btf.func(func).expect(func);
        assert_eq!(f.params[2].kind, ValueKind::int(8, false), "{func}");
    }
    let f = btf.func("vmf_insert_pfn_pmd").expect("vmf_insert_pfn_pmd");
    assert_eq!(f.params[1].kind, ValueKind::int(8, false));
    assert_eq!(btf.type_size("pfn_t"), None);
}

#[test]
fn foll_flags_are_enumerators_after_6_1() {
    // 6.1 still has them as #defines, invisible to BTF.
    assert_eq!(fixture("6.1").enum_value("FOLL_PIN"), None);
    assert_eq!(fixture("6.1").enum_value("FOLL_WRITE"), None);
    for version in ["6.12", "7.3"] {
        let btf = fixture(version);
        assert_eq!(btf.enum_value("FOLL_WRITE"), Some(1), "{version}");
        assert_eq!(btf.enum_value("FOLL_GET"), Some(2));
        assert_eq!(btf.enum_value("FOLL_LONGTERM"), Some(0x100));
        assert_eq!(
            btf.enum_value("FOLL_PIN"),
            Some(0x80000),
            "mm/internal.h enum"
        );
        assert_eq!(btf.enum_value("FOLL_FAST_ONLY"), Some(0x100000));
    }
}

#[test]
fn fixtures_are_small() {
    for (version, _) in KERNELS {
        let len = std::fs::metadata(fixture_path(version))
            .expect("fixture")
            .len();
        assert!(len < 200 * 1024, "{version} fixture is {len} bytes");
    }
}

#[test]
fn missing_struct_and_func_errors() {
    let btf = fixture("6.12");
    assert!(matches!(
        btf.member_offset("no_such_struct", "x"),
        Err(BtfError::NoStruct(_))
    ));
    assert!(btf.func("no_such_function").is_none());
    let err = btf
        .check_func("no_such_function", &ValueKind::Void, &[])
        .expect_err("missing");
    assert_eq!(
        err.to_string(),
        "no function named `no_such_function` in btf"
    );
    let pointer = btf
        .member_offset("vm_fault", "vma.vm_mm")
        .expect_err("pointer");
    assert_eq!(
        pointer.to_string(),
        "member `vma` of struct vm_fault is `struct vm_area_struct *`, not a struct or union"
    );
    let compound_head = btf.member("page", "compound_head").expect("compound_head");
    assert_eq!(
        compound_head.kind,
        ValueKind::Int {
            size: 8,
            signed: false
        }
    );
    let mapping = btf.member("page", "mapping").expect("mapping");
    assert_eq!(
        mapping.kind,
        ValueKind::Ptr(Pointee::Struct(Some("address_space".to_owned())))
    );
}

/// Prints the offsets refscope cares about for each fixture, as a Markdown
/// table (`cargo test -p refscope kernel_facts_table -- --ignored --nocapture`).
#[test]
#[ignore = "prints a table; nothing to check"]
fn kernel_facts_table() {
    const QUERIES: [(&str, &str); 17] = [
        ("page", "_refcount"),
        ("page", "compound_head"),
        ("page", "compound_info"),
        ("page", "pgmap"),
        ("page", "zone_device_data"),
        ("page", "mapping"),
        ("folio", "_refcount"),
        ("folio", "pgmap"),
        ("vm_area_struct", "vm_mm"),
        ("vm_area_struct", "vm_start"),
        ("vm_fault", "vma"),
        ("vm_fault", "address"),
        ("task_struct", "mm"),
        ("dev_pagemap", "type"),
        ("dev_pagemap", "nr_range"),
        ("dev_pagemap", "range"),
        ("dev_pagemap", "range.end"),
    ];
    let btfs: Vec<Btf> = KERNELS.iter().map(|(v, _)| fixture(v)).collect();
    let cell = |r: Result<super::super::MemberInfo, BtfError>| match r {
        Ok(m) => format!("{} (`{}`)", m.offset, m.kind),
        Err(_) => "—".to_owned(),
    };
    println!("| | {} |", KERNELS.map(|k| k.0).join(" | "));
    println!("|---|---|---|---|");
    for s in [
        "page",
        "folio",
        "vm_area_struct",
        "vm_fault",
        "task_struct",
        "dev_pagemap",
    ] {
        let sizes: Vec<String> = btfs
            .iter()
            .map(|b| format!("{:?}", b.struct_size(s)))
            .collect();
        println!("| sizeof({s}) | {} |", sizes.join(" | "));
    }
    for (s, m) in QUERIES {
        let cells: Vec<String> = btfs.iter().map(|b| cell(b.member(s, m))).collect();
        println!("| {s}.{m} | {} |", cells.join(" | "));
    }
    for e in [
        "FOLL_WRITE",
        "FOLL_GET",
        "FOLL_LONGTERM",
        "FOLL_PIN",
        "FOLL_FAST_ONLY",
        "MEMORY_DEVICE_FS_DAX",
        "MEMORY_DEVICE_GENERIC",
    ] {
        let cells: Vec<String> = btfs
            .iter()
            .map(|b| {
                b.enum_value(e)
                    .map_or("—".to_owned(), |v| format!("{v:#x}"))
            })
            .collect();
        println!("| {e} | {} |", cells.join(" | "));
    }
    for f in ROOTS.funcs {
        let cells: Vec<String> = btfs
            .iter()
            .map(|b| match b.func(f) {
                Some(f) => format!(
                    "({}) -> {}",
                    f.params
                        .iter()
                        .map(|p| p.kind.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    f.ret
                ),
                None => "—".to_owned(),
            })
            .collect();
        println!("| {f} | {} |", cells.join(" | "));
    }
}
