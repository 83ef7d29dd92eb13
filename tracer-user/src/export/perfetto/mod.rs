//! Perfetto's native protobuf trace (`Trace { repeated TracePacket packet = 1 }`)
//! with TrackEvent, streamed: one packet at a time.
//!
//! Field numbers are those of google/perfetto's protos/perfetto/trace/
//! (trace_packet.proto, clock_snapshot.proto, track_event/track_event.proto,
//! track_descriptor.proto, counter_descriptor.proto, debug_annotation.proto),
//! checked against the `perfetto_trace_pb2` descriptors of the `perfetto`
//! PyPI package (docs/export.md).
//!
//! Layout:
//! - one parent track per device (pgmap), "unknown device" for pages of none;
//! - under it one track per page (instants: puts, frees, findings), with a
//!   counter child ("refcount": raw `_refcount` minus the idle bias) and one
//!   child track ("lane") per concurrently live mapping or GUP reference,
//!   so that slices on one track never overlap;
//! - a slice per mapping (install to unmap) and per GUP reference (get to
//!   the release that gave back its last ref), with a flow from the get to
//!   the release instant.
//!
//! Rules followed (tests/export/check_perfetto.py verifies them): one
//! trusted_packet_sequence_id; the first packet has
//! SEQ_INCREMENTAL_STATE_CLEARED; every TrackEvent packet is marked
//! SEQ_NEEDS_INCREMENTAL_STATE; a track's descriptor precedes its first use
//! and a parent's precedes its children; timestamps never decrease; slices on
//! one track nest (lanes never overlap).
//!
//! This module holds the exporter's state, the packet framing and the
//! [`Format`] that turns events into packets; `fields` has the protos' field
//! numbers and the debug annotations, `tracks` the track descriptors
//! (devices, pages, counters, lanes), `slices` the slices, instants and
//! flows drawn on them.

mod fields;
mod slices;
mod tracks;

use std::{
    collections::{HashMap, HashSet},
    io::{self, Write},
};

use refscope_common::{EventKind, flags};
use refscope_core::{
    analysis::{Change, Finding, lifetimes::End},
    event::Event,
    trace::{Footer, Header, Loss},
};

use self::fields::{
    CLK_ID, CLK_TIMESTAMP, CLOCK_MONOTONIC, CLOCK_REALTIME, CS_CLOCKS, CS_PRIMARY, P_CLOCK_ID,
    P_CLOCK_SNAPSHOT, P_FIRST_ON_SEQ, P_SEQ_FLAGS, P_SEQ_ID, P_TIMESTAMP,
    SEQ_INCREMENTAL_STATE_CLEARED, SEQ_NEEDS_INCREMENTAL_STATE, Val,
};
use super::{Context, Format, filter::is_page_kind, proto::Proto};

/// The one packet sequence of the export.
pub const SEQ_ID: u64 = 1;

/// Pages whose tracks are remembered (idle ones beyond are forgotten and
/// their descriptors re-emitted if they come back; identical re-emission is
/// what Perfetto's own SDK does after clearing incremental state).
const MAX_PAGES: usize = 1 << 20;

/// What was written, for the summary and the tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub packets: u64,
    pub tracks: u64,
    pub slices: u64,
    pub instants: u64,
    pub counters: u64,
    pub flows: u64,
    pub findings: u64,
    /// Timestamps raised to keep the output in time order (events of
    /// different CPUs arrive slightly out of order).
    pub clamped: u64,
}

struct Lane {
    uuid: u64,
    busy: bool,
}

struct PageTracks {
    counter: bool,
    maps: Vec<Lane>,
    pins: Vec<Lane>,
}

impl PageTracks {
    fn busy(&self) -> bool {
        self.maps.iter().chain(&self.pins).any(|l| l.busy)
    }
}

/// An open slice.
struct Open {
    pfn: u64,
    lane: u64,
    /// A flow starts at its beginning.
    flow: bool,
}

pub struct Perfetto<W: Write> {
    out: W,
    pkt: Proto,
    last_t: u64,
    pub stats: Stats,
    devices: HashSet<u64>,
    global: bool,
    pages: HashMap<u64, PageTracks>,
    /// Size of `pages` at which idle pages are forgotten.
    evict_at: usize,
    open: HashMap<u64, Open>,
    next_lane: u64,
    /// Flows ended by the release being processed.
    term_flows: Vec<u64>,
}

impl<W: Write> Perfetto<W> {
    /// Start the trace: the clock snapshot saying timestamps are
    /// CLOCK_MONOTONIC (and how that relates to wall time).
    pub fn new(out: W, header: &Header) -> io::Result<Self> {
        let mut p = Perfetto {
            out,
            pkt: Proto::new(),
            last_t: 0,
            stats: Stats::default(),
            devices: HashSet::new(),
            global: false,
            pages: HashMap::new(),
            evict_at: MAX_PAGES,
            open: HashMap::new(),
            next_lane: 1,
            term_flows: Vec::new(),
        };
        p.pkt.clear();
        p.pkt.uint(P_SEQ_ID, SEQ_ID);
        p.pkt.uint(P_SEQ_FLAGS, SEQ_INCREMENTAL_STATE_CLEARED);
        p.pkt.bool(P_FIRST_ON_SEQ, true);
        let clock = header.clock;
        p.pkt.message(P_CLOCK_SNAPSHOT, |c| {
            c.message(CS_CLOCKS, |k| {
                k.uint(CLK_ID, CLOCK_MONOTONIC);
                k.uint(CLK_TIMESTAMP, clock.monotonic_ns);
            });
            c.message(CS_CLOCKS, |k| {
                k.uint(CLK_ID, CLOCK_REALTIME);
                k.uint(CLK_TIMESTAMP, clock.realtime_ns);
            });
            c.uint(CS_PRIMARY, CLOCK_MONOTONIC);
        });
        p.flush_packet()?;
        p.last_t = clock.monotonic_ns;
        Ok(p)
    }

    /// The output (after [`Format::finish`]).
    pub fn into_inner(self) -> W {
        self.out
    }

    fn flush_packet(&mut self) -> io::Result<()> {
        let len = self.pkt.len() as u64;
        // Trace.packet (field 1, length-delimited).
        let mut head = [0u8; 11];
        head[0] = 0x0a;
        let mut n = 1;
        let mut v = len;
        while v >= 0x80 {
            head[n] = (v as u8) | 0x80;
            v >>= 7;
            n += 1;
        }
        head[n] = v as u8;
        n += 1;
        self.out.write_all(&head[..n])?;
        self.out.write_all(self.pkt.bytes())?;
        self.stats.packets += 1;
        Ok(())
    }

    /// Start a packet at `t` (raised to keep time order).
    fn start(&mut self, t: u64, needs_state: bool) {
        let t = if t < self.last_t {
            self.stats.clamped += 1;
            self.last_t
        } else {
            self.last_t = t;
            t
        };
        self.pkt.clear();
        self.pkt.uint(P_TIMESTAMP, t);
        self.pkt.uint(P_CLOCK_ID, CLOCK_MONOTONIC);
        self.pkt.uint(P_SEQ_ID, SEQ_ID);
        if needs_state {
            self.pkt.uint(P_SEQ_FLAGS, SEQ_NEEDS_INCREMENTAL_STATE);
        }
    }
}

impl<W: Write> Format for Perfetto<W> {
    fn window_open(&mut self, cx: &Context<'_>, t: u64) -> anyhow::Result<()> {
        // Live ones, oldest first.
        for m in cx.analyzer.live_maps() {
            if cx.filter.life_ok(m.pfn, m.order, m.pid) {
                self.begin_map(t, cx, m, true)?;
            }
        }
        for p in cx.analyzer.live_pins() {
            if cx.filter.life_ok(p.pfn, 0, p.pid) {
                self.begin_pin(t, cx, p, &[], true)?;
            }
        }
        Ok(())
    }

    fn window_close(&mut self, _cx: &Context<'_>, t: u64) -> anyhow::Result<()> {
        let mut ids: Vec<u64> = self.open.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.end(t, id, End::WindowEnd, None)?;
        }
        Ok(())
    }

    fn event(
        &mut self,
        cx: &Context<'_>,
        ev: &Event,
        changes: &[Change],
        selected: bool,
        findings: &[Finding],
    ) -> anyhow::Result<()> {
        let a = cx.analyzer;
        let t = ev.t;
        self.apply_changes(cx, t, Some(ev), changes)?;
        if selected {
            if is_page_kind(ev.kind) && ev.pfn != 0 {
                let comm = ev.comm.as_str();
                let track = self.page_track(t, cx, ev.pfn)?;
                let name = match ev.kind {
                    EventKind::GupPut => Some(if cx.gup_is_pin(ev) { "unpin" } else { "put" }),
                    EventKind::RefPut => Some("ref_put"),
                    EventKind::Free => Some("free"),
                    EventKind::Map | EventKind::AttachMap if ev.failed() => Some("map failed"),
                    EventKind::GupGet if ev.failed() => Some("gup failed"),
                    _ => None,
                };
                if let Some(name) = name {
                    let mut args = vec![
                        ("pid", Val::Uint(ev.pid.into())),
                        ("comm", Val::Str(&comm)),
                        ("hook", Val::Str(ev.hook.as_str())),
                        ("mm", Val::Ptr(ev.mm.0)),
                    ];
                    if ev.refs != 0 {
                        args.push(("refs", Val::Int(ev.refs.into())));
                    }
                    if let Some(r) = ev.ref_before {
                        args.push(("ref_before", Val::Int(r.into())));
                    }
                    if let Some(r) = ev.ref_after {
                        args.push(("ref_after", Val::Int(r.into())));
                    }
                    if ev.flags.has(flags::MEMMAP_UNREADABLE) {
                        args.push(("memmap_unreadable", Val::Bool(true)));
                    }
                    self.instant(t, track, name, &args)?;
                }
                if ev.ref_after.or(ev.ref_before).is_some()
                    && let Some(logical) = cx.logical_ref(ev.pfn)
                {
                    self.counter(t, cx, ev.pfn, logical.into())?;
                }
            } else if super::filter::is_device_kind(ev.kind) {
                let idx = a.pgmaps().iter().position(|g| {
                    (ev.pgmap.0 != 0 && g.id == ev.pgmap)
                        || g.ranges.iter().any(|&(lo, hi)| lo <= ev.pfn && ev.pfn < hi)
                });
                let track = self.device_track(t, a, idx)?;
                let comm = ev.comm.as_str();
                self.instant(
                    t,
                    track,
                    ev.kind.as_str(),
                    &[
                        ("pid", Val::Uint(ev.pid.into())),
                        ("comm", Val::Str(&comm)),
                        ("hook", Val::Str(ev.hook.as_str())),
                        ("pfn", Val::Ptr(ev.pfn)),
                        ("pfn_end", Val::Ptr(ev.pfn_end)),
                    ],
                )?;
            } else if ev.kind == EventKind::GupRefused {
                let track = self.global_track(t)?;
                let comm = ev.comm.as_str();
                self.instant(
                    t,
                    track,
                    ev.kind.as_str(),
                    &[
                        ("pid", Val::Uint(ev.pid.into())),
                        ("comm", Val::Str(&comm)),
                        ("vaddr", Val::Ptr(ev.vaddr.0)),
                        ("gup_flags", Val::Ptr(ev.arg_flags.0)),
                    ],
                )?;
            }
        }
        // Releases that ended pins of a shown lifetime but were not
        // selected themselves still end the flow somewhere.
        if !self.term_flows.is_empty() {
            let track = self.page_track(t, cx, ev.pfn)?;
            let name = if ev.kind == EventKind::Free {
                "free"
            } else {
                "release"
            };
            self.instant(t, track, name, &[("pid", Val::Uint(ev.pid.into()))])?;
        }
        for f in findings {
            if cx.finding_ok(f) {
                self.finding(f.t_ns.max(t), cx, f)?;
            }
        }
        Ok(())
    }

    fn loss(&mut self, cx: &Context<'_>, loss: &Loss) -> anyhow::Result<()> {
        if cx.window_closed || !cx.filter.time_ok(loss.first_t) {
            return Ok(());
        }
        let track = self.global_track(loss.first_t)?;
        self.instant(
            loss.first_t,
            track,
            "events lost",
            &[
                ("cpu", Val::Uint(loss.cpu.into())),
                ("count", Val::Uint(loss.count)),
                ("last_t", Val::Uint(loss.last_t)),
            ],
        )?;
        Ok(())
    }

    fn finish(
        &mut self,
        cx: &Context<'_>,
        end_t: u64,
        changes: &[Change],
        findings: &[Finding],
        _footer: Option<&Footer>,
    ) -> anyhow::Result<()> {
        let t = cx.filter.until.map_or(end_t, |u| end_t.min(u));
        for f in findings {
            if cx.finding_ok(f) {
                self.finding(t, cx, f)?;
            }
        }
        self.apply_changes(cx, t, None, changes)?;
        self.term_flows.clear();
        self.out.flush()?;
        Ok(())
    }
}
