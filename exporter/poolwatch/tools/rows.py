"""``poolwatch top``'s row model: one :class:`PoolRow` per pool and instance, from two reads of
the same targets (:class:`poolwatch.tools.scrape.Read`): gauges from the latest, rates and
percentiles from the difference between the two (bucket deltas, as ``rate()`` would).

:func:`pool_rows` and the renderings in :mod:`poolwatch.tools.table` are the pieces another live
view reuses: inside an application (the demo), ``pool_rows([registry_read(registry)],
[previous])`` with :func:`poolwatch.tools.scrape.registry_read`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from . import names as n
from .scrape import Read, Sample, bucket_quantile

__all__ = [
    "HOLD_QUANTILE",
    "TOP_STATEMENTS",
    "WAIT_QUANTILE",
    "PoolRow",
    "StatementShare",
    "pool_rows",
    "rows_json",
]

TOP_STATEMENTS = 3  # summaries shown per pool
WAIT_QUANTILE = 0.95
HOLD_QUANTILE = 0.95


@dataclass(frozen=True)
class StatementShare:
    summary: str
    share: float  # of the pool's statement time between the two reads
    seconds: float


@dataclass(frozen=True)
class PoolRow:
    """One pool on one instance. Rates and percentiles are None without a previous read (or
    without observations between the two); ``error`` marks a target that could not be read."""

    instance: str
    pool: str
    job: str = ""
    used: float = 0.0
    idle: float = 0.0
    max: float | None = None  # None: unbounded (NullPool)
    waiting: float = 0.0
    longest_wait: float | None = None
    wait_p95: float | None = None
    timeouts_per_min: float | None = None
    hold_p95: float | None = None
    created_per_s: float | None = None
    leaked: float | None = None  # None: not exported
    leaks: float | None = None  # seen between the two reads
    statements: tuple[StatementShare, ...] = ()
    window: float | None = None  # seconds between the two reads
    error: str | None = None

    @property
    def saturation(self) -> float | None:
        if self.max is None or self.max <= 0:
            return None
        return self.used / self.max


def _key(labels: Mapping[str, str], instance: str) -> tuple[str, str, str]:
    return labels.get(n.JOB, ""), labels.get(n.INSTANCE, instance), labels[n.POOL]


def _series_id(s: Sample) -> tuple[str, frozenset[tuple[str, str]]]:
    return s.name, frozenset(s.labels.items())


class _Pool:
    """The samples of one pool in one read, with the previous read's for deltas."""

    def __init__(self, now: list[Sample], before: list[Sample] | None) -> None:
        self.now = now
        self.before = {_series_id(s): s.value for s in before} if before is not None else None

    def value(self, name: str, **match: str) -> float | None:
        found = [s.value for s in self.now if s.name == name and _matches(s, match)]
        return sum(found) if found else None

    def deltas(self, name: str, **match: str) -> list[tuple[Sample, float]] | None:
        if self.before is None:
            return None
        out = []
        for s in self.now:
            if s.name == name and _matches(s, match):
                prev = self.before.get(_series_id(s), 0.0)
                out.append((s, s.value - prev if s.value >= prev else s.value))  # reset: restart
        return out

    def delta(self, name: str, **match: str) -> float | None:
        d = self.deltas(name, **match)
        return None if d is None or not d else sum(v for _, v in d)

    def quantile(self, q: float, histogram: str) -> float | None:
        d = self.deltas(histogram + "_bucket")
        if not d:
            return None
        buckets: dict[float, float] = {}
        for s, v in d:
            le = float(s.labels[n.LE])
            buckets[le] = buckets.get(le, 0.0) + v
        return bucket_quantile(q, buckets)

    def statements(self) -> tuple[StatementShare, ...]:
        d = self.deltas(n.OPERATION_DURATION + "_sum")
        if not d:
            return ()
        by_summary: dict[str, float] = {}
        for s, v in d:
            summary = s.labels.get(n.QUERY_SUMMARY, "")
            by_summary[summary] = by_summary.get(summary, 0.0) + v
        total = sum(by_summary.values())
        if total <= 0:
            return ()
        top = sorted(by_summary.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_STATEMENTS]
        return tuple(StatementShare(k, v / total, v) for k, v in top if v > 0)


def _matches(s: Sample, match: Mapping[str, str]) -> bool:
    return all(s.labels.get(k) == v for k, v in match.items())


def _group(read: Read) -> dict[tuple[str, str, str], list[Sample]]:
    out: dict[tuple[str, str, str], list[Sample]] = {}
    for s in read.samples:
        if n.POOL in s.labels:
            out.setdefault(_key(s.labels, read.instance), []).append(s)
    return out


def pool_rows(current: Sequence[Read], previous: Sequence[Read] = ()) -> list[PoolRow]:
    """Rows for every pool in ``current`` (deltas against ``previous``, matched by target),
    unreadable targets first, then by saturation (highest first), waiting callers, name."""
    before_by_target = {r.target: r for r in previous if r.error is None}
    rows: list[PoolRow] = []
    for read in current:
        if read.error is not None:
            rows.append(PoolRow(instance=read.instance, pool="", error=read.error))
            continue
        prev = before_by_target.get(read.target)
        prev_groups = _group(prev) if prev is not None else {}
        window = read.at - prev.at if prev is not None else None
        for key, samples in _group(read).items():
            before = prev_groups.get(key)
            rows.append(_row(key, _Pool(samples, before), window if before is not None else None))
    rows.sort(key=_order)
    return rows


def _order(r: PoolRow) -> tuple[int, float, float, str, str]:
    return (0 if r.error else 1, -(r.saturation or 0.0), -r.waiting, r.instance, r.pool)


def _per(value: float | None, window: float | None, unit: float) -> float | None:
    if value is None or not window:
        return None
    return value / window * unit


def _row(key: tuple[str, str, str], p: _Pool, window: float | None) -> PoolRow:
    job, instance, pool = key
    leaked = p.value(n.CONNECTION_LEAKED)
    return PoolRow(
        instance=instance,
        pool=pool,
        job=job,
        used=p.value(n.COUNT, **{n.STATE: n.USED}) or 0.0,
        idle=p.value(n.COUNT, **{n.STATE: n.IDLE}) or 0.0,
        max=p.value(n.MAX),
        waiting=p.value(n.PENDING) or 0.0,
        longest_wait=p.value(n.WAIT_LONGEST),
        wait_p95=p.quantile(WAIT_QUANTILE, n.WAIT_TIME),
        timeouts_per_min=_per(p.delta(n.CONNECTION_TIMEOUTS), window, 60.0),
        hold_p95=p.quantile(HOLD_QUANTILE, n.USE_TIME),
        created_per_s=_per(p.delta(n.CREATE_TIME + "_count"), window, 1.0),
        leaked=leaked,
        leaks=p.delta(n.CONNECTION_LEAKS) if leaked is not None else None,
        statements=p.statements(),
        window=window,
    )


def rows_json(rows: Iterable[PoolRow]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        d = asdict(r)
        d["saturation"] = r.saturation
        d["statements"] = [asdict(s) for s in r.statements]
        out.append(d)
    return out
