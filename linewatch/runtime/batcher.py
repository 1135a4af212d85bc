"""Micro-batching of frames from all sources, trading a bounded wait for fuller backbone batches."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from linewatch.runtime.frames import Frame

POLL_S = 0.05  # longest wait for a first frame, so the caller can check its own stop flag often


class Batcher:
    """Groups frames from ``get(timeout)`` (e.g. ``SourceSet.get``) into batches of up to ``max_batch``.

    A batch closes when full or ``max_wait_ms`` after its first frame, whichever comes first; frames
    already queued at that moment are still taken (up to ``max_batch``) since that costs no waiting.
    """

    def __init__(
        self,
        get: Callable[[float], Frame | None],
        max_batch: int,
        max_wait_ms: float,
        poll_s: float = POLL_S,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must not be negative, got {max_wait_ms}")
        self.get = get
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1e3
        self.poll_s = poll_s

    def next_batch(self, stop: threading.Event | None = None) -> list[Frame]:
        """The next batch, or [] when no frame arrived within ``poll_s`` or ``stop`` is set."""
        if stop is not None and stop.is_set():
            return []
        first = self.get(self.poll_s)
        if first is None:
            return []
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch and not (stop is not None and stop.is_set()):
            frame = self.get(max(0.0, deadline - time.monotonic()))
            if frame is None:
                break
            batch.append(frame)
        return batch
