"""ZeroMQ publisher for verdicts and status, on an XPUB socket so it can see who subscribed.

Order per verdict: ``next_header`` stamps ``seq``/``t_publish``, the journal writes that exact header,
then ``send`` puts it on the wire; ``publish_verdict(..., journal=j)`` does all three. ``seq`` is
taken when stamped, so a verdict that fails between stamping and sending shows up as a gap.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

import zmq

from linewatch.config import ConfigError
from linewatch.runtime.journal import Journal
from linewatch.runtime.messages import (
    STATUS_PREFIX,
    STATUS_SCHEMA,
    VERDICT_PREFIX,
    encode_json,
    verdict_topic,
)

DEFAULT_ADDRESS = "tcp://127.0.0.1:5556"
# High-water marks, in messages. XPUB keeps one queue per subscriber; when a subscriber's queue holds
# SNDHWM messages, further messages are dropped for that subscriber only (XPUB never blocks), and it
# sees the loss as a jump in `seq`. 1000 verdicts is ~25 s at 40 fps (~20 MB of 256 px heatmaps).
SNDHWM = 1000
RCVHWM = 1000  # (un)subscription messages queued from subscribers
LINGER_MS = 500  # close() never hangs on a dead peer for longer than this
_DRAIN_LIMIT = 10_000  # subscription messages handled per drain call, so draining is bounded
_POLL_SLICE_S = 0.05


def _reaches_verdicts(topic: bytes) -> bool:
    """A subscription that receives verdicts: a prefix of ``verdict.`` or a narrower verdict topic."""
    prefix = VERDICT_PREFIX.encode()
    return prefix.startswith(topic) or topic.startswith(prefix)


class Publisher:
    """Binds an XPUB socket; safe to call from several threads (one lock serialises socket use)."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        runtime_name: str = "linewatch",
        send_frames: bool = False,
        context: zmq.Context | None = None,
        connect: str | None = None,
        first_seq: int = 0,
        send_hwm: int = SNDHWM,
    ) -> None:
        """``first_seq`` continues a journal's count after a restart; ``send_hwm`` is the per-subscriber queue;
        ``connect`` publishes into an inspect-proxy frontend instead of binding ``address``."""
        if not runtime_name:
            raise ConfigError("runtime_name must be non-empty (it names the status topic)")
        self.runtime_name = runtime_name
        self.send_frames = send_frames
        self._lock = threading.Lock()
        self._seq = first_seq
        self._subscriptions = 0
        self._socket = (context or zmq.Context.instance()).socket(zmq.XPUB)
        self._socket.setsockopt(zmq.LINGER, LINGER_MS)
        self._socket.setsockopt(zmq.SNDHWM, send_hwm)
        self._socket.setsockopt(zmq.RCVHWM, RCVHWM)
        self._socket.setsockopt(zmq.XPUB_VERBOSE, 1)
        self._socket.setsockopt(zmq.XPUB_VERBOSER, 1)  # unsubscribes too, so the live count stays right
        try:  # `connect`: publish into an inspect-proxy frontend (XSUB) instead of binding
            self._socket.connect(connect) if connect else self._socket.bind(address)
        except zmq.ZMQError as exc:
            self._socket.close(linger=0)
            raise ConfigError(f"cannot {'connect' if connect else 'bind'} publisher to {connect or address!r}: "
                              f"{exc}") from exc
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)

    @property
    def subscriptions(self) -> int:
        """Live subscriptions that receive verdicts (status-only subscribers are not counted)."""
        return self._subscriptions

    @property
    def published(self) -> int:
        """The next ``seq``: verdicts stamped so far, plus the count continued from the journal."""
        return self._seq

    def _drain(self) -> None:
        """Consume pending (un)subscription messages without blocking; the caller holds the lock."""
        for _ in range(_DRAIN_LIMIT):
            try:
                msg = self._socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg and msg[0] in (0, 1) and _reaches_verdicts(msg[1:]):
                self._subscriptions += 1 if msg[0] == 1 else -1

    def wait_subscribers(self, count: int, timeout_s: float) -> int:
        """Hold until ``count`` verdict subscriptions are live or ``timeout_s`` passes; returns the count.

        Subscriptions, not peers: a SUB socket subscribed to two verdict topics counts twice.
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            with self._lock:
                self._drain()
                remaining = deadline - time.monotonic()
                if self._subscriptions >= count or remaining <= 0:
                    return self._subscriptions
                self._socket.poll(int(min(remaining, _POLL_SLICE_S) * 1000) + 1, zmq.POLLIN)

    def next_header(self, header: dict[str, Any]) -> dict[str, Any]:
        """Stamp ``seq`` and ``t_publish`` into ``header`` (in place) and return it."""
        with self._lock:
            header["seq"] = self._seq
            self._seq += 1
        header["t_publish"] = time.time()
        return header

    def send(self, header: dict[str, Any], heatmap: bytes, frame_jpeg: bytes | None = None) -> None:
        """Put a stamped header on the wire; the frame is attached only when ``send_frames`` is on."""
        if header.get("seq") is None or header.get("t_publish") is None:
            raise ValueError("header is not stamped; call next_header() before send()")
        parts = [verdict_topic(str(header["source"])).encode(), encode_json(header), heatmap]
        if self.send_frames and frame_jpeg is not None:
            parts.append(frame_jpeg)
        with self._lock:
            self._drain()
            self._socket.send_multipart(parts)

    def publish_verdict(
        self,
        header: dict[str, Any],
        heatmap: bytes,
        frame_jpeg: bytes | None = None,
        journal: Journal | None = None,
    ) -> dict[str, Any]:
        """Stamp, journal (flushed first), then send; returns the header exactly as published."""
        self.next_header(header)
        if journal is not None:
            journal.write(header)
        self.send(header, heatmap, frame_jpeg)
        return header

    def publish_status(self, status: dict[str, Any]) -> dict[str, Any]:
        """Send ``status.<runtime_name>``; pipeline fields (fps, queues, drops, ...) are merged in."""
        fixed = {
            "schema": STATUS_SCHEMA,
            "runtime": self.runtime_name,
            "t_publish": time.time(),
            "published": self._seq,
            "subscribers": self._subscriptions,
        }
        message = {**fixed, **{k: v for k, v in status.items() if k not in fixed}}
        parts = [f"{STATUS_PREFIX}{self.runtime_name}".encode(), encode_json(message)]
        with self._lock:
            self._drain()
            self._socket.send_multipart(parts)
        return message

    def close(self) -> None:
        """Close the socket with bounded linger; the (shared) context is left to its owner."""
        with self._lock:
            if not self._socket.closed:
                self._socket.close(linger=LINGER_MS)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
