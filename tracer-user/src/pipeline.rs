//! Ring-buffer records to analysed events: decoding (`refscope_core::abi`),
//! kernel addresses to ids, symbolised stacks, the analysis, and the
//! kernel's drop counters turned into loss records.

use std::collections::HashMap;

use refscope_common::DropStats;
use refscope_core::{
    abi,
    analysis::{self, Analyzer},
    event::Event,
    trace::{Header, Loss},
};

use crate::{
    hash::AddrMapper,
    kernel::{Kallsyms, clock_ns},
    probe::DropSource,
};

/// Ring-buffer records to analysed events.
pub struct Pipeline {
    mapper: AddrMapper,
    kallsyms: Option<Kallsyms>,
    decoder: abi::Decoder,
    /// Symbolised kernel stacks, by the key records carry.
    stacks: HashMap<u32, Vec<String>>,
    pub analyzer: Analyzer,
    pub decode_errors: u64,
    last_drops: Vec<DropStats>,
    /// Recursion-guard misses accounted so far, and when they were polled.
    misses_seen: u64,
    misses_polled_t: u64,
}

/// The `cpu` of a loss record for events the kernel skipped because the
/// program was already running on that CPU (not attributable to one CPU).
pub const MISSES_CPU: u32 = u32::MAX;

impl Pipeline {
    pub fn new(
        header: &Header,
        timeline: usize,
        mapper: AddrMapper,
        kallsyms: Option<Kallsyms>,
    ) -> Self {
        Pipeline {
            mapper,
            kallsyms,
            decoder: abi::Decoder::new(),
            stacks: HashMap::new(),
            analyzer: analyzer_for(header, timeline),
            decode_errors: 0,
            last_drops: Vec::new(),
            misses_seen: 0,
            misses_polled_t: clock_ns(libc::CLOCK_MONOTONIC),
        }
    }

    /// The id events carry for a kernel address space pointer.
    pub fn mm_id(&self, mm: u64) -> u64 {
        self.mapper.id(mm)
    }

    /// Decode, analyse and return one record's event (`None` for an
    /// announcement or a record that does not decode).
    pub fn on_record(&mut self, bytes: &[u8]) -> Option<Event> {
        let unannounced = self.decoder.unannounced;
        let raw = match self.decoder.decode(bytes) {
            Ok(Some(raw)) => {
                if unannounced == 0 && self.decoder.unannounced > 0 {
                    log::warn!(
                        "thread {} produced an event before its announcement reached the ring buffer \
                         (it was full): its process id and command are unknown, the thread id stands in",
                        raw.event.tid
                    );
                }
                raw
            }
            Ok(None) => return None,
            Err(e) => {
                self.decode_errors += 1;
                if self.decode_errors <= 5 {
                    log::error!("dropping an undecodable ring-buffer record: {e}");
                }
                return None;
            }
        };
        let stack = if raw.stack == 0 {
            Vec::new()
        } else {
            let (decoder, kallsyms) = (&self.decoder, self.kallsyms.as_ref());
            self.stacks
                .entry(raw.stack)
                .or_insert_with(|| {
                    // BPF programs and trampolines are not worth showing,
                    // and a kernel address is never written raw.
                    decoder
                        .frames(raw.stack)
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|&a| kallsyms.and_then(|k| k.symbolize(a)))
                        .collect()
                })
                .clone()
        };
        Some(self.on_raw(&raw.event, stack))
    }

    /// Analyse and return an event that did not cross the ring buffer (the
    /// attach snapshot's).
    pub fn on_raw(&mut self, raw: &refscope_common::Event, stack: Vec<String>) -> Event {
        let mapper = &self.mapper;
        let ev = abi::to_event(raw, |a| mapper.id(a), stack);
        log::debug!("event {raw:?}");
        self.analyzer.apply(&ev);
        ev
    }

    /// New losses since the last call: one loss record per CPU whose ring
    /// buffer reservations failed, and one (CPU [`MISSES_CPU`]) for runs the
    /// kernel's recursion guard skipped (`misses`: the running total).
    pub fn poll_drops(&mut self, drops: &impl DropSource, misses: u64) -> Vec<Loss> {
        let mut out = Vec::new();
        let now_t = clock_ns(libc::CLOCK_MONOTONIC);
        if misses > self.misses_seen {
            let loss = Loss {
                cpu: MISSES_CPU,
                count: misses - self.misses_seen,
                first_t: self.misses_polled_t,
                last_t: now_t,
            };
            self.analyzer.apply_loss(&loss);
            out.push(loss);
            self.misses_seen = misses;
        }
        self.misses_polled_t = now_t;
        let Some(now) = drops.per_cpu() else {
            return out;
        };
        if self.last_drops.len() < now.len() {
            self.last_drops.resize(now.len(), DropStats::default());
        }
        for (cpu, (cur, last)) in now.iter().zip(self.last_drops.iter()).enumerate() {
            if cur.dropped > last.dropped {
                let loss = Loss {
                    cpu: cpu as u32,
                    count: cur.dropped - last.dropped,
                    first_t: if last.dropped == 0 {
                        cur.first_ts
                    } else {
                        last.last_ts
                    },
                    last_t: cur.last_ts,
                };
                self.analyzer.apply_loss(&loss);
                out.push(loss);
            }
        }
        self.last_drops = now;
        out
    }
}

/// An analyzer configured from a trace header.
pub fn analyzer_for(header: &Header, timeline: usize) -> Analyzer {
    let mut cfg = analysis::Settings::new(header.refcount_model);
    cfg.gup = header.gup_flags;
    cfg.timeline_len = timeline;
    cfg.verify = header.audit.is_some();
    let mut a = Analyzer::new(cfg);
    for d in &header.devices {
        a.add_device(d);
    }
    a
}

#[cfg(test)]
mod tests {
    use refscope_core::model::RefcountModel;

    use super::*;

    fn stats(dropped: u64, first_ts: u64, last_ts: u64) -> DropStats {
        DropStats {
            dropped,
            first_ts,
            last_ts,
            last_seq: 0,
        }
    }

    #[test]
    fn drop_counters_become_one_loss_record_per_cpu_and_poll() {
        let header = Header::synthetic(RefcountModel::Refcounted);
        let mut p = Pipeline::new(&header, 0, AddrMapper::new(true), None);
        let none = vec![stats(0, 0, 0), stats(0, 0, 0)];
        assert!(p.poll_drops(&none, 0).is_empty());
        // CPU 1 dropped 5 events between t=100 and t=200.
        let losses = p.poll_drops(&vec![stats(0, 0, 0), stats(5, 100, 200)], 0);
        assert_eq!(losses.len(), 1);
        assert_eq!(
            (
                losses[0].cpu,
                losses[0].count,
                losses[0].first_t,
                losses[0].last_t
            ),
            (1, 5, 100, 200)
        );
        // 3 more: counted from the last drop seen, not again from the first.
        let losses = p.poll_drops(&vec![stats(0, 0, 0), stats(8, 100, 300)], 0);
        assert_eq!(
            (losses[0].count, losses[0].first_t, losses[0].last_t),
            (3, 200, 300)
        );
        // Recursion-guard misses are one record on their own CPU.
        let losses = p.poll_drops(&vec![stats(0, 0, 0), stats(8, 100, 300)], 4);
        assert_eq!(
            (losses.len(), losses[0].cpu, losses[0].count),
            (1, MISSES_CPU, 4)
        );
        assert_eq!(p.analyzer.lost(), 5 + 3 + 4);
    }
}
