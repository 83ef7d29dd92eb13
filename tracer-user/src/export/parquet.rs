//! Parquet export: `events.parquet` (one row per selected event) and
//! `findings.parquet` (one row per finding) in the output directory; typed
//! columns (docs/export.md lists them), zstd, row groups of
//! [`ROW_GROUP_ROWS`] rows. Rows are buffered [`BATCH_ROWS`] at a time, and
//! the Parquet writer holds at most one encoded row group.

use std::{
    fs::{self, DirBuilder, File},
    io,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, bail};
use arrow_array::{
    ArrayRef, RecordBatch,
    builder::{
        BooleanBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
        TimestampNanosecondBuilder, UInt8Builder, UInt32Builder, UInt64Builder,
    },
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::{
    arrow::ArrowWriter,
    basic::{Compression, ZstdLevel},
    file::{metadata::KeyValue, properties::WriterProperties},
};
use refscope_common::EventKind;
use refscope_core::{
    analysis::{Analyzer, Change, Finding, GupLabel},
    event::Event,
    model::PgmapType,
    trace::{Footer, Header},
};

use super::{
    Context, Format,
    filter::{Filter, is_device_kind, is_page_kind},
};
use crate::output::create_output;

/// Rows per row group: large enough for scans, small enough to buffer.
pub const ROW_GROUP_ROWS: usize = 1 << 19;
/// Rows per Arrow batch handed to the writer.
pub const BATCH_ROWS: usize = 1 << 16;
/// Version of the table layout below (in the file metadata).
pub const SCHEMA_VERSION: &str = "1";

pub const EVENTS_FILE: &str = "events.parquet";
pub const FINDINGS_FILE: &str = "findings.parquet";

/// The output directory: created (0700) if missing; an existing directory
/// is used (the files in it are created exclusively, or replaced with
/// `--force`); a symlink is refused.
pub fn prepare_dir(out: &Path) -> anyhow::Result<PathBuf> {
    match fs::symlink_metadata(out) {
        Ok(m) if m.file_type().is_symlink() => bail!(
            "{} is a symlink: refscope does not follow symlinks for its output; give the directory itself",
            out.display()
        ),
        Ok(m) if m.is_dir() => Ok(out.to_path_buf()),
        Ok(_) => bail!(
            "{} exists and is not a directory: the Parquet export writes a directory with {EVENTS_FILE} and {FINDINGS_FILE}",
            out.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new()
                .mode(0o700)
                .create(out)
                .with_context(|| format!("cannot create the directory {}", out.display()))?;
            Ok(out.to_path_buf())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot use {}", out.display()))),
    }
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

pub fn events_schema() -> SchemaRef {
    let f = |name: &str, ty: DataType, nullable: bool| Field::new(name, ty, nullable);
    Arc::new(Schema::new(vec![
        f("t_ns", DataType::UInt64, false),
        f("t_rel_ns", DataType::Int64, false),
        f("wall_time", ts_type(), false),
        f("cpu", DataType::UInt32, false),
        f("seq", DataType::UInt64, false),
        f("kind", DataType::Utf8, false),
        f("hook", DataType::Utf8, false),
        f("attach", DataType::Utf8, false),
        f("pid", DataType::UInt32, false),
        f("tid", DataType::UInt32, false),
        f("comm", DataType::Utf8, false),
        f("mm", DataType::UInt64, false),
        f("vaddr", DataType::UInt64, false),
        f("vaddr_end", DataType::UInt64, false),
        f("pfn", DataType::UInt64, false),
        f("pfn_end", DataType::UInt64, false),
        f("order", DataType::UInt8, false),
        f("page", DataType::UInt64, false),
        f("pgmap", DataType::UInt64, false),
        f("device", DataType::Utf8, true),
        f("pgmap_type", DataType::Utf8, true),
        f("ref_before", DataType::Int32, true),
        f("ref_after", DataType::Int32, true),
        f("logical_ref", DataType::Int32, true),
        f("refs", DataType::Int32, false),
        f("gup", DataType::Utf8, true),
        f("arg_flags", DataType::UInt64, false),
        f("flags", DataType::UInt32, false),
        f("failed", DataType::Boolean, false),
        f("ret", DataType::Int64, false),
        f("src_mm", DataType::UInt64, false),
        f("new_vaddr", DataType::UInt64, false),
        f(
            "stack",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            false,
        ),
    ]))
}

pub fn findings_schema() -> SchemaRef {
    let f = |name: &str, ty: DataType| Field::new(name, ty, false);
    Arc::new(Schema::new(vec![
        f("id", DataType::UInt64),
        f("rule", DataType::Utf8),
        f("severity", DataType::Utf8),
        f("status", DataType::Utf8),
        f("pfn", DataType::UInt64),
        f("order", DataType::UInt8),
        f("mm", DataType::UInt64),
        f("vaddr", DataType::UInt64),
        f("pid", DataType::UInt32),
        f("comm", DataType::Utf8),
        f("t_ns", DataType::UInt64),
        f("t_rel_ns", DataType::Int64),
        f("wall_time", ts_type()),
        f("explanation", DataType::Utf8),
        f("at_attach", DataType::Boolean),
        f("occurrences", DataType::UInt64),
    ]))
}

#[derive(Default)]
struct EventCols {
    rows: usize,
    t_ns: UInt64Builder,
    t_rel_ns: Int64Builder,
    wall_time: TimestampNanosecondBuilder,
    cpu: UInt32Builder,
    seq: UInt64Builder,
    kind: StringBuilder,
    hook: StringBuilder,
    attach: StringBuilder,
    pid: UInt32Builder,
    tid: UInt32Builder,
    comm: StringBuilder,
    mm: UInt64Builder,
    vaddr: UInt64Builder,
    vaddr_end: UInt64Builder,
    pfn: UInt64Builder,
    pfn_end: UInt64Builder,
    order: UInt8Builder,
    page: UInt64Builder,
    pgmap: UInt64Builder,
    device: StringBuilder,
    pgmap_type: StringBuilder,
    ref_before: Int32Builder,
    ref_after: Int32Builder,
    logical_ref: Int32Builder,
    refs: Int32Builder,
    gup: StringBuilder,
    arg_flags: UInt64Builder,
    flags: UInt32Builder,
    failed: BooleanBuilder,
    ret: Int64Builder,
    src_mm: UInt64Builder,
    new_vaddr: UInt64Builder,
    stack: ListBuilder<StringBuilder>,
}

fn attach_str(a: refscope_core::event::Attach) -> &'static str {
    match a {
        refscope_core::event::Attach::Fentry => "fentry",
        refscope_core::event::Attach::Kprobe => "kprobe",
        refscope_core::event::Attach::Snapshot => "snapshot",
        refscope_core::event::Attach::Audit => "audit",
    }
}

impl EventCols {
    fn push(&mut self, cx: &Context<'_>, ev: &Event) {
        let a = cx.analyzer;
        let clock = cx.header.clock;
        self.rows += 1;
        self.t_ns.append_value(ev.t);
        self.t_rel_ns
            .append_value(ev.t.wrapping_sub(clock.monotonic_ns) as i64);
        self.wall_time.append_value(clock.wall_ns(ev.t) as i64);
        self.cpu.append_value(ev.cpu);
        self.seq.append_value(ev.seq);
        self.kind.append_value(ev.kind.as_str());
        self.hook.append_value(ev.hook.as_str());
        self.attach.append_value(attach_str(ev.attach));
        self.pid.append_value(ev.pid);
        self.tid.append_value(ev.tid);
        self.comm.append_value(ev.comm.as_str());
        self.mm.append_value(ev.mm.0);
        self.vaddr.append_value(ev.vaddr.0);
        self.vaddr_end.append_value(ev.vaddr_end.0);
        self.pfn.append_value(ev.pfn);
        self.pfn_end.append_value(ev.pfn_end);
        self.order.append_value(ev.order);
        self.page.append_value(ev.page.0);
        self.pgmap.append_value(ev.pgmap.0);
        let view = if is_page_kind(ev.kind) && ev.pfn != 0 {
            a.page(ev.pfn)
        } else {
            None
        };
        let pgmap = if view.is_some() {
            cx.pgmap_index(ev.pfn).and_then(|i| a.pgmaps().get(i))
        } else if is_device_kind(ev.kind) {
            a.pgmaps().iter().find(|g| {
                (ev.pgmap.0 != 0 && g.id == ev.pgmap)
                    || g.ranges.iter().any(|&(lo, hi)| lo <= ev.pfn && ev.pfn < hi)
            })
        } else {
            None
        };
        self.device
            .append_option(pgmap.map(|g| g.name.as_str()).filter(|n| !n.is_empty()));
        self.pgmap_type.append_option(
            pgmap
                .map(|g| g.ty)
                .or(view.map(|_| PgmapType::Unknown))
                .map(|t| t.as_str()),
        );
        self.ref_before.append_option(ev.ref_before);
        self.ref_after.append_option(ev.ref_after);
        let logical = ev
            .ref_after
            .or(ev.ref_before)
            .and_then(|_| cx.logical_ref(ev.pfn));
        self.logical_ref.append_option(logical);
        self.refs.append_value(ev.refs);
        let kind = cx.header.gup_flags.decode(ev.arg_flags.0);
        let gup = match ev.kind {
            EventKind::GupGet => Some(GupLabel::new(kind.pin, kind.longterm)),
            EventKind::GupPut => Some(GupLabel::new(kind.pin, false)),
            _ => None,
        };
        self.gup.append_option(gup.map(GupLabel::as_str));
        self.arg_flags.append_value(ev.arg_flags.0);
        self.flags.append_value(ev.flags.0);
        self.failed.append_value(ev.failed());
        self.ret.append_value(ev.ret);
        self.src_mm.append_value(ev.src_mm.0);
        self.new_vaddr.append_value(ev.new_vaddr.0);
        for frame in &ev.stack {
            self.stack.values().append_value(frame);
        }
        self.stack.append(true);
    }

    fn batch(&mut self, schema: &SchemaRef) -> anyhow::Result<RecordBatch> {
        self.rows = 0;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.t_ns.finish()),
            Arc::new(self.t_rel_ns.finish()),
            Arc::new(self.wall_time.finish().with_timezone("UTC")),
            Arc::new(self.cpu.finish()),
            Arc::new(self.seq.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.hook.finish()),
            Arc::new(self.attach.finish()),
            Arc::new(self.pid.finish()),
            Arc::new(self.tid.finish()),
            Arc::new(self.comm.finish()),
            Arc::new(self.mm.finish()),
            Arc::new(self.vaddr.finish()),
            Arc::new(self.vaddr_end.finish()),
            Arc::new(self.pfn.finish()),
            Arc::new(self.pfn_end.finish()),
            Arc::new(self.order.finish()),
            Arc::new(self.page.finish()),
            Arc::new(self.pgmap.finish()),
            Arc::new(self.device.finish()),
            Arc::new(self.pgmap_type.finish()),
            Arc::new(self.ref_before.finish()),
            Arc::new(self.ref_after.finish()),
            Arc::new(self.logical_ref.finish()),
            Arc::new(self.refs.finish()),
            Arc::new(self.gup.finish()),
            Arc::new(self.arg_flags.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.failed.finish()),
            Arc::new(self.ret.finish()),
            Arc::new(self.src_mm.finish()),
            Arc::new(self.new_vaddr.finish()),
            Arc::new(self.stack.finish()),
        ];
        Ok(RecordBatch::try_new(schema.clone(), cols)?)
    }
}

fn findings_batch(
    schema: &SchemaRef,
    header: &Header,
    findings: &[&Finding],
) -> anyhow::Result<RecordBatch> {
    let clock = header.clock;
    let mut id = UInt64Builder::new();
    let mut rule = StringBuilder::new();
    let mut severity = StringBuilder::new();
    let mut status = StringBuilder::new();
    let mut pfn = UInt64Builder::new();
    let mut order = UInt8Builder::new();
    let mut mm = UInt64Builder::new();
    let mut vaddr = UInt64Builder::new();
    let mut pid = UInt32Builder::new();
    let mut comm = StringBuilder::new();
    let mut t_ns = UInt64Builder::new();
    let mut t_rel = Int64Builder::new();
    let mut wall = TimestampNanosecondBuilder::new();
    let mut explanation = StringBuilder::new();
    let mut at_attach = BooleanBuilder::new();
    let mut occurrences = UInt64Builder::new();
    for f in findings {
        id.append_value(f.id);
        rule.append_value(f.rule.id());
        severity.append_value(f.severity.as_str());
        status.append_value(f.status.as_str());
        pfn.append_value(f.pfn);
        order.append_value(f.order);
        mm.append_value(f.mm.0);
        vaddr.append_value(f.vaddr.0);
        pid.append_value(f.pid);
        comm.append_value(f.comm.as_str());
        t_ns.append_value(f.t_ns);
        t_rel.append_value(f.t_ns.wrapping_sub(clock.monotonic_ns) as i64);
        wall.append_value(clock.wall_ns(f.t_ns) as i64);
        explanation.append_value(&f.explanation);
        at_attach.append_value(f.at_attach);
        occurrences.append_value(f.occurrences);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(rule.finish()),
        Arc::new(severity.finish()),
        Arc::new(status.finish()),
        Arc::new(pfn.finish()),
        Arc::new(order.finish()),
        Arc::new(mm.finish()),
        Arc::new(vaddr.finish()),
        Arc::new(pid.finish()),
        Arc::new(comm.finish()),
        Arc::new(t_ns.finish()),
        Arc::new(t_rel.finish()),
        Arc::new(wall.finish().with_timezone("UTC")),
        Arc::new(explanation.finish()),
        Arc::new(at_attach.finish()),
        Arc::new(occurrences.finish()),
    ];
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

fn properties(header: &Header, filter: &Filter, table: &str) -> anyhow::Result<WriterProperties> {
    let header_json = serde_json::to_string(header)?;
    let meta = vec![
        KeyValue::new("refscope.table".into(), table.to_string()),
        KeyValue::new("refscope.schema_version".into(), SCHEMA_VERSION.to_string()),
        KeyValue::new(
            "refscope.refcount_model".into(),
            header.refcount_model.as_str().to_string(),
        ),
        KeyValue::new("refscope.header".into(), header_json),
        KeyValue::new("refscope.filter".into(), format!("{filter:?}")),
    ];
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(format!("refscope {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(meta))
        .build())
}

pub struct ParquetFormat {
    dir: PathBuf,
    events: Option<ArrowWriter<File>>,
    findings: Option<ArrowWriter<File>>,
    schema: SchemaRef,
    cols: EventCols,
    event_rows: u64,
    finding_rows: u64,
}

impl ParquetFormat {
    pub fn create(
        dir: &Path,
        force: bool,
        header: &Header,
        filter: &Filter,
    ) -> anyhow::Result<Self> {
        let ev_path = dir.join(EVENTS_FILE);
        let f_path = dir.join(FINDINGS_FILE);
        let ev_file = create_output(&ev_path, force)?;
        let f_file = match create_output(&f_path, force) {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&ev_path);
                return Err(e);
            }
        };
        let schema = events_schema();
        let events = ArrowWriter::try_new(
            ev_file,
            schema.clone(),
            Some(properties(header, filter, "events")?),
        )?;
        let findings = ArrowWriter::try_new(
            f_file,
            findings_schema(),
            Some(properties(header, filter, "findings")?),
        )?;
        Ok(ParquetFormat {
            dir: dir.to_path_buf(),
            events: Some(events),
            findings: Some(findings),
            schema,
            cols: EventCols::default(),
            event_rows: 0,
            finding_rows: 0,
        })
    }

    /// The files this sink writes.
    pub fn paths(&self) -> Vec<PathBuf> {
        vec![self.dir.join(EVENTS_FILE), self.dir.join(FINDINGS_FILE)]
    }

    /// Rows written: (events, findings).
    pub fn close(&mut self) -> anyhow::Result<(u64, u64)> {
        if let Some(w) = self.events.take() {
            w.close()?;
        }
        if let Some(w) = self.findings.take() {
            w.close()?;
        }
        Ok((self.event_rows, self.finding_rows))
    }

    fn flush_batch(&mut self) -> anyhow::Result<()> {
        if self.cols.rows == 0 {
            return Ok(());
        }
        let batch = self.cols.batch(&self.schema)?;
        if let Some(w) = self.events.as_mut() {
            w.write(&batch)?;
        }
        Ok(())
    }
}

impl Format for ParquetFormat {
    fn window_open(&mut self, _cx: &Context<'_>, _t: u64) -> anyhow::Result<()> {
        Ok(())
    }

    fn window_close(&mut self, _cx: &Context<'_>, _t: u64) -> anyhow::Result<()> {
        Ok(())
    }

    fn event(
        &mut self,
        cx: &Context<'_>,
        ev: &Event,
        _changes: &[Change],
        selected: bool,
        _findings: &[Finding],
    ) -> anyhow::Result<()> {
        if !selected {
            return Ok(());
        }
        self.cols.push(cx, ev);
        self.event_rows += 1;
        if self.cols.rows >= BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn finish(
        &mut self,
        cx: &Context<'_>,
        _end_t: u64,
        _changes: &[Change],
        _findings: &[Finding],
        _footer: Option<&Footer>,
    ) -> anyhow::Result<()> {
        self.flush_batch()?;
        let findings = selected_findings(cx.analyzer, cx);
        self.finding_rows = findings.len() as u64;
        let batch = findings_batch(&findings_schema(), cx.header, &findings)?;
        if let Some(w) = self.findings.as_mut() {
            w.write(&batch)?;
        }
        Ok(())
    }
}

fn selected_findings<'a>(a: &'a Analyzer, cx: &Context<'_>) -> Vec<&'a Finding> {
    a.findings().iter().filter(|f| cx.finding_ok(f)).collect()
}
