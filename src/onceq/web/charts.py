"""The geometry of the dashboard's pictures: the last hour's bars, an attempt timeline,
a workflow's DAG. Templates draw them as inline SVG (no script, no library): this module
only places boxes; every label is escaped by the template like any other text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from onceq.models import Attempt, StepState


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    ok_y: float
    ok_h: float
    bad_y: float
    bad_h: float
    title: str


@dataclass(frozen=True, slots=True)
class Throughput:
    width: int
    height: int
    bars: list[Bar]
    peak: int
    succeeded: int
    failed: int


def throughput(minutes: Sequence[tuple[datetime, int, int, int]], width: int = 720,
               height: int = 140) -> Throughput:  # fmt: skip
    """One bar per minute, succeeded below and failed (and cancelled) above."""
    peak = max((s + f + c for _, s, f, c in minutes), default=0)
    scale = (height - 4) / max(peak, 1)
    step = width / max(len(minutes), 1)
    bars = []
    for i, (start, ok, failed, cancelled) in enumerate(minutes):
        bad = failed + cancelled
        ok_h, bad_h = ok * scale, bad * scale
        title = f"{start:%H:%M} UTC: {ok} succeeded, {failed} failed, {cancelled} cancelled"
        bars.append(Bar(i * step + 1, max(step - 2, 1), height - ok_h, ok_h,
                        height - ok_h - bad_h, bad_h, title))  # fmt: skip
    return Throughput(width, height, bars, peak, sum(m[1] for m in minutes),
                      sum(m[2] for m in minutes))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Span:
    y: float
    x: float
    width: float
    kind: str  # a CSS class: the outcome, or "live"
    label: str


@dataclass(frozen=True, slots=True)
class Timeline:
    width: int
    height: int
    spans: list[Span]
    start: datetime | None
    end: datetime | None


def timeline(attempts: Sequence[Attempt], now: datetime, width: int = 900) -> Timeline:
    """One row per attempt: who held the lease, then a bar from its start to its end (or
    now, for the live one), on one time scale."""
    row, labels = 26, 260
    if not attempts:
        return Timeline(width, row, [], None, None)
    start = min(a.started_at for a in attempts)
    end = max(max((a.ended_at or now) for a in attempts), start)
    total = max((end - start).total_seconds(), 1e-6)
    usable = width - labels - 2
    spans = []
    for i, a in enumerate(attempts):
        left = (a.started_at - start).total_seconds() / total * usable
        right = ((a.ended_at or now) - start).total_seconds() / total * usable
        worker = a.worker if len(a.worker) <= 24 else a.worker[:23] + "…"
        spans.append(Span(i * row + 4, labels + left, max(right - left, 3), a.outcome or "live",
                          f"#{a.attempt} {worker} · {a.outcome or 'running'}"))  # fmt: skip
    return Timeline(width, row * len(attempts) + 4, spans, start, end)


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    x: int
    y: int
    status: str
    detail: str


@dataclass(frozen=True, slots=True)
class Edge:
    x1: int
    y1: int
    x2: int
    y2: int
    failure: bool


@dataclass(frozen=True, slots=True)
class Dag:
    width: int
    height: int
    nodes: list[Node]
    edges: list[Edge]
    box_w: int
    box_h: int


def dag(definition: Any, steps: Sequence[StepState]) -> Dag:
    """Steps in columns by their depth (the longest path from a root), edges from each
    step to those it leads to (`next`, and dashed `on_failure`)."""
    box_w, box_h, gap_x, gap_y = 170, 46, 60, 18
    specs: Mapping[str, Any] = {}
    if isinstance(definition, dict) and isinstance(definition.get("steps"), dict):
        specs = definition["steps"]
    names = [s.name for s in steps] or list(specs)
    state = {s.name: s for s in steps}
    out = {n: _targets(specs.get(n)) for n in names}
    depth = {n: 0 for n in names}
    for _ in names:  # relax: a DAG settles within len(names) passes
        for n in names:
            for target, _failure in out[n]:
                if target in depth:
                    depth[target] = max(depth[target], depth[n] + 1)
    columns: dict[int, list[str]] = {}
    for n in names:
        columns.setdefault(depth[n], []).append(n)
    place = {}
    for col, members in columns.items():
        for row, n in enumerate(members):
            place[n] = (8 + col * (box_w + gap_x), 8 + row * (box_h + gap_y))
    nodes = []
    for n in names:
        x, y = place[n]
        s = state.get(n)
        nodes.append(Node(n, x, y, s.status if s else "waiting", _detail(s)))
    edges = [
        Edge(place[n][0] + box_w, place[n][1] + box_h // 2, place[t][0], place[t][1] + box_h // 2,
             failure)
        for n in names for t, failure in out[n] if t in place
    ]  # fmt: skip
    width = 16 + (max(columns, default=0) + 1) * (box_w + gap_x) - gap_x
    height = 16 + max((len(m) for m in columns.values()), default=1) * (box_h + gap_y) - gap_y
    return Dag(width, height, nodes, edges, box_w, box_h)


def _targets(spec: Any) -> list[tuple[str, bool]]:
    if not isinstance(spec, dict):
        return []
    nexts = [(str(t), False) for t in spec.get("next") or []]
    return nexts + [(str(t), True) for t in spec.get("on_failure") or []]


def _detail(step: StepState | None) -> str:
    if step is None:
        return ""
    done = sum(n for status, n in step.counts.items() if status in ("succeeded", "failed",
                                                                    "cancelled"))  # fmt: skip
    total = step.total if step.total is not None else step.dispatched
    return f"{done}/{total} done" if total else step.status
