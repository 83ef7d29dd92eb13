//! Unit tests on BTF blobs built by [`Builder`].

use super::super::raw::KIND_STRUCT;
use super::super::{Btf, BtfError, Linkage, Param, Pointee, ValueKind};
use super::builder::{Builder, INT_BOOL, INT_CHAR, INT_SIGNED, LINKAGE_GLOBAL, LINKAGE_STATIC};

/// Ids of the common types in [`kernelish`].
struct Kernelish {
    builder: Builder,
    u64_: u32,
    page: u32,
}

/// A small kernel-like type graph:
///
/// ```c
/// typedef struct { int counter; } atomic_t;
/// struct list_head { struct list_head *next, *prev; };
/// struct page {                          // 64 bytes
///     unsigned long flags;               // 0
///     union {                            // 8
///         struct {                       // 8
///             struct list_head lru;      // 8
///             struct address_space *mapping; // 24
///         };
///         struct {                       // 8
///             unsigned long compound_head;   // 8
///             union {                    // 16: a third level
///                 struct { unsigned int pad; unsigned int deep; }; // 16
///             };
///         };
///         struct {                       // 8
///             unsigned long _pad;        // 8
///             struct dev_pagemap *pgmap; // 16 (not 8: offsets must add up)
///         };
///     };
///     atomic_t _refcount;                // 52
///     unsigned long memcg_data;          // 56
/// };
/// ```
fn kernelish() -> Kernelish {
    let mut b = Builder::new();
    let int = b.int("int", 4, true);
    let uint = b.int("unsigned int", 4, false);
    let u64_ = b.int("long unsigned int", 8, false);
    let atomic_inner = b.struct_("", 4, &[("counter", int, 0)]);
    let atomic = b.typedef("atomic_t", atomic_inner);
    let list_head = b.next_id();
    let list_ptr = list_head + 1;
    assert_eq!(
        b.struct_(
            "list_head",
            16,
            &[("next", list_ptr, 0), ("prev", list_ptr, 64)]
        ),
        list_head
    );
    assert_eq!(b.ptr(list_head), list_ptr);
    let mapping_fwd = b.fwd("address_space", false);
    let mapping_ptr = b.ptr(mapping_fwd);
    let pgmap_fwd = b.fwd("dev_pagemap", false);
    let pgmap_ptr = b.ptr(pgmap_fwd);

    let lru = b.struct_(
        "",
        24,
        &[("lru", list_head, 0), ("mapping", mapping_ptr, 128)],
    );
    let deep = b.struct_("", 8, &[("pad", uint, 0), ("deep", uint, 32)]);
    let deep_union = b.union_("", 8, &[("", deep, 0)]);
    let compound = b.struct_("", 16, &[("compound_head", u64_, 0), ("", deep_union, 64)]);
    let zone_device = b.struct_("", 16, &[("_pad", u64_, 0), ("pgmap", pgmap_ptr, 64)]);
    let big_union = b.union_(
        "",
        40,
        &[("", lru, 0), ("", compound, 0), ("", zone_device, 0)],
    );
    let page = b.struct_(
        "page",
        64,
        &[
            ("flags", u64_, 0),
            ("", big_union, 64),
            ("_refcount", atomic, 416),
            ("memcg_data", u64_, 448),
        ],
    );
    Kernelish {
        builder: b,
        u64_,
        page,
    }
}

#[test]
fn nested_anonymous_members() {
    let k = kernelish();
    let btf = k.builder.parse();
    assert_eq!(btf.struct_size("page"), Some(64));
    assert_eq!(btf.struct_id("page"), Some(k.page));
    assert_eq!(btf.member_offset("page", "flags").expect("flags"), 0);
    assert_eq!(
        btf.member_offset("page", "_refcount").expect("_refcount"),
        52
    );
    assert_eq!(
        btf.member_offset("page", "_refcount.counter")
            .expect("counter"),
        52
    );
    assert_eq!(btf.member_offset("page", "memcg_data").expect("memcg"), 56);
    assert_eq!(btf.member_offset("page", "lru").expect("lru"), 8);
    assert_eq!(btf.member_offset("page", "lru.prev").expect("lru.prev"), 16);
    assert_eq!(btf.member_offset("page", "mapping").expect("mapping"), 24);
    assert_eq!(btf.member_offset("page", "compound_head").expect("head"), 8);
    assert_eq!(btf.member_offset("page", "pgmap").expect("pgmap"), 16);
    assert_eq!(
        btf.member_offset("page", "deep")
            .expect("three levels down"),
        20
    );
    assert!(btf.has_member("page", "pad"));
    assert!(!btf.has_member("page", "compound_info"));
    assert!(!btf.has_member("page", "lru.nope"));
    assert!(!btf.has_member("list_head", "_refcount"));

    let pgmap = btf.member("page", "pgmap").expect("pgmap");
    assert_eq!(pgmap.kind, ValueKind::ptr_to_struct("dev_pagemap"));
    assert_eq!(pgmap.size, 8);
    assert_eq!(pgmap.bitfield_bits, None);
    let refcount = btf.member("page", "_refcount").expect("_refcount");
    assert_eq!(refcount.size, 4);
    assert_eq!(
        refcount.kind,
        ValueKind::Struct {
            name: None,
            size: 4
        }
    );
    let head = btf.member("page", "compound_head").expect("compound_head");
    assert_eq!(head.kind, ValueKind::int(8, false));
    let lru = btf.member("page", "lru").expect("lru");
    assert_eq!(
        lru.kind,
        ValueKind::Struct {
            name: Some("list_head".to_owned()),
            size: 16
        }
    );
}

#[test]
fn member_errors_name_what_is_missing() {
    let btf = kernelish().builder.parse();
    let err = btf.member_offset("page", "_refcnt").expect_err("missing");
    assert!(matches!(err, BtfError::NoMember { .. }));
    assert_eq!(err.to_string(), "struct page has no member `_refcnt`");
    let err = btf.member_offset("page", "lru.nope").expect_err("missing");
    assert_eq!(err.to_string(), "struct page has no member `lru.nope`");
    let err = btf
        .member_offset("page", "mapping.host")
        .expect_err("pointer");
    assert_eq!(
        err.to_string(),
        "member `mapping` of struct page is `struct address_space *`, not a struct or union"
    );
    let err = btf
        .member_offset("page", "_refcount.counter.x")
        .expect_err("int");
    assert_eq!(
        err.to_string(),
        "member `_refcount.counter` of struct page is `s32`, not a struct or union"
    );
    let err = btf
        .member_offset("folio", "_refcount")
        .expect_err("no folio");
    assert_eq!(err.to_string(), "no struct or union named `folio`");
    for bad in ["", ".", "lru..prev", "lru.", ".lru"] {
        assert!(
            matches!(
                btf.member_offset("page", bad),
                Err(BtfError::InvalidPath(_))
            ),
            "{bad:?}"
        );
    }
    // Forward declarations are not structs with members.
    assert_eq!(btf.struct_size("address_space"), None);
    assert!(matches!(
        btf.member_offset("address_space", "host"),
        Err(BtfError::NoStruct(_))
    ));
}

#[test]
fn members_through_modifiers() {
    let mut b = Builder::new();
    let u64_ = b.int("u64", 8, false);
    let vma = b.fwd("vm_area_struct", false);
    let vma_ptr = b.ptr(vma);
    let const_vma_ptr = b.const_(vma_ptr);
    // struct vm_fault { const struct { struct vm_area_struct *vma; u64 pgoff; u64 address; }; ... }
    let anon = b.struct_(
        "",
        24,
        &[
            ("vma", const_vma_ptr, 0),
            ("pgoff", u64_, 64),
            ("address", u64_, 128),
        ],
    );
    let const_anon = b.const_(anon);
    let volatile_anon = b.volatile(const_anon);
    // struct range { u64 start; u64 end; }; typedef const struct range range_t;
    let range = b.struct_("range", 16, &[("start", u64_, 0), ("end", u64_, 64)]);
    let const_range = b.const_(range);
    let range_t = b.typedef("range_t", const_range);
    let tagged = b.type_tag("rcu", range_t);
    let restricted = b.restrict(tagged);
    let fault = b.struct_(
        "vm_fault",
        72,
        &[
            ("flags", u64_, 0),
            ("", volatile_anon, 64),
            ("r", restricted, 256),
            ("tail", u64_, 384),
        ],
    );
    let union_ = b.union_(
        "either",
        16,
        &[("fault_ptr", vma_ptr, 0), ("range", range, 0)],
    );
    let btf = b.parse();

    assert_eq!(btf.member_offset("vm_fault", "vma").expect("vma"), 8);
    assert_eq!(
        btf.member_offset("vm_fault", "address").expect("address"),
        24
    );
    assert_eq!(btf.member_offset("vm_fault", "r.end").expect("r.end"), 40);
    assert_eq!(btf.member_offset("vm_fault", "tail").expect("tail"), 48);
    let vma = btf.member("vm_fault", "vma").expect("vma");
    assert_eq!(vma.kind, ValueKind::ptr_to_struct("vm_area_struct"));
    assert!(vma.kind.is_ptr_to_struct("vm_area_struct"));
    assert_eq!(vma.kind.to_string(), "struct vm_area_struct *");
    let r = btf.member("vm_fault", "r").expect("r");
    assert_eq!(r.size, 16);
    assert_eq!(r.kind.to_string(), "struct range");

    // Unions are containers too, with their own wording.
    assert_eq!(btf.struct_id("either"), Some(union_));
    assert_eq!(btf.struct_size("either"), Some(16));
    assert_eq!(btf.member_offset("either", "range.end").expect("end"), 8);
    let err = btf.member_offset("either", "nope").expect_err("missing");
    assert_eq!(err.to_string(), "union either has no member `nope`");
    assert_eq!(btf.struct_id("vm_fault"), Some(fault));
    assert_eq!(btf.type_size("range_t"), Some(16));
    assert_eq!(btf.type_size("u64"), Some(8));
}

#[test]
fn bitfields() {
    let mut b = Builder::new();
    let uint = b.int("unsigned int", 4, false);
    let u8_ = b.int("u8", 1, false);
    // Old-style bitfield: an INT whose bit count is smaller than its size.
    let three_bits = b.int_encoded("", 1, 0, 0, 3);
    b.struct_bitfields(
        "flags",
        8,
        &[
            ("a", uint, 0, 3),
            ("b", uint, 3, 5),
            ("c", uint, 8, 8),
            ("whole", u8_, 16, 0),
            ("d", uint, 33, 2),
        ],
    );
    b.struct_(
        "old",
        4,
        &[("x", u8_, 0), ("y", three_bits, 8), ("z", three_bits, 11)],
    );
    let btf = b.parse();

    assert_eq!(
        btf.member_offset("flags", "a")
            .expect("bit 0 is byte-aligned"),
        0
    );
    let err = btf.member_offset("flags", "b").expect_err("bit 3");
    assert!(matches!(err, BtfError::Bitfield { bit_offset: 3, .. }));
    assert_eq!(
        err.to_string(),
        "member `b` of struct flags is a bitfield at bit 3, not on a byte boundary"
    );
    assert_eq!(btf.member_offset("flags", "c").expect("bit 8"), 1);
    assert_eq!(btf.member_offset("flags", "whole").expect("plain"), 2);
    assert!(btf.member_offset("flags", "d").is_err());
    let d = btf
        .member("flags", "d")
        .expect("member() reports bitfields");
    assert_eq!((d.offset, d.bit_offset, d.bitfield_bits), (4, 33, Some(2)));
    assert_eq!(
        btf.member("flags", "whole").expect("whole").bitfield_bits,
        None
    );
    assert!(btf.has_member("flags", "b"));

    assert_eq!(btf.member_offset("old", "x").expect("x"), 0);
    let y = btf.member("old", "y").expect("y");
    assert_eq!((y.offset, y.bitfield_bits), (1, Some(3)));
    assert_eq!(btf.member_offset("old", "y").expect("byte-aligned"), 1);
    assert!(btf.member_offset("old", "z").is_err());
}

#[test]
fn func_prototypes() {
    let k = kernelish();
    let mut b = k.builder;
    let int = b.int("int", 4, true);
    let uint = b.int("unsigned int", 4, false);
    let bool_ = b.int_encoded("_Bool", 1, INT_BOOL, 0, 8);
    let folio = b.fwd("folio", false);
    let folio_ptr = b.ptr(folio);
    let page_ptr = b.ptr(k.page);
    let const_page = b.const_(k.page);
    let const_page_ptr = b.ptr(const_page);
    let pfn_inner = b.struct_("", 8, &[("val", k.u64_, 0)]);
    let pfn_t = b.typedef("pfn_t", pfn_inner);
    let fault_t = b.typedef("vm_fault_t", uint);
    let kind = b.enum_("memory_type", 4, false, &[("MEMORY_DEVICE_PRIVATE", 1)]);
    let char_ = b.int_encoded("char", 1, INT_SIGNED | INT_CHAR, 0, 8);
    let char_ptr = b.ptr(char_);
    let void_ptr = b.ptr(0);
    let cb_proto = b.func_proto(0, &[("", void_ptr)]);
    let cb = b.ptr(cb_proto);
    let pp = b.ptr(page_ptr);

    let grab = b.func_proto(
        folio_ptr,
        &[("page", page_ptr), ("refs", int), ("flags", uint)],
    );
    b.func("try_grab_folio", grab, LINKAGE_STATIC);
    let insert = b.func_proto(
        fault_t,
        &[("vma", void_ptr), ("addr", k.u64_), ("pfn", pfn_t)],
    );
    b.func("vmf_insert_mixed", insert, LINKAGE_GLOBAL);
    let misc = b.func_proto(
        bool_,
        &[
            ("", kind),
            ("s", char_ptr),
            ("cb", cb),
            ("pp", pp),
            ("cp", const_page_ptr),
        ],
    );
    b.func("misc", misc, 2);
    let printk = b.func_proto(int, &[("fmt", char_ptr), ("", 0)]);
    b.func("_printk", printk, LINKAGE_GLOBAL);
    let nothing = b.func_proto(0, &[]);
    b.func("exit_mmap", nothing, LINKAGE_STATIC);
    let btf = b.parse();

    let f = btf.func("try_grab_folio").expect("try_grab_folio");
    assert_eq!(f.name, "try_grab_folio");
    assert_eq!(f.param_count(), 3);
    assert_eq!(f.param_names(), ["page", "refs", "flags"]);
    assert_eq!(f.ret, ValueKind::ptr_to_struct("folio"));
    assert_eq!(
        f.params,
        [
            Param {
                name: Some("page".to_owned()),
                kind: ValueKind::ptr_to_struct("page")
            },
            Param {
                name: Some("refs".to_owned()),
                kind: ValueKind::int(4, true)
            },
            Param {
                name: Some("flags".to_owned()),
                kind: ValueKind::int(4, false)
            },
        ]
    );
    assert_eq!(f.linkage, Linkage::Static);
    assert!(!f.variadic);
    f.check_signature(
        &ValueKind::ptr_to_struct("folio"),
        &[
            ValueKind::ptr_to_struct("page"),
            ValueKind::int(4, true),
            ValueKind::int(4, false),
        ],
    )
    .expect("matches");
    let err = f
        .check_signature(
            &ValueKind::int(4, true),
            &[
                ValueKind::ptr_to_struct("page"),
                ValueKind::int(4, true),
                ValueKind::int(4, false),
            ],
        )
        .expect_err("return differs");
    assert_eq!(
        err.to_string(),
        "try_grab_folio: return type is `struct folio *`, expected `s32`"
    );
    let err = f.check_signature(&ValueKind::Void, &[]).expect_err("count");
    assert_eq!(
        err.to_string(),
        "try_grab_folio: parameter count is `3`, expected `0`"
    );

    let f = btf.func("vmf_insert_mixed").expect("vmf_insert_mixed");
    assert_eq!(f.linkage, Linkage::Global);
    assert_eq!(f.ret, ValueKind::int(4, false));
    assert_eq!(
        f.params[2].kind,
        ValueKind::Struct {
            name: None,
            size: 8
        }
    );
    assert_eq!(f.params[0].kind, ValueKind::Ptr(Pointee::Void));

    let f = btf.func("misc").expect("misc");
    assert_eq!(f.linkage, Linkage::Extern);
    assert_eq!(f.ret, ValueKind::Bool);
    assert_eq!(f.param_names(), ["", "s", "cb", "pp", "cp"]);
    assert_eq!(f.params[0].name, None);
    assert_eq!(
        f.params.iter().map(|p| p.kind.clone()).collect::<Vec<_>>(),
        [
            ValueKind::Enum {
                name: Some("memory_type".to_owned()),
                size: 4,
                signed: false
            },
            ValueKind::Ptr(Pointee::Int {
                size: 1,
                signed: true
            }),
            ValueKind::Ptr(Pointee::Func),
            ValueKind::Ptr(Pointee::Ptr),
            ValueKind::ptr_to_struct("page"),
        ]
    );

    let f = btf.func("_printk").expect("_printk");
    assert!(f.variadic);
    assert_eq!(f.param_names(), ["fmt"]);

    let f = btf.func("exit_mmap").expect("exit_mmap");
    assert_eq!((f.ret.clone(), f.param_count()), (ValueKind::Void, 0));
    btf.check_func("exit_mmap", &ValueKind::Void, &[])
        .expect("void()");

    assert!(btf.func("page").is_none(), "a struct is not a function");
    assert!(btf.func("vm_insert_page").is_none());
    assert!(btf.func("").is_none());
}

#[test]
fn enums() {
    let mut b = Builder::new();
    b.enum_(
        "",
        4,
        false,
        &[
            ("FOLL_WRITE", 1),
            ("FOLL_PIN", 1 << 19),
            ("FOLL_HIGH", 0x8000_0000),
        ],
    );
    let signed = b.enum_("signed_enum", 4, true, &[("NEG", -2), ("POS", 7)]);
    b.enum64("big", 8, false, &[("BIG", 1 << 40), ("HUGE", -1)]);
    b.enum64("big_signed", 8, true, &[("BIG_NEG", -(1 << 40))]);
    b.enum_("other", 4, false, &[("POS", 9), ("OTHER_ONLY", 3)]);
    let btf = b.parse();

    assert_eq!(btf.enum_value("FOLL_WRITE"), Some(1));
    assert_eq!(btf.enum_value("FOLL_PIN"), Some(0x80000));
    assert_eq!(
        btf.enum_value("FOLL_HIGH"),
        Some(0x8000_0000),
        "unsigned 32-bit"
    );
    assert_eq!(btf.enum_value("NEG"), Some(-2), "signed 32-bit");
    assert_eq!(btf.enum_value("BIG"), Some(1 << 40));
    assert_eq!(btf.enum_value("HUGE"), Some(-1), "u64::MAX wraps");
    assert_eq!(btf.enum_value("BIG_NEG"), Some(-(1 << 40)));
    assert_eq!(btf.enum_value("POS"), Some(7), "lowest type id wins");
    assert_eq!(btf.enum_value_in("other", "POS"), Some(9));
    assert_eq!(btf.enum_value_in("signed_enum", "POS"), Some(7));
    assert_eq!(btf.enum_value_in("signed_enum", "OTHER_ONLY"), None);
    assert_eq!(btf.enum_value_in("big", "BIG"), Some(1 << 40));
    assert_eq!(btf.enum_value_in("nope", "BIG"), None);
    assert_eq!(btf.enum_value("FOLL_NOPE"), None);
    assert_eq!(btf.type_size("signed_enum"), Some(4));
    assert_eq!(btf.type_size("big"), Some(8));
    assert!(signed > 0);
}

/// Base BTF with `int`, `struct page`; split BTF adding a module struct,
/// enum and function that use base types and base strings.
#[test]
fn split_btf() {
    let k = kernelish();
    let base_builder = k.builder;
    let base = base_builder.parse();
    let base_count = base.type_count();

    let mut b = Builder::split(&base);
    assert_eq!(b.next_id(), base_count);
    let page_ptr = b.ptr(k.page);
    let dev = b.struct_(
        "dev_dax",
        24,
        // `flags` reuses the base's string, `pages` is new.
        &[
            ("flags", k.u64_, 0),
            ("pages", page_ptr, 64),
            ("_refcount", k.u64_, 128),
        ],
    );
    let dev_ptr = b.ptr(dev);
    b.enum_("dax_mode", 4, false, &[("DAX_MODE_X", 5)]);
    let proto = b.func_proto(page_ptr, &[("dev", dev_ptr), ("flags", k.u64_)]);
    b.func("dax_first_page", proto, LINKAGE_STATIC);
    let bytes = b.build();

    let split = Btf::parse_split(&bytes, &base).expect("split parses");
    assert_eq!(split.struct_id("dev_dax"), Some(dev));
    assert!(dev >= base_count);
    assert_eq!(split.type_count(), base_count + 6);
    assert!(split.base().is_some());
    assert!(base.base().is_none());
    // Own types, base types, and members mixing both.
    assert_eq!(split.struct_size("dev_dax"), Some(24));
    assert_eq!(split.struct_size("page"), Some(64));
    assert_eq!(split.member_offset("page", "_refcount").expect("base"), 52);
    assert_eq!(
        split.member_offset("dev_dax", "_refcount").expect("own"),
        16
    );
    assert_eq!(
        split
            .member_offset("dev_dax", "flags")
            .expect("base string"),
        0
    );
    assert_eq!(
        split.member("dev_dax", "pages").expect("pages").kind,
        ValueKind::ptr_to_struct("page")
    );
    let f = split.func("dax_first_page").expect("module func");
    assert_eq!(f.param_names(), ["dev", "flags"]);
    assert_eq!(f.params[0].kind, ValueKind::ptr_to_struct("dev_dax"));
    assert_eq!(f.ret, ValueKind::ptr_to_struct("page"));
    assert_eq!(split.enum_value("DAX_MODE_X"), Some(5));
    assert_eq!(split.enum_value_in("dax_mode", "DAX_MODE_X"), Some(5));
    // The base does not see the module's types.
    assert_eq!(base.struct_size("dev_dax"), None);
    assert!(base.func("dax_first_page").is_none());

    // Split BTF alone, or on a too-small base, is rejected.
    assert!(Btf::parse(&bytes).is_err());
    let small_base = Builder::new().parse();
    assert!(Btf::parse_split(&bytes, &small_base).is_err());
    // A split on a split (module on module) works the same way.
    let mut b2 = Builder::split(&split);
    let dev_ptr2 = b2.ptr(dev);
    b2.struct_("holder", 8, &[("dev", dev_ptr2, 0)]);
    let split2 = Btf::parse_split(&b2.build(), &split).expect("split of split");
    assert_eq!(
        split2.member("holder", "dev").expect("dev").kind,
        ValueKind::ptr_to_struct("dev_dax")
    );
    assert_eq!(split2.struct_size("page"), Some(64));
}

#[test]
fn foreign_endian_blob() {
    let build = |b: &mut Builder| {
        let u32_ = b.int("u32", 4, false);
        b.struct_("s", 8, &[("a", u32_, 0), ("b", u32_, 32)]);
        b.enum_("e", 4, true, &[("E_NEG", -5)]);
        let proto = b.func_proto(u32_, &[("x", u32_)]);
        b.func("f", proto, LINKAGE_GLOBAL);
    };
    let mut native = Builder::new();
    build(&mut native);
    let mut foreign = Builder::new().foreign_endian();
    build(&mut foreign);
    let (native, foreign) = (native.build(), foreign.build());
    assert_ne!(native, foreign);
    let btf = Btf::parse(&foreign).expect("foreign endian parses");
    assert_eq!(btf.member_offset("s", "b").expect("b"), 4);
    assert_eq!(btf.enum_value("E_NEG"), Some(-5));
    assert_eq!(btf.func("f").expect("f").param_names(), ["x"]);
    // A split must be in its base's byte order.
    let base = Btf::parse(&native).expect("native");
    let split = Builder::split(&base).foreign_endian().build();
    assert!(matches!(
        Btf::parse_split(&split, &base),
        Err(BtfError::EndianMismatch)
    ));
}

#[test]
fn layout_section_lets_unknown_kinds_be_skipped() {
    // Kind 20 is unknown: 4 bytes of info plus 8 bytes per element.
    let mut layout = vec![[0u8; 4]; 21];
    layout[20] = [4, 8, 0, 0];
    let mut b = Builder::new().with_layout(layout);
    let int = b.int("int", 4, true);
    b.record(20, "future", 2, false, 0, &[7, 1, 2, 3, 4]);
    b.struct_("after", 4, &[("x", int, 0)]);
    let btf = Btf::parse(&b.build()).expect("unknown kind skipped");
    assert_eq!(btf.member_offset("after", "x").expect("x"), 0);
    assert_eq!(btf.type_count(), 4);

    // Without a layout section the record cannot be skipped.
    let mut b = Builder::new();
    b.record(20, "future", 0, false, 0, &[]);
    assert!(matches!(
        Btf::parse(&b.build()),
        Err(BtfError::UnknownKind { id: 1, kind: 20 })
    ));
}

#[test]
fn other_kinds_parse() {
    let mut b = Builder::new();
    let int = b.int("int", 4, true);
    let dbl = b.float("double", 8);
    let arr = b.array(int, int, 4);
    let var = b.var("counter", int, 1);
    b.datasec(".data..percpu", 4, &[(var, 0, 4)]);
    b.decl_tag("tag", var, -1);
    let flex = b.next_id() + 1;
    b.struct_(
        "with_array",
        48,
        &[("arr", arr, 0), ("d", dbl, 128), ("flex", flex, 192)],
    );
    b.array(dbl, int, 0);
    let btf = b.parse();
    let arr = btf.member("with_array", "arr").expect("arr");
    assert_eq!(arr.size, 16);
    assert_eq!(
        arr.kind,
        ValueKind::Array {
            len: 4,
            elem_size: 4
        }
    );
    assert_eq!(
        btf.member("with_array", "d").expect("d").kind,
        ValueKind::Float { size: 8 }
    );
    let flex = btf.member("with_array", "flex").expect("flex");
    assert_eq!((flex.offset, flex.size), (24, 0));
    assert_eq!(btf.type_size("double"), Some(8));
}

fn header(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_ne_bytes());
}

#[test]
fn malformed_blobs_are_rejected() {
    let mut b = Builder::new();
    let int = b.int("int", 4, true);
    b.struct_("s", 4, &[("x", int, 0)]);
    let good = b.build();
    Btf::parse(&good).expect("good");

    assert!(matches!(Btf::parse(&[]), Err(BtfError::Truncated { .. })));
    assert!(matches!(
        Btf::parse(&good[..20]),
        Err(BtfError::Truncated { .. })
    ));
    assert!(matches!(
        Btf::parse(&good[..good.len() - 1]),
        Err(BtfError::Truncated { .. })
    ));
    let mut bad = good.clone();
    bad[0] = 0x7f;
    let err = Btf::parse(&bad).expect_err("magic");
    assert!(matches!(err, BtfError::BadMagic(_)));
    assert!(err.to_string().starts_with("not btf data"));
    let mut bad = good.clone();
    bad[2] = 2;
    assert!(matches!(
        Btf::parse(&bad),
        Err(BtfError::UnsupportedVersion(2))
    ));
    let mut bad = good.clone();
    header(&mut bad, 4, 25);
    assert!(matches!(Btf::parse(&bad), Err(BtfError::InvalidHeader(_))));
    let mut bad = good.clone();
    header(&mut bad, 12, 10); // type_len not a multiple of 4
    assert!(matches!(Btf::parse(&bad), Err(BtfError::InvalidHeader(_))));
    // A record cut in the middle: shrink type_len by one member.
    let mut bad = good.clone();
    let type_len = u32::from_ne_bytes([bad[12], bad[13], bad[14], bad[15]]);
    header(&mut bad, 12, type_len - 12);
    assert!(matches!(Btf::parse(&bad), Err(BtfError::Truncated { .. })));
    // String section without its final NUL.
    let mut bad = good.clone();
    let str_len = u32::from_ne_bytes([bad[20], bad[21], bad[22], bad[23]]);
    header(&mut bad, 20, str_len - 1);
    assert!(matches!(Btf::parse(&bad), Err(BtfError::InvalidHeader(_))));

    let mut b = Builder::new();
    b.ptr(5);
    let err = Btf::parse(&b.build()).expect_err("dangling");
    assert!(matches!(err, BtfError::BadTypeRef { id: 1, target: 5 }));
    assert_eq!(
        err.to_string(),
        "type [1] refers to type [5], which does not exist"
    );

    let mut b = Builder::new();
    let int = b.int("int", 4, true);
    b.func("f", int, LINKAGE_GLOBAL);
    assert!(matches!(
        Btf::parse(&b.build()),
        Err(BtfError::BadFunc { id: 2 })
    ));

    let mut b = Builder::new();
    b.record(KIND_STRUCT, "", 1, false, 4, &[1000, 0, 0]);
    assert!(matches!(
        Btf::parse(&b.build()),
        Err(BtfError::BadStringOffset {
            id: 1,
            offset: 1000
        })
    ));
    let mut b = Builder::new();
    b.record(0, "", 0, false, 0, &[]);
    assert!(matches!(
        Btf::parse(&b.build()),
        Err(BtfError::UnknownKind { kind: 0, .. })
    ));
}

#[test]
fn cycles_do_not_hang() {
    let mut b = Builder::new();
    // typedef a b; typedef b a;
    let a = b.next_id();
    b.typedef("loop_a", a + 1);
    b.typedef("loop_b", a);
    b.struct_("s", 8, &[("x", a, 0), ("", a + 1, 32)]);
    let btf = b.parse();
    assert_eq!(btf.struct_size("s"), Some(8));
    assert_eq!(btf.type_size("loop_a"), None);
    assert!(matches!(
        btf.member_offset("s", "y"),
        Err(BtfError::TypeChainTooDeep { .. })
    ));
    assert_eq!(btf.member("s", "x").expect("x").kind, ValueKind::Other);
    assert!(matches!(
        btf.member_offset("s", "x.y"),
        Err(BtfError::TypeChainTooDeep { .. })
    ));

    // A struct that contains itself anonymously.
    let mut b = Builder::new();
    let id = b.next_id();
    b.struct_("self", 8, &[("", id, 0)]);
    let btf = b.parse();
    assert!(matches!(
        btf.member_offset("self", "x"),
        Err(BtfError::TypeChainTooDeep { .. })
    ));
}

#[test]
fn missing_files() {
    let path = std::env::temp_dir().join("refscope-no-such-btf-file");
    let err = Btf::from_file(&path).expect_err("missing");
    assert!(matches!(err, BtfError::NoKernelBtf { .. }));
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("CONFIG_DEBUG_INFO_BTF"), "{message}");

    let dir = std::env::temp_dir();
    let err = Btf::from_file(&dir).expect_err("a directory");
    assert!(matches!(err, BtfError::Io { .. }));

    let file = dir.join(format!("refscope-bad-btf-{}", std::process::id()));
    std::fs::write(&file, b"not btf at all, definitely not").expect("write");
    let err = Btf::from_file(&file).expect_err("garbage");
    std::fs::remove_file(&file).expect("remove");
    assert!(
        matches!(&err, BtfError::InFile { source, .. } if matches!(**source, BtfError::BadMagic(_)))
    );
    assert!(err.to_string().contains("refscope-bad-btf"));

    // Module BTF comes from /sys/kernel/btf/<module>.
    let base = kernelish().builder.parse();
    let err = Btf::module_from_sys_fs("refscope_no_such_module", &base).expect_err("no module");
    assert!(
        err.to_string()
            .starts_with("/sys/kernel/btf/refscope_no_such_module does not exist"),
        "{err}"
    );
}

#[test]
fn files_round_trip() {
    let k = kernelish();
    let base_bytes = k.builder.build();
    let base_path = std::env::temp_dir().join(format!("refscope-base-{}.btf", std::process::id()));
    std::fs::write(&base_path, &base_bytes).expect("write base");
    let base = Btf::from_file(&base_path);
    std::fs::remove_file(&base_path).expect("remove");
    let base = base.expect("base from file");

    let mut b = Builder::split(&base);
    let page_ptr = b.ptr(k.page);
    b.struct_("holder", 8, &[("page", page_ptr, 0)]);
    let split_path =
        std::env::temp_dir().join(format!("refscope-split-{}.btf", std::process::id()));
    std::fs::write(&split_path, b.build()).expect("write split");
    let split = Btf::split_from_file(&split_path, &base);
    // Split BTF read as base BTF fails, naming the file.
    let alone = Btf::from_file(&split_path);
    std::fs::remove_file(&split_path).expect("remove");
    let split = split.expect("split from file");
    assert_eq!(split.member_offset("holder", "page").expect("page"), 0);
    let err = alone.expect_err("split alone");
    assert!(err.to_string().starts_with("invalid btf in "), "{err}");
}

#[test]
fn btf_is_shareable() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Btf>();
    let btf = kernelish().builder.parse();
    let clone = btf.clone();
    let handle = std::thread::spawn(move || clone.member_offset("page", "_refcount").ok());
    assert_eq!(handle.join().expect("thread"), Some(52));
    assert!(format!("{btf:?}").contains("types"));
}
