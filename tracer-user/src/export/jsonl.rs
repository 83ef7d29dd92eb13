//! The trace itself, filtered, for sharing: still a refscope trace (the same
//! header, the selected events, loss records and live findings, a footer
//! with the new totals) that `refscope report` reads.
//!
//! With `--since`, mappings of selected pages that were live when the
//! window opens are written as `attach_map` events at its start (as if
//! refscope had attached then), so their unmaps still match. GUP references
//! have no such event: one taken before the window and released in it shows
//! as an unmatched release.
//!
//! Each CPU's event sequence numbers are lowered by the number of that
//! CPU's events left out before them, so the events the filter dropped do
//! not read as lost ones; gaps from real losses stay.

use std::io::Write;

use refscope_common::{EventKind, HookId, flags};
use refscope_core::{
    analysis::Finding,
    event::{Attach, Event, Flags, Hex},
    trace::{Footer, Header, Loss, TraceWriter},
};

use refscope_core::analysis::Change;

use super::{Context, Format};

pub struct Jsonl<W: Write> {
    w: Option<TraceWriter<W>>,
    written: u64,
    /// Per CPU, kernel events left out so far: written events' `seq` is
    /// lowered by it, so that what the filter dropped does not read as lost
    /// events (gaps from real losses stay gaps).
    dropped: Vec<u64>,
}

impl<W: Write> Jsonl<W> {
    pub fn new(out: W, header: &Header) -> std::io::Result<Self> {
        Ok(Jsonl {
            w: Some(TraceWriter::new(out, header)?),
            written: 0,
            dropped: Vec::new(),
        })
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    fn writer(&mut self) -> anyhow::Result<&mut TraceWriter<W>> {
        self.w
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("the JSONL export was already finished"))
    }
}

impl<W: Write> Format for Jsonl<W> {
    fn window_open(&mut self, cx: &Context<'_>, t: u64) -> anyhow::Result<()> {
        let live = cx.analyzer.live_maps();
        for m in live
            .into_iter()
            .filter(|m| cx.filter.life_ok(m.pfn, m.order, m.pid))
        {
            let mut ev = Event::new(EventKind::AttachMap, HookId::Snapshot);
            ev.t = t;
            ev.attach = Attach::Snapshot;
            ev.pid = m.pid;
            ev.comm = m.comm;
            ev.mm = Hex(m.mm);
            ev.vaddr = Hex(m.vaddr);
            ev.pfn = m.pfn;
            ev.order = m.order;
            let mut bits = flags::AT_ATTACH;
            if m.write {
                bits |= flags::WRITE;
            }
            ev.flags = Flags(bits);
            self.writer()?.event(&ev)?;
            self.written += 1;
        }
        Ok(())
    }

    fn window_close(&mut self, _cx: &Context<'_>, _t: u64) -> anyhow::Result<()> {
        Ok(())
    }

    fn event(
        &mut self,
        _cx: &Context<'_>,
        ev: &Event,
        _changes: &[Change],
        selected: bool,
        _findings: &[Finding],
    ) -> anyhow::Result<()> {
        if ev.seq == 0 {
            // Not from the kernel (snapshot): not numbered.
        } else if !selected {
            let cpu = ev.cpu as usize;
            if self.dropped.len() <= cpu {
                self.dropped.resize(cpu + 1, 0);
            }
            self.dropped[cpu] += 1;
        } else if let Some(&d) = self.dropped.get(ev.cpu as usize)
            && d > 0
        {
            let mut renumbered = ev.clone();
            renumbered.seq = ev.seq.saturating_sub(d).max(1);
            self.writer()?.event(&renumbered)?;
            self.written += 1;
            return Ok(());
        }
        if selected {
            self.writer()?.event(ev)?;
            self.written += 1;
        }
        Ok(())
    }

    fn loss(&mut self, cx: &Context<'_>, loss: &Loss) -> anyhow::Result<()> {
        // Losses matter to every page (they make findings uncertain).
        let f = cx.filter;
        let overlaps =
            f.since.is_none_or(|s| loss.last_t >= s) && f.until.is_none_or(|u| loss.first_t < u);
        if overlaps {
            self.writer()?.loss(loss)?;
        }
        Ok(())
    }

    fn live_finding(&mut self, cx: &Context<'_>, f: &Finding) -> anyhow::Result<()> {
        if cx.finding_ok(f) {
            self.writer()?.finding(f)?;
        }
        Ok(())
    }

    fn finish(
        &mut self,
        cx: &Context<'_>,
        end_t: u64,
        _changes: &[Change],
        _findings: &[Finding],
        footer: Option<&Footer>,
    ) -> anyhow::Result<()> {
        let end_t = cx.filter.until.map_or(end_t, |u| end_t.min(u));
        let reason = footer.map_or("incomplete (the recording did not stop cleanly)", |f| {
            f.end_reason.as_str()
        });
        if let Some(w) = self.w.take() {
            w.finish(end_t, reason)?;
        }
        Ok(())
    }
}
