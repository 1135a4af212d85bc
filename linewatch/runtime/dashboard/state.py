"""The dashboard's in-memory model of the line, bounded by ``history`` and fixed caps.

Runtimes are keyed by (connection, runtime name): the name comes from the verdict header's ``runtime``
field or from ``status.<runtime>`` messages; a connection whose verdicts carry no name is one runtime
until its first status names it. Sources live inside their runtime, so two runtimes with the same
source names stay apart. A runtime restart is its ``seq`` going backwards (or its status uptime
going backwards, when no verdict shows it first); a gap is ``seq`` jumping forward.
Nothing here awaits: the ZeroMQ receive loop calls :meth:`DashboardState.ingest` for every message.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from linewatch.runtime.dashboard.records import image_type, status_record, text, verdict_record
from linewatch.runtime.message_check import FieldError
from linewatch.runtime.messages import STATUS_PREFIX, parse_message

log = logging.getLogger(__name__)

MAX_RUNTIMES = 64
MAX_SOURCES = 512  # over all runtimes
RECENT_IMAGES = 8  # images kept per source, so a browser asking for the latest one still finds it
FPS_WINDOW_S = 5.0
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LOG_EVERY_S = 5.0  # rejected messages are logged at most this often (all are counted)


class CapacityError(ValueError):
    """More runtimes or sources than the dashboard keeps."""


@dataclass
class Verdict:
    id: int  # dashboard-wide, increasing: the cursor browsers are updated from
    received: float  # unix seconds at the dashboard
    record: dict[str, Any]
    heatmap: bytes | None
    frame: bytes | None

    @property
    def size(self) -> int:
        return len(self.heatmap or b"") + len(self.frame or b"")


class SourceState:
    def __init__(self, runtime: RuntimeState, name: str, history: int, uid: int) -> None:
        self.uid = uid  # ids for browsers: names are arbitrary strings
        self.runtime = runtime
        self.name = name
        self.frames = self.ok = self.defects = 0
        self.timeline: deque[tuple[int, float, float, bool]] = deque(maxlen=history)  # id, t, score, defect
        self.latencies_ms: deque[float] = deque(maxlen=history)
        self.bucket_counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.latency_sum_s = 0.0
        self.arrivals: deque[float] = deque(maxlen=max(history, 1000))  # monotonic, for fps
        self.recent: deque[Verdict] = deque(maxlen=RECENT_IMAGES)
        self.status: dict[str, Any] = {}  # this source's entry of the runtime's last status
        self.version = 0

    def add(self, verdict: Verdict, now: float) -> None:
        record = verdict.record
        defect = record["verdict"] == "defect"
        self.frames += 1
        self.defects += defect
        self.ok += not defect
        self.timeline.append((verdict.id, verdict.received, record["score"], defect))
        total = record["latency_ms"].get("total")
        if total is not None:
            self.latencies_ms.append(total)
            self.bucket_counts[bisect.bisect_left(LATENCY_BUCKETS_S, total / 1000.0)] += 1
            self.latency_sum_s += total / 1000.0
        self.arrivals.append(now)
        self.recent.append(verdict)
        self.version = verdict.id

    def fps(self, now: float) -> float:
        start = now - FPS_WINDOW_S
        recent = len(self.arrivals) - bisect.bisect_left(self.arrivals, start)
        return recent / FPS_WINDOW_S

    @property
    def latest(self) -> Verdict | None:
        return self.recent[-1] if self.recent else None


class RuntimeState:
    def __init__(self, endpoint: str, name: str | None, uid: int) -> None:
        self.uid = uid
        self.endpoint = endpoint
        self.name = name
        self.sources: dict[str, SourceState] = {}
        self.next_seq: int | None = None
        self.gaps = self.lost = self.restarts = 0
        self.status: dict[str, Any] | None = None
        self.last_seen: float | None = None  # monotonic time of its last message, status or verdict
        self.events: deque[dict[str, Any]] = deque(maxlen=50)
        self._seen_events: deque[tuple[Any, ...]] = deque(maxlen=100)
        self._restart_seen = False  # a seq restart that the next status's uptime will confirm

    @property
    def label(self) -> str:
        return self.name if self.name is not None else self.endpoint

    def event(self, kind: str, message: str, source: str = "", t: float | None = None) -> None:
        self.events.append({"t": time.time() if t is None else t, "kind": kind, "source": source,
                            "message": message})

    def observe_seq(self, seq: int) -> None:
        expected = self.next_seq
        if expected is not None and seq > expected:
            self.gaps += 1
            self.lost += seq - expected
            self.event("gap", f"expected seq {expected}, got {seq}: {seq - expected} verdict(s) lost")
        elif expected is not None and seq < expected:
            self.restarts += 1
            self._restart_seen = True
            self.event("restart", f"seq went back from {expected - 1} to {seq}: runtime restarted")
        self.next_seq = seq + 1

    def observe_status(self, status: dict[str, Any], now: float) -> None:
        previous = self.status
        # Uptime going back is a restart, unless a verdict's seq already showed it.
        if previous is not None and status["uptime_s"] < previous["uptime_s"] and not self._restart_seen:
            self.restarts += 1
            self.event("restart", f"uptime went back from {previous['uptime_s']:.1f} s "
                                  f"to {status['uptime_s']:.1f} s: runtime restarted")
            self.next_seq = status["published"]
        self._restart_seen = False
        self.status, self.last_seen = status, now
        for event in status["events"]:
            key = (event["t"], event["kind"], event["source"], event["message"])
            if key not in self._seen_events:
                self._seen_events.append(key)
                self.event(event["kind"], event["message"], event["source"], event["t"])

    def online(self, now: float, stale_after_s: float) -> bool:
        """Heard from within ``stale_after_s``: a live runtime sends status every second even when idle."""
        return self.last_seen is not None and now - self.last_seen <= stale_after_s


class DashboardState:
    """Everything the dashboard knows; all memory is bounded by ``history`` and the caps above."""

    def __init__(self, history: int = 500, stale_after_s: float = 5.0) -> None:
        if history < 1:
            raise ValueError("history must be >= 1")
        self.history = history
        self.stale_after_s = stale_after_s
        self.runtimes: dict[tuple[str, str | None], RuntimeState] = {}
        self.defects: deque[tuple[SourceState, Verdict]] = deque(maxlen=history)
        self.latencies_ms: deque[float] = deque(maxlen=history)  # over all sources
        self.version = 0
        self.received = 0
        self.rejected: Counter[str] = Counter()
        self.rejections: deque[dict[str, Any]] = deque(maxlen=20)
        self._connection_names: dict[str, str] = {}
        self._n_sources = 0
        self._uids = itertools.count(1)
        self._last_log = 0.0

    def ingest(self, endpoint: str, parts: list[bytes], now: float | None = None) -> str:
        """One multipart message -> "verdict", "status" or the reason it was rejected; never raises."""
        now = time.monotonic() if now is None else now
        self.received += 1
        try:
            topic, header, heatmap, frame = parse_message(parts)
        except FieldError as exc:  # a verdict with a bad field value: invalid, like the records' own checks
            return self._reject("invalid", endpoint, parts, exc)
        except ValueError as exc:
            return self._reject("malformed", endpoint, parts, exc)
        try:
            if topic.startswith(STATUS_PREFIX):
                self._add_status(endpoint, status_record(header), now)
                return "status"
            self._add_verdict(endpoint, verdict_record(header), heatmap, frame, now)
            return "verdict"
        except CapacityError as exc:
            return self._reject("capacity", endpoint, parts, exc)
        except (ValueError, TypeError, KeyError) as exc:
            return self._reject("invalid", endpoint, parts, exc)

    def _reject(self, reason: str, endpoint: str, parts: list[bytes], exc: Exception) -> str:
        self.rejected[reason] += 1
        topic = text(bytes(parts[0][:80]).decode("utf-8", "replace") if parts else "", 80)
        self.rejections.append({"t": time.time(), "reason": reason, "endpoint": endpoint, "topic": topic,
                                "error": text(exc)})
        self.version += 1
        if time.monotonic() - self._last_log >= _LOG_EVERY_S:
            self._last_log = time.monotonic()
            log.warning("rejected %s message from %s (topic %r): %s [%d rejected so far]", reason, endpoint,
                        topic, exc, sum(self.rejected.values()))
        return reason

    def _runtime(self, endpoint: str, name: str | None) -> RuntimeState:
        key = (endpoint, name)
        runtime = self.runtimes.get(key)
        if runtime is None:
            if len(self.runtimes) >= MAX_RUNTIMES:
                raise CapacityError(f"more than {MAX_RUNTIMES} runtimes; runtime {name!r} at {endpoint} ignored")
            runtime = self.runtimes[key] = RuntimeState(endpoint, name, next(self._uids))
        return runtime

    def _source(self, runtime: RuntimeState, name: str) -> SourceState:
        source = runtime.sources.get(name)
        if source is None:
            if self._n_sources >= MAX_SOURCES:
                raise CapacityError(f"more than {MAX_SOURCES} sources; source {name!r} of {runtime.label} ignored")
            source = runtime.sources[name] = SourceState(runtime, name, self.history, next(self._uids))
            self._n_sources += 1
        return source

    def _add_verdict(self, endpoint: str, record: dict[str, Any], heatmap: bytes | None, frame: bytes | None,
                     now: float) -> None:
        name = record["runtime"] or self._connection_names.get(endpoint)
        runtime = self._runtime(endpoint, name)
        source = self._source(runtime, record["source"])
        self.version += 1
        verdict = Verdict(self.version, time.time(), record, heatmap if image_type(heatmap) else None,
                          frame if image_type(frame) else None)
        runtime.observe_seq(record["seq"])
        runtime.last_seen = now
        source.add(verdict, now)
        if "total" in record["latency_ms"]:
            self.latencies_ms.append(record["latency_ms"]["total"])
        if record["verdict"] == "defect":
            self.defects.append((source, verdict))

    def _add_status(self, endpoint: str, status: dict[str, Any], now: float) -> None:
        name = status["runtime"]
        unnamed = self.runtimes.get((endpoint, None))
        if endpoint not in self._connection_names:
            self._connection_names[endpoint] = name
            if unnamed is not None and (endpoint, name) not in self.runtimes:
                # Verdicts without a runtime name came first: that runtime is the one this status names.
                unnamed.name = name
                self.runtimes[(endpoint, name)] = self.runtimes.pop((endpoint, None))
        runtime = self._runtime(endpoint, name)
        runtime.observe_status(status, now)
        self.version += 1
        for source_name, entry in status["sources"].items():
            source = self._source(runtime, source_name)
            source.status = entry
            source.version = self.version

    def image(self, verdict_id: int, kind: str) -> bytes | None:
        """The heatmap or frame of a verdict still held (a source's recent ones, or the defect log)."""
        for runtime in self.runtimes.values():
            for source in runtime.sources.values():
                if source.recent and source.recent[0].id <= verdict_id <= source.recent[-1].id:
                    for verdict in source.recent:
                        if verdict.id == verdict_id:
                            return verdict.heatmap if kind == "heatmap" else verdict.frame
        for _, verdict in self.defects:
            if verdict.id == verdict_id:
                return verdict.heatmap if kind == "heatmap" else verdict.frame
        return None

    def image_bytes(self) -> int:
        """Bytes of images held: at most (sources x RECENT_IMAGES + history) images."""
        held = {v.id: v.size for runtime in self.runtimes.values() for s in runtime.sources.values()
                for v in s.recent}
        held.update((v.id, v.size) for _, v in self.defects)
        return sum(held.values())
