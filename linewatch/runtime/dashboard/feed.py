"""Synthetic verdict and status messages in the real wire format, for load-testing the dashboard.

`tools/bench_dashboard.py` and the dashboard tests publish these with any ``seq``, runtime, source
or schema (restarts, gaps and foreign publishers need full control); headers come from the same
`build_header` the runtime uses, maps and frames from the runtime's encoders.
"""

from __future__ import annotations

import time
from typing import Any

import cv2
import numpy as np

from linewatch.metrics.calibrate import ScoreNormalizer
from linewatch.runtime.messages import STATUS_PREFIX, STATUS_SCHEMA, build_header, encode_json, verdict_topic
from linewatch.runtime.postprocess import encode_frame_jpeg, encode_heatmap, find_regions

NORMALIZER = ScoreNormalizer(threshold=1.0, low=0.0, high=2.0)


class VerdictFactory:
    """Pre-encodes one good and one defective map (and frame) so publishing costs only the header."""

    def __init__(self, map_size: int = 64, frame_size: int = 256, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.frame_shape = (frame_size, frame_size)
        coarse = rng.uniform(0.0, 0.6, (8, 8)).astype(np.float32)  # smooth, like a real (blurred) anomaly map
        good = cv2.resize(coarse, (map_size, map_size), interpolation=cv2.INTER_CUBIC).clip(0.0, 0.6)
        bad = good.copy()
        bad[map_size // 4 : map_size // 2, map_size // 3 : map_size // 2] = 1.8
        self.maps = {"ok": good, "defect": bad}
        self.heatmaps = {k: encode_heatmap(m, NORMALIZER) for k, m in self.maps.items()}
        self.regions = {k: find_regions(m, NORMALIZER.threshold, self.frame_shape, NORMALIZER)
                        for k, m in self.maps.items()}
        # A smooth part with mild sensor noise compresses like a real frame (pure noise would not).
        ramp = np.linspace(70, 190, frame_size, dtype=np.float32)
        image = (ramp[None, :, None] * 0.6 + ramp[:, None, None] * 0.4
                 + rng.normal(0, 3, (*self.frame_shape, 3))).clip(0, 255).astype(np.uint8)
        self.frame = encode_frame_jpeg(image)

    def parts(self, seq: int, source: str, frame: int, defect: bool, *, runtime: str | None = None,
              with_frame: bool = False, extra: dict[str, Any] | None = None) -> list[bytes]:
        kind = "defect" if defect else "ok"
        heatmap, meta = self.heatmaps[kind]
        now = time.time()
        header = build_header(
            seq=seq, source=source, runtime=runtime, frame=frame, path=None, t_capture=now - 0.03,
            t_publish=now, raw_score=float(self.maps[kind].max()), normalizer=NORMALIZER, model="synthetic@0",
            latency_ms={"decode": 5.0, "preprocess": 1.0, "backbone": 12.0, "score": 6.0, "postprocess": 2.0,
                        "total": 30.0},
            heatmap_meta=meta, regions=self.regions[kind], frame_shape=self.frame_shape,
        )
        header.update(extra or {})
        parts = [verdict_topic(source).encode(), encode_json(header), heatmap]
        return [*parts, self.frame] if with_frame else parts


def status_parts(runtime: str, *, uptime_s: float, published: int, sources: dict[str, dict[str, Any]] | None = None,
                 events: list[dict[str, Any]] | None = None, engine: str = "synthetic") -> list[bytes]:
    """A ``status.<runtime>`` message as `Publisher.publish_status` sends it."""
    header = {"schema": STATUS_SCHEMA, "runtime": runtime, "t_publish": time.time(), "published": published,
              "subscribers": 1, "fps": 0.0, "frames": published, "queues": {}, "drops": {}, "errors": 0,
              "uptime_s": uptime_s, "sources": sources or {}, "events": events or [], "engine": engine}
    return [f"{STATUS_PREFIX}{runtime}".encode(), encode_json(header)]
