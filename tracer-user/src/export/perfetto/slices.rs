//! What the Perfetto export draws on the tracks: a slice per mapping
//! (install to unmap) and per GUP reference (get to the release that gave
//! back its last ref) on a lane of its page, a flow from the get to the
//! release instant, instants for puts, frees and other events, and one
//! instant per finding on its page's track, named by rule and severity.

use std::io;

use refscope_core::{
    analysis::{Finding, Status},
    event::Event,
};

use super::{
    Open, Perfetto,
    fields::{
        P_TRACK_EVENT, TE_FLOW, TE_NAME, TE_TERM_FLOW, TE_TRACK, TE_TYPE, TYPE_INSTANT,
        TYPE_SLICE_BEGIN, TYPE_SLICE_END, Val, annotations, flags_true,
    },
};
use refscope_core::analysis::{Change, MapLife, PinLife, lifetimes::End};

use crate::export::Context;

impl<W: io::Write> Perfetto<W> {
    pub(super) fn begin_map(
        &mut self,
        t: u64,
        cx: &Context<'_>,
        m: &MapLife,
        clipped: bool,
    ) -> io::Result<()> {
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

    pub(super) fn begin_pin(
        &mut self,
        t: u64,
        cx: &Context<'_>,
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
    pub(super) fn end(
        &mut self,
        t: u64,
        id: u64,
        why: End,
        by: Option<&Event>,
    ) -> io::Result<Option<bool>> {
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

    pub(super) fn instant(
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

    pub(super) fn finding(&mut self, t: u64, cx: &Context<'_>, f: &Finding) -> io::Result<()> {
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

    pub(super) fn apply_changes(
        &mut self,
        cx: &Context<'_>,
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
