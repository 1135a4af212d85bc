"""`/metrics`: the dashboard's state in the Prometheus text format, read from the state at scrape time.

A collector (not live Counter objects) so the labels always match what the page shows, a runtime
renamed by its first status keeps one series, and nothing grows beyond the state's own caps.
Counters are the dashboard's counts since it started; a runtime's drops and errors come from its
status messages and restart from 0 with it, which Prometheus' ``rate()`` treats as a counter reset.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from linewatch.runtime.dashboard.state import LATENCY_BUCKETS_S, DashboardState

__all__ = ["CONTENT_TYPE_LATEST", "DashboardCollector", "make_registry", "render"]
SOURCE_LABELS = ["runtime", "endpoint", "source"]
RUNTIME_LABELS = ["runtime", "endpoint"]


class DashboardCollector(Collector):
    def __init__(self, state: DashboardState, server_stats: Callable[[], dict[str, Any]]) -> None:
        self.state = state
        self.server_stats = server_stats

    def collect(self) -> Iterator[Metric]:
        now = time.monotonic()
        frames = CounterMetricFamily("linewatch_frames", "Verdicts received per source", labels=SOURCE_LABELS)
        defects = CounterMetricFamily("linewatch_defects", "Defect verdicts received per source",
                                      labels=SOURCE_LABELS)
        fps = GaugeMetricFamily("linewatch_fps", "Verdicts per second per source over the last 5 s",
                                labels=SOURCE_LABELS)
        latency = HistogramMetricFamily("linewatch_latency_seconds",
                                        "Capture-to-publish latency per source (header latency_ms.total)",
                                        labels=SOURCE_LABELS)
        drops = CounterMetricFamily("linewatch_source_drops", "Frames the runtime dropped (from its status)",
                                    labels=SOURCE_LABELS)
        source_errors = CounterMetricFamily("linewatch_source_errors", "Source errors (from the runtime status)",
                                            labels=SOURCE_LABELS)
        up = GaugeMetricFamily("linewatch_runtime_up", "1 while the runtime was heard from within --stale-after",
                               labels=RUNTIME_LABELS)
        gaps = CounterMetricFamily("linewatch_sequence_gaps", "Forward jumps of the verdict seq",
                                   labels=RUNTIME_LABELS)
        lost = CounterMetricFamily("linewatch_lost_verdicts", "Verdicts missing across seq gaps",
                                   labels=RUNTIME_LABELS)
        restarts = CounterMetricFamily("linewatch_runtime_restarts", "Runtime restarts seen (seq or uptime "
                                       "going backwards)", labels=RUNTIME_LABELS)
        for runtime in self.state.runtimes.values():
            rt = [runtime.label, runtime.endpoint]
            up.add_metric(rt, float(runtime.online(now, self.state.stale_after_s)))
            gaps.add_metric(rt, runtime.gaps)
            lost.add_metric(rt, runtime.lost)
            restarts.add_metric(rt, runtime.restarts)
            for source in runtime.sources.values():
                labels = [*rt, source.name]
                frames.add_metric(labels, source.frames)
                defects.add_metric(labels, source.defects)
                fps.add_metric(labels, source.fps(now))
                drops.add_metric(labels, source.status.get("drops", 0))
                source_errors.add_metric(labels, source.status.get("errors", 0))
                cumulative, buckets = 0, []
                for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), source.bucket_counts, strict=True):
                    cumulative += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
                latency.add_metric(labels, buckets, source.latency_sum_s)
        yield from (frames, defects, fps, latency, drops, source_errors, up, gaps, lost, restarts)
        rejected = CounterMetricFamily("linewatch_dashboard_rejected_messages",
                                       "Messages the dashboard could not use, by reason", labels=["reason"])
        for reason in ("malformed", "invalid", "capacity"):
            rejected.add_metric([reason], self.state.rejected.get(reason, 0))
        yield rejected
        yield CounterMetricFamily("linewatch_dashboard_messages", "Messages received from ZeroMQ",
                                  value=self.state.received)
        stats = self.server_stats()
        yield GaugeMetricFamily("linewatch_dashboard_clients", "Connected browsers", value=stats["clients"])
        yield CounterMetricFamily("linewatch_dashboard_dropped_clients",
                                  "Browsers disconnected for not reading their updates",
                                  value=stats["dropped_clients"])
        yield GaugeMetricFamily("linewatch_dashboard_image_bytes", "Bytes of frames and heatmaps held",
                                value=self.state.image_bytes())


def make_registry(state: DashboardState, server_stats: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    """A registry of its own (not the global one), so several dashboards in one process stay apart."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DashboardCollector(state, server_stats))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
