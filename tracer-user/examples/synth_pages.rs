//! A synthetic trace that touches N distinct device pages once each, for
//! measuring how much memory the analysis keeps per tracked page (`cargo
//! xtask bench`, docs/benchmarks.md): one process maps N pages of an FS-DAX
//! device in 512-page windows (6.15+ refcounted model: each mapping holds
//! one reference, so no finding is raised), and unless `--keep-mapped`
//! unmaps each window and frees its pages, leaving only the per-page state.
//!
//! ```text
//! cargo run --release --example synth_pages -- --pages 1048576 -o pages.jsonl
//! refscope report --timeline 0 pages.jsonl      # peak RSS: per-page state only
//! ```

use std::{fs::File, io::BufWriter, process::ExitCode};

use refscope_common::{EventKind, HookId, flags};
use refscope_core::{
    event::{Comm, Event, Flags, Hex},
    model::{PgmapType, RefcountModel},
    trace::{Device, Header, TraceWriter},
};

const PFN_BASE: u64 = 0x10_0000;
const WINDOW: u64 = 512;
const MM: u64 = 0xffff_8880_1234_5000;
const VA: u64 = 0x7f00_0000_0000;

fn usage() -> ExitCode {
    eprintln!("usage: synth_pages --pages N [--keep-mapped] -o FILE");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let mut pages: Option<u64> = None;
    let mut keep_mapped = false;
    let mut out: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--pages" => match args.next().and_then(|v| v.replace('_', "").parse().ok()) {
                Some(n) => pages = Some(n),
                None => return usage(),
            },
            "--keep-mapped" => keep_mapped = true,
            "-o" => out = args.next(),
            _ => return usage(),
        }
    }
    let (Some(pages), Some(out)) = (pages, out) else {
        return usage();
    };
    match write(&out, pages, keep_mapped) {
        Ok(events) => {
            eprintln!("synth_pages: wrote {out}: {pages} pages, {events} events");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("synth_pages: {out}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write(path: &str, pages: u64, keep_mapped: bool) -> std::io::Result<u64> {
    let model = RefcountModel::Refcounted;
    let mut h = Header::synthetic(model);
    h.devices = vec![Device {
        name: "pfn0.0".into(),
        mode: "fsdax".into(),
        pfn_start: PFN_BASE,
        pfn_end: PFN_BASE + pages.next_multiple_of(WINDOW),
        pgmap_type: PgmapType::FsDax,
    }];
    h.command = vec!["synth_pages".into()];
    let file = File::create(path)?;
    let mut w = TraceWriter::new(BufWriter::with_capacity(1 << 20, file), &h)?;
    let mut t = 1_000_000_000u64;
    let mut seq = 0u64;
    let mut next = |kind, hook| {
        t += 1_000;
        seq += 1;
        let mut e = Event::new(kind, hook);
        e.t = t;
        e.seq = seq;
        e.pid = 1000;
        e.tid = 1000;
        e.comm = Comm::from_bytes(b"synth_pages");
        e
    };
    let mut start = 0;
    while start < pages {
        let n = WINDOW.min(pages - start);
        let va = VA + (start << 12);
        for i in 0..n {
            let mut e = next(EventKind::Map, HookId::InsertPage);
            e.mm = Hex(MM);
            e.vaddr = Hex(va + (i << 12));
            e.pfn = PFN_BASE + start + i;
            // One reference for the mapping, one transient one the 6.15+
            // FS-DAX fault path holds around the install
            // (`model::transient_install_refs`).
            e.ref_after = Some(2);
            e.flags = Flags(flags::REF_AFTER);
            w.event(&e)?;
        }
        if !keep_mapped {
            let mut u = next(EventKind::Unmap, HookId::ZapVmaRange);
            u.mm = Hex(MM);
            u.vaddr = Hex(va);
            u.vaddr_end = Hex(va + (n << 12));
            w.event(&u)?;
            for i in 0..n {
                let mut f = next(EventKind::Free, HookId::FreeZoneDeviceFolio);
                f.pfn = PFN_BASE + start + i;
                f.ref_before = Some(0);
                f.flags = Flags(flags::REF_BEFORE);
                w.event(&f)?;
            }
        }
        start += n;
    }
    let events = w.events_written();
    w.finish(t + 1_000, "signal")?;
    Ok(events)
}
