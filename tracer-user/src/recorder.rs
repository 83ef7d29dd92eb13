//! The one recorder behind `refscope record` and `refscope live`.
//!
//! Data flows one way: ring-buffer records -> decode -> analysis ->
//! (the optional trace, new findings, the view, which only reads
//! [`Recorder::pipeline`]).
//!
//! - [`Recorder`] owns the [`Pipeline`] (decode and analysis) and the
//!   optional trace writer. The first write error stops writing and is kept:
//!   the trace up to it stays valid.
//! - [`Capture`] is the kernel side: the ring buffer, the drop counters,
//!   the attached programs (dropping it detaches them) and the shadow
//!   auditor. Every read, audit and loss poll goes through it into a
//!   recorder, in the same order for both commands: attach snapshot, reads
//!   and ticks, then [`Capture::stop`] (drain, last audit, last losses,
//!   detach) before [`Recorder::end`] and [`Recorder::close`].

use std::{collections::BTreeMap, io, io::Write};

use refscope_core::{
    analysis::{Analyzer, Finding},
    event::Event,
    trace::{Loss, TraceWriter},
};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    audit,
    audit::Auditor,
    cli::TraceOpts,
    pipeline::Pipeline,
    probe::{
        loader::{Attached, DropCounters, Probes},
        ringbuf::{self, RingReader, StallWatch},
    },
    session, snapshot,
};

/// Decode, analysis and the optional trace.
pub struct Recorder<W: Write> {
    pipeline: Pipeline,
    trace: Option<Trace<W>>,
}

struct Trace<W: Write> {
    writer: TraceWriter<W>,
    path: String,
    error: Option<io::Error>,
}

/// What is left once the trace is closed.
pub struct Closed {
    pub pipeline: Pipeline,
    /// Events written to the trace (0 without one).
    pub events: u64,
    /// The first write error, as "writing PATH failed: ...".
    pub failure: Option<String>,
}

impl<W: Write> Recorder<W> {
    /// `trace`: the writer (header written) and its path, for messages.
    pub fn new(pipeline: Pipeline, trace: Option<(TraceWriter<W>, String)>) -> Self {
        Recorder {
            pipeline,
            trace: trace.map(|(writer, path)| Trace {
                writer,
                path,
                error: None,
            }),
        }
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn analyzer(&self) -> &Analyzer {
        &self.pipeline.analyzer
    }

    /// One ring-buffer record: decoded, analysed, written.
    pub fn record(&mut self, bytes: &[u8]) {
        if let Some(ev) = self.pipeline.on_record(bytes) {
            self.write(|w| w.event(&ev));
        }
    }

    /// An event of the attach snapshot, in the kernel's form.
    pub fn record_raw(&mut self, raw: &refscope_common::Event) {
        let ev = self.pipeline.on_raw(raw, Vec::new());
        self.write(|w| w.event(&ev));
    }

    /// An event that did not come through the ring buffer (the audit's
    /// corrections; a replayed trace): analysed, written.
    pub fn apply(&mut self, ev: &Event) {
        self.pipeline.analyzer.apply(ev);
        self.write(|w| w.event(ev));
    }

    /// A loss record (replayed, or from [`Recorder::poll_losses`]).
    pub fn loss(&mut self, loss: &Loss) {
        self.pipeline.analyzer.apply_loss(loss);
        self.write(|w| w.loss(loss));
    }

    /// New kernel-side drops since the last call, analysed and written.
    pub fn poll_losses(&mut self, drops: &DropCounters, misses: u64) -> Vec<Loss> {
        let losses = self.pipeline.poll_drops(drops, misses);
        for l in &losses {
            self.write(|w| w.loss(l));
        }
        losses
    }

    /// Findings raised since the last call, written and flushed (they must
    /// survive a crash right after).
    pub fn findings(&mut self) -> &[Finding] {
        let new = self.pipeline.analyzer.take_new_findings();
        if let Some(t) = &mut self.trace
            && !new.is_empty()
            && t.error.is_none()
        {
            let written = new.iter().try_for_each(|f| t.writer.finding(f));
            if let Err(e) = written.and_then(|()| t.writer.flush()) {
                t.error = Some(e);
            }
        }
        new
    }

    pub fn flush(&mut self) {
        self.write(|w| w.flush());
    }

    /// Why the trace stopped being written, if it did.
    pub fn failure(&self) -> Option<String> {
        let t = self.trace.as_ref()?;
        let e = t.error.as_ref()?;
        Some(format!("writing {} failed: {e}", t.path))
    }

    /// The end of tracing at `end_t`: pins still held become findings.
    /// Returns the findings that raised (written, as [`Recorder::findings`]).
    pub fn end(&mut self, end_t: u64) -> &[Finding] {
        self.pipeline.analyzer.finish(end_t);
        self.findings()
    }

    /// Write the footer (best effort when the disk is the problem: what was
    /// written stays a valid footer-less trace) and sync the file.
    pub fn close(self, end_t: u64, reason: &str, sync: impl FnOnce(W)) -> Closed {
        let failure = self.failure();
        let events = match self.trace {
            Some(t) => {
                let events = t.writer.events_written();
                if let Ok(w) = t.writer.finish(end_t, reason) {
                    sync(w);
                }
                events
            }
            None => 0,
        };
        Closed {
            pipeline: self.pipeline,
            events,
            failure,
        }
    }

    fn write(&mut self, f: impl FnOnce(&mut TraceWriter<W>) -> io::Result<()>) {
        if let Some(t) = &mut self.trace
            && t.error.is_none()
            && let Err(e) = f(&mut t.writer)
        {
            t.error = Some(e);
        }
    }
}

/// The kernel side of a recording.
pub struct Capture {
    ring: AsyncFd<RingReader>,
    drops: DropCounters,
    /// The programs: dropping it detaches them.
    attached: Attached,
    auditor: Option<Auditor>,
    stall: StallWatch,
}

/// What [`Capture::stop`] found last.
pub struct Stopped {
    pub losses: Vec<Loss>,
    /// The audit's cost line, if it audited.
    pub audit_cost: Option<String>,
}

impl Capture {
    pub fn new(probes: Probes, auditor: Option<Auditor>) -> anyhow::Result<Capture> {
        let Probes {
            events,
            drops,
            guard,
            ..
        } = probes;
        // SAFETY: the reader owns the map (and so its fd), which stays open
        // and unchanged for as long as the AsyncFd owns the reader.
        let ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("cannot poll the ring buffer: {e}"))?;
        Ok(Capture {
            ring,
            drops,
            attached: guard,
            auditor,
            stall: StallWatch::default(),
        })
    }

    /// The mappings that exist already: after the probes are attached (so
    /// none made meanwhile is missed) and before the ready file.
    pub fn snapshot<W: Write>(
        &mut self,
        rec: &mut Recorder<W>,
        opts: &TraceOpts,
        ranges: &[(u64, u64)],
        progress: bool,
    ) {
        let mut feed = Feed {
            ring: self.ring.get_mut(),
            rec,
        };
        session::attach_snapshot(&mut self.attached, opts, ranges, &mut feed, progress);
    }

    /// Wait until the ring buffer is readable, read it into `rec`, and
    /// confirm the findings that wait for the page table. Cancel-safe: it
    /// waits only before reading.
    pub async fn read<W: Write>(&mut self, rec: &mut Recorder<W>) -> io::Result<()> {
        ringbuf::wait_and_read(&mut self.ring, |bytes| rec.record(bytes)).await?;
        if let Some(a) = &mut self.auditor {
            let mut feed = Feed {
                ring: self.ring.get_mut(),
                rec,
            };
            a.verify(&mut self.attached, &mut feed);
        }
        Ok(())
    }

    /// The periodic work: read what a missed wake-up left, the audits due,
    /// and the drop counters (the new losses are returned).
    pub fn tick<W: Write>(&mut self, rec: &mut Recorder<W>) -> Vec<Loss> {
        let stop = self.ring.get_mut().read(|bytes| rec.record(bytes));
        if let Some(msg) = self.stall.check(stop, self.ring.get_ref().state()) {
            log::warn!("{msg}");
        }
        log::debug!(
            "ring {:?} after read: {stop:?}",
            self.ring.get_ref().state()
        );
        if let Some(a) = &mut self.auditor {
            let mut feed = Feed {
                ring: self.ring.get_mut(),
                rec,
            };
            a.verify(&mut self.attached, &mut feed);
            a.tick(&mut self.attached, &mut feed);
        }
        rec.poll_losses(&self.drops, self.attached.recursion_misses())
    }

    /// Drain the ring buffer, the last audit and the last losses; then
    /// detach (nothing after this is recorded).
    pub fn stop<W: Write>(mut self, rec: &mut Recorder<W>) -> Stopped {
        self.ring.get_mut().read(|bytes| rec.record(bytes));
        let mut audit_cost = None;
        if let Some(a) = &mut self.auditor {
            let mut feed = Feed {
                ring: self.ring.get_mut(),
                rec,
            };
            a.finish(&mut self.attached, &mut feed);
            audit_cost = a.cost.line();
        }
        let losses = rec.poll_losses(&self.drops, self.attached.recursion_misses());
        drop(self);
        Stopped { losses, audit_cost }
    }
}

/// The attach snapshot's and the audit's way into the recorder: the ring
/// buffer is drained through it, and their events go where records go.
struct Feed<'a, W: Write> {
    ring: &'a mut RingReader,
    rec: &'a mut Recorder<W>,
}

impl<W: Write> snapshot::Sink for Feed<'_, W> {
    fn drain(&mut self) {
        let rec = &mut *self.rec;
        self.ring.read(|bytes| rec.record(bytes));
    }

    fn emit(&mut self, ev: &refscope_common::Event) {
        self.rec.record_raw(ev);
    }
}

impl<W: Write> audit::Recording for Feed<'_, W> {
    fn sync(&mut self) -> bool {
        let rec = &mut *self.rec;
        self.ring
            .read_through(|bytes| rec.record(bytes), audit::SYNC_PATIENCE)
    }

    fn mm_id(&self, mm: u64) -> u64 {
        self.rec.pipeline.mm_id(mm)
    }

    fn shadow(&self, mm_id: u64) -> BTreeMap<u64, (u64, u8)> {
        audit::shadow_of(&self.rec.pipeline.analyzer, mm_id)
    }

    fn devices(&self) -> Vec<(u64, u64)> {
        audit::devices_of(&self.rec.pipeline.analyzer)
    }

    fn emit(&mut self, ev: &Event) {
        self.rec.apply(ev);
    }

    fn pause(&mut self) {
        std::thread::sleep(audit::PAUSE);
    }

    fn verify_requests(&mut self) -> Vec<(u64, u32)> {
        self.rec.pipeline.analyzer.take_verify_requests()
    }
}

#[cfg(test)]
mod tests {
    use refscope_core::trace::{Record, TraceReader};

    use super::*;
    use crate::{
        hash::AddrMapper,
        live::synth::{Item, Synth},
    };

    /// A disk with room for `room` bytes.
    struct Full {
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.room < b.len() {
                return Err(io::Error::other("No space left on device"));
            }
            self.room -= b.len();
            Ok(b.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn synth() -> Synth {
        Synth {
            pages: 64,
            pinned: 4,
        }
    }

    /// The synthetic scenario through a recorder writing into `out`.
    fn recorded<W: Write>(out: W) -> Recorder<W> {
        let s = synth();
        let header = s.header();
        let writer = TraceWriter::new(out, &header).expect("header");
        let pipeline = Pipeline::new(&header, 16, AddrMapper::new(true), None);
        let mut rec = Recorder::new(pipeline, Some((writer, "t.jsonl".into())));
        s.generate(&mut |item| match item {
            Item::Event(e) => rec.apply(e),
            Item::Loss(l) => rec.loss(l),
        });
        rec
    }

    #[test]
    fn the_trace_holds_what_was_analysed_and_each_finding_once() {
        let mut rec = recorded(Vec::new());
        let live = rec.findings().len();
        assert!(live > 0, "the scenario raises findings while it runs");
        assert!(rec.findings().is_empty(), "each finding is handed out once");
        let at_end = rec.end(synth().end_t()).len();
        let mut out = Vec::new();
        let closed = rec.close(synth().end_t(), "signal", |w| out = w);
        assert_eq!(closed.failure, None);
        let a = &closed.pipeline.analyzer;
        assert_eq!(a.findings().len(), live + at_end);

        let mut reader = TraceReader::new(io::Cursor::new(out), "t.jsonl").expect("reads back");
        let (mut events, mut losses, mut findings) = (0, 0, 0);
        while let Some(r) = reader.next_record() {
            match r.expect("a valid record") {
                Record::Event(_) => events += 1,
                Record::Loss(l) => losses += l.count,
                Record::Finding(_) => findings += 1,
                Record::Header(_) | Record::Footer(_) => {}
            }
        }
        assert_eq!(events, a.stats().events);
        assert_eq!(closed.events, a.stats().events);
        assert_eq!(losses, a.lost());
        assert_eq!(findings, a.findings().len());
        let footer = reader.footer().expect("a footer");
        assert_eq!(footer.end_reason, "signal");
    }

    #[test]
    fn a_write_error_stops_writing_keeps_analysing_and_is_kept() {
        // Room for the header and a few records.
        let full = recorded(Full { room: 8 << 10 });
        let failure = full.failure().expect("the full disk is reported");
        assert!(
            failure.starts_with("writing t.jsonl failed: ") && failure.contains("No space left"),
            "{failure}"
        );
        // The analysis went on past the error, to the same result.
        let whole = recorded(Vec::new());
        assert_eq!(
            full.analyzer().stats().events,
            whole.analyzer().stats().events
        );
        assert_eq!(
            full.analyzer().findings().len(),
            whole.analyzer().findings().len()
        );
        let closed = full.close(1, "error", |_| panic!("no footer after a write error"));
        assert_eq!(closed.failure.as_deref(), Some(failure.as_str()));
    }
}
