//! The trace file format: JSON Lines (docs/trace-format.md).
//!
//! Line 1 is a [`Header`]; then events, loss records and findings in the
//! order they happened; the last line is a [`Footer`] with totals. A trace
//! without a footer was cut short (SIGKILL, crash, disk full): it is still
//! readable up to its last complete line.

use std::io::{self, BufRead, Read, Write};

use serde::{Deserialize, Serialize};
use thiserror::Error;

// In the model (what the analysis takes), read and written here.
pub use crate::model::{Device, Loss};
use crate::{
    analysis::Finding,
    event::Event,
    model::{GupFlagBits, RefcountModel},
};

/// The `format` field of every refscope trace header.
pub const FORMAT_NAME: &str = "refscope-trace";
/// Version of the trace format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// First line of a trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// [`FORMAT_VERSION`] of the writer.
    pub version: u32,
    pub refscope_version: String,
    /// `uname -r` of the traced kernel.
    pub kernel_release: String,
    pub refcount_model: RefcountModel,
    /// Where the model came from (e.g. "btf: vmf_insert_page_mkwrite present").
    #[serde(default)]
    pub refcount_model_source: String,
    /// Every logical hook, with the function and attach type chosen, or why none.
    pub hooks: Vec<HookStatus>,
    pub clock: Clock,
    pub hostname: String,
    /// `"hashed"` (default: per-trace secret salt) or `"raw"`.
    pub kernel_addresses: String,
    #[serde(default)]
    pub gup_flags: GupFlagBits,
    /// Device memory known at start.
    #[serde(default)]
    pub devices: Vec<Device>,
    #[serde(default)]
    pub filters: Filters,
    #[serde(default)]
    pub ringbuf_bytes: u64,
    /// The refscope command line.
    #[serde(default)]
    pub command: Vec<String>,
    /// How the recording audited its shadow against the page tables
    /// (absent: it did not; its findings about mappings are unconfirmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditSettings>,
}

/// The shadow audit's settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditSettings {
    /// Seconds between periodic audits (0: none; verification and the
    /// final audit only).
    pub interval_s: f64,
}

impl Header {
    /// A header for tests and synthetic traces.
    pub fn synthetic(model: RefcountModel) -> Self {
        Header {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            refscope_version: env!("CARGO_PKG_VERSION").into(),
            kernel_release: "synthetic".into(),
            refcount_model: model,
            refcount_model_source: "synthetic".into(),
            hooks: Vec::new(),
            clock: Clock::default(),
            hostname: "synthetic".into(),
            kernel_addresses: "raw".into(),
            gup_flags: GupFlagBits::default(),
            devices: Vec::new(),
            filters: Filters::default(),
            ringbuf_bytes: 0,
            command: Vec::new(),
            audit: None,
        }
    }
}

/// One logical hook and how (or whether) it is attached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookStatus {
    /// Logical hook: map_pte, map_pmd, gup_get, gup_put, ref_put, free, unmap,
    /// mm_exit, pgmap_add, pgmap_remove, dax_kill, holder_notify.
    pub logical: String,
    /// Kernel functions attached (empty when none could be).
    pub functions: Vec<AttachedFunction>,
    /// Candidates tried and why each was not used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedFunction {
    pub function: String,
    /// fentry, fexit, fentry+fexit, kprobe, kretprobe, kprobe+kretprobe.
    pub attach: String,
}

/// Relating the kernel's monotonic clock (event `t`) to wall time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clock {
    /// CLOCK_MONOTONIC at the moment of `realtime_ns`.
    pub monotonic_ns: u64,
    /// CLOCK_REALTIME (ns since the epoch) at the same moment.
    pub realtime_ns: u64,
}

impl Clock {
    /// Wall time (ns since the epoch) of a monotonic timestamp.
    pub fn wall_ns(&self, t: u64) -> u64 {
        self.realtime_ns
            .wrapping_sub(self.monotonic_ns)
            .wrapping_add(t)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filters {
    #[serde(default)]
    pub pids: Vec<u32>,
    #[serde(default)]
    pub comm: Option<String>,
}

/// Last line of a trace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footer {
    pub events: u64,
    pub lost: u64,
    pub findings: u64,
    /// Monotonic time of the end of the recording.
    pub end_t: u64,
    /// `signal`, `duration`, `error: ...`.
    pub end_reason: String,
}

/// One line of a trace.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Header(Box<Header>),
    Event(Box<Event>),
    Loss(Loss),
    /// A finding as it was reported live (informational: `report`
    /// recomputes findings from the events).
    Finding(Box<Finding>),
    Footer(Footer),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum RecordRef<'a> {
    Header(&'a Header),
    Event(&'a Event),
    Loss(&'a Loss),
    Finding(&'a Finding),
    Footer(&'a Footer),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum RecordOwned {
    Header(Box<Header>),
    Event(Box<Event>),
    Loss(Loss),
    Finding(Box<Finding>),
    Footer(Footer),
}

/// Longest line a reader accepts. refscope writes lines of a few hundred
/// bytes (events) to some hundred KiB (a finding with a long timeline);
/// the limit keeps a reader of a binary file or `/dev/zero` from buffering
/// it whole.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Prefix of an event line as written by [`TraceWriter`] (fast path).
const EVENT_PREFIX: &[u8] = br#"{"type":"event","#;

/// Errors reading a trace. Every variant names the file and line.
#[derive(Debug, Error)]
pub enum TraceError {
    /// The file could not be read (the error is part of the message, not
    /// a `source`, so it is printed once).
    #[error("{file}: line {line}: read error: {error}")]
    Io {
        file: String,
        line: u64,
        error: io::Error,
    },
    /// The file is empty.
    #[error("{file}: empty file: not a refscope trace")]
    Empty { file: String },
    /// Line 1 is not a refscope trace header.
    #[error("{file}: line 1: not a refscope trace ({reason})")]
    NotATrace { file: String, reason: String },
    /// The trace was written by an incompatible version.
    #[error(
        "{file}: line 1: trace format version {found} is not supported (this refscope reads version {FORMAT_VERSION}); use the refscope that wrote it"
    )]
    Version { file: String, found: u32 },
    /// A line in the middle of the trace is not valid.
    #[error("{file}: line {line}: corrupt record: {reason}")]
    Corrupt {
        file: String,
        line: u64,
        reason: String,
    },
    /// A line longer than [`MAX_LINE_BYTES`]: not something refscope
    /// wrote (a binary file, or a file without newlines).
    #[error(
        "{file}: line {line}: longer than {} MiB without a newline: not a refscope trace line",
        MAX_LINE_BYTES >> 20
    )]
    LineTooLong { file: String, line: u64 },
    /// A second header, or records after the footer.
    #[error("{file}: line {line}: {reason}")]
    Structure {
        file: String,
        line: u64,
        reason: String,
    },
}

/// Reads records one line at a time (bounded memory).
pub struct TraceReader<R> {
    inner: R,
    file: String,
    line: u64,
    buf: Vec<u8>,
    header: Header,
    footer: Option<Footer>,
    /// Set when the last line was incomplete (the writer was killed).
    truncated_at: Option<u64>,
    bytes: u64,
}

impl<R: BufRead> TraceReader<R> {
    /// Read and check the header. `file` names the input in errors.
    pub fn new(mut inner: R, file: &str) -> Result<Self, TraceError> {
        let mut buf = Vec::with_capacity(4096);
        let n = read_line(&mut inner, &mut buf, file, 1)?;
        if n == 0 {
            return Err(TraceError::Empty { file: file.into() });
        }
        let header = parse_header(trim(&buf), file)?;
        Ok(TraceReader {
            inner,
            file: file.into(),
            line: 1,
            buf,
            header,
            footer: None,
            truncated_at: None,
            bytes: n as u64,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The footer, once read (None for a trace cut short).
    pub fn footer(&self) -> Option<&Footer> {
        self.footer.as_ref()
    }

    /// Line number of an incomplete last line, if the trace ends in one.
    pub fn truncated_at(&self) -> Option<u64> {
        self.truncated_at
    }

    /// Bytes consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// The next record after the header; `None` at the end.
    pub fn next_record(&mut self) -> Option<Result<Record, TraceError>> {
        loop {
            self.buf.clear();
            let n = match read_line(&mut self.inner, &mut self.buf, &self.file, self.line + 1) {
                Ok(n) => n,
                Err(e) => return Some(Err(e)),
            };
            if n == 0 {
                return None;
            }
            self.bytes += n as u64;
            self.line += 1;
            let complete = self.buf.last() == Some(&b'\n');
            let line = trim(&self.buf);
            if line.is_empty() {
                continue;
            }
            if self.footer.is_some() {
                return Some(Err(TraceError::Structure {
                    file: self.file.clone(),
                    line: self.line,
                    reason: "record after the footer".into(),
                }));
            }
            let parsed = parse_record(line);
            return match parsed {
                Ok(Record::Header(_)) => Some(Err(TraceError::Structure {
                    file: self.file.clone(),
                    line: self.line,
                    reason: "a second header (two traces concatenated?)".into(),
                })),
                Ok(Record::Footer(f)) => {
                    self.footer = Some(f.clone());
                    Some(Ok(Record::Footer(f)))
                }
                Ok(rec) => Some(Ok(rec)),
                Err(_) if !complete => {
                    // The writer died mid-line: everything before is valid.
                    self.truncated_at = Some(self.line);
                    None
                }
                Err(reason) => Some(Err(TraceError::Corrupt {
                    file: self.file.clone(),
                    line: self.line,
                    reason,
                })),
            };
        }
    }
}

/// One line (with its `\n`) into `buf`, at most [`MAX_LINE_BYTES`]; 0 at
/// the end of the input. `line` is its number, for errors.
fn read_line<R: BufRead>(
    inner: &mut R,
    buf: &mut Vec<u8>,
    file: &str,
    line: u64,
) -> Result<usize, TraceError> {
    let n = Read::take(&mut *inner, MAX_LINE_BYTES as u64)
        .read_until(b'\n', buf)
        .map_err(|error| TraceError::Io {
            file: file.into(),
            line,
            error,
        })?;
    if n == MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
        return Err(TraceError::LineTooLong {
            file: file.into(),
            line,
        });
    }
    Ok(n)
}

fn trim(line: &[u8]) -> &[u8] {
    let mut l = line;
    while let [rest @ .., b'\n' | b'\r' | b' ' | b'\t'] = l {
        l = rest;
    }
    l
}

fn parse_header(line: &[u8], file: &str) -> Result<Header, TraceError> {
    let not_a_trace = |reason: String| TraceError::NotATrace {
        file: file.into(),
        reason,
    };
    let value: serde_json::Value = serde_json::from_slice(line)
        .map_err(|e| not_a_trace(format!("line 1 is not JSON: {e}")))?;
    if value.get("type").and_then(|t| t.as_str()) != Some("header")
        || value.get("format").and_then(|f| f.as_str()) != Some(FORMAT_NAME)
    {
        return Err(not_a_trace(format!(
            "line 1 is not a header with \"format\":\"{FORMAT_NAME}\""
        )));
    }
    let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
    if version != FORMAT_VERSION {
        return Err(TraceError::Version {
            file: file.into(),
            found: version,
        });
    }
    serde_json::from_value(value).map_err(|e| not_a_trace(format!("invalid header: {e}")))
}

/// Parse one line.
pub fn parse_record(line: &[u8]) -> Result<Record, String> {
    if line.starts_with(EVENT_PREFIX) {
        // Fast path: the Event struct ignores the "type" key.
        return serde_json::from_slice::<Event>(line)
            .map(|e| Record::Event(Box::new(e)))
            .map_err(|e| e.to_string());
    }
    let rec: RecordOwned = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    Ok(match rec {
        RecordOwned::Header(h) => Record::Header(h),
        RecordOwned::Event(e) => Record::Event(e),
        RecordOwned::Loss(l) => Record::Loss(l),
        RecordOwned::Finding(f) => Record::Finding(f),
        RecordOwned::Footer(f) => Record::Footer(f),
    })
}

/// Writes records, one JSON object per line.
pub struct TraceWriter<W: Write> {
    out: W,
    events: u64,
    lost: u64,
    findings: u64,
}

impl<W: Write> TraceWriter<W> {
    /// Write the header.
    pub fn new(mut out: W, header: &Header) -> io::Result<Self> {
        write_line(&mut out, &RecordRef::Header(header))?;
        Ok(TraceWriter {
            out,
            events: 0,
            lost: 0,
            findings: 0,
        })
    }

    pub fn event(&mut self, ev: &Event) -> io::Result<()> {
        self.events += 1;
        write_line(&mut self.out, &RecordRef::Event(ev))
    }

    pub fn loss(&mut self, loss: &Loss) -> io::Result<()> {
        self.lost += loss.count;
        write_line(&mut self.out, &RecordRef::Loss(loss))
    }

    pub fn finding(&mut self, f: &Finding) -> io::Result<()> {
        self.findings += 1;
        write_line(&mut self.out, &RecordRef::Finding(f))
    }

    /// Write the footer (totals filled in) and flush.
    pub fn finish(mut self, end_t: u64, end_reason: &str) -> io::Result<W> {
        let footer = Footer {
            events: self.events,
            lost: self.lost,
            findings: self.findings,
            end_t,
            end_reason: end_reason.into(),
        };
        write_line(&mut self.out, &RecordRef::Footer(&footer))?;
        self.out.flush()?;
        Ok(self.out)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn events_written(&self) -> u64 {
        self.events
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }
}

fn write_line<W: Write>(out: &mut W, rec: &RecordRef<'_>) -> io::Result<()> {
    serde_json::to_writer(&mut *out, rec).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use refscope_common::{EventKind, HookId};

    use super::*;

    fn sample() -> Vec<u8> {
        let header = Header::synthetic(RefcountModel::IdleOne);
        let mut w = TraceWriter::new(Vec::new(), &header).unwrap();
        let mut ev = Event::new(EventKind::Map, HookId::InsertPfn);
        ev.pfn = 0x48000;
        w.event(&ev).unwrap();
        w.loss(&Loss {
            cpu: 1,
            count: 3,
            first_t: 10,
            last_t: 20,
        })
        .unwrap();
        w.finish(99, "signal").unwrap()
    }

    fn read_all(bytes: &[u8]) -> Result<(Vec<Record>, TraceReader<&[u8]>), TraceError> {
        let mut r = TraceReader::new(bytes, "t.jsonl")?;
        let mut recs = Vec::new();
        while let Some(rec) = r.next_record() {
            recs.push(rec?);
        }
        Ok((recs, r))
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .starts_with(r#"{"type":"event","#)
        );
        let (recs, r) = read_all(&bytes).unwrap();
        assert_eq!(recs.len(), 3);
        assert!(matches!(&recs[0], Record::Event(e) if e.pfn == 0x48000));
        assert!(matches!(&recs[1], Record::Loss(l) if l.count == 3));
        assert_eq!(r.footer().unwrap().events, 1);
        assert_eq!(r.footer().unwrap().lost, 3);
        assert_eq!(r.truncated_at(), None);
    }

    #[test]
    fn truncated_last_line_is_not_an_error() {
        let bytes = sample();
        // Cut in the middle of the footer line, as SIGKILL would.
        let cut = &bytes[..bytes.len() - 10];
        let (recs, r) = read_all(cut).unwrap();
        assert_eq!(recs.len(), 2);
        assert!(r.footer().is_none());
        assert_eq!(r.truncated_at(), Some(4));
    }

    #[test]
    fn corrupt_middle_line_names_the_line() {
        let mut text = String::from_utf8(sample()).unwrap();
        text = text.replacen(r#""kind":"map""#, r#""kind":"mop""#, 1);
        let err = read_all(text.as_bytes()).err().unwrap().to_string();
        assert!(err.starts_with("t.jsonl: line 2: corrupt record"), "{err}");
        assert!(err.contains("unknown event kind `mop`"), "{err}");
    }

    #[test]
    fn not_a_trace_and_wrong_version() {
        let err = read_all(b"hello\n").err().unwrap().to_string();
        assert!(err.contains("line 1: not a refscope trace"), "{err}");
        let err = read_all(b"").err().unwrap().to_string();
        assert!(err.contains("empty file"), "{err}");
        let text =
            String::from_utf8(sample())
                .unwrap()
                .replacen("\"version\":1", "\"version\":99", 1);
        let err = read_all(text.as_bytes()).err().unwrap().to_string();
        assert!(
            err.starts_with("t.jsonl: line 1: trace format version 99 is not supported"),
            "{err}"
        );
    }

    #[test]
    fn endless_lines_are_refused_not_buffered() {
        // /dev/zero or a binary file: no newline for ever.
        let zeros = io::BufReader::new(io::repeat(0));
        let err = TraceReader::new(zeros, "/dev/zero")
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            err,
            "/dev/zero: line 1: longer than 16 MiB without a newline: not a refscope trace line"
        );
        let mut bytes = sample();
        bytes.truncate(bytes.iter().position(|&b| b == b'\n').unwrap() + 1);
        let tail = io::BufReader::new(io::repeat(b'x'));
        let mut r = TraceReader::new(io::BufReader::new(bytes.chain(tail)), "t.jsonl").unwrap();
        let err = r.next_record().unwrap().err().unwrap().to_string();
        assert!(
            err.starts_with("t.jsonl: line 2: longer than 16 MiB"),
            "{err}"
        );
    }

    #[test]
    fn read_errors_name_the_line_once() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("Is a directory"))
            }
        }
        let err = TraceReader::new(io::BufReader::new(Failing), "adir")
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(text.starts_with("adir: line 1: read error: "), "{text}");
        assert!(
            std::error::Error::source(&err).is_none(),
            "the cause is in the message; a source would print it twice"
        );
    }

    #[test]
    fn records_after_footer_are_rejected() {
        let mut bytes = sample();
        bytes.extend_from_slice(br#"{"type":"loss","cpu":0,"count":1,"first_t":1,"last_t":1}"#);
        bytes.push(b'\n');
        let err = read_all(&bytes).err().unwrap().to_string();
        assert!(err.contains("record after the footer"), "{err}");
    }
}

#[cfg(test)]
mod schema_tests {
    //! docs/trace-format.schema.json must describe what refscope writes:
    //! every key written is a schema property of its record type, every
    //! required key is written, and enumerated values are allowed.

    use refscope_common::{EventKind, HookId, flags};
    use serde_json::{Map, Value};

    use super::*;
    use crate::{
        analysis::{Finding, GupLabel, RuleId, Severity, Status, TimelineEntry},
        event::{Comm, Flags, Hex},
        model::PgmapType,
    };

    const SCHEMA: &str = include_str!("../../../docs/trace-format.schema.json");

    fn def(name: &str) -> Value {
        let s: Value = serde_json::from_str(SCHEMA).unwrap();
        s["$defs"][name].clone()
    }

    fn check(record: &Value, def: &Value, what: &str) {
        let props: &Map<String, Value> = def["properties"].as_object().unwrap();
        let obj = record.as_object().unwrap();
        for (k, v) in obj {
            let p = props
                .get(k)
                .unwrap_or_else(|| panic!("{what}: key `{k}` is written but not in the schema"));
            if let Some(allowed) = p.get("enum").and_then(Value::as_array) {
                assert!(
                    allowed.contains(v),
                    "{what}.{k}: {v} not in the schema's enum"
                );
            }
            if let Some(items) = p
                .get("items")
                .and_then(|i| i.get("enum"))
                .and_then(Value::as_array)
            {
                for x in v.as_array().unwrap() {
                    assert!(
                        items.contains(x),
                        "{what}.{k}: {x} not in the schema's enum"
                    );
                }
            }
        }
        for r in def["required"].as_array().unwrap() {
            assert!(
                obj.contains_key(r.as_str().unwrap()),
                "{what}: required `{r}` missing"
            );
        }
    }

    fn lines() -> Vec<Value> {
        let mut header = Header::synthetic(RefcountModel::IdleOne);
        header.devices.push(Device {
            name: "namespace0.0".into(),
            mode: "fsdax".into(),
            pfn_start: 1,
            pfn_end: 2,
            pgmap_type: PgmapType::FsDax,
        });
        header.filters.comm = Some("x".into());
        let mut w = TraceWriter::new(Vec::new(), &header).unwrap();
        for (i, &kind) in EventKind::ALL.iter().enumerate() {
            let mut e = Event::new(kind, HookId::ALL[i % HookId::ALL.len()]);
            e.comm = Comm::from_bytes(b"w");
            e.mm = Hex(1);
            e.vaddr = Hex(2);
            e.vaddr_end = Hex(3);
            e.pfn = 4;
            e.pfn_end = 5;
            e.order = 9;
            e.page = Hex(6);
            e.pgmap = Hex(7);
            e.ref_before = Some(1);
            e.ref_after = Some(2);
            e.refs = 1;
            e.arg_flags = Hex(8);
            e.flags = Flags(u32::MAX);
            e.ret = -1;
            e.stack = vec!["f+0x1".into()];
            e.src_mm = Hex(9);
            e.new_vaddr = Hex(10);
            w.event(&e).unwrap();
        }
        w.loss(&Loss {
            cpu: 0,
            count: 1,
            first_t: 1,
            last_t: 2,
        })
        .unwrap();
        let mut tl = TimelineEntry::from_event(
            &Event::new(EventKind::GupGet, HookId::TryGrabFolio),
            Some(GupLabel::PinLongterm),
        );
        tl.flags = Flags(flags::REF_AFTER);
        w.finding(&Finding {
            id: 0,
            rule: RuleId::PinLeak,
            severity: Severity::Warning,
            status: Status::Uncertain,
            pfn: 1,
            order: 0,
            mm: Hex(1),
            vaddr: Hex(0),
            pid: 1,
            comm: Comm::from_bytes(b"w"),
            t_ns: 1,
            explanation: "x".into(),
            at_attach: true,
            occurrences: 2,
            timeline: vec![tl],
        })
        .unwrap();
        let bytes = w.finish(3, "signal").unwrap();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn the_schema_describes_every_record_refscope_writes() {
        let lines = lines();
        for v in &lines {
            let ty = v["type"].as_str().unwrap().to_owned();
            check(v, &def(&ty), &ty);
        }
        let finding = lines.iter().find(|v| v["type"] == "finding").unwrap();
        check(
            &finding["timeline"][0],
            &def("timeline_entry"),
            "timeline entry",
        );
        let kinds = def("event")["properties"]["kind"]["enum"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(
            kinds,
            EventKind::ALL.len(),
            "every event kind is in the schema"
        );
    }
}
