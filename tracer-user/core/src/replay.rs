//! The one replay loop: a trace's records, in order, to a consumer, with
//! one rule for where a trace ends. `refscope report`, `export`,
//! `live --replay` and the fuzz targets all read traces through it.
//!
//! - Records go to the consumer as they are read; findings written in the
//!   trace (what was reported live) are handed over as such, never mixed
//!   into the analysis: it recomputes them from the events.
//! - The end of a trace is the latest of its events' times and its
//!   footer's `end_t` (a trace cut short has no footer: its last event is
//!   its end). [`Consumer::end`] is told once, when the records run out.
//! - Reading stops at the first bad record; the error names the file and
//!   the line, and what was read before it is described by the [`End`]
//!   that comes with it.

use std::io::BufRead;

use crate::{
    analysis::{Analyzer, Finding},
    event::Event,
    trace::{Footer, Loss, Record, TraceError, TraceReader},
};

/// Where the records ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct End {
    /// Events read.
    pub events: u64,
    /// The latest event time, or the footer's `end_t` if later.
    pub end_t: u64,
    /// The latest event time alone (0: no event).
    pub last_event_t: u64,
    pub footer: Option<Footer>,
    /// Line number of an incomplete last line (the writer was killed).
    pub truncated_at: Option<u64>,
    pub bytes: u64,
}

/// What a replay feeds.
pub trait Consumer {
    type Error;
    /// [`Consumer::progress`] comes after every this many events.
    const PROGRESS_EVERY: u64 = 65536;
    /// An event, handed over (the consumer may keep it).
    fn event(&mut self, ev: Box<Event>) -> Result<(), Self::Error>;
    fn loss(&mut self, loss: &Loss) -> Result<(), Self::Error>;
    /// A finding as it was reported live.
    fn live_finding(&mut self, _f: &Finding) -> Result<(), Self::Error> {
        Ok(())
    }
    /// Every [`Consumer::PROGRESS_EVERY`] events: bytes read so far.
    fn progress(&mut self, _bytes: u64) -> Result<(), Self::Error> {
        Ok(())
    }
    /// The records ran out (not called after an error).
    fn end(&mut self, end: &End) -> Result<(), Self::Error>;
}

/// Why a replay stopped before the end.
#[derive(Debug)]
pub enum Stop<E> {
    /// A record could not be read; `at` describes what came before it.
    Trace { error: TraceError, at: Box<End> },
    /// The consumer gave up.
    Consumer(E),
}

impl<E: std::fmt::Display> std::fmt::Display for Stop<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Trace { error, .. } => error.fmt(f),
            Stop::Consumer(e) => e.fmt(f),
        }
    }
}

impl<E: std::fmt::Debug + std::fmt::Display> std::error::Error for Stop<E> {}

/// Feed every record after the header to `c`, then [`Consumer::end`].
pub fn replay<R: BufRead, C: Consumer>(
    reader: &mut TraceReader<R>,
    c: &mut C,
) -> Result<End, Stop<C::Error>> {
    let mut end = End::default();
    while let Some(rec) = reader.next_record() {
        let rec = match rec {
            Ok(r) => r,
            Err(error) => {
                end.bytes = reader.bytes_read();
                end.end_t = end.last_event_t;
                return Err(Stop::Trace {
                    error,
                    at: Box::new(end),
                });
            }
        };
        match rec {
            Record::Event(ev) => {
                end.events += 1;
                end.last_event_t = end.last_event_t.max(ev.t);
                c.event(ev).map_err(Stop::Consumer)?;
                if end.events.is_multiple_of(C::PROGRESS_EVERY) {
                    c.progress(reader.bytes_read()).map_err(Stop::Consumer)?;
                }
            }
            Record::Loss(l) => c.loss(&l).map_err(Stop::Consumer)?,
            Record::Finding(f) => c.live_finding(&f).map_err(Stop::Consumer)?,
            Record::Footer(f) => end.footer = Some(f),
            // The reader checked it and never yields it again.
            Record::Header(_) => {}
        }
    }
    end.end_t = end
        .footer
        .as_ref()
        .map_or(end.last_event_t, |f| f.end_t.max(end.last_event_t));
    end.truncated_at = reader.truncated_at();
    end.bytes = reader.bytes_read();
    c.end(&end).map_err(Stop::Consumer)?;
    Ok(end)
}

/// The plainest consumer: the analysis itself, finished at the trace's end.
impl Consumer for Analyzer {
    type Error = std::convert::Infallible;
    fn event(&mut self, ev: Box<Event>) -> Result<(), Self::Error> {
        self.apply(&ev);
        Ok(())
    }
    fn loss(&mut self, loss: &Loss) -> Result<(), Self::Error> {
        self.apply_loss(loss);
        Ok(())
    }
    fn end(&mut self, end: &End) -> Result<(), Self::Error> {
        self.finish(end.end_t);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use refscope_common::{EventKind, HookId};

    use super::*;
    use crate::{
        analysis::Settings,
        model::RefcountModel,
        trace::{Header, TraceWriter},
    };

    fn trace(events: &[u64], footer: Option<u64>, cut: bool) -> Vec<u8> {
        let header = Header::synthetic(RefcountModel::Refcounted);
        let mut w = TraceWriter::new(Vec::new(), &header).expect("memory");
        for &t in events {
            let mut e = Event::new(EventKind::Unmap, HookId::UnmapPageRange);
            e.t = t;
            w.event(&e).expect("memory");
        }
        let mut bytes = match footer {
            Some(end_t) => w.finish(end_t, "signal").expect("memory"),
            None => {
                w.flush().expect("memory");
                std::mem::take(w.get_mut())
            }
        };
        if cut {
            bytes.extend_from_slice(br#"{"type":"event","t":9"#);
        }
        bytes
    }

    #[derive(Default)]
    struct Log(Vec<String>);

    impl Consumer for Log {
        type Error = String;
        fn event(&mut self, ev: Box<Event>) -> Result<(), String> {
            self.0.push(format!("event {}", ev.t));
            Ok(())
        }
        fn loss(&mut self, _: &Loss) -> Result<(), String> {
            self.0.push("loss".into());
            Ok(())
        }
        fn end(&mut self, end: &End) -> Result<(), String> {
            self.0.push(format!("end {}", end.end_t));
            Ok(())
        }
    }

    fn run(bytes: &[u8]) -> (Result<End, Stop<String>>, Vec<String>) {
        let mut r = TraceReader::new(bytes, "t.jsonl").expect("header");
        let mut log = Log::default();
        let res = replay(&mut r, &mut log);
        (res, log.0)
    }

    #[test]
    fn a_trace_ends_at_its_footer_or_its_last_event_whichever_is_later() {
        let (end, log) = run(&trace(&[10, 30, 20], Some(50), false));
        let end = end.expect("a whole trace");
        assert_eq!((end.events, end.end_t, end.last_event_t), (3, 50, 30));
        assert_eq!(log, ["event 10", "event 30", "event 20", "end 50"]);
        // A footer older than the last event (a clock step): the event.
        let (end, _) = run(&trace(&[10, 70], Some(50), false));
        assert_eq!(end.expect("whole").end_t, 70);
    }

    #[test]
    fn a_trace_cut_short_ends_at_its_last_event_and_says_where_it_was_cut() {
        let (end, log) = run(&trace(&[10, 30], None, true));
        let end = end.expect("an incomplete last line is not an error");
        assert_eq!((end.end_t, end.footer.is_none()), (30, true));
        assert!(end.truncated_at.is_some());
        assert_eq!(log.last().map(String::as_str), Some("end 30"));
    }

    #[test]
    fn a_corrupt_record_stops_the_replay_naming_its_line() {
        let mut bytes = trace(&[10], None, false);
        bytes.extend_from_slice(b"{\"type\":\"event\",\"t\":\"x\"}\n");
        let (res, log) = run(&bytes);
        match res {
            Err(Stop::Trace { error, at }) => {
                assert!(error.to_string().starts_with("t.jsonl: line 3"), "{error}");
                assert_eq!((at.events, at.end_t), (1, 10));
            }
            other => panic!("expected a trace error, got {other:?}"),
        }
        assert_eq!(log, ["event 10"], "no end after an error");
    }

    #[test]
    fn the_analysis_is_a_consumer_finished_at_the_end() {
        let bytes = trace(&[10, 30], Some(50), false);
        let mut r = TraceReader::new(bytes.as_slice(), "t.jsonl").expect("header");
        let mut an = Analyzer::new(Settings::new(RefcountModel::Refcounted));
        let end = replay(&mut r, &mut an).expect("whole");
        assert_eq!(an.stats().events, 2);
        assert_eq!(end.end_t, 50);
    }
}
