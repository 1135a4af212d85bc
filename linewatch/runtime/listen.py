"""`inspect-listen`: a reference subscriber that prints verdicts, spots lost messages, saves overlays.

Gaps are judged on the publisher's ``seq``, which counts verdicts of all sources; with a topic that
selects only some sources, skipped numbers are expected, so gap detection is switched off then.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np
import zmq

from linewatch.cli_common import friendly_errors
from linewatch.config import ConfigError
from linewatch.data import DataError, decode_image
from linewatch.overlay import overlay_heatmap
from linewatch.runtime.message_check import MessageError
from linewatch.runtime.messages import STATUS_PREFIX, VERDICT_PREFIX, parse_message
from linewatch.runtime.postprocess import decode_heatmap
from linewatch.runtime.publisher import DEFAULT_ADDRESS

_POLL_SLICE_S = 0.25  # keeps Ctrl-C responsive while waiting forever
RCVHWM = 1000  # messages queued in this subscriber before ZeroMQ drops (the publisher's SNDHWM queue comes first)
_BOX_RGB = (255, 255, 255)


@dataclass
class ListenResult:
    received: int = 0  # verdicts received
    gaps: int = 0  # places where seq jumped forward
    lost: int = 0  # verdicts missing across those jumps
    bad: int = 0  # messages that were not valid linewatch messages (reported, skipped)
    headers: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = ""  # "count", "timeout" or "interrupted"


def format_verdict(header: dict[str, Any]) -> str:
    return (
        f"seq={header['seq']} source={header['source']} frame={header['frame']} verdict={header['verdict']}"
        f" score={header['score']:.3f} raw={header['raw_score']:.4g} regions={len(header['regions'])}"
        f" path={header.get('path')}"
    )


def save_overlay(directory: Path, header: dict[str, Any], heatmap: bytes, frame_jpeg: bytes | None) -> Path:
    """Heatmap over the frame when it was sent, else the colour-mapped heatmap; region boxes drawn."""
    level = decode_heatmap(heatmap, header["heatmap"])
    image = header["image"]
    size = (int(image["height"]), int(image["width"]))
    frame = None
    if frame_jpeg is not None:
        try:
            frame = decode_image(frame_jpeg, "frame", max_pixels=size[0] * size[1])
        except DataError:
            frame = None  # a frame that cannot be decoded: show the heatmap alone
    if frame is None:
        rgb = overlay_heatmap(np.zeros((*size, 3), dtype=np.uint8), level, 0.0, 1.0, alpha=1.0)
    else:
        rgb = overlay_heatmap(frame, level, 0.0, 1.0, alpha=0.5)
    sy, sx = rgb.shape[0] / size[0], rgb.shape[1] / size[1]
    for r in header["regions"]:
        top_left = (round(r["x"] * sx), round(r["y"] * sy))
        bottom_right = (round((r["x"] + r["width"]) * sx) - 1, round((r["y"] + r["height"]) * sy) - 1)
        cv2.rectangle(rgb, top_left, bottom_right, _BOX_RGB, 1)
    safe_source = re.sub(r"[^A-Za-z0-9._-]", "_", str(header["source"]))[:100]
    out = directory / f"{safe_source}_{int(header['frame']):06d}.png"
    if not cv2.imwrite(str(out), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write overlay {out}")
    return out


class Listener:
    """Handles received messages one at a time: validates, tracks sequence gaps, prints, saves overlays.

    Nothing a publisher sends can stop it: a message that is not a valid linewatch message is reported
    as `bad message: ...` and counted.
    """

    def __init__(self, topic: str = VERDICT_PREFIX, save_overlays: str | Path | None = None,
                 echo: Callable[[str], None] = print, keep_headers: bool = True) -> None:
        self.result = ListenResult()
        self.echo = echo
        self.keep_headers = keep_headers
        self.overlay_dir = Path(save_overlays) if save_overlays is not None else None
        if self.overlay_dir is not None:
            self.overlay_dir.mkdir(parents=True, exist_ok=True)
        self.check_gaps = VERDICT_PREFIX.startswith(topic)
        if not self.check_gaps:
            echo(f"note: topic {topic!r} selects a subset of sources; sequence gaps are not checked")
        self._expected: int | None = None

    def handle(self, parts: list[bytes]) -> None:
        try:
            msg_topic, header, heatmap, frame = parse_message(parts)
        except MessageError as exc:
            self.result.bad += 1
            self.echo(f"bad message: {exc}")
            return
        if msg_topic.startswith(STATUS_PREFIX):
            self.echo(f"status {msg_topic[len(STATUS_PREFIX) :]}: {header}")
            return
        self._track(header["seq"])
        self.result.received += 1
        if self.keep_headers:
            self.result.headers.append(header)
        self.echo(format_verdict(header))
        if self.overlay_dir is not None and heatmap is not None:
            try:
                save_overlay(self.overlay_dir, header, heatmap, frame)
            except (OSError, ValueError) as exc:
                self.echo(f"overlay not saved: {exc}")

    def _track(self, seq: int) -> None:
        expected = self._expected
        if self.check_gaps and expected is not None and seq != expected:
            if seq > expected:
                self.result.gaps += 1
                self.result.lost += seq - expected
                self.echo(f"gap: expected seq {expected}, got {seq} ({seq - expected} lost)")
            else:
                self.echo(f"seq went back from {expected} to {seq} (publisher restarted?)")
        self._expected = seq + 1


def listen(
    connect: str = DEFAULT_ADDRESS,
    topic: str = VERDICT_PREFIX,
    count: int | None = None,
    timeout_s: float | None = None,
    save_overlays: str | Path | None = None,
    echo: Callable[[str], None] = print,
    keep_headers: bool = True,
    context: zmq.Context | None = None,
) -> ListenResult:
    """Receive until ``count`` verdicts, ``timeout_s`` of silence, or Ctrl-C (None = no limit)."""
    listener = Listener(topic, save_overlays, echo, keep_headers)
    result = listener.result
    sock = (context or zmq.Context.instance()).socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, RCVHWM)
    try:
        try:
            sock.connect(connect)
        except zmq.ZMQError as exc:
            raise ConfigError(f"cannot connect to {connect!r}: {exc}") from exc
        sock.setsockopt_string(zmq.SUBSCRIBE, topic)
        last_message = time.monotonic()
        while count is None or result.received < count:
            idle = time.monotonic() - last_message
            if timeout_s is not None and idle >= timeout_s:
                result.stopped = "timeout"
                break
            wait_s = _POLL_SLICE_S if timeout_s is None else min(_POLL_SLICE_S, timeout_s - idle)
            if not sock.poll(max(1, int(wait_s * 1000)), zmq.POLLIN):
                continue
            last_message = time.monotonic()
            listener.handle(sock.recv_multipart(zmq.NOBLOCK))
        else:
            result.stopped = "count"
    except KeyboardInterrupt:
        result.stopped = "interrupted"
    finally:
        sock.close(linger=0)
    return result


@click.command()
@click.option("--connect", default=DEFAULT_ADDRESS, show_default=True, help="Publisher address.")
@click.option("--topic", default=VERDICT_PREFIX, show_default=True, help="Topic prefix to subscribe to.")
@click.option("--save-overlays", type=click.Path(file_okay=False), help="Write <source>_<frame>.png here.")
@click.option("--count", type=click.IntRange(min=1), help="Exit after this many verdicts.")
@click.option("--timeout", type=click.FloatRange(min=0.0), help="Exit after this many seconds of silence.")
@friendly_errors
def main(
    connect: str, topic: str, save_overlays: str | None, count: int | None, timeout: float | None
) -> None:
    """Print verdicts published by a linewatch runtime; exit 1 if --count was not reached."""
    result = listen(connect, topic, count, timeout, save_overlays, echo=click.echo, keep_headers=False)
    click.echo(f"received {result.received} verdicts, {result.gaps} gaps, {result.lost} lost, "
               f"{result.bad} bad messages ({result.stopped})")
    if count is not None and result.received < count and result.stopped == "timeout":
        raise SystemExit(1)
