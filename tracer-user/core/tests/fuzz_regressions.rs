//! Every input in `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/`
//! through its fuzz target's code (`refscope_core::fuzzing`): the seed
//! corpus must pass, and each input a fuzzer once crashed on stays fixed.
//! `cargo xtask fuzz` copies new crashes to `fuzz/regressions/`.

use std::{fs, path::PathBuf};

fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(kind)
        .join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.expect("directory entry").path();
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, bytes)
        })
        .filter(|(p, _)| p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    out.sort();
    out
}

fn run_all(target: &str, f: fn(&[u8])) {
    let seeds = inputs("seeds", target);
    assert!(!seeds.is_empty(), "no seeds for {target}");
    for (path, bytes) in seeds.iter().chain(inputs("regressions", target).iter()) {
        let result = std::panic::catch_unwind(|| f(bytes));
        assert!(result.is_ok(), "{target} panics on {}", path.display());
    }
}

#[test]
fn trace_reader_seeds_and_regressions() {
    run_all("trace_reader", refscope_core::fuzzing::trace_reader);
}

#[test]
fn event_decoder_seeds_and_regressions() {
    run_all("event_decoder", refscope_core::fuzzing::event_decoder);
}

/// The generated `event_decoder` seeds decode (the version byte is
/// stamped by the target, so they stay useful across ABI version bumps).
/// `REFSCOPE_UPDATE_SEEDS=1 cargo test -p refscope-core --test
/// fuzz_regressions` rewrites the committed ones after a layout change.
#[test]
fn event_decoder_seeds_decode() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/event_decoder");
    let update = std::env::var_os("REFSCOPE_UPDATE_SEEDS").is_some();
    let seeds = refscope_core::fuzzing::event_decoder_seeds();
    assert!(seeds.len() > 20);
    for (name, bytes) in seeds {
        assert!(
            refscope_core::fuzzing::decodable_records(&bytes) > 0,
            "seed {name} has no decodable record"
        );
        if update {
            fs::create_dir_all(&dir).expect("create the seed directory");
            fs::write(dir.join(&name), &bytes).expect("write a seed");
        }
    }
}

/// event_decoder, first crash: a record with flag bits that have no name
/// kept them in the live event, but the trace cannot hold them, so the
/// live analysis and a report of the trace saw different events. Unknown
/// bits are now dropped at decode.
#[test]
fn unknown_flag_bits_are_dropped_at_decode() {
    use refscope_common::{Event as RawEvent, EventKind, HookId, flags};
    let mut raw = RawEvent::new(EventKind::Unmap, HookId::VmInsertPage);
    // Bits without a name (the wire carries the low 16).
    raw.flags = 0xa800 | flags::REF_BEFORE | flags::REF_AFTER;
    let mut decoder = refscope_core::abi::Decoder::new();
    let decoded = refscope_core::abi::encode(&raw, &[])
        .iter()
        .find_map(|bytes| decoder.decode(bytes).expect("a valid record"))
        .expect("an event");
    let ev = refscope_core::abi::to_event(&decoded.event, |a| a, Vec::new());
    assert_eq!(ev.flags.0, flags::REF_BEFORE | flags::REF_AFTER);
}

/// event_decoder, second crash: a mapping of order 97 overflowed a shift
/// (and orders up to 63 would have looped over 2^order pages). Events no
/// kernel produces are now ignored and counted; reversed ranges no longer
/// panic in the range queries.
#[test]
fn implausible_events_are_ignored_and_reversed_ranges_do_not_panic() {
    use refscope_common::{EventKind, HookId};
    use refscope_core::{
        analysis::{Analyzer, Settings},
        event::{Event, Hex},
        model::RefcountModel,
    };
    let mut a = Analyzer::new(Settings::new(RefcountModel::IdleOne));
    let mut map = Event::new(EventKind::Map, HookId::InsertPfn);
    map.seq = 1;
    map.mm = Hex(1);
    map.vaddr = Hex(0x7f00_0000_0000);
    map.pfn = 0x48000;
    map.order = 97;
    a.apply(&map);
    map.order = 0;
    map.pfn = u64::MAX - 3;
    a.apply(&map);
    assert_eq!(a.stats().invalid_events, 2);
    assert_eq!(a.mapping_count(), 0);

    map.pfn = 0x48000;
    a.apply(&map);
    assert_eq!(a.mapping_count(), 1);
    for kind in [EventKind::Unmap, EventKind::Remap, EventKind::CopyRange] {
        let mut e = Event::new(kind, HookId::UnmapPageRange);
        e.mm = Hex(1);
        e.src_mm = Hex(1);
        e.vaddr = Hex(0x7f00_0000_0000);
        e.vaddr_end = Hex(0x1000);
        a.apply(&e);
    }
    let mut remove = Event::new(EventKind::PgmapRemove, HookId::MemunmapPages);
    remove.pfn = 0x50000;
    remove.pfn_end = 0x40000;
    a.apply(&remove);
    a.finish(1);
}

/// event_decoder, third crash: a GUP event with a huge `refs` overflowed
/// `refs * pin_bias` (and refcounts near i32::MIN the subtractions after
/// it) in debug builds. The refcount arithmetic now wraps, as it always
/// did in release builds, and reference counts saturate.
#[test]
fn refcount_arithmetic_on_extreme_values_does_not_overflow() {
    use refscope_common::{EventKind, HookId};
    use refscope_core::{
        analysis::{Analyzer, Settings},
        event::{Event, Hex},
        model::RefcountModel,
    };
    let mut cfg = Settings::new(RefcountModel::IdleOne);
    cfg.gup.pin_bias = i32::MAX;
    let mut a = Analyzer::new(cfg);
    for (refs, after) in [(i32::MAX, i32::MIN), (i32::MIN, i32::MAX), (i32::MAX, 0)] {
        let mut ev = Event::new(EventKind::GupGet, HookId::TryGrabFolio);
        ev.pfn = 0x48000;
        ev.mm = Hex(1);
        ev.refs = refs;
        ev.ref_after = Some(after);
        ev.arg_flags = Hex(a.settings().gup.foll_pin);
        a.apply(&ev);
        ev.kind = EventKind::GupPut;
        ev.ref_before = Some(after);
        a.apply(&ev);
    }
    a.finish(1);
}
