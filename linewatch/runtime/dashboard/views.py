"""What browsers and `/api/state` get: the state as plain JSON, whole or as the change since a cursor.

A browser's cursor is the state ``version`` it last received. An update carries every runtime
(their online/offline state changes with time alone), the sources that changed since the cursor
(with their latest verdict), every source's fps, and the timeline points and defects newer than
the cursor; one that fell further behind than ``history`` simply gets what is still held.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from linewatch.runtime.dashboard.state import DashboardState, RuntimeState, SourceState, Verdict


def source_id(source: SourceState) -> str:
    return f"s{source.uid}"


def runtime_id(runtime: RuntimeState) -> str:
    return f"r{runtime.uid}"


def _newer(items: Any, cursor: int, key: Any) -> list[Any]:
    """Items (oldest first) whose id is above ``cursor``, read from the newest end."""
    out = []
    for item in reversed(items):
        if key(item) <= cursor:
            break
        out.append(item)
    out.reverse()
    return out


def _percentiles(values: Any) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None}
    p50, p95 = np.percentile(np.fromiter(values, dtype=np.float64), (50, 95))
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2)}


def verdict_view(source: SourceState, verdict: Verdict) -> dict[str, Any]:
    return {
        **verdict.record,
        "id": verdict.id,
        "received": verdict.received,
        "runtime_id": runtime_id(source.runtime),
        "runtime_label": source.runtime.label,
        "source_id": source_id(source),
        "has_heatmap": verdict.heatmap is not None,
        "has_frame": verdict.frame is not None,
    }


def source_view(source: SourceState, now: float) -> dict[str, Any]:
    latest = source.latest
    return {
        "id": source_id(source),
        "runtime_id": runtime_id(source.runtime),
        "runtime": source.runtime.label,
        "name": source.name,
        "frames": source.frames,
        "ok": source.ok,
        "defects": source.defects,
        "defect_rate": source.defects / source.frames if source.frames else 0.0,
        "fps": round(source.fps(now), 2),
        "latency_ms": _percentiles(source.latencies_ms),
        "status": source.status,
        "latest": verdict_view(source, latest) if latest else None,
    }


def runtime_view(runtime: RuntimeState, now: float, stale_after_s: float) -> dict[str, Any]:
    status = runtime.status or {}
    silent = None if runtime.last_seen is None else round(now - runtime.last_seen, 1)
    models = sorted({s.latest.record["model"] for s in runtime.sources.values() if s.latest})
    return {
        "id": runtime_id(runtime),
        "name": runtime.name,
        "label": runtime.label,
        "endpoint": runtime.endpoint,
        "online": runtime.online(now, stale_after_s),
        "silent_s": silent,
        "engine": status.get("engine"),
        "fps": status.get("fps"),
        "uptime_s": status.get("uptime_s"),
        "published": status.get("published"),
        "subscribers": status.get("subscribers"),
        "errors": status.get("errors", 0),
        "models": models,
        "gaps": runtime.gaps,
        "lost": runtime.lost,
        "restarts": runtime.restarts,
        "sources": {name: s.status for name, s in runtime.sources.items() if s.status},
        "events": list(runtime.events)[-10:],
    }


def totals(state: DashboardState, now: float) -> dict[str, Any]:
    sources = [s for r in state.runtimes.values() for s in r.sources.values()]
    frames = sum(s.frames for s in sources)
    defects = sum(s.defects for s in sources)
    runtimes = state.runtimes.values()
    return {
        "frames": frames,
        "ok": sum(s.ok for s in sources),
        "defects": defects,
        "defect_rate": defects / frames if frames else 0.0,
        "fps": round(sum(s.fps(now) for s in sources), 2),
        "latency_ms": _percentiles(state.latencies_ms),
        "drops": sum(s.status.get("drops", 0) for s in sources),
        "errors": sum((r.status or {}).get("errors", 0) for r in runtimes),
        "gaps": sum(r.gaps for r in runtimes),
        "lost": sum(r.lost for r in runtimes),
        "restarts": sum(r.restarts for r in runtimes),
        "rejected": sum(state.rejected.values()),
        "runtimes_online": sum(r.online(now, state.stale_after_s) for r in runtimes),
        "runtimes": len(state.runtimes),
    }


def update(state: DashboardState, since: int | None, now: float | None = None) -> dict[str, Any]:
    """Everything (``since`` None) or what changed after version ``since``, as one JSON-able dict."""
    now = time.monotonic() if now is None else now
    cursor = -1 if since is None else since
    sources = [s for r in state.runtimes.values() for s in r.sources.values()]
    return {
        "type": "snapshot" if since is None else "update",
        "version": state.version,
        "time": time.time(),
        "history": state.history,
        "stale_after_s": state.stale_after_s,
        "totals": totals(state, now),
        "runtimes": [runtime_view(r, now, state.stale_after_s) for r in state.runtimes.values()],
        "sources": [source_view(s, now) for s in sources if s.version > cursor],
        "fps": {source_id(s): round(s.fps(now), 2) for s in sources},
        "timeline": {source_id(s): [[t, round(score, 4), defect]
                                    for _, t, score, defect in _newer(s.timeline, cursor, lambda p: p[0])]
                     for s in sources if s.timeline and s.timeline[-1][0] > cursor},
        "defects": [verdict_view(s, v) for s, v in _newer(state.defects, cursor, lambda d: d[1].id)],
        "rejected": {"by_reason": dict(state.rejected), "recent": list(state.rejections)[-10:]},
    }
