"""Decodes a `refscope export --format perfetto` file with Perfetto's own
published schema (perfetto_trace_pb2 from the `perfetto` PyPI package) and
checks it: TrackEvent's rules (what trace_processor and ui.perfetto.dev
rely on) and, for an unfiltered export, the counts against the source
trace (tests/export/sim.py)."""

import itertools
from collections import Counter, defaultdict

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

TE = pb.TrackEvent
SEQ_CLEARED = pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
SEQ_NEEDS = pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE
MONOTONIC = pb.BUILTIN_CLOCK_MONOTONIC
REALTIME = pb.BUILTIN_CLOCK_REALTIME
PIN_NAMES = {"get", "pin", "get_longterm", "pin_longterm"}


def decode(path):
    trace = pb.Trace()
    with open(path, "rb") as f:
        trace.ParseFromString(f.read())
    return list(trace.packet)


def stream(path):
    """The packets one at a time (for traces too big to parse at once):
    each is a length-delimited field 1 of Trace."""
    with open(path, "rb") as f:
        data = memoryview(f.read())
    i = 0
    while i < len(data):
        if data[i] != 0x0A:
            raise ValueError(f"offset {i}: not Trace.packet (tag {data[i]:#x})")
        i += 1
        n = shift = 0
        while True:
            b = data[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        yield pb.TracePacket.FromString(data[i:i + n])
        i += n


def args_of(ev):
    out = {}
    for a in ev.debug_annotations:
        which = a.WhichOneof("value")
        out[a.name] = getattr(a, which) if which else None
    return out


def check_rules(packets, header):
    """TrackEvent's rules; returns a list of violations."""
    errs = []
    packets = iter(packets)
    first = next(packets, None)
    if first is None:
        return ["no packets"]
    if not first.sequence_flags & SEQ_CLEARED:
        errs.append("first packet lacks SEQ_INCREMENTAL_STATE_CLEARED")
    if not first.HasField("clock_snapshot"):
        errs.append("first packet is not the clock snapshot")
    else:
        cs = first.clock_snapshot
        if cs.primary_trace_clock != MONOTONIC:
            errs.append(f"primary_trace_clock {cs.primary_trace_clock} is not MONOTONIC")
        clocks = {c.clock_id: c.timestamp for c in cs.clocks}
        want = {MONOTONIC: header["clock"]["monotonic_ns"], REALTIME: header["clock"]["realtime_ns"]}
        if clocks != want:
            errs.append(f"clock snapshot {clocks} != header clock {want}")
    descs = {}  # uuid -> descriptor
    counter_tracks = set()
    depth = defaultdict(int)
    last_ts = 0
    flows_out, flows_in = Counter(), Counter()
    flow_src_ts = {}
    for i, p in enumerate(itertools.chain([first], packets)):
        if not p.HasField("trusted_packet_sequence_id") or p.trusted_packet_sequence_id != 1:
            errs.append(f"packet {i}: trusted_packet_sequence_id is not 1")
        if i > 0 and p.sequence_flags & SEQ_CLEARED:
            errs.append(f"packet {i}: incremental state cleared again")
        if p.HasField("timestamp"):
            if p.timestamp_clock_id != MONOTONIC:
                errs.append(f"packet {i}: timestamp_clock_id {p.timestamp_clock_id}")
            if p.timestamp < last_ts:
                errs.append(f"packet {i}: timestamp {p.timestamp} < previous {last_ts}")
            last_ts = p.timestamp
        if p.HasField("track_descriptor"):
            d = p.track_descriptor
            if d.HasField("parent_uuid") and d.parent_uuid not in descs:
                errs.append(f"packet {i}: track {d.uuid:#x} before its parent {d.parent_uuid:#x}")
            old = descs.get(d.uuid)
            if old is not None and old != d:
                errs.append(f"packet {i}: track {d.uuid:#x} re-described differently")
            descs[d.uuid] = d
            if d.HasField("counter"):
                counter_tracks.add(d.uuid)
        if p.HasField("track_event"):
            e = p.track_event
            if not p.sequence_flags & SEQ_NEEDS:
                errs.append(f"packet {i}: track event without SEQ_NEEDS_INCREMENTAL_STATE")
            if not p.HasField("timestamp"):
                errs.append(f"packet {i}: track event without timestamp")
            if e.track_uuid not in descs:
                errs.append(f"packet {i}: track_uuid {e.track_uuid:#x} used before its descriptor")
            is_counter = e.type == TE.TYPE_COUNTER
            if is_counter != (e.track_uuid in counter_tracks):
                where = "a counter track" if e.track_uuid in counter_tracks else "a non-counter track"
                errs.append(f"packet {i}: event type {e.type} on {where}")
            if e.type == TE.TYPE_SLICE_BEGIN:
                depth[e.track_uuid] += 1
                if depth[e.track_uuid] > 1:
                    errs.append(f"packet {i}: overlapping slices on lane {e.track_uuid:#x}")
            elif e.type == TE.TYPE_SLICE_END:
                depth[e.track_uuid] -= 1
                if depth[e.track_uuid] < 0:
                    errs.append(f"packet {i}: SLICE_END without BEGIN on {e.track_uuid:#x}")
            for f in e.flow_ids:
                flows_out[f] += 1
                flow_src_ts[f] = p.timestamp
            for f in e.terminating_flow_ids:
                flows_in[f] += 1
                if f not in flow_src_ts:
                    errs.append(f"packet {i}: flow {f} terminates before it starts")
    open_tracks = [hex(u) for u, d in depth.items() if d != 0]
    if open_tracks:
        errs.append(f"slices left open on {open_tracks[:5]}")
    if any(n != 1 for n in flows_out.values()) or any(n != 1 for n in flows_in.values()):
        errs.append("a flow id is used more than once")
    if set(flows_in) - set(flows_out):
        errs.append("terminating flow ids without a start")
    return errs


def summarize(packets):
    descs = {}
    s = {
        "device_tracks": 0, "page_tracks": set(), "counter_tracks": 0, "lanes": 0,
        "map_slices": 0, "pin_slices": 0, "ends": Counter(), "instants": Counter(),
        "flows": 0, "counters": defaultdict(list), "findings": [],
    }
    page_of_counter = {}
    page_of_track = {}
    lane_names = {}
    for p in packets:
        if p.HasField("track_descriptor"):
            d = p.track_descriptor
            if d.uuid in descs:
                continue
            descs[d.uuid] = d
            if d.HasField("counter"):
                s["counter_tracks"] += 1
                page_of_counter[d.uuid] = int(descs[d.parent_uuid].name.split()[1], 16)
            elif d.name.startswith("pfn "):
                s["page_tracks"].add(int(d.name.split()[1], 16))
                page_of_track[d.uuid] = int(d.name.split()[1], 16)
            elif d.name.startswith(("mappings #", "GUP refs #")):
                s["lanes"] += 1
                lane_names[d.uuid] = d.name
            elif not d.HasField("parent_uuid") and not d.name.startswith("refscope"):
                s["device_tracks"] += 1
        if p.HasField("track_event"):
            e = p.track_event
            if e.type == TE.TYPE_SLICE_BEGIN:
                if e.name in PIN_NAMES:
                    s["pin_slices"] += 1
                    if not lane_names[e.track_uuid].startswith("GUP refs"):
                        raise AssertionError(f"pin slice {e.name} on {lane_names[e.track_uuid]}")
                elif "map" in e.name:
                    s["map_slices"] += 1
                else:
                    raise AssertionError(f"unexpected slice {e.name}")
            elif e.type == TE.TYPE_SLICE_END:
                s["ends"][args_of(e).get("ended_by")] += 1
            elif e.type == TE.TYPE_INSTANT:
                s["instants"][e.name] += 1
                s["flows"] += len(e.terminating_flow_ids)
                a = args_of(e)
                if "rule" in a:
                    s["findings"].append((a["rule"], page_of_track[e.track_uuid], a["explanation"]))
            elif e.type == TE.TYPE_COUNTER:
                s["counters"][page_of_counter[e.track_uuid]].append(e.counter_value)
    return s


def check_counts(s, exp, report):
    """An unfiltered export against the source trace and `report --json`."""
    errs = []

    def eq(what, got, want):
        if got != want:
            errs.append(f"{what}: export has {got}, the source trace implies {want}")

    eq("mapping slices", s["map_slices"], exp["map_slices"])
    eq("GUP slices", s["pin_slices"], exp["pin_slices"])
    eq("flows", s["flows"], exp["flows"])
    eq("lane tracks", s["lanes"], exp["lanes"])
    eq("page tracks", s["page_tracks"], exp["pages"])
    eq("counter tracks", s["counter_tracks"], len(exp["counters"]))
    eq("counter samples", sum(map(len, s["counters"].values())), sum(map(len, exp["counters"].values())))
    bad = [pfn for pfn, vals in exp["counters"].items() if s["counters"].get(pfn) != vals]
    if bad:
        pfn = bad[0]
        errs.append(f"{len(bad)} counter tracks differ, e.g. pfn {pfn:#x}: "
                    f"{s['counters'].get(pfn, [])[:8]} != {exp['counters'][pfn][:8]}")
    ends = exp["lifetimes"].map_lives + exp["lifetimes"].pin_lives
    eq("slice ends by reason", dict(s["ends"]), dict(Counter(l["end"] for l in ends)))
    want = sorted((f["rule"], f["pfn"], f["explanation"]) for f in report["findings"])
    eq("findings (rule, pfn, explanation)", sorted(s["findings"]), want)
    return errs
