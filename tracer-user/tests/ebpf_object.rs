//! The eBPF side never writes kernel memory and reads it only through the
//! probe-read helpers: every helper call in the object refscope embeds
//! (the one build.rs leaves in OUT_DIR) must be on the audited list below,
//! and there must be no kfunc call. Loads and stores the verifier checks
//! itself (stack, map values, ring-buffer records) need no list: tracing
//! programs cannot store through kernel pointers, and refscope reads hook
//! arguments as integers (bpf_get_func_arg), never as BTF pointers it
//! could load through directly.

const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/refscope-ebpf"));

/// Helpers that read kernel memory only through the probe-read helpers,
/// or touch only refscope's own maps and ring buffer, or the context.
/// A helper added to the programs must be added here after checking it.
const AUDITED: &[(i32, &str)] = &[
    (1, "map_lookup_elem"),
    (2, "map_update_elem"),
    (3, "map_delete_elem"),
    (5, "ktime_get_ns"),
    (8, "get_smp_processor_id"),
    (14, "get_current_pid_tgid"),
    (16, "get_current_comm"),
    // The task pointer is only ever read with probe_read_kernel.
    (35, "get_current_task"),
    (67, "get_stack"),
    (113, "probe_read_kernel"),
    (115, "probe_read_kernel_str"),
    // The attach snapshot's task iterator writes to its own seq_file.
    (127, "seq_write"),
    (130, "ringbuf_output"),
    (131, "ringbuf_reserve"),
    (132, "ringbuf_submit"),
    (133, "ringbuf_discard"),
    (183, "get_func_arg"),
    (184, "get_func_ret"),
    (185, "get_func_arg_cnt"),
];

/// Helpers that write memory or change kernel behaviour: named in the
/// failure message if they ever appear.
const WRITERS: &[(i32, &str)] = &[
    (36, "probe_write_user"),
    (58, "override_return"),
    (109, "send_signal"),
    (117, "send_signal_thread"),
    (
        158,
        "get_current_task_btf (direct loads through a BTF pointer)",
    ),
];

/// The object, or a failure saying how to build it.
fn object() -> &'static [u8] {
    assert!(
        !OBJECT.is_empty(),
        "refscope was built without its eBPF programs (no bpf-linker): run `cargo xtask setup` \
         and rebuild; this test reads the object"
    );
    OBJECT
}

fn u16_at(b: &[u8], o: usize) -> usize {
    usize::from(u16::from_le_bytes([b[o], b[o + 1]]))
}
fn u64_at(b: &[u8], o: usize) -> usize {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes")) as usize
}

/// The section headers of an ELF64 object, by index.
fn section_headers(elf: &[u8]) -> Vec<&[u8]> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF object");
    assert_eq!(elf[4], 2, "not ELF64");
    let (shoff, shentsize, shnum) = (u64_at(elf, 0x28), u16_at(elf, 0x3a), u16_at(elf, 0x3c));
    (0..shnum)
        .map(|i| &elf[shoff + i * shentsize..shoff + (i + 1) * shentsize])
        .collect()
}

/// `(section name, helper id or -kfunc pseudo-call)` of every call.
fn calls(elf: &[u8]) -> Vec<(String, i32, bool)> {
    let headers = section_headers(elf);
    let (shnum, shstrndx) = (headers.len(), u16_at(elf, 0x3e));
    let section = |i: usize| headers[i];
    let strtab = u64_at(section(shstrndx), 0x18);
    let mut out = Vec::new();
    for i in 0..shnum {
        let s = section(i);
        let sh_type = u32::from_le_bytes(s[4..8].try_into().expect("4 bytes"));
        let flags = u64_at(s, 8);
        // SHT_PROGBITS with SHF_EXECINSTR: program code.
        if sh_type != 1 || flags & 4 == 0 {
            continue;
        }
        let name_off = strtab + u32::from_le_bytes(s[0..4].try_into().expect("4 bytes")) as usize;
        let name_end = name_off + elf[name_off..].iter().position(|&b| b == 0).expect("NUL");
        let name = String::from_utf8_lossy(&elf[name_off..name_end]).into_owned();
        let code = &elf[u64_at(s, 0x18)..u64_at(s, 0x18) + u64_at(s, 0x20)];
        let mut pc = 0;
        while pc + 8 <= code.len() {
            let op = code[pc];
            let src = code[pc + 1] >> 4;
            let imm = i32::from_le_bytes(code[pc + 4..pc + 8].try_into().expect("4 bytes"));
            if op == 0x85 {
                // BPF_JMP | BPF_CALL: src 0 helper, 1 bpf-to-bpf, 2 kfunc.
                match src {
                    0 => out.push((name.clone(), imm, false)),
                    2 => out.push((name.clone(), imm, true)),
                    _ => {}
                }
            }
            // BPF_LD | BPF_IMM | BPF_DW takes two slots.
            pc += if op == 0x18 { 16 } else { 8 };
        }
    }
    out
}

#[test]
fn the_ebpf_programs_only_call_audited_helpers() {
    let object = object();
    let calls = calls(object);
    assert!(
        calls.iter().any(|(_, id, _)| *id == 113),
        "no probe_read_kernel call found: the parser is broken"
    );
    let mut bad = Vec::new();
    for (section, id, kfunc) in &calls {
        if *kfunc {
            bad.push(format!("{section}: a kfunc call (btf id {id})"));
        } else if !AUDITED.iter().any(|(a, _)| a == id) {
            let name = WRITERS
                .iter()
                .find(|(w, _)| w == id)
                .map_or("not audited", |(_, n)| n);
            bad.push(format!("{section}: helper {id} ({name})"));
        }
    }
    bad.sort();
    bad.dedup();
    assert!(
        bad.is_empty(),
        "unaudited calls in the eBPF object:\n{}",
        bad.join("\n")
    );
}

/// A symbol of the object: name, type (`STT_*`) and the name of its
/// section.
struct Symbol {
    name: String,
    func: bool,
    section: String,
    executable: bool,
    /// The symbol's bytes in the object (empty for those without a size).
    bytes: Vec<u8>,
}

fn symbols(elf: &[u8]) -> Vec<Symbol> {
    let headers = section_headers(elf);
    let shnum = headers.len();
    let section = |i: usize| headers[i];
    let cstr = |at: usize| {
        let end = at + elf[at..].iter().position(|&b| b == 0).expect("NUL");
        String::from_utf8_lossy(&elf[at..end]).into_owned()
    };
    let shstrtab = u64_at(section(u16_at(elf, 0x3e)), 0x18);
    let section_name = |i: usize| {
        cstr(shstrtab + u32::from_le_bytes(section(i)[0..4].try_into().expect("4 bytes")) as usize)
    };
    let sh_type = |i: usize| u32::from_le_bytes(section(i)[4..8].try_into().expect("4 bytes"));
    let executable = |i: usize| sh_type(i) == 1 && u64_at(section(i), 8) & 4 != 0;
    let mut out = Vec::new();
    // SHT_SYMTAB; its sh_link is the string table.
    for i in (0..shnum).filter(|&i| sh_type(i) == 2) {
        let s = section(i);
        let (off, size) = (u64_at(s, 0x18), u64_at(s, 0x20));
        let link = u32::from_le_bytes(s[0x28..0x2c].try_into().expect("4 bytes")) as usize;
        let strtab = u64_at(section(link), 0x18);
        for sym in elf[off..off + size].chunks_exact(24) {
            let name = u32::from_le_bytes(sym[0..4].try_into().expect("4 bytes")) as usize;
            let shndx = u16_at(sym, 6);
            if shndx == 0 || shndx >= shnum {
                continue;
            }
            // SHT_NOBITS (.bss) has no bytes in the file.
            let (value, size) = (u64_at(sym, 8), u64_at(sym, 16));
            let in_file = sh_type(shndx) != 8 && value + size <= u64_at(section(shndx), 0x20);
            let at = u64_at(section(shndx), 0x18) + value;
            out.push(Symbol {
                name: cstr(strtab + name),
                func: sym[4] & 0xf == 2,
                section: section_name(shndx),
                executable: executable(shndx),
                bytes: if in_file {
                    elf[at..at + size].to_vec()
                } else {
                    Vec::new()
                },
            });
        }
    }
    out
}

/// Names of the function symbols in executable sections: the programs.
fn programs(elf: &[u8]) -> Vec<String> {
    symbols(elf)
        .into_iter()
        .filter(|s| s.func && s.executable)
        .map(|s| s.name)
        .collect()
}

/// The maps, the global and the programs that are not hooks, named as the
/// ABI crate names them, are in the object (userspace looks them up by
/// those names).
#[test]
fn the_maps_and_snapshot_programs_the_abi_names_are_in_the_object() {
    use refscope_common::{maps, programs as progs};
    let object = object();
    let syms = symbols(object);
    let in_section = |name: &str, sections: &[&str]| {
        syms.iter()
            .any(|s| s.name == name && sections.contains(&s.section.as_str()))
    };
    for m in [
        maps::EVENTS,
        maps::DROPS,
        maps::DEVICE_RANGES,
        maps::TRACKED_MMS,
        maps::SNAP_PAGES,
        maps::PT_WALK,
    ] {
        assert!(
            in_section(m, &["maps", ".maps"]),
            "no map {m} in the object"
        );
    }
    assert!(
        in_section(maps::CONFIG, &[".rodata"]),
        "no global {} in .rodata",
        maps::CONFIG
    );
    let have = programs(object);
    for p in [
        progs::SNAPSHOT_TASKS,
        progs::SNAPSHOT_REFS,
        progs::WALK_TABLES,
    ] {
        assert!(have.iter().any(|h| h == p), "no program {p} in the object");
    }
}

/// Every program the attach plan can ask for, in either attach mode and
/// with either half, is in the object: a name the plan derives and the
/// object lacks would otherwise show up only as an attach failure on a
/// kernel that picks that hook.
#[test]
fn every_program_the_plan_can_ask_for_is_in_the_object() {
    use refscope::probe::plan::{Attach, HOOKS, Halves, Via};
    let object = object();
    let have = programs(object);
    assert!(
        have.iter().any(|p| p == "insert_pfn_fexit"),
        "no insert_pfn_fexit among {} programs: the symbol parser is broken",
        have.len()
    );
    let mut missing = Vec::new();
    for d in HOOKS {
        for via in [Via::Fentry, Via::Kprobe] {
            // A kprobe reports a return hook with both halves (the entry
            // stashes the arguments); fentry needs only the one it reports.
            let (entry, exit) = match (d.halves, via) {
                (Halves::Both, _) | (Halves::Exit, Via::Kprobe) => (true, true),
                (Halves::Exit, Via::Fentry) => (false, true),
                (Halves::Entry, _) => (true, false),
            };
            let a = Attach {
                hook: d.hook,
                via,
                entry,
                exit,
            };
            for p in a.programs() {
                if !have.contains(&p) {
                    missing.push(format!("{p} ({:?}, {via:?})", d.hook));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "programs the plan can ask for that the eBPF object lacks:\n{}",
        missing.join("\n")
    );
}

/// The floor's programs (`refscope bench-floor`, docs/benchmarks.md) are in
/// the object under the names the ABI crate gives them, and are empty:
/// `r0 = 0; exit`, nothing else, so what the benchmark measures for them is
/// the attachment's own cost.
#[test]
fn the_floor_programs_are_in_the_object_and_empty() {
    use refscope_common::{Prog, programs::floor};
    let syms = symbols(object());
    // BPF_ALU64 | BPF_MOV | BPF_K to r0 with 0, then BPF_JMP | BPF_EXIT.
    let empty: [u8; 16] = [0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
    for prog in [Prog::Fentry, Prog::Fexit, Prog::Kprobe, Prog::Kretprobe] {
        let name = floor(prog);
        let sym = syms
            .iter()
            .find(|s| s.name == name && s.func && s.executable)
            .unwrap_or_else(|| panic!("no program {name} in the object"));
        assert_eq!(
            sym.section,
            prog.suffix(),
            "{name} is not a {} program",
            prog.suffix()
        );
        assert_eq!(
            sym.bytes, empty,
            "{name} is not the empty program (r0 = 0; exit)"
        );
    }
}
