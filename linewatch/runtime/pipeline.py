"""The streaming runtime: sources -> batcher -> network engine -> scorer -> post-processing -> ZeroMQ.

Sources decode in their own threads, so decoding overlaps with inference. The main loop takes
micro-batches, runs the detector's network through the chosen engine and scores its named outputs
through the same `Inspector.score` path as `inspect-eval`, so published raw scores equal the evaluation's.
Every verdict is journalled (flushed) before it is published; a journal that cannot be written stops
the run (or, with ``on_journal_error="continue"``, is counted and skipped). On stop, frames already
decoded are still processed, sockets are closed and a summary is returned.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from threadpoolctl import threadpool_limits

from linewatch.engines import open_engine
from linewatch.inspector import Inspector
from linewatch.models.patchcore.knn import set_cpu_threads
from linewatch.runtime.batcher import Batcher
from linewatch.runtime.frames import Frame
from linewatch.runtime.journal import Journal, JournalError
from linewatch.runtime.messages import build_header
from linewatch.runtime.postprocess import encode_frame_jpeg, encode_heatmap, find_regions, heatmap_stride
from linewatch.runtime.publisher import DEFAULT_ADDRESS, SNDHWM, Publisher
from linewatch.runtime.source_spec import parse_sources
from linewatch.runtime.sources import SourceSet
from linewatch.runtime.stats import RuntimeStats

log = logging.getLogger(__name__)
RUNTIME_KNN_THREADS = 1  # see set_cpu_threads: sources decode on the same cores
# OpenCV's pool would split each resize / blur across cores the engine is using (bottle, 2 cores, batch 4:
# 29.4 -> 23.0 ms/frame with 1); the runtime's parallelism is its threads (one per source, plus inference).
RUNTIME_OPENCV_THREADS = 1
# A scorer on torch (PaDiM's Mahalanobis distances) under torch's default pool: its OpenMP threads spin after
# every product on the cores the maps and the sources need next (bottle's PaDiM, alone: score 1.4 -> 2.3 ms
# with one thread, but the maps after it 1.9 -> 0.17 ms).
RUNTIME_TORCH_SCORER_THREADS = 1
# OpenBLAS, which OpenCV (cv2.gemm: the anomaly maps), numpy and FAISS each bundle, splits even a 256 x 32 x 256
# product over 2 threads, and its caller then spins in sched_yield until the helper gets a core the sources are
# decoding on (bottle's PatchCore, batch 1: the map's second product 0.04 ms at the median, up to 3 ms of system
# time, 0.16-0.24 ms per frame on average; 0.05 with one thread).
RUNTIME_BLAS_THREADS = 1


@dataclass(frozen=True)
class RunOptions:
    bundle: Path
    sources: tuple[str, ...]
    watch: bool = False
    loop: bool = False
    batch: int = 4
    max_wait_ms: float = 20.0
    engine: str = "auto"
    device: str = "auto"
    threads: int | None = None
    publish: str = DEFAULT_ADDRESS
    send_frames: bool = False
    wait_subscribers: int = 0
    wait_timeout_s: float = 10.0
    journal: Path | None = None
    on_journal_error: str = "stop"
    send_hwm: int = SNDHWM
    runtime_name: str = "linewatch"
    queue_size: int = 8
    status_interval_s: float = 1.0
    min_region_area: int = 1
    precision: str = "fp32"
    triton_url: str | None = None
    triton_model: str | None = None
    triton_timeout_s: float = 10.0
    triton_retry_s: float = 60.0
    publish_connect: str | None = None


class Runtime:
    """Owns every resource of one run; `run()` blocks until the sources end or `stop()` is called."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.stop_event = threading.Event()
        self.stats = RuntimeStats()
        self.events: list[dict[str, Any]] = []
        self.failure: JournalError | None = None  # what stopped the run early, if anything
        specs = parse_sources(options.sources, options.watch, options.loop)  # bad sources fail before the model loads
        knn_device = "cpu" if options.device == "cpu" else "auto"
        set_cpu_threads(RUNTIME_KNN_THREADS)
        cv2.setNumThreads(RUNTIME_OPENCV_THREADS)
        self.inspector = Inspector.from_bundle(options.bundle, device=knn_device, precision=options.precision)
        self.inspector.check_streamable()
        self.heatmap_stride = heatmap_stride(self.inspector.blur_sigma)
        self.engine = open_engine(options.bundle, self.inspector.manifest, lambda: self.inspector.network,
                                  options.engine, options.device, options.threads, options.precision,
                                  {"url": options.triton_url, "model": options.triton_model,
                                   "timeout_s": options.triton_timeout_s, "retry_s": options.triton_retry_s},
                                  self.stop_event)
        self.sources = SourceSet(specs, queue_size=options.queue_size,
                                 on_event=self._on_event, prepare=self.inspector.preprocessor.prepare)
        self.batcher = Batcher(self.sources.get, options.batch, options.max_wait_ms)
        self.journal = Journal(options.journal, on_error=options.on_journal_error) if options.journal else None
        try:
            self.publisher = Publisher(options.publish, options.runtime_name, options.send_frames,
                                       connect=options.publish_connect,
                                       first_seq=self.journal.next_seq if self.journal else 0,
                                       send_hwm=options.send_hwm)
        except Exception:
            if self.journal:
                self.journal.close()
            raise
        self._last_status = 0.0

    def _on_event(self, kind: str, source: str, message: str) -> None:
        (log.warning if kind == "error" else log.info)("%s: %s", source, message)
        self.events.append({"kind": kind, "source": source, "message": message, "t": time.time()})
        del self.events[:-20]

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> dict[str, Any]:
        """Process until finite sources are exhausted or stop() is called; return the summary."""
        try:
            if self.options.wait_subscribers:
                seen = self.publisher.wait_subscribers(self.options.wait_subscribers, self.options.wait_timeout_s)
                if seen < self.options.wait_subscribers:
                    log.warning("only %d of %d subscribers after %.1f s; starting anyway",
                                seen, self.options.wait_subscribers, self.options.wait_timeout_s)
            self.stats.started = time.monotonic()
            self.sources.start()
            try:
                with torch_scorer_threads(self.engine.name), threadpool_limits(RUNTIME_BLAS_THREADS, "blas"):
                    self._loop()
            except JournalError as exc:  # frames not yet scored are dropped: nothing more may be published
                self.failure = exc
                log.error("%s", exc)
            self._maybe_status(force=True)
        finally:
            self.sources.stop()
            self.publisher.close()
            if self.journal:
                self.journal.close()
        return self.summary()

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            frames = self.batcher.next_batch(self.stop_event)
            if frames:
                self._process(frames)
            elif self.sources.done():
                break
            self._maybe_status()
        self.sources.stop()
        self._drain()

    def _drain(self) -> None:
        """Frames already decoded when the stop came are still scored and published."""
        while True:
            frames: list[Frame] = []
            while len(frames) < self.options.batch and (frame := self.sources.get(0.0)) is not None:
                frames.append(frame)
            if not frames:
                return
            self._process(frames)

    def summary(self) -> dict[str, Any]:
        return self.stats.summary(self.sources.stats(), {
            "engine": self.engine.describe(), "model": self.inspector.model_id,
            "published": self.publisher.published, "endpoint": self.publisher.endpoint,
            "journal": self.journal.stats() if self.journal else None,
            "failure": str(self.failure) if self.failure else None,
        })

    def _process(self, frames: list[Frame]) -> None:
        try:
            self._process_batch(frames)
        except JournalError:
            raise
        except Exception:
            self.stats.errors += len(frames)
            names = ", ".join(f"{f.source}#{f.index}" for f in frames)
            log.exception("batch of %d frame(s) failed (%s); skipped", len(frames), names)

    def _process_batch(self, frames: list[Frame]) -> None:
        count = len(frames)
        # Sources resize in their own threads (`prepare`, overlapping inference); only the stacking is here. Both
        # count as CPU time (`SourceRunner._push`): stacking right after a source's push waited 0.5 ms per frame
        # for the GIL on the long tiles (median 0.11 ms wall, 0.06 CPU), the source's wait, not stacking's work.
        cpu = time.thread_time()
        inputs = frames[0].inputs[None] if count == 1 else np.stack([f.inputs for f in frames])  # a view, not a copy
        stacked_ms = 1000 * (time.thread_time() - cpu)
        t1 = time.perf_counter()
        outputs = self.engine(inputs)
        t2 = time.perf_counter()
        timings: dict[str, float] = {}
        prediction = self.inspector.score(outputs, timings, [f.warp for f in frames])
        prepared = sum(f.preprocess_ms for f in frames)
        prepared += stacked_ms + timings["unseen"]  # the aligned inputs' unscored pixels: alignment's work
        shared = {"preprocess": prepared / count, "network": 1000 * (t2 - t1) / count,
                  "score": timings["score"] / count}
        maps_ms = timings["maps"] / count
        for frame, raw, amap in zip(frames, prediction.scores, prediction.maps, strict=True):
            self._publish_one(frame, float(raw), amap, shared, maps_ms)

    def _publish_one(self, frame: Frame, raw: float, amap: np.ndarray, shared: dict[str, float],
                     maps_ms: float) -> None:
        t0 = time.perf_counter()
        amap = self.inspector.preprocessor.restore(amap, frame.warp)
        map_norm = self.inspector.map_normalizer
        regions = find_regions(amap, map_norm.threshold, frame.image.shape[:2], map_norm,
                               min_area=self.options.min_region_area)
        heatmap, heatmap_meta = encode_heatmap(amap, map_norm, self.heatmap_stride)
        jpeg = encode_frame_jpeg(frame.image) if self.options.send_frames else None
        defect = self.inspector.defect_fields(amap, raw)
        t1 = time.perf_counter()
        stages = {"decode": frame.decode_ms, **shared, "postprocess": maps_ms + 1000 * (t1 - t0)}
        end_to_end = {**stages, "total": 1000 * (time.time() - frame.t_capture)}
        header = build_header(
            runtime=self.options.runtime_name,
            seq=None, source=frame.source, frame=frame.index, path=frame.path, t_capture=frame.t_capture,
            t_publish=None, raw_score=raw, normalizer=self.inspector.normalizer, model=self.inspector.model_id,
            latency_ms=end_to_end, heatmap_meta=heatmap_meta, regions=regions, frame_shape=frame.image.shape,
        )
        header.update(defect)
        self.publisher.publish_verdict(header, heatmap, jpeg, self.journal)
        stages["publish"] = 1000 * (time.perf_counter() - t1)
        self.stats.add_frame(stages, 1000 * (header["t_publish"] - frame.t_capture))

    def _maybe_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_status < self.options.status_interval_s:
            return
        self._last_status = now
        sources = self.sources.stats()
        self.publisher.publish_status({
            "fps": round(self.stats.fps(), 3),
            "frames": self.stats.frames,
            "queues": {name: s["queue"] for name, s in sources.items()},
            "drops": {name: s["drops"] for name, s in sources.items()},
            "errors": self.stats.errors + sum(s["errors"] for s in sources.values()),
            "uptime_s": round(self.stats.uptime_s(), 3),
            "sources": sources,
            "events": self.events[-5:],
            "engine": self.engine.describe(),
            "journal": self.journal.stats() if self.journal else None,
        })


@contextmanager
def torch_scorer_threads(engine: str) -> Iterator[None]:
    """Torch's CPU threads at `RUNTIME_TORCH_SCORER_THREADS` while the runtime scores, and back afterwards
    (the setting is process-wide), unless torch also runs the network (`--engine torch` sets its own) or
    nothing loaded torch (PatchCore on FAISS)."""
    torch = sys.modules.get("torch")
    if torch is None or engine == "torch":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(RUNTIME_TORCH_SCORER_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)
