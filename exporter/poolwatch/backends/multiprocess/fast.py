"""Reading and rendering the multiprocess files fast, for the ``/metrics`` poolwatch serves.

prometheus_client's ``MultiProcessCollector`` decodes every entry of every file into ``Sample``
objects on every scrape, and its exposition formats and escapes every label of every sample: with
16 workers x 5 pools x 100 statement summaries that is 130,000 samples read and 130,000 lines
written, seconds of CPU per scrape. The files are append-only (an entry's key and position never
change once written; only its value does), so this reader parses each file's keys once, remembers
where the values are, and at each scrape reads only the values (a ``memoryview`` of doubles) and
adds them up per series; each series' line prefix is rendered once. It aggregates exactly as
prometheus_client does (counters, histograms and summaries summed; each gauge by its mode), and
the tests compare its output with prometheus_client's over the same files.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import threading
from dataclasses import dataclass, field

from poolwatch.backends.prometheus.histogram import floatToGoString

__all__ = ["FastReader"]

_INT = struct.Struct("i")
_NO_LE = -1.0


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labelstr(labels: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f'{k}="{_escape_value(v)}"' for k, v in labels)


@dataclass
class _Key:
    metric: str
    sample: str
    help: str
    labels: tuple[tuple[str, str], ...]  # sorted, ``le`` included
    base: tuple[tuple[str, str], ...]  # without ``le``
    le: str | None
    le_value: float
    prefix: str  # 'name{labels} '


@dataclass
class _File:
    ino: int
    used: int = 8
    ids: list[int] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)  # value positions, in doubles
    id_set: set[int] = field(default_factory=set)
    metrics: set[str] = field(default_factory=set)


class FastReader:
    """One multiprocess directory. Thread-safe (one scrape at a time)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}
        self._ids: dict[str, int] = {}
        self._keys: list[_Key] = []

    def _key(self, text: str) -> int:
        i = self._ids.get(text)
        if i is None:
            metric, sample, labels, help_text = json.loads(text)
            items = tuple(sorted(labels.items()))
            base = tuple(kv for kv in items if kv[0] != "le")
            le = labels.get("le")
            label_str = _labelstr(items)
            prefix = f"{sample}{{{label_str}}} " if label_str else f"{sample} "
            self._keys.append(_Key(metric, sample, help_text, items, base, le,
                                   float(le) if le is not None else _NO_LE, prefix))  # fmt: skip
            i = self._ids[text] = len(self._keys) - 1
        return i

    def _read(self, name: str) -> tuple[_File, memoryview[float]] | None:
        path = os.path.join(self.path, name)
        try:
            with open(path, "rb") as f:
                ino = os.fstat(f.fileno()).st_ino
                data = f.read(mmap.PAGESIZE)
                if len(data) < 8:
                    return None
                used = _INT.unpack_from(data, 0)[0]
                if used > len(data):
                    data += f.read(used - len(data))
        except FileNotFoundError:
            return None
        cached = self._files.get(name)
        if cached is None or cached.ino != ino or cached.used > used:
            cached = self._files[name] = _File(ino)
        pos = cached.used
        while pos < used:  # the entries written since the last scrape
            n = _INT.unpack_from(data, pos)[0]
            if n <= 0 or pos + 4 + n > used:
                raise RuntimeError(f"poolwatch: {path} is corrupted")
            text = data[pos + 4 : pos + 4 + n].decode("utf-8")
            pos += 4 + n + (8 - (n + 4) % 8)
            i = self._key(text)
            cached.ids.append(i)
            cached.id_set.add(i)
            cached.metrics.add(self._keys[i].metric)
            cached.slots.append(pos // 8)
            pos += 16
        cached.used = used
        usable = len(data) - len(data) % 8
        return cached, memoryview(data)[:usable].cast("d")

    def render(self, *, openmetrics: bool = False) -> bytes:
        with self._lock:
            return self._render(openmetrics)

    def _render(self, openmetrics: bool) -> bytes:
        sums: dict[int, float] = {}
        maxes: dict[int, float] = {}
        mins: dict[int, float] = {}
        recent: dict[int, tuple[float, float]] = {}
        per_pid: dict[tuple[int, str], float] = {}
        types: dict[str, str] = {}
        acc: list[float] = []
        summed: set[int] = set()
        names = sorted(n for n in os.listdir(self.path) if n.endswith(".db"))
        live = set(names)
        for stale in [n for n in self._files if n not in live]:
            del self._files[stale]
        keys = self._keys
        for name in names:
            parts = name.split("_")
            typ = parts[0]
            got = self._read(name)
            if got is None:
                continue
            cached, values = got
            slots = cached.slots
            if typ == "gauge":
                mode = parts[1]
                pid = parts[2][:-3]
                for metric in cached.metrics:
                    types.setdefault(metric, typ)
                for i, slot in zip(cached.ids, slots, strict=True):
                    v = values[slot]
                    if mode in ("sum", "livesum"):
                        sums[i] = sums.get(i, 0.0) + v
                    elif mode in ("max", "livemax"):
                        if i not in maxes or v > maxes[i]:
                            maxes[i] = v
                    elif mode in ("min", "livemin"):
                        if i not in mins or v < mins[i]:
                            mins[i] = v
                    elif mode in ("mostrecent", "livemostrecent"):
                        ts = values[slot + 1]
                        if i not in recent or recent[i][0] < ts:
                            recent[i] = (ts, v)
                    else:  # all, liveall: one series per process
                        per_pid[(i, pid)] = v
            else:
                # The bulk of the work (every bucket of every process): a list indexed by key.
                if len(acc) < len(keys):
                    acc.extend([0.0] * (len(keys) - len(acc)))
                for i, slot in zip(cached.ids, slots, strict=True):
                    acc[i] += values[slot]
                summed |= cached.id_set
                for metric in cached.metrics:
                    types.setdefault(metric, typ)
        for i in summed:
            sums[i] = sums.get(i, 0.0) + acc[i]
        return self._write(types, sums, maxes, mins, recent, per_pid, openmetrics)

    def _write(
        self,
        types: dict[str, str],
        sums: dict[int, float],
        maxes: dict[int, float],
        mins: dict[int, float],
        recent: dict[int, tuple[float, float]],
        per_pid: dict[tuple[int, str], float],
        openmetrics: bool,
    ) -> bytes:
        keys = self._keys
        fmt = floatToGoString
        lines: dict[str, list[str]] = {m: [] for m in types}
        helps: dict[str, str] = {}
        Series = tuple[str, tuple[tuple[str, str], ...]]
        histos: dict[Series, list[tuple[float, int, float]]] = {}
        histo_sums: dict[Series, tuple[int, float]] = {}
        for values in (sums, maxes, mins):
            for i, v in values.items():
                k = keys[i]
                helps.setdefault(k.metric, k.help)
                if types.get(k.metric) == "histogram":
                    if k.le is not None:
                        histos.setdefault((k.metric, k.base), []).append((k.le_value, i, v))
                    else:
                        histo_sums[(k.metric, k.base)] = (i, v)
                else:
                    lines[k.metric].append(f"{k.prefix}{fmt(v)}\n")
        for i, (_ts, v) in recent.items():
            k = keys[i]
            helps.setdefault(k.metric, k.help)
            lines[k.metric].append(f"{k.prefix}{fmt(v)}\n")
        for (i, pid), v in per_pid.items():
            k = keys[i]
            helps.setdefault(k.metric, k.help)
            label_str = _labelstr(tuple(sorted((*k.labels, ("pid", pid)))))
            lines[k.metric].append(f"{k.sample}{{{label_str}}} {fmt(v)}\n")
        for (metric, base), buckets in histos.items():
            buckets.sort()
            running = 0.0
            out = lines[metric]
            for _le, i, v in buckets:
                running += v
                out.append(f"{keys[i].prefix}{fmt(running)}\n")
            label_str = _labelstr(base)
            braces = f"{{{label_str}}}" if label_str else ""
            out.append(f"{metric}_count{braces} {fmt(running)}\n")
            total = histo_sums.pop((metric, base), None)
            if total is not None:
                out.append(f"{keys[total[0]].prefix}{fmt(total[1])}\n")
        body: list[str] = []
        for metric, out in lines.items():
            if not out:
                continue
            typ = types[metric]
            family = metric
            if typ == "counter" and not openmetrics:
                family = metric + "_total"
            help_text = helps.get(metric, "").replace("\\", r"\\").replace("\n", r"\n")
            if openmetrics:
                help_text = help_text.replace('"', r"\"")
            body.append(f"# HELP {family} {help_text}\n# TYPE {family} {typ}\n")
            body.extend(out)
        if openmetrics:
            body.append("# EOF\n")
        return "".join(body).encode()

