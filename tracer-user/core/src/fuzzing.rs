//! What the fuzz targets (`fuzz/`, `cargo xtask fuzz`) run, here rather than
//! in the fuzz crate so that the regression tests
//! (`tests/fuzz_regressions.rs`) run the very same code over every input a
//! fuzzer ever crashed on, in the ordinary `cargo test`. Not an API.
//!
//! Both targets check properties as well as "no panic":
//! - whatever the reader accepts, the writer writes back in a form the
//!   reader accepts and that reads back equal;
//! - the analysis never panics on any event sequence, with caps small
//!   enough that eviction and the findings cap are exercised.

use refscope_common::{Event as RawEvent, EventKind, HookId};

use crate::{
    abi,
    analysis::{Analyzer, Finding, Settings},
    event::Event,
    model::{PgmapType, RefcountModel},
    replay::{Consumer, End, Stop, replay},
    trace::{Device, Header, Loss, Record, TraceReader, TraceWriter, parse_record},
};

/// Small caps, so a fuzz input of a few KiB reaches them.
fn analyzer(header: &Header) -> Analyzer {
    let mut cfg = Settings::new(header.refcount_model);
    cfg.gup = header.gup_flags;
    cfg.timeline_len = 8;
    cfg.max_pages = 64;
    cfg.max_findings = 32;
    let mut a = Analyzer::new(cfg);
    for d in &header.devices {
        a.add_device(d);
    }
    a
}

/// Read everything the way the reports do, then look at every result.
fn finish(a: &mut Analyzer, end_t: u64) {
    a.finish(end_t);
    for f in a.findings() {
        let json = serde_json::to_string(f).expect("a finding serializes");
        assert!(!json.is_empty());
    }
    for p in a.pages() {
        let _ = p.timeline().count();
        let _ = a.mappings_of(p.pfn);
        let _ = a.holders_of(p.pfn).count();
    }
    let _ = (a.lost(), a.stats(), a.mapping_count(), a.pgmaps().len());
}

/// Write `ev` as a trace line (after the others in `w`) and read it back.
fn reread(w: &mut TraceWriter<Vec<u8>>, ev: &Event) -> Event {
    let start = w.get_mut().len();
    w.event(ev).expect("writing to memory");
    let line = &w.get_mut()[start..];
    let line = line.strip_suffix(b"\n").expect("a line ends in a newline");
    match parse_record(line) {
        Ok(Record::Event(back)) => *back,
        other => panic!("an event we wrote did not read back: {other:?}\n{ev:?}"),
    }
}

/// Written and read back, an event is the same, but for a command name cut
/// inside a UTF-8 sequence (written with a replacement character); from
/// then on it is stable.
fn check_round_trip(w: &mut TraceWriter<Vec<u8>>, ev: &Event) {
    let once = reread(w, ev);
    let mut same = once.clone();
    same.comm = ev.comm;
    assert_eq!(&same, ev, "an event changed when written and read back");
    assert_eq!(reread(w, &once), once, "a re-read event is not stable");
    // Keep the buffer small: only the last lines matter.
    w.get_mut().clear();
}

/// Target `trace_reader`: bytes as a trace file, through the reader and
/// the analysis (`refscope report`, `export`, `live --replay`).
pub fn trace_reader(data: &[u8]) {
    let Ok(mut reader) = TraceReader::new(data, "fuzz.jsonl") else {
        return;
    };
    let header = reader.header().clone();
    // The header we read, written back, reads back equal.
    let mut w = TraceWriter::new(Vec::new(), &header).expect("writing to memory");
    let back =
        TraceReader::new(w.get_mut().as_slice(), "reread").expect("a header we wrote reads back");
    assert_eq!(
        back.header(),
        &header,
        "the header changed when written back"
    );

    let mut f = Fuzzed {
        a: analyzer(&header),
        w,
    };
    match replay(&mut reader, &mut f) {
        Ok(end) => finish(&mut f.a, end.end_t),
        // The reports stop at the first bad line, naming it.
        Err(Stop::Trace { error, at }) => {
            assert!(
                error.to_string().starts_with("fuzz.jsonl: line "),
                "{error}"
            );
            finish(&mut f.a, at.end_t);
        }
        Err(Stop::Consumer(never)) => match never {},
    }
}

/// `trace_reader`'s consumer: every event round-trips through the writer,
/// then goes to the analysis.
struct Fuzzed {
    a: Analyzer,
    w: TraceWriter<Vec<u8>>,
}

impl Consumer for Fuzzed {
    type Error = std::convert::Infallible;
    fn event(&mut self, ev: Box<Event>) -> Result<(), Self::Error> {
        check_round_trip(&mut self.w, &ev);
        self.a.apply(&ev);
        Ok(())
    }
    fn loss(&mut self, l: &Loss) -> Result<(), Self::Error> {
        self.a.apply_loss(l);
        Ok(())
    }
    fn live_finding(&mut self, f: &Finding) -> Result<(), Self::Error> {
        let _ = serde_json::to_string(f).expect("a finding serializes");
        Ok(())
    }
    // The end is `finish` above, after the replay (also after an error).
    fn end(&mut self, _end: &End) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Target `event_decoder`: bytes as ring-buffer records, decoded as the
/// recorder does, written to a trace and read back, and analysed.
///
/// Input: one byte of options (bit 0: the refcount model; bit 1: stamp
/// this build's ABI version into each record, so the fuzzer and the seeds
/// do not stop at the version check), then records, each a little-endian
/// `u16` length and that many bytes.
pub fn event_decoder(data: &[u8]) {
    let Some((&opts, mut rest)) = data.split_first() else {
        return;
    };
    let stamp = opts & 2 != 0;
    let model = if opts & 1 == 0 {
        RefcountModel::IdleOne
    } else {
        RefcountModel::Refcounted
    };
    let mut header = Header::synthetic(model);
    header.devices.push(Device {
        name: "pfn0.0".into(),
        mode: "fsdax".into(),
        pfn_start: 0x40000,
        pfn_end: 0x60000,
        pgmap_type: PgmapType::FsDax,
    });
    let mut a = analyzer(&header);
    let mut w = TraceWriter::new(Vec::new(), &header).expect("writing to memory");
    let mut end_t = 0u64;
    let mut buf = Vec::new();
    let mut decoder = abi::Decoder::new();
    while let Some((record, next)) = next_record(rest) {
        rest = next;
        buf.clear();
        buf.extend_from_slice(record);
        if stamp {
            stamp_version(&mut buf);
        }
        let Ok(Some(raw)) = decoder.decode(&buf) else {
            continue;
        };
        let stack = decoder
            .frames(raw.stack)
            .unwrap_or_default()
            .iter()
            .filter(|&&addr| addr % 3 != 0)
            .map(|&addr| format!("func+{:#x}", addr & 0xfff))
            .collect();
        let ev = abi::to_event(&raw.event, |addr| addr.rotate_left(17) ^ 0x5bd1_e995, stack);
        check_round_trip(&mut w, &ev);
        end_t = end_t.max(ev.t);
        a.apply(&ev);
    }
    finish(&mut a, end_t);
}

/// The next length-prefixed record of an `event_decoder` input.
fn next_record(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let [lo, hi, tail @ ..] = rest else {
        return None;
    };
    let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
    Some(tail.split_at(len))
}

/// Overwrite a record's ABI version (its first byte) with ours.
fn stamp_version(record: &mut [u8]) {
    if let Some(v) = record.first_mut() {
        *v = refscope_common::ABI_VERSION as u8;
    }
}

/// How many records of an `event_decoder` input decode (seed check).
pub fn decodable_records(data: &[u8]) -> usize {
    let Some((&opts, mut rest)) = data.split_first() else {
        return 0;
    };
    let mut n = 0;
    let mut decoder = abi::Decoder::new();
    while let Some((record, next)) = next_record(rest) {
        rest = next;
        let mut buf = record.to_vec();
        if opts & 2 != 0 {
            stamp_version(&mut buf);
        }
        n += usize::from(matches!(decoder.decode(&buf), Ok(Some(_))));
    }
    n
}

/// Seed inputs for `event_decoder`: every event kind, as the eBPF side
/// encodes it, alone and in a map/GUP/unmap sequence (`cargo xtask fuzz`
/// writes them to `fuzz/seeds/event_decoder/` when that is empty).
pub fn event_decoder_seeds() -> Vec<(String, Vec<u8>)> {
    fn record(out: &mut Vec<u8>, ev: &RawEvent) {
        let frames: &[u64] = if ev.kind == EventKind::GupGet as u8 {
            &[0xffff_ffff_8100_1000, 0xffff_ffff_8100_2000]
        } else {
            &[]
        };
        for bytes in abi::encode(ev, frames) {
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
    }
    let base = |kind, hook, t: u64| {
        let mut e = RawEvent::new(kind, hook);
        e.ts_ns = t;
        e.seq = t;
        e.tgid = 4242;
        e.tid = 4242;
        e.comm = *b"workload\0\0\0\0\0\0\0\0";
        e.mm = 0xffff_8880_1234_5600;
        e.vaddr = 0x7f00_0000_0000;
        e.vaddr_end = 0x7f00_0001_0000;
        e.pfn = 0x48000;
        e.page = 0xffff_ea00_0120_0000;
        e.pgmap = 0xffff_8880_dead_0000;
        e.ref_before = 1;
        e.ref_after = 1;
        e.flags = refscope_common::flags::REF_BEFORE | refscope_common::flags::REF_AFTER;
        e
    };
    let mut seeds = Vec::new();
    for (i, &kind) in EventKind::ALL.iter().enumerate() {
        let hook = HookId::ALL[i % HookId::ALL.len()];
        for model in [2u8, 3] {
            let mut data = vec![model];
            record(&mut data, &base(kind, hook, 1 + i as u64));
            seeds.push((format!("{}-{model}", kind.as_str()), data));
        }
    }
    for model in [2u8, 3] {
        let mut data = vec![model];
        let mut t = 10;
        let mut next = |kind, hook| {
            t += 1;
            base(kind, hook, t)
        };
        record(&mut data, &next(EventKind::Map, HookId::InsertPfn));
        let mut pin = next(EventKind::GupGet, HookId::TryGrabFolio);
        pin.ref_after = 1025;
        pin.refs = 1;
        pin.arg_flags = 0x40000;
        record(&mut data, &pin);
        record(&mut data, &next(EventKind::GupPut, HookId::GupPutFolio));
        let mut unmap = next(EventKind::Unmap, HookId::UnmapPageRange);
        unmap.pfn = 0;
        record(&mut data, &unmap);
        record(
            &mut data,
            &next(EventKind::Free, HookId::FreeZoneDevicePage),
        );
        seeds.push((format!("sequence-{model}"), data));
    }
    seeds
}
