"""Runtime bookkeeping: per-stage times, end-to-end latencies, counters, and the exit summary."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STAGES = ("decode", "preprocess", "network", "score", "postprocess", "publish")


@dataclass
class RuntimeStats:
    """Mean ms per stage are per frame (a batch's stage time shared over its frames)."""

    started: float = field(default_factory=time.monotonic)
    frames: int = 0
    errors: int = 0
    stage_totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    latencies_ms: list[float] = field(default_factory=list)
    recent: deque = field(default_factory=lambda: deque(maxlen=4096))  # publish times for the fps window

    def add_frame(self, stages_ms: dict[str, float], latency_ms: float) -> None:
        self.frames += 1
        for stage in STAGES:
            self.stage_totals[stage] += stages_ms.get(stage, 0.0)
        self.latencies_ms.append(latency_ms)
        self.recent.append(time.monotonic())

    def fps(self, window_s: float = 5.0) -> float:
        now = time.monotonic()
        recent = [t for t in self.recent if now - t <= window_s]
        span = min(window_s, now - self.started)
        return len(recent) / span if span > 0 else 0.0

    def uptime_s(self) -> float:
        return time.monotonic() - self.started

    def summary(self, sources: dict[str, dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
        wall = self.uptime_s()
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        return {
            "frames": self.frames,
            "drops": sum(s["drops"] for s in sources.values()),
            "errors": self.errors + sum(s["errors"] for s in sources.values()),
            "wall_s": round(wall, 3),
            "fps": round(self.frames / wall, 3) if wall > 0 else 0.0,
            "latency_ms": {f"p{q}": round(float(np.percentile(lat, q)), 3) for q in (50, 95, 99)},
            "stage_ms": {s: round(t / self.frames, 3) if self.frames else 0.0 for s, t in self.stage_totals.items()},
            "outages": sum(s.get("outages", 0) for s in sources.values()),
            "sources": sources,
            **extra,
        }


def reliability_lines(summary: dict[str, Any]) -> str:
    """Summary lines for outages and journal trouble (empty when there was none)."""
    lines = [f"\n  source {name}: {s['outages']} outage(s), down {s['down_s']:.1f} s in all, {s['reopens']} reopen(s)"
             for name, s in summary["sources"].items() if s.get("outages")]
    journal = summary.get("journal")
    if journal and (journal["lost"] or summary.get("failure")):
        lines.append(f"\n  journal {journal['path']}: {journal['written']} line(s) written, {journal['lost']} "
                     f"verdict(s) not journalled")
    return "".join(lines)
