"""Reads a `refscope export --format parquet` directory with DuckDB (an
independent Parquet reader) and checks the schema, the encoding (zstd, row
group sizes), the rows against the source trace, and that a SQL query over
the events table reproduces the zero_ref_mapping findings."""

import json
import os
from collections import Counter

import duckdb

# docs/export.md: column -> DuckDB type.
EVENTS_TYPES = {
    "t_ns": "UBIGINT", "t_rel_ns": "BIGINT", "wall_time": "TIMESTAMPTZ_NS",
    "cpu": "UINTEGER", "seq": "UBIGINT", "kind": "VARCHAR", "hook": "VARCHAR",
    "attach": "VARCHAR", "pid": "UINTEGER", "tid": "UINTEGER", "comm": "VARCHAR",
    "mm": "UBIGINT", "vaddr": "UBIGINT", "vaddr_end": "UBIGINT", "pfn": "UBIGINT",
    "pfn_end": "UBIGINT", "order": "UTINYINT", "page": "UBIGINT", "pgmap": "UBIGINT",
    "device": "VARCHAR", "pgmap_type": "VARCHAR", "ref_before": "INTEGER",
    "ref_after": "INTEGER", "logical_ref": "INTEGER", "refs": "INTEGER", "gup": "VARCHAR",
    "arg_flags": "UBIGINT", "flags": "UINTEGER", "failed": "BOOLEAN", "ret": "BIGINT",
    "src_mm": "UBIGINT", "new_vaddr": "UBIGINT", "stack": "VARCHAR[]",
}
FINDINGS_TYPES = {
    "id": "UBIGINT", "rule": "VARCHAR", "severity": "VARCHAR", "status": "VARCHAR",
    "pfn": "UBIGINT", "order": "UTINYINT", "mm": "UBIGINT", "vaddr": "UBIGINT",
    "pid": "UINTEGER", "comm": "VARCHAR", "t_ns": "UBIGINT", "t_rel_ns": "BIGINT",
    "wall_time": "TIMESTAMPTZ_NS", "explanation": "VARCHAR",
    "at_attach": "BOOLEAN", "occurrences": "UBIGINT",
}
MAX_ROW_GROUP = 1 << 19

# The query shown in docs/export.md: zero_ref_mapping findings from the
# events table alone. `$model` is the trace's refcount model (also in the
# file's key-value metadata, refscope.refcount_model).
ZERO_REF_SQL = """
SELECT pfn, mm, vaddr, "order",
       count(*)   AS occurrences,
       min(t_ns)  AS first_t_ns
FROM read_parquet($events)
WHERE kind IN ('map', 'attach_map')
  AND NOT failed
  AND logical_ref IS NOT NULL
  AND logical_ref
      - CASE WHEN $model = 'refcounted' AND pgmap_type = 'fs_dax'
                  AND kind = 'map' AND ref_after IS NOT NULL
             THEN 1 ELSE 0 END   -- the fault's temporary reference (6.15+ FS-DAX)
      <= 0
GROUP BY pfn, mm, vaddr, "order"
ORDER BY pfn, mm, vaddr, "order"
"""


def check(dirpath, header, events, report, need_zero_ref=True):
    """`need_zero_ref`: the trace must have a zero_ref_mapping finding for
    the SQL to reproduce (the fixture and synthetic traces do; a real
    kernel's may not: then the query must find none either)."""
    errs = []
    ev_path = os.path.join(dirpath, "events.parquet")
    f_path = os.path.join(dirpath, "findings.parquet")
    con = duckdb.connect()

    for path, want in ((ev_path, EVENTS_TYPES), (f_path, FINDINGS_TYPES)):
        got = {r[0]: r[1] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [path]).fetchall()}
        if got != want:
            diff = {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k)}
            errs.append(f"{os.path.basename(path)}: column types differ from docs/export.md: {diff}")
        codecs = {r[0] for r in con.execute(
            "SELECT DISTINCT compression FROM parquet_metadata(?)", [path]).fetchall()}
        rows = con.execute("SELECT count(*) FROM read_parquet(?)", [path]).fetchone()[0]
        if codecs != {"ZSTD"} and not (rows == 0 and codecs == set()):
            errs.append(f"{os.path.basename(path)}: compression {codecs}, expected ZSTD")
        biggest = con.execute("SELECT max(row_group_num_rows) FROM parquet_metadata(?)", [path]).fetchone()[0]
        if biggest is not None and biggest > MAX_ROW_GROUP:
            errs.append(f"{os.path.basename(path)}: a row group of {biggest} rows")
        meta = dict(con.execute(
            "SELECT decode(key), decode(value) FROM parquet_kv_metadata(?)", [path]).fetchall())
        if json.loads(meta.get("refscope.header", "null")) != {k: v for k, v in header.items() if k != "type"}:
            errs.append(f"{os.path.basename(path)}: refscope.header metadata is not the trace header")
        if meta.get("refscope.refcount_model") != header["refcount_model"]:
            errs.append(f"{os.path.basename(path)}: refscope.refcount_model metadata missing")

    # Every event, in order, with its values.
    rows = con.execute(
        "SELECT t_ns, cpu, seq, kind, pid, pfn, mm, vaddr, ref_after, logical_ref, failed, len(stack) "
        "FROM read_parquet(?)", [ev_path]).fetchall()
    if len(rows) != len(events):
        errs.append(f"events.parquet has {len(rows)} rows, the trace {len(events)} events")
    kinds = Counter(r[3] for r in rows)
    if kinds != Counter(e["kind"] for e in events):
        errs.append(f"event kinds differ: {kinds}")
    model = header["refcount_model"]
    import sim
    for r, e in zip(rows, events):
        want = (e["t"], e["cpu"], e["seq"], e["kind"], e["pid"], e["pfn"], e["mm"], e["vaddr"],
                e.get("ref_after"), "failed" in e["flags"], len(e.get("stack", [])))
        got = (r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[10], r[11])
        if got != want:
            errs.append(f"row differs from the trace: {got} != {want}")
            break
        raw = e.get("ref_after") if e.get("ref_after") is not None else e.get("ref_before")
        if e["kind"] in sim.PAGE_KINDS and raw is not None:
            _, dev = sim.device_of(header, e["pfn"])
            logical = raw - sim.idle_bias(model, dev["pgmap_type"] if dev else "unknown")
            if r[9] != logical:
                errs.append(f"logical_ref {r[9]} != {logical} at t={e['t']}")
                break

    # Findings table == report --json.
    frows = con.execute(
        "SELECT id, rule, severity, status, pfn, mm, vaddr, pid, t_ns, explanation, occurrences "
        "FROM read_parquet(?) ORDER BY id", [f_path]).fetchall()
    want = [(f["id"], f["rule"], f["severity"], f["status"], f["pfn"], int(f["mm"], 16),
              int(f["vaddr"], 16), f["pid"], f["t_ns"], f["explanation"], f["occurrences"])
             for f in report["findings"]]
    if frows != want:
        errs.append(f"findings.parquet ({len(frows)} rows) differs from refscope report ({len(want)})")

    # The SQL query reproduces every zero_ref_mapping finding.
    got = con.execute(ZERO_REF_SQL, {"events": ev_path, "model": model}).fetchall()
    want = sorted((f["pfn"], int(f["mm"], 16), int(f["vaddr"], 16), f["order"], f["occurrences"], f["t_ns"])
                  for f in report["findings"] if f["rule"] == "zero_ref_mapping")
    if not want and need_zero_ref:
        errs.append("the trace has no zero_ref_mapping finding to reproduce")
    elif sorted(got) != want:
        errs.append(f"the zero_ref_mapping query gives {len(got)} rows, report has {len(want)}: "
                    f"{sorted(set(got) ^ set(want))[:3]}")
    # ... and the same through the findings table.
    joined = con.execute(
        f"SELECT count(*) FROM ({ZERO_REF_SQL}) q JOIN read_parquet($findings) f "
        "USING (pfn, mm, vaddr, \"order\", occurrences) "
        "WHERE f.rule = 'zero_ref_mapping' AND f.t_ns = q.first_t_ns",
        {"events": ev_path, "model": model, "findings": f_path}).fetchone()[0]
    if joined != len(want):
        errs.append(f"joining the query with findings.parquet matches {joined} of {len(want)}")
    return errs
