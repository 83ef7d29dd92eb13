"""The export tests (`cargo xtask test`, group "export"): export the
fixture and synthetic traces in every format, then check each output with
an independent reader.

    python run.py --refscope BIN --synth BIN --workdir DIR
    python run.py --refscope BIN --scenarios DIR --workdir DIR

The second form checks every trace a scenario run left under DIR
(`target/scenarios/*/*/*/t.jsonl`, real kernels' traces) the same way,
without the filter checks: each export agrees with the analysis (`report
--json`) and with the independent simulator on mappings, references and
findings.

Prints one line per check and ends with "N passed, M failed"; exits 1 if
any failed."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import check_parquet  # noqa: E402
import check_perfetto  # noqa: E402
import sim  # noqa: E402

FIXTURE = os.path.join(HERE, "fixture.jsonl")


class Runner:
    def __init__(self, refscope, synth, workdir):
        self.refscope, self.synth, self.work = refscope, synth, workdir
        self.passed, self.failed = 0, 0

    def refscope_run(self, *args, ok=True):
        p = subprocess.run([self.refscope, *args], capture_output=True, text=True)
        if ok and p.returncode != 0:
            raise AssertionError(f"refscope {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
        return p

    def report(self, trace):
        return json.loads(self.refscope_run("report", "--json", trace).stdout)

    def path(self, name):
        return os.path.join(self.work, name)

    def case(self, name, fn):
        try:
            errs = fn() or []
        except Exception:  # noqa: BLE001 - any crash is a failure of the case
            errs = [traceback.format_exc()]
        if errs:
            self.failed += 1
            print(f"FAIL {name}")
            for e in errs[:10]:
                print(f"     {e}")
        else:
            self.passed += 1
            print(f"ok   {name}")


def expect(cond, msg):
    return [] if cond else [msg]


def core_checks(r, name, trace, scenario=False):
    """Perfetto (TrackEvent's rules; counts against the simulator and the
    report), Parquet (read by DuckDB) and an unfiltered JSONL re-export of
    one trace. Returns the trace's header, events and report."""
    header, events, _, _ = sim.load(trace)
    report = r.report(trace)
    exp = sim.expected(header, events)
    safe = name.replace("/", "_")

    pf = r.path(f"{safe}.pftrace")
    r.refscope_run("export", trace, "--format", "perfetto", "-o", pf)
    packets = check_perfetto.decode(pf)
    r.case(f"{name}: perfetto follows TrackEvent's rules", lambda: check_perfetto.check_rules(packets, header))
    summary = check_perfetto.summarize(packets)
    r.case(f"{name}: perfetto tracks, slices, counters and flows match the trace",
           lambda: check_perfetto.check_counts(summary, exp, report))
    if name == "fixture":
        # Hand-computed ground truth for the fixture (tests/export/fixture.jsonl).
        fixture_truth = {"tracks": 15, "map_slices": 3, "pin_slices": 3, "counters": 9, "flows": 2,
                         "findings": 9, "instants": 14}

        def truth():
            s = summary
            got = {"tracks": len({p.track_descriptor.uuid for p in packets if p.HasField("track_descriptor")}),
                   "map_slices": s["map_slices"], "pin_slices": s["pin_slices"],
                   "counters": sum(map(len, s["counters"].values())), "flows": s["flows"],
                   "findings": len(s["findings"]), "instants": sum(s["instants"].values())}
            return expect(got == fixture_truth, f"fixture: {got} != hand-computed {fixture_truth}")
        r.case("fixture: perfetto matches the hand-computed counts", truth)

    pq = r.path(f"{safe}.parquet")
    r.refscope_run("export", trace, "--format", "parquet", "-o", pq)
    r.case(f"{name}: parquet read by DuckDB; SQL reproduces zero_ref_mapping",
           lambda: check_parquet.check(pq, header, events, report, need_zero_ref=not scenario))

    js = r.path(f"{safe}.export.jsonl")
    r.refscope_run("export", trace, "--format", "jsonl", "-o", js)
    r.case(f"{name}: unfiltered jsonl gives the same report",
           lambda: expect(r.report(js) == report, "report of the exported trace differs"))
    return header, events, report


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--refscope", required=True)
    ap.add_argument("--synth")
    ap.add_argument("--scenarios", help="check the traces of a scenario run under this directory")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--events", type=int, default=30000)
    a = ap.parse_args()
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    r = Runner(a.refscope, a.synth, a.workdir)

    if a.scenarios:
        traces = {}
        for root, _, files in os.walk(a.scenarios):
            if "t.jsonl" in files:
                traces[os.path.relpath(root, a.scenarios)] = os.path.join(root, "t.jsonl")
        if not traces:
            print(f"FAIL no scenario trace (t.jsonl) under {a.scenarios}: run the scenarios first")
            sys.exit(1)
        for name, trace in sorted(traces.items()):
            core_checks(r, name, trace, scenario=True)
        print(f"export: {r.passed} passed, {r.failed} failed")
        sys.exit(1 if r.failed else 0)
    if not a.synth:
        ap.error("--synth is needed unless --scenarios is given")

    traces = {"fixture": FIXTURE}
    for model in ("idle_one", "refcounted"):
        path = r.path(f"synth-{model}.jsonl")
        subprocess.run([a.synth, "--events", str(a.events), "--seed", "7", "--model", model, "-o", path], check=True)
        traces[f"synth-{model}"] = path

    for name, trace in traces.items():
        header, events, report = core_checks(r, name, trace)

        # Filters: a pfn range and a time window.
        t0 = header["clock"]["monotonic_ns"]
        ts = sorted(e["t"] for e in events)
        since, until = (ts[len(ts) // 4] - t0) / 1e9, (ts[3 * len(ts) // 4] - t0) / 1e9
        pfns = sorted({e["pfn"] for e in events if e["kind"] in sim.PAGE_KINDS and e["pfn"]})
        lo, hi = pfns[len(pfns) // 4], pfns[3 * len(pfns) // 4]
        fl = r.path(f"{name}.filtered.jsonl")
        r.refscope_run("export", trace, "--format", "jsonl", "-o", fl, "--pfn-range", f"{lo:#x}-{hi:#x}",
                       "--since", repr(since), "--until", repr(until))

        def filtered():
            errs = []
            h2, ev2, _, foot = sim.load(fl)
            errs += expect(h2 == header, "the filtered trace's header differs")
            errs += expect(foot is not None and foot["events"] == len(ev2), "footer missing or wrong count")
            s_ns, u_ns = t0 + round(since * 1e9), t0 + round(until * 1e9)
            for e in ev2:
                if not s_ns <= e["t"] < u_ns:
                    errs.append(f"event at {e['t']} outside [{s_ns}, {u_ns})")
                    break
                if e["kind"] in sim.PAGE_KINDS and not (e["pfn"] <= hi and e["pfn"] + (1 << e["order"]) - 1 >= lo):
                    errs.append(f"{e['kind']} of pfn {e['pfn']:#x} outside the range")
                    break
            rep = r.report(fl)
            errs += expect(rep["lost"] == 0 or name != "fixture", f"filtered trace reads as lossy ({rep['lost']})")
            want = sum(1 for e in events if s_ns <= e["t"] < u_ns and e["kind"] in sim.PAGE_KINDS
                       and e["pfn"] <= hi and e["pfn"] + (1 << e["order"]) - 1 >= lo)
            got = sum(1 for e in ev2 if e["kind"] in sim.PAGE_KINDS and e.get("attach") != "snapshot")
            errs += expect(got == want, f"{got} page events kept, {want} in range and window")
            return errs
        r.case(f"{name}: jsonl --pfn-range --since --until keeps exactly the selected page events", filtered)

        pff = r.path(f"{name}.filtered.pftrace")
        r.refscope_run("export", trace, "--format", "perfetto", "-o", pff, "--pfn-range", f"{lo:#x}-{hi:#x}",
                       "--since", repr(since), "--until", repr(until))
        r.case(f"{name}: filtered perfetto follows TrackEvent's rules",
               lambda: check_perfetto.check_rules(check_perfetto.decode(pff), header))

        # --rule: the pages of one rule's findings (two passes).
        rule = "pin_leak" if any(f["rule"] == "pin_leak" for f in report["findings"]) else "zero_ref_mapping"
        rl = r.path(f"{name}.rule.jsonl")
        r.refscope_run("export", trace, "--format", "jsonl", "-o", rl, "--rule", rule)

        def by_rule():
            pages = set()
            for f in report["findings"]:
                if f["rule"] == rule:
                    pages.update(range(f["pfn"], f["pfn"] + (1 << f["order"])))
            _, ev2, _, _ = sim.load(rl)
            errs = [f"{e['kind']} of pfn {e['pfn']:#x} has no {rule} finding" for e in ev2
                    if e["kind"] in sim.PAGE_KINDS and not any(p in pages for p in range(e["pfn"], e["pfn"] + (1 << e["order"])))][:3]
            got = {f["pfn"] for f in r.report(rl)["findings"] if f["rule"] == rule}
            want = {f["pfn"] for f in report["findings"] if f["rule"] == rule}
            errs += expect(got == want, f"{rule} pages in the filtered trace's report: {len(got)} of {len(want)}")
            return errs
        r.case(f"{name}: jsonl --rule {rule} keeps the pages of that rule", by_rule)

        # --pid: one process's events.
        pid = report["findings"][0]["pid"] if report["findings"] else events[0]["pid"]
        pl = r.path(f"{name}.pid.jsonl")
        r.refscope_run("export", trace, "--format", "jsonl", "-o", pl, "--pid", str(pid))

        def by_pid():
            _, ev2, _, _ = sim.load(pl)
            mine = [e for e in events if e["pid"] == pid and e["kind"] in sim.PAGE_KINDS]
            kept = [e for e in ev2 if e["pid"] == pid and e["kind"] in sim.PAGE_KINDS]
            errs = expect(len(kept) == len(mine), f"{len(kept)} of pid {pid}'s {len(mine)} page events kept")
            others = [e for e in ev2 if e["pid"] != pid and e["kind"] in ("map", "gup_get")]
            return errs + expect(not others, f"{len(others)} maps/gets of other processes kept")
        r.case(f"{name}: jsonl --pid keeps that process's events", by_pid)

    # Errors the user must understand.
    def errors():
        errs = []
        p = r.refscope_run("export", FIXTURE, "--format", "svg", "-o", r.path("x"), ok=False)
        errs += expect(p.returncode == 2 and "invalid value 'svg'" in p.stderr and "perfetto" in p.stderr,
                       f"unknown format: {p.stderr.strip()}")
        p = r.refscope_run("export", FIXTURE, "--format", "perfetto", "-o", "/nonexistent-dir/x.pftrace", ok=False)
        errs += expect(p.returncode == 1 and "cannot create /nonexistent-dir/x.pftrace" in p.stderr,
                       f"unwritable output: {p.stderr.strip()}")
        p = r.refscope_run("export", FIXTURE, "--format", "perfetto", "-o", r.path("fixture.pftrace"), ok=False)
        errs += expect(p.returncode == 1 and "already exists" in p.stderr and "--force" in p.stderr,
                       f"existing output: {p.stderr.strip()}")
        bad = r.path("corrupt.jsonl")
        with open(FIXTURE) as f, open(bad, "w") as g:
            lines = f.readlines()
            assert '"kind":"gup_get"' in lines[3]
            lines[3] = lines[3].replace('"kind":"gup_get"', '"kind":"gup_gte"')
            g.writelines(lines)
        for fmt in ("perfetto", "parquet", "jsonl"):
            out = r.path(f"corrupt-out.{fmt}")
            p = r.refscope_run("export", bad, "--format", fmt, "-o", out, ok=False)
            errs += expect(p.returncode == 1 and "corrupt.jsonl: line 4: corrupt record" in p.stderr
                           and "gup_gte" in p.stderr, f"corrupt input ({fmt}): {p.stderr.strip()}")
            left = os.path.exists(out) and (os.path.isfile(out) or os.listdir(out))
            errs += expect(not left, f"a partial {fmt} output was left behind after the error")
        p = r.refscope_run("export", FIXTURE, "--format", "jsonl", "-o", r.path("y"), "--rule", "nope", ok=False)
        # A clap-style usage error (exit 2) that lists the rules.
        errs += expect(
            p.returncode == 2 and "invalid value 'nope' for '--rule <ID>'" in p.stderr and "pin_leak" in p.stderr,
            f"unknown rule: {p.stderr.strip()}",
        )
        return errs
    r.case("errors: unknown format, unwritable or existing output, corrupt input, unknown rule", errors)

    print(f"export: {r.passed} passed, {r.failed} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
