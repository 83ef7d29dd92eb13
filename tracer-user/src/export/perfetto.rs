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

use std::{
    collections::{HashMap, HashSet},
    io::{self, Write},
};

use refscope_common::{EventKind, flags};
use refscope_core::{
    analysis::{Analyzer, Finding, Status},
    event::Event,
    trace::{Footer, Header, Loss},
};

use super::{
    Cx, Sink,
    filter::is_page_kind,
    lifetimes::{Change, End, MapLife, PinLife},
    proto::Proto,
};

// TracePacket
const P_TIMESTAMP: u32 = 8;
const P_CLOCK_SNAPSHOT: u32 = 6;
const P_SEQ_ID: u32 = 10;
const P_TRACK_EVENT: u32 = 11;
const P_SEQ_FLAGS: u32 = 13;
const P_CLOCK_ID: u32 = 58;
const P_TRACK_DESCRIPTOR: u32 = 60;
const P_FIRST_ON_SEQ: u32 = 87;
const SEQ_INCREMENTAL_STATE_CLEARED: u64 = 1;
const SEQ_NEEDS_INCREMENTAL_STATE: u64 = 2;
// ClockSnapshot / ClockSnapshot.Clock / BuiltinClock
const CS_CLOCKS: u32 = 1;
const CS_PRIMARY: u32 = 2;
const CLK_ID: u32 = 1;
const CLK_TIMESTAMP: u32 = 2;
const CLOCK_REALTIME: u64 = 1;
const CLOCK_MONOTONIC: u64 = 3;
// TrackDescriptor / CounterDescriptor
const TD_UUID: u32 = 1;
const TD_NAME: u32 = 2;
const TD_PARENT: u32 = 5;
const TD_COUNTER: u32 = 8;
const CD_UNIT: u32 = 3;
const UNIT_COUNT: u64 = 2;
// TrackEvent
const TE_DEBUG: u32 = 4;
const TE_TYPE: u32 = 9;
const TE_TRACK: u32 = 11;
const TE_NAME: u32 = 23;
const TE_COUNTER: u32 = 30;
const TE_FLOW: u32 = 47;
const TE_TERM_FLOW: u32 = 48;
const TYPE_SLICE_BEGIN: u64 = 1;
const TYPE_SLICE_END: u64 = 2;
const TYPE_INSTANT: u64 = 3;
const TYPE_COUNTER: u64 = 4;
// DebugAnnotation
const DA_BOOL: u32 = 2;
const DA_UINT: u32 = 3;
const DA_INT: u32 = 4;
const DA_STRING: u32 = 6;
const DA_POINTER: u32 = 7;
const DA_NAME: u32 = 10;

/// The one packet sequence of the export.
pub const SEQ_ID: u64 = 1;

/// Track uuids: a kind in the top byte, an id below.
const UUID_GLOBAL: u64 = 0x72_6566_7363_6f70; // "refscop"
const UUID_DEVICE: u64 = 1 << 56;
const UUID_PAGE: u64 = 2 << 56;
const UUID_COUNTER: u64 = 3 << 56;
const UUID_LANE: u64 = 4 << 56;

/// Pages whose tracks are remembered (idle ones beyond are forgotten and
/// their descriptors re-emitted if they come back; identical re-emission is
/// what Perfetto's own SDK does after clearing incremental state).
const MAX_PAGES: usize = 1 << 20;

/// A debug annotation value.
enum Val<'a> {
    Str(&'a str),
    Int(i64),
    Uint(u64),
    Ptr(u64),
    Bool(bool),
}

fn annotations(p: &mut Proto, args: &[(&str, Val<'_>)]) {
    for (name, v) in args {
        p.message(TE_DEBUG, |a| {
            a.string(DA_NAME, name);
            match *v {
                Val::Str(s) => a.string(DA_STRING, s),
                Val::Int(i) => a.int(DA_INT, i),
                Val::Uint(u) => a.uint(DA_UINT, u),
                Val::Ptr(u) => a.uint(DA_POINTER, u),
                Val::Bool(b) => a.bool(DA_BOOL, b),
            }
        });
    }
}

/// Boolean annotations, written only when true.
fn flags_true(p: &mut Proto, args: &[(&str, bool)]) {
    for &(name, v) in args {
        if v {
            annotations(p, &[(name, Val::Bool(true))]);
        }
    }
}

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

    /// The output (after [`Sink::finish`]).
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

    fn descriptor(
        &mut self,
        t: u64,
        uuid: u64,
        parent: Option<u64>,
        name: &str,
        counter: bool,
    ) -> io::Result<()> {
        self.start(t, false);
        self.pkt.message(P_TRACK_DESCRIPTOR, |d| {
            d.uint(TD_UUID, uuid);
            if let Some(parent) = parent {
                d.uint(TD_PARENT, parent);
            }
            d.string(TD_NAME, name);
            if counter {
                d.message(TD_COUNTER, |c| c.uint(CD_UNIT, UNIT_COUNT));
            }
        });
        self.stats.tracks += 1;
        self.flush_packet()
    }

    fn global_track(&mut self, t: u64) -> io::Result<u64> {
        if !self.global {
            self.global = true;
            self.descriptor(t, UUID_GLOBAL, None, "refscope: other events", false)?;
        }
        Ok(UUID_GLOBAL)
    }

    /// The device track of pgmap index `idx` (None: unknown device).
    fn device_track(&mut self, t: u64, a: &Analyzer, idx: Option<usize>) -> io::Result<u64> {
        let uuid = UUID_DEVICE | idx.map_or(0, |i| i as u64 + 1);
        if self.devices.insert(uuid) {
            let name = match idx.and_then(|i| a.pgmaps().get(i)) {
                Some(g) => {
                    let who = if g.name.is_empty() {
                        format!("pgmap {}", g.id)
                    } else {
                        g.name.clone()
                    };
                    let range = g
                        .ranges
                        .first()
                        .map(|(lo, hi)| format!(" pfn {lo:#x}-{:#x}", hi.saturating_sub(1)))
                        .unwrap_or_default();
                    format!("{who} ({}){range}", g.ty.as_str())
                }
                None => "unknown device".into(),
            };
            self.descriptor(t, uuid, None, &name, false)?;
        }
        Ok(uuid)
    }

    /// The page's track (and its device's), emitted on first use.
    fn page_track(&mut self, t: u64, cx: &Cx<'_>, pfn: u64) -> io::Result<u64> {
        let uuid = UUID_PAGE | pfn;
        if self.pages.contains_key(&pfn) {
            return Ok(uuid);
        }
        if self.pages.len() >= self.evict_at {
            self.pages.retain(|_, p| p.busy());
            // Busy pages stay: evict again only once as many more came.
            self.evict_at = MAX_PAGES.max(self.pages.len() * 2);
        }
        let idx = cx.pgmap_index(pfn);
        let dev = self.device_track(t, cx.analyzer, idx)?;
        self.descriptor(t, uuid, Some(dev), &format!("pfn {pfn:#x}"), false)?;
        self.pages.insert(
            pfn,
            PageTracks {
                counter: false,
                maps: Vec::new(),
                pins: Vec::new(),
            },
        );
        Ok(uuid)
    }

    fn counter(&mut self, t: u64, cx: &Cx<'_>, pfn: u64, value: i64) -> io::Result<()> {
        let page = self.page_track(t, cx, pfn)?;
        let uuid = UUID_COUNTER | pfn;
        if let Some(p) = self.pages.get_mut(&pfn)
            && !p.counter
        {
            p.counter = true;
            self.descriptor(t, uuid, Some(page), "refcount", true)?;
        }
        self.start(t, true);
        self.pkt.message(P_TRACK_EVENT, |e| {
            e.uint(TE_TYPE, TYPE_COUNTER);
            e.uint(TE_TRACK, uuid);
            e.int(TE_COUNTER, value);
        });
        self.stats.counters += 1;
        self.flush_packet()
    }

    /// A free lane of `pfn` for a mapping or a pin, created if needed.
    fn take_lane(&mut self, t: u64, cx: &Cx<'_>, pfn: u64, pin: bool) -> io::Result<u64> {
        let page = self.page_track(t, cx, pfn)?;
        let Some(p) = self.pages.get_mut(&pfn) else {
            return Ok(page);
        };
        let lanes = if pin { &mut p.pins } else { &mut p.maps };
        if let Some(l) = lanes.iter_mut().find(|l| !l.busy) {
            l.busy = true;
            return Ok(l.uuid);
        }
        let n = lanes.len();
        let uuid = UUID_LANE | self.next_lane;
        self.next_lane += 1;
        lanes.push(Lane { uuid, busy: true });
        let name = if pin {
            format!("GUP refs #{n}")
        } else {
            format!("mappings #{n}")
        };
        self.descriptor(t, uuid, Some(page), &name, false)?;
        Ok(uuid)
    }

    fn free_lane(&mut self, pfn: u64, uuid: u64) {
        if let Some(p) = self.pages.get_mut(&pfn)
            && let Some(l) = p
                .maps
                .iter_mut()
                .chain(&mut p.pins)
                .find(|l| l.uuid == uuid)
        {
            l.busy = false;
        }
    }

    fn begin_map(&mut self, t: u64, cx: &Cx<'_>, m: &MapLife, clipped: bool) -> io::Result<()> {
        let lane = self.take_lane(t, cx, m.pfn, false)?;
        self.open.insert(
            m.id,
            Open {
                pfn: m.pfn,
                lane,
                flow: false,
            },
        );
        let name = match (m.order, m.copied) {
            (0, false) => "PTE map",
            (refscope_common::PUD_ORDER, false) => "PUD map",
            (_, false) => "PMD map",
            (0, true) => "PTE map (fork)",
            (refscope_common::PUD_ORDER, true) => "PUD map (fork)",
            (_, true) => "PMD map (fork)",
        };
        let comm = m.comm.as_str();
        self.start(t, true);
        self.pkt.message(P_TRACK_EVENT, |e| {
            e.uint(TE_TYPE, TYPE_SLICE_BEGIN);
            e.uint(TE_TRACK, lane);
            e.string(TE_NAME, name);
            annotations(
                e,
                &[
                    ("pid", Val::Uint(m.pid.into())),
                    ("comm", Val::Str(&comm)),
                    ("mm", Val::Ptr(m.mm)),
                    ("vaddr", Val::Ptr(m.vaddr)),
                ],
            );
            // Flags only when set, to keep the trace small.
            flags_true(
                e,
                &[
                    ("write", m.write),
                    ("at_attach", m.at_attach),
                    ("installed_before_window", clipped),
                ],
            );
        });
        self.stats.slices += 1;
        self.flush_packet()
    }

    fn begin_pin(
        &mut self,
        t: u64,
        cx: &Cx<'_>,
        p: &PinLife,
        stack: &[String],
        clipped: bool,
    ) -> io::Result<()> {
        let lane = self.take_lane(t, cx, p.pfn, true)?;
        // A reference taken before the window has no start to flow from.
        self.open.insert(
            p.id,
            Open {
                pfn: p.pfn,
                lane,
                flow: !clipped,
            },
        );
        let comm = p.comm.as_str();
        let stack = stack.join("\n");
        self.start(t, true);
        self.pkt.message(P_TRACK_EVENT, |e| {
            e.uint(TE_TYPE, TYPE_SLICE_BEGIN);
            e.uint(TE_TRACK, lane);
            e.string(TE_NAME, p.label.as_str());
            if !clipped {
                e.fixed64(TE_FLOW, p.id);
            }
            annotations(
                e,
                &[
                    ("pid", Val::Uint(p.pid.into())),
                    ("comm", Val::Str(&comm)),
                    ("mm", Val::Ptr(p.mm)),
                    ("refs", Val::Uint(p.refs.into())),
                ],
            );
            flags_true(e, &[("taken_before_window", clipped)]);
            if !stack.is_empty() {
                annotations(e, &[("stack", Val::Str(&stack))]);
            }
        });
        self.stats.slices += 1;
        self.flush_packet()
    }

    /// End the slice of lifetime `id` if it is open. Returns whether it was
    /// (and whether a flow starts at its beginning).
    fn end(&mut self, t: u64, id: u64, why: End, by: Option<&Event>) -> io::Result<Option<bool>> {
        let Some(open) = self.open.remove(&id) else {
            return Ok(None);
        };
        self.free_lane(open.pfn, open.lane);
        self.start(t, true);
        self.pkt.message(P_TRACK_EVENT, |e| {
            e.uint(TE_TYPE, TYPE_SLICE_END);
            e.uint(TE_TRACK, open.lane);
            annotations(e, &[("ended_by", Val::Str(why.as_str()))]);
            if let Some(ev) = by {
                annotations(e, &[("ended_by_pid", Val::Uint(ev.pid.into()))]);
            }
        });
        self.flush_packet()?;
        Ok(Some(open.flow))
    }

    fn instant(
        &mut self,
        t: u64,
        track: u64,
        name: &str,
        args: &[(&str, Val<'_>)],
    ) -> io::Result<()> {
        let term = std::mem::take(&mut self.term_flows);
        self.start(t, true);
        self.pkt.message(P_TRACK_EVENT, |e| {
            e.uint(TE_TYPE, TYPE_INSTANT);
            e.uint(TE_TRACK, track);
            e.string(TE_NAME, name);
            for &f in &term {
                e.fixed64(TE_TERM_FLOW, f);
            }
            annotations(e, args);
        });
        self.stats.instants += 1;
        self.stats.flows += term.len() as u64;
        self.flush_packet()
    }

    fn finding(&mut self, t: u64, cx: &Cx<'_>, f: &Finding) -> io::Result<()> {
        let track = self.page_track(t, cx, f.pfn)?;
        let comm = f.comm.as_str();
        // The name says rule and severity, the track the page.
        let mut args = vec![
            ("finding_id", Val::Uint(f.id)),
            ("rule", Val::Str(f.rule.id())),
            ("explanation", Val::Str(&f.explanation)),
            ("pid", Val::Uint(f.pid.into())),
            ("comm", Val::Str(&comm)),
            ("mm", Val::Ptr(f.mm.0)),
        ];
        if f.vaddr.0 != 0 {
            args.push(("vaddr", Val::Ptr(f.vaddr.0)));
        }
        if f.status == Status::Uncertain {
            args.push(("uncertain", Val::Bool(true)));
        }
        if f.at_attach {
            args.push(("at_attach", Val::Bool(true)));
        }
        self.instant(
            t,
            track,
            &format!("{} {}", f.severity.as_str(), f.rule.id()),
            &args,
        )?;
        self.stats.findings += 1;
        Ok(())
    }

    fn apply_changes(
        &mut self,
        cx: &Cx<'_>,
        t: u64,
        ev: Option<&Event>,
        changes: &[Change],
    ) -> io::Result<()> {
        let in_window = cx.filter.time_ok(t) && !cx.window_closed;
        for c in changes {
            match c {
                Change::MapBegin(m) => {
                    if in_window && cx.filter.life_ok(m.pfn, m.order, m.pid) {
                        self.begin_map(t, cx, m, false)?;
                    }
                }
                Change::PinBegin(p) => {
                    if in_window && cx.filter.life_ok(p.pfn, 0, p.pid) {
                        let stack = ev.map_or(&[][..], |e| &e.stack[..]);
                        self.begin_pin(t, cx, p, stack, false)?;
                    }
                }
                Change::MapEnd(m, why) => {
                    self.end(t, m.id, *why, ev)?;
                }
                Change::PinEnd(p, why) => {
                    if self.end(t, p.id, *why, ev)? == Some(true)
                        && matches!(why, End::Released | End::Freed)
                    {
                        self.term_flows.push(p.id);
                    }
                }
                Change::MapMoved { .. } => {}
            }
        }
        Ok(())
    }
}

impl<W: Write> Sink for Perfetto<W> {
    fn window_open(&mut self, cx: &Cx<'_>, t: u64) -> anyhow::Result<()> {
        let mut maps: Vec<MapLife> = cx
            .lifetimes
            .live_maps()
            .filter(|m| cx.filter.life_ok(m.pfn, m.order, m.pid))
            .cloned()
            .collect();
        maps.sort_by_key(|m| m.id);
        for m in &maps {
            self.begin_map(t, cx, m, true)?;
        }
        let mut pins: Vec<PinLife> = cx
            .lifetimes
            .live_pins()
            .filter(|p| cx.filter.life_ok(p.pfn, 0, p.pid))
            .cloned()
            .collect();
        pins.sort_by_key(|p| p.id);
        for p in &pins {
            self.begin_pin(t, cx, p, &[], true)?;
        }
        Ok(())
    }

    fn window_close(&mut self, _cx: &Cx<'_>, t: u64) -> anyhow::Result<()> {
        let mut ids: Vec<u64> = self.open.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.end(t, id, End::WindowEnd, None)?;
        }
        Ok(())
    }

    fn event(
        &mut self,
        cx: &Cx<'_>,
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
                if let Some(raw) = ev.ref_after.or(ev.ref_before) {
                    let logical = cx.logical_ref(ev.pfn, raw);
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

    fn loss(&mut self, cx: &Cx<'_>, loss: &Loss) -> anyhow::Result<()> {
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
        cx: &Cx<'_>,
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
