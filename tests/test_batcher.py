"""Micro-batching: full batches, partial batches after the wait limit, sources mixed in one batch."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np

from linewatch.runtime.batcher import Batcher
from linewatch.runtime.frames import Frame
from linewatch.runtime.source_spec import parse_sources
from linewatch.runtime.sources import FrameBuffer, SourceSet


def _frame(index: int, source: str = "s") -> Frame:
    return Frame(source, index, np.zeros((4, 4, 3), np.uint8), time.time())


def _buffer(count: int) -> FrameBuffer:
    buffer = FrameBuffer(100, live=False)
    for i in range(count):
        buffer.put(_frame(i), threading.Event())
    return buffer


def test_batches_fill_up_to_max_batch() -> None:
    buffer = _buffer(10)
    batcher = Batcher(buffer.get, max_batch=4, max_wait_ms=2000)
    started = time.monotonic()
    sizes = [len(batcher.next_batch()) for _ in range(2)]
    assert sizes == [4, 4]
    assert time.monotonic() - started < 1.0  # full batches do not wait for the limit
    rest = Batcher(buffer.get, max_batch=4, max_wait_ms=20)
    assert [f.index for f in rest.next_batch()] == [8, 9]
    assert rest.next_batch() == []


def test_partial_batch_is_returned_after_max_wait() -> None:
    buffer = _buffer(1)
    batcher = Batcher(buffer.get, max_batch=8, max_wait_ms=100)
    started = time.monotonic()
    batch = batcher.next_batch()
    elapsed = time.monotonic() - started
    assert [f.index for f in batch] == [0]
    assert 0.09 <= elapsed < 0.5


def test_frames_arriving_during_the_wait_join_the_batch() -> None:
    buffer = _buffer(1)
    stop = threading.Event()
    late = threading.Timer(0.03, lambda: buffer.put(_frame(1), stop))
    late.start()
    try:
        batch = Batcher(buffer.get, max_batch=2, max_wait_ms=1000).next_batch()
    finally:
        late.cancel()
        late.join(1.0)
    assert [f.index for f in batch] == [0, 1]


def test_stop_event_ends_waiting() -> None:
    stop = threading.Event()
    stop.set()
    assert Batcher(_buffer(3).get, max_batch=2, max_wait_ms=10).next_batch(stop) == []


def test_frames_from_two_sources_share_a_batch(tmp_path: Path) -> None:
    for name in ("left", "right"):
        (tmp_path / name).mkdir()
        for i in range(3):
            assert cv2.imwrite(str(tmp_path / name / f"{i}.png"), np.full((8, 8, 3), i, np.uint8))
    specs = parse_sources([str(tmp_path / "left"), str(tmp_path / "right")])
    with SourceSet(specs) as sources:
        batch = Batcher(sources.get, max_batch=6, max_wait_ms=1000).next_batch()
    assert len(batch) == 6
    assert sorted((f.source, f.index) for f in batch) == [(s, i) for s in ("left", "right") for i in range(3)]
