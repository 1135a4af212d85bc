"""Frame sources: cameras, streams, video files, image folders and globs, each in its own thread.

Decoding runs in the source thread so it overlaps with inference. Live sources (cameras, streams)
keep only the newest frames and count what they drop, so the runtime never works on stale pictures;
file sources never drop and instead block until the consumer makes room. A failing camera or stream
is reopened with exponential backoff; an unreadable file or frame is reported and skipped. With
``loop``, videos, folders and globs start again at their end (soak tests, demos), and a looping file
source that disappears is treated like a failing camera: retried with backoff until it is back.
Every source counts its outages (how many, how long, since when) for the status topic and summary.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from linewatch.config import ConfigError
from linewatch.data.errors import DataError
from linewatch.data.io import is_image_file, read_image, to_rgb
from linewatch.runtime.frames import Frame
from linewatch.runtime.outage import Backoff, Outages
from linewatch.runtime.source_spec import URL, SourceSpec, redact

log = logging.getLogger(__name__)

EventCallback = Callable[[str, str, str], None]  # (kind, source name, message)

BACKOFF_S = (0.5, 10.0)  # first reopen delay, and the cap it doubles up to
POLL_S = 0.2  # how often a watched folder is rescanned
STREAM_TIMEOUT_MS = 10_000  # open/read timeout for URL streams, so a dead peer cannot hang a thread
JOIN_TIMEOUT_S = 2.0
_WAIT_SLICE_S = 0.1  # blocked producers re-check their stop event this often


class Capture(Protocol):
    """The part of cv2.VideoCapture the sources use; tests pass fakes with the same methods."""

    def isOpened(self) -> bool: ...

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


CaptureFactory = Callable[[str | int], Capture]
# decoded RGB frame -> model input (or (model input, alignment warp)), run in the source thread
Prepare = Callable[[np.ndarray], np.ndarray | tuple[np.ndarray, np.ndarray | None]]


def open_capture(target: str | int) -> Capture:
    """cv2.VideoCapture, with open/read timeouts for URLs so a silent stream cannot block forever."""
    if isinstance(target, str) and URL.match(target):
        timeout = STREAM_TIMEOUT_MS
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout]
        return cv2.VideoCapture(target, cv2.CAP_ANY, params)
    return cv2.VideoCapture(target)


class FrameBuffer:
    """Per-source queue between the source thread and the consumer.

    Live: a ring that evicts the oldest frame when full and counts ``drops``. Files: ``put`` blocks
    while full (back-pressure) until room is made or ``stop`` is set. ``cond`` may be shared by
    several buffers so one consumer can wait on all of them at once.
    """

    def __init__(self, maxsize: int, live: bool, cond: threading.Condition | None = None) -> None:
        if maxsize < 1:
            raise ValueError(f"queue size must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self.live = live
        self.drops = 0
        self.cond = cond or threading.Condition()
        self._frames: deque[Frame] = deque()

    def __len__(self) -> int:
        with self.cond:
            return len(self._frames)

    def put(self, frame: Frame, stop: threading.Event) -> bool:
        """Queue a frame; False when ``stop`` was set while waiting for room (the frame is discarded)."""
        with self.cond:
            if self.live:
                if len(self._frames) >= self.maxsize:
                    self._frames.popleft()
                    self.drops += 1
            else:
                while len(self._frames) >= self.maxsize:
                    if stop.is_set():
                        return False
                    self.cond.wait(_WAIT_SLICE_S)
            self._frames.append(frame)
            self.cond.notify_all()
            return True

    def get_nowait(self) -> Frame | None:
        with self.cond:
            if not self._frames:
                return None
            frame = self._frames.popleft()
            self.cond.notify_all()  # a producer may be waiting for room
            return frame

    def get(self, timeout: float) -> Frame | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self._frames:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.cond.wait(remaining)
            return self.get_nowait()

    def snapshot(self) -> list[Frame]:
        """The queued frames, oldest first, without taking them."""
        with self.cond:
            return list(self._frames)


class SourceRunner:
    """Runs one source in a daemon thread, feeding its FrameBuffer and counting what happens."""

    def __init__(
        self,
        spec: SourceSpec,
        queue_size: int = 8,
        on_event: EventCallback | None = None,
        capture_factory: CaptureFactory = open_capture,
        backoff_s: tuple[float, float] = BACKOFF_S,
        poll_s: float = POLL_S,
        cond: threading.Condition | None = None,
        prepare: Prepare | None = None,
    ) -> None:
        self.spec = spec
        self.prepare = prepare
        self.buffer = FrameBuffer(queue_size, spec.live, cond)
        self.on_event = on_event
        self.capture_factory = capture_factory
        self.backoff_s = backoff_s
        self.poll_s = poll_s
        self.frames = 0
        self.errors = 0
        self.reopens = 0
        self.loops = 0  # times a looping source started again at its beginning
        self.outages = Outages()
        self.state = "idle"
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"source-{spec.name}", daemon=True)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def finished(self) -> bool:
        """The source thread has ended: a finite source has delivered everything it will."""
        return self._finished.is_set()

    def done(self) -> bool:
        """Finished and every frame taken by the consumer."""
        return self.finished and len(self.buffer) == 0

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()
        with self.buffer.cond:
            self.buffer.cond.notify_all()

    def stop(self, timeout: float = JOIN_TIMEOUT_S) -> None:
        """Stop and join; a thread stuck inside a driver call is left behind (it is a daemon)."""
        self.request_stop()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("source %s did not stop within %.1f s (blocked in a read)", self.name, timeout)

    def get(self, timeout: float) -> Frame | None:
        return self.buffer.get(timeout)

    def stats(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "drops": self.buffer.drops,
            "errors": self.errors,
            "reopens": self.reopens,
            "loops": self.loops,
            "queue": len(self.buffer),
            "state": self.state,
            **self.outages.stats(),
        }

    def _emit(self, kind: str, message: str) -> None:
        if self.on_event is None:
            level = logging.WARNING if kind == "error" else logging.INFO
            log.log(level, "%s: %s: %s", self.name, kind, message)
            return
        try:
            self.on_event(kind, self.name, message)
        except Exception:
            log.exception("source %s: event callback failed", self.name)

    def _error(self, message: str) -> None:
        self.errors += 1
        self._emit("error", message)

    def _down(self, message: str) -> None:
        """A failure that keeps the source from delivering: an error, and the start of an outage if it was up."""
        self.outages.down(message)
        self._error(message)

    def _up(self, message: str) -> None:
        """The source delivers again after an outage (no-op when there was none)."""
        length = self.outages.up()
        if length is not None:
            self._emit("reopen", f"{message}; it was down {length:.1f} s")

    def _push(self, image: np.ndarray, path: str | None, decode_ms: float) -> bool:
        t_capture = time.time()
        inputs, warp, preprocess_ms = None, None, 0.0
        if self.prepare is not None:
            # This thread's CPU time, not wall time: preparing overlaps the network, which on a 2-core machine
            # holds both cores for whole runs; 1 frame in 10 then waits a run's length for a core (long-tile
            # bundle: wall 1.0 ms mean, 0.2 median; CPU 0.2), time the network stage already counts.
            start = time.thread_time()
            try:
                inputs = self.prepare(image)
                if isinstance(inputs, tuple):  # Preprocessor.prepare: (model input, alignment warp)
                    inputs, warp = inputs
            except Exception as exc:
                self._error(f"frame {self.frames}{f' ({path})' if path else ''} cannot be preprocessed: {exc}")
                return not self._stop.is_set()
            preprocess_ms = 1000 * (time.thread_time() - start)
        frame = Frame(self.name, self.frames, image, t_capture, path=path, decode_ms=decode_ms, inputs=inputs,
                      warp=warp, preprocess_ms=preprocess_ms)
        self.frames += 1
        return self.buffer.put(frame, self._stop)

    def _run(self) -> None:
        try:
            if self.spec.kind in ("camera", "stream") or (self.spec.kind == "video" and self.spec.loop):
                self._run_live()
            elif self.spec.kind == "video":
                self._run_video()
            else:
                self._run_files()
            if self.state != "failed":
                self.state = "stopped" if self._stop.is_set() else "finished"
        except Exception as exc:  # a bug or driver failure must not leave the consumer waiting forever
            self.state = "failed"
            self._error(f"source thread failed: {type(exc).__name__}: {exc}")
        finally:
            self._finished.set()
            with self.buffer.cond:
                self.buffer.cond.notify_all()

    def _run_live(self) -> None:
        """Read until stopped; any failure to open or read leads to a reopen after a growing delay.

        Cameras, streams and looping videos; a looping video that reaches its end starts again at once.
        """
        what = f"{self.spec.kind} {redact(self.spec.target)}"
        backoff = Backoff(*self.backoff_s)
        failures = 0
        while not self._stop.is_set():
            if failures:
                self.state = "reconnecting"
                if self._stop.wait(backoff.next()):
                    return
                self.reopens += 1
            self.state = "opening"
            try:
                capture = self.capture_factory(self.spec.target)
            except Exception as exc:  # drivers raise cv2.error for bad devices; retry like any failure
                failures += 1
                self._down(f"cannot open {what} ({exc}); reopening in {backoff.delay:.2f} s")
                continue
            try:
                if not capture.isOpened():
                    failures += 1
                    self._down(f"cannot open {what}; reopening in {backoff.delay:.2f} s")
                    continue
                if failures:
                    self._up(f"{what} reopened after {failures} failed attempt(s)")
                self.state = "running"
                delivered = self._read_live(capture)
            finally:
                capture.release()
            if self._stop.is_set():
                return
            if delivered:
                backoff.reset()
                failures = 0
                if not self.spec.live:
                    self.loops += 1
                    continue
            failures += 1
            self._down(f"{what} stopped delivering frames; reopening in {backoff.delay:.2f} s")

    def _read_live(self, capture: Capture) -> int:
        """Frames read from an open capture until it fails or the source is stopped."""
        path = None if self.spec.live else str(self.spec.target)
        delivered = 0
        while not self._stop.is_set():
            try:
                ok, raw = capture.read()
            except cv2.error:
                return delivered  # reported by the caller as the stream failing
            if not ok or raw is None:
                return delivered
            start = time.perf_counter()
            try:
                image = to_rgb(raw)
            except ValueError as exc:
                self._error(f"{redact(self.spec.target)}: unreadable frame: {exc}")
                continue
            self._push(image, path, (time.perf_counter() - start) * 1e3)
            delivered += 1
        return delivered

    def _run_video(self) -> None:
        path = str(self.spec.target)
        capture = self.capture_factory(path)
        try:
            if not capture.isOpened():
                self.state = "failed"
                self._error(f"{path}: cannot open video")
                return
            self.state = "running"
            while not self._stop.is_set():
                start = time.perf_counter()
                ok, raw = capture.read()
                if not ok or raw is None:
                    self._emit("end", f"{path}: end of video after {self.frames} frame(s)")
                    return
                try:
                    image = to_rgb(raw)
                except ValueError as exc:
                    self._error(f"{path}: unreadable frame: {exc}")
                    continue
                if not self._push(image, path, (time.perf_counter() - start) * 1e3):
                    return
        finally:
            capture.release()

    def _list_files(self) -> list[str]:
        """Image files in sorted order: folders recurse (hidden entries skipped), globs as matched."""
        if self.spec.kind == "glob":
            matches = glob.glob(str(self.spec.target), recursive=True)
            return sorted(p for p in matches if is_image_file(p) and os.path.isfile(p))
        root = Path(str(self.spec.target))
        found: list[tuple[tuple[str, ...], str]] = []
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for file in files:
                if not file.startswith(".") and is_image_file(file):
                    path = Path(folder) / file
                    found.append((path.relative_to(root).parts, str(path)))
        return [path for _, path in sorted(found)]

    def _deliver_file(self, path: str) -> bool:
        """Decode and queue one file; False once stopped. Unreadable files are reported and skipped."""
        start = time.perf_counter()
        try:
            image = read_image(path)
        except DataError as exc:
            self._error(str(exc))
            return not self._stop.is_set()
        return self._push(image, path, (time.perf_counter() - start) * 1e3)

    def _run_files(self) -> None:
        self.state = "running"
        if self.spec.watch:
            self._watch_files()
            return
        backoff = Backoff(*self.backoff_s)
        while not self._stop.is_set():
            before = self.frames
            paths = self._list_files()
            for path in paths:
                if not self._deliver_file(path):
                    return
                if self.frames == before + 1:  # the first frame of this pass: the source is up
                    self._up(f"{self.spec.target}: readable image files are back")
            if not self.spec.loop:
                self._emit("end", f"{self.spec.target}: {len(paths)} file(s) read, {self.errors} unreadable")
                return
            if self.frames > before:
                self.loops += 1
                backoff.reset()
                continue
            self.state = "reconnecting"  # gone, emptied or all unreadable: wait for it like for a camera
            self._down(f"{self.spec.target}: no readable image files (missing, empty or unreadable); looking again "
                       f"in {backoff.delay:.2f} s")
            self._stop.wait(backoff.next())
            self.state = "running"

    def _watch_files(self) -> None:
        """Poll for files; a file is read once its size and mtime held still across two polls.

        Empty files are left alone until they grow, since writers usually create the file first.
        """
        seen: set[str] = set()
        last: dict[str, tuple[int, int]] = {}
        while not self._stop.is_set():
            self.state = "watching"
            if self.spec.kind == "folder" and not os.path.isdir(str(self.spec.target)):
                if self.outages.since is None:
                    self._down(f"{self.spec.target}: folder is gone; watching for it to come back")
                self.state = "reconnecting"
                self._stop.wait(self.poll_s)
                continue
            self._up(f"{self.spec.target}: folder is back")
            ready = []
            for path in self._list_files():
                if path in seen:
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue  # vanished between listing and stat
                signature = (st.st_size, st.st_mtime_ns)
                if st.st_size > 0 and last.get(path) == signature:
                    ready.append(path)
                else:
                    last[path] = signature
            for path in ready:
                seen.add(path)
                del last[path]
                self.state = "running"
                if not self._deliver_file(path):
                    return
            self._stop.wait(self.poll_s)


class SourceSet:
    """Several sources behind one consumer API: ``get`` takes frames round-robin across sources."""

    def __init__(
        self,
        specs: Sequence[SourceSpec],
        queue_size: int = 8,
        live_queue_size: int = 2,
        on_event: EventCallback | None = None,
        capture_factory: CaptureFactory = open_capture,
        backoff_s: tuple[float, float] = BACKOFF_S,
        poll_s: float = POLL_S,
        prepare: Prepare | None = None,
    ) -> None:
        names = [spec.name for spec in specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"source names must be unique; repeated: {', '.join(duplicates)}")
        if not specs:
            raise ConfigError("no sources given")
        self._cond = threading.Condition()
        self.runners = [
            SourceRunner(
                spec,
                live_queue_size if spec.live else queue_size,
                on_event,
                capture_factory,
                backoff_s,
                poll_s,
                self._cond,
                prepare,
            )
            for spec in specs
        ]
        self._next = 0

    def start(self) -> None:
        for runner in self.runners:
            runner.start()

    def stop(self, timeout: float = JOIN_TIMEOUT_S) -> None:
        """Signal every source first, then join them against one shared deadline."""
        for runner in self.runners:
            runner.request_stop()
        deadline = time.monotonic() + timeout
        for runner in self.runners:
            runner.stop(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> SourceSet:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def done(self) -> bool:
        """Every source finished (live ones only when stopped or failed) and every buffer empty."""
        with self._cond:
            return all(runner.done() for runner in self.runners)

    def get(self, timeout: float) -> Frame | None:
        """The next frame, taking sources in turn; None after ``timeout`` or once ``done()``."""
        deadline = time.monotonic() + timeout
        count = len(self.runners)
        with self._cond:
            while True:
                for step in range(count):
                    position = (self._next + step) % count
                    frame = self.runners[position].buffer.get_nowait()
                    if frame is not None:
                        self._next = (position + 1) % count
                        return frame
                remaining = deadline - time.monotonic()
                if remaining <= 0 or all(runner.finished for runner in self.runners):
                    return None
                self._cond.wait(remaining)

    def __iter__(self) -> Iterator[Frame]:
        """Frames until every source is done; for finite source sets."""
        while not self.done():
            frame = self.get(_WAIT_SLICE_S)
            if frame is not None:
                yield frame

    def stats(self) -> dict[str, dict[str, Any]]:
        return {runner.name: runner.stats() for runner in self.runners}
