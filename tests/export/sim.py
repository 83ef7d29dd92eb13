"""Reads a refscope JSONL trace and computes, independently of refscope's
Rust code, what its exports must contain: mapping and GUP-reference
lifetimes (as docs/export.md defines them), flows, lanes, and the logical
refcount of every event that carries one.

Pure Python (no dependencies) so it can be read next to the spec."""

import json
from collections import defaultdict

PAGE_KINDS = {"map", "attach_map", "audit_map", "audit_unmap", "gup_get", "gup_put", "ref_put", "free"}
DEVICE_KINDS = {"pgmap_add", "pgmap_remove", "pgmap_removed", "dax_kill", "holder_notify"}
PMD_ORDER, PUD_ORDER = 9, 18


def num(v):
    """Trace numbers are ints or "0x..." strings."""
    if v is None:
        return 0
    if isinstance(v, int):
        return v
    return int(v, 16) if v.lower().startswith("0x") else int(v)


def load(path):
    header, events, losses, footer = None, [], [], None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            ty = rec.get("type")
            if ty == "header":
                header = rec
            elif ty == "event":
                for k in ("mm", "vaddr", "vaddr_end", "arg_flags", "page", "pgmap", "src_mm", "new_vaddr"):
                    rec[k] = num(rec.get(k))
                for k in ("pfn", "pfn_end", "order", "refs", "ret"):
                    rec[k] = num(rec.get(k))
                rec.setdefault("flags", [])
                events.append(rec)
            elif ty == "loss":
                losses.append(rec)
            elif ty == "footer":
                footer = rec
    return header, events, losses, footer


def idle_bias(model, pgmap_type):
    if pgmap_type in ("private", "coherent"):
        return 0
    if pgmap_type == "generic":
        return 1
    return 0 if model == "refcounted" else 1


def device_of(header, pfn):
    for i, d in enumerate(header.get("devices", [])):
        if d["pfn_start"] <= pfn < d["pfn_end"]:
            return i, d
    return None, None


class Lifetimes:
    """Mapping shadow and GUP references, one record per lifetime."""

    def __init__(self, header):
        g = header["gup_flags"]
        self.foll_pin, self.foll_longterm = g["foll_pin"], g["foll_longterm"]
        self.pin_bias = g.get("pin_bias", 1024)
        self.header = header
        # pfn -> [pins, gets] of holders that exited: still on the page
        # (nothing put them) until it is freed, or (gets) a refcount proves
        # them gone.
        self.orphaned = defaultdict(lambda: [0, 0])
        self.maps = {}  # (mm, vaddr) -> life
        self.pins = defaultdict(list)  # pfn -> [life], oldest first
        self.next_id = 1
        self.map_lives, self.pin_lives = [], []
        self.flows = 0  # pins ended by a release or a free
        # lanes: per pfn, busy flags of map lanes and of pin lanes
        self.lanes = defaultdict(lambda: {"map": [], "pin": []})

    def _lane_take(self, pfn, kind, life):
        lanes = self.lanes[pfn][kind]
        for i, busy in enumerate(lanes):
            if not busy:
                lanes[i] = True
                life["lane"] = i
                return
        lanes.append(True)
        life["lane"] = len(lanes) - 1

    def _lane_free(self, life, kind):
        self.lanes[life["pfn"]][kind][life["lane"]] = False

    def _begin_map(self, key, life):
        old = self.maps.get(key)
        if old is not None:
            self._end_map(old, "replaced")
        self.maps[key] = life
        life["id"] = self.next_id
        self.next_id += 1
        self.map_lives.append(life)
        self._lane_take(life["pfn"], "map", life)

    def _end_map(self, life, why):
        life["end"] = why
        self._lane_free(life, "map")

    def _end_pin(self, life, why):
        life["end"] = why
        self._lane_free(life, "pin")
        if why in ("released", "freed"):
            self.flows += 1

    def _unmap(self, mm, start, end, why):
        # Every mapping that overlaps [start, end), whatever its size
        # (a PUD covers 1 GiB).
        hits = [k for k, m in self.maps.items()
                if k[0] == mm and k[1] < end and k[1] + (4096 << m["order"]) > start]
        for k in sorted(hits):
            self._end_map(self.maps.pop(k), why)

    def _reconcile(self, pfn, raw):
        """FOLL_GET references a refcount proves gone (their put was
        inline): more gets believed held than the count leaves room for,
        beyond the idle bias and the pins, end as "reconciled"; taken from
        the holders by address space, oldest first within one."""
        lst = self.pins.get(pfn, [])
        orphaned = self.orphaned.get(pfn, [0, 0])
        gets = sum(p["left"] for p in lst if not p["pin"]) + orphaned[1]
        pins = sum(p["left"] for p in lst if p["pin"]) + orphaned[0]
        if gets == 0:
            return
        _, dev = device_of(self.header, pfn)
        bias = idle_bias(self.header["refcount_model"], dev["pgmap_type"] if dev else "unknown")
        stale = gets - max(raw - (bias + pins * self.pin_bias), 0)
        if stale <= 0:
            return
        # The exited holders' go first.
        take = min(orphaned[1], stale)
        if take:
            self.orphaned[pfn][1] -= take
            stale -= take
        for mm in sorted({p["mm"] for p in lst if not p["pin"]}):
            for p in [p for p in lst if not p["pin"] and p["mm"] == mm]:
                if stale <= 0:
                    break
                take = min(p["left"], stale)
                p["left"] -= take
                stale -= take
                if p["left"] == 0:
                    lst.remove(p)
                    self._end_pin(p, "reconciled")
        if not lst and pfn in self.pins:
            del self.pins[pfn]

    def apply(self, e):
        """The count before a call describes the state before the event,
        the count after it the state after: each is compared there."""
        k = e["kind"]
        if k in ("map", "attach_map", "gup_get", "gup_put", "ref_put", "free") and e.get("ref_before") is not None:
            self._reconcile(e["pfn"], e["ref_before"])
        self._apply(e)
        if k in ("map", "attach_map", "gup_get", "gup_put", "ref_put") and e.get("ref_after") is not None:
            self._reconcile(e["pfn"], e["ref_after"])

    def _apply(self, e):
        k = e["kind"]
        failed = "failed" in e["flags"]
        if k in ("map", "attach_map", "audit_map"):
            if failed:
                return
            key = (e["mm"], e["vaddr"])
            m = self.maps.get(key)
            if m is not None and m["pfn"] == e["pfn"] and m["order"] == e["order"]:
                return
            self._begin_map(key, {"pfn": e["pfn"], "order": e["order"], "pid": e["pid"], "t": e["t"]})
        elif k == "unmap":
            self._unmap(e["mm"], e["vaddr"], e["vaddr_end"], "unmap")
        elif k == "mm_exit":
            self._unmap(e["mm"], 0, 1 << 64, "mm_exit")
            for pfn in list(self.pins):
                keep = []
                for p in self.pins[pfn]:
                    if p["mm"] == e["mm"]:
                        self.orphaned[pfn][0 if p["pin"] else 1] += p["left"]
                        self._end_pin(p, "holder_exit")
                    else:
                        keep.append(p)
                self.pins[pfn] = keep
                if not keep:
                    del self.pins[pfn]
        elif k == "audit_unmap":
            key = (e["mm"], e["vaddr"])
            if key in self.maps:
                self._end_map(self.maps.pop(key), "audit")
        elif k == "pmd_split":
            # A PMD split (order 9, or 0 in older traces) or a PUD split
            # (order 18) clears a mapping of that size only.
            key = (e["mm"], e["vaddr"])
            m = self.maps.get(key)
            if m is not None and m["order"] == (e["order"] or PMD_ORDER):
                self._end_map(self.maps.pop(key), "pmd_split")
        elif k == "remap":
            mm, start, end = e["mm"], e["vaddr"], e["vaddr_end"]
            for key in sorted(k2 for k2 in self.maps if k2[0] == mm and start <= k2[1] < end):
                m = self.maps.pop(key)
                new = (mm, e["new_vaddr"] + (key[1] - start))
                old = self.maps.get(new)
                if old is not None:
                    self._end_map(old, "replaced")
                self.maps[new] = m
        elif k == "copy_range":
            src = e["src_mm"]
            for key in sorted(k2 for k2 in self.maps if k2[0] == src and e["vaddr"] <= k2[1] < e["vaddr_end"]):
                m = self.maps[key]
                if m["order"] not in (0, PUD_ORDER):
                    continue  # copy_huge_pmd leaves DAX PMDs to the child's faults; copy_huge_pud copies
                self._begin_map((e["mm"], key[1]), {"pfn": m["pfn"], "order": m["order"], "pid": e["pid"], "t": e["t"]})
        elif k == "task_new":
            for key, m in self.maps.items():
                if key[0] == e["mm"]:
                    m["pid"] = e["pid"]
        elif k == "gup_get":
            if failed:
                return
            refs = max(e["refs"], 1)
            life = {"pfn": e["pfn"], "mm": e["mm"], "pid": e["pid"], "left": refs,
                    "pin": bool(e["arg_flags"] & self.foll_pin), "id": self.next_id, "t": e["t"]}
            self.next_id += 1
            self.pins[e["pfn"]].append(life)
            self.pin_lives.append(life)
            self._lane_take(e["pfn"], "pin", life)
        elif k in ("gup_put", "ref_put"):
            pin = k == "gup_put" and bool(e["arg_flags"] & self.foll_pin)
            lst = self.pins.get(e["pfn"])
            if not lst:
                return
            cands = [p for p in lst if p["pin"] == pin]
            cands.sort(key=lambda p: (p["mm"] != e["mm"], p["mm"]))  # stable: oldest first
            left = max(e["refs"], 1)
            ended = []
            for p in cands:
                if left == 0:
                    break
                take = min(p["left"], left)
                p["left"] -= take
                left -= take
                if p["left"] == 0:
                    ended.append(p)
            for p in sorted(ended, key=lambda p: p["id"]):
                lst.remove(p)
                self._end_pin(p, "released")
            if not lst:
                del self.pins[e["pfn"]]
        elif k == "free":
            self.orphaned.pop(e["pfn"], None)
            for p in self.pins.pop(e["pfn"], []):
                self._end_pin(p, "freed")

    def finish(self):
        for m in sorted(self.maps.values(), key=lambda m: m["id"]):
            self._end_map(m, "end_of_trace")
        self.maps = {}
        for p in sorted((p for lst in self.pins.values() for p in lst), key=lambda p: p["id"]):
            self._end_pin(p, "end_of_trace")
        self.pins = {}


def expected(header, events):
    """What an unfiltered export of this trace must hold."""
    model = header["refcount_model"]
    lt = Lifetimes(header)
    counters = defaultdict(list)  # pfn -> logical refcounts in order
    pages = set()
    kinds = defaultdict(int)
    for e in events:
        kinds[e["kind"]] += 1
        lt.apply(e)
        if e["kind"] in PAGE_KINDS and e["pfn"]:
            pages.add(e["pfn"])
            raw = e.get("ref_after")
            if raw is None:
                raw = e.get("ref_before")
            if raw is not None:
                _, dev = device_of(header, e["pfn"])
                ty = dev["pgmap_type"] if dev else "unknown"
                counters[e["pfn"]].append(raw - idle_bias(model, ty))
    lt.finish()
    lanes = sum(len(v["map"]) + len(v["pin"]) for v in lt.lanes.values())
    return {
        "map_slices": len(lt.map_lives),
        "pin_slices": len(lt.pin_lives),
        "flows": lt.flows,
        "counters": dict(counters),
        "pages": pages,
        "lanes": lanes,
        "kinds": dict(kinds),
        "lifetimes": lt,
    }
