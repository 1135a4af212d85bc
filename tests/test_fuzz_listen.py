"""Fuzzing the subscribers: random ZeroMQ multipart messages over a real socket never crash `inspect-listen`
or the dashboard.

Each example travels PUB -> SUB over loopback TCP and is handed to the listener's (or the dashboard's)
receive path; another test runs the real `inspect-listen` process against a burst of hostile messages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq
from hostile_images import png_bomb
from hypothesis import given, settings
from hypothesis import strategies as st

from linewatch.limits import MAX_PIXELS_ENV
from linewatch.metrics.calibrate import ScoreNormalizer
from linewatch.runtime.dashboard import views
from linewatch.runtime.dashboard.state import DashboardState
from linewatch.runtime.listen import Listener
from linewatch.runtime.messages import build_header, encode_json
from linewatch.runtime.postprocess import encode_frame_jpeg, encode_heatmap, find_regions

NORM = ScoreNormalizer(threshold=1.0, low=0.0, high=4.0)
FUZZ_PIXEL_LIMIT = 1_000_000  # keeps overlays of fuzzed sizes small; the limit itself is part of what is fuzzed


def valid_verdict(seq: int, source: str = "cam1") -> list[bytes]:
    amap = np.zeros((16, 16), np.float32)
    amap[3:7, 4:9] = 2.0
    heatmap, meta = encode_heatmap(amap, NORM)
    header = build_header(seq=seq, source=source, frame=seq, path=None, t_capture=time.time(), t_publish=time.time(),
                          raw_score=2.0, normalizer=NORM, model="m", latency_ms={"total": 1.0}, heatmap_meta=meta,
                          regions=find_regions(amap, NORM.threshold, (40, 50), NORM), frame_shape=(40, 50))
    frame = encode_frame_jpeg(np.full((40, 50, 3), 90, np.uint8))
    return [f"verdict.{source}".encode(), encode_json(header), heatmap, frame]


@pytest.fixture(scope="module")
def wire() -> Iterator[tuple[zmq.Socket, zmq.Socket]]:
    """A connected PUB/SUB pair on loopback (the SUB takes every topic), under a small pixel limit."""
    previous = os.environ.get(MAX_PIXELS_ENV)
    os.environ[MAX_PIXELS_ENV] = str(FUZZ_PIXEL_LIMIT)
    ctx = zmq.Context.instance()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    for sock in (pub, sub):
        sock.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    sub.connect(pub.getsockopt_string(zmq.LAST_ENDPOINT))
    sub.subscribe(b"")
    deadline = time.monotonic() + 10
    while not sub.poll(50):  # the slow-joiner handshake: probe until the subscription has arrived
        assert time.monotonic() < deadline
        pub.send(b"probe")
    while sub.poll(50):
        sub.recv_multipart()
    yield pub, sub
    pub.close()
    sub.close()
    if previous is None:
        os.environ.pop(MAX_PIXELS_ENV, None)
    else:
        os.environ[MAX_PIXELS_ENV] = previous


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                            max_size=3), max_leaves=8)
_keys = st.sampled_from(["seq", "source", "frame", "verdict", "score", "raw_score", "threshold", "path", "image",
                         "heatmap", "regions", "schema", "extra"])
_image_bytes = st.one_of(st.binary(max_size=64), st.just(png_bomb(3000)), st.just(valid_verdict(0)[2]))


@st.composite
def messages(draw: st.DrawFn) -> list[bytes]:
    """Mostly near-valid verdicts with one or two fields replaced, dropped or resized; sometimes pure noise."""
    parts = valid_verdict(draw(st.integers(0, 5)))
    if draw(st.integers(0, 19)) == 0:
        return draw(st.lists(st.binary(max_size=32), min_size=1, max_size=5))
    header = json.loads(parts[1])
    for _ in range(draw(st.integers(1, 2))):
        key = draw(_keys)
        if draw(st.integers(0, 2)) == 0:
            header.pop(key, None)
        elif key in ("image", "heatmap"):
            side = st.integers(-2, 5000)
            header[key] = {**header.get(key, {}), "width": draw(side), "height": draw(side)}
        else:
            header[key] = draw(_json)
    parts[1] = json.dumps(header, allow_nan=True).encode()
    if draw(st.booleans()):
        parts[draw(st.sampled_from([2, 3]))] = draw(_image_bytes)
    if draw(st.integers(0, 7)) == 0:
        parts[0] = draw(st.sampled_from([b"verdict.", b"status.x", b"verdict.cam2", b"\xff\xfe"]))
    if draw(st.integers(0, 7)) == 0:
        parts = parts[: draw(st.integers(1, 3))] if draw(st.booleans()) else [*parts, b"extra"]
    return parts


@settings(max_examples=200, deadline=5000)
@given(messages())
def test_fuzz_listener_over_a_real_socket_reports_bad_messages(wire: tuple[zmq.Socket, zmq.Socket],
                                                               tmp_path_factory: pytest.TempPathFactory,
                                                               parts: list[bytes]) -> None:
    pub, sub = wire
    pub.send_multipart(parts)
    assert sub.poll(5000), "the message did not arrive"
    lines: list[str] = []
    listener = Listener(save_overlays=tmp_path_factory.getbasetemp() / "fuzz-overlays", echo=lines.append)
    listener.handle(sub.recv_multipart())
    result = listener.result
    assert result.received + result.bad + sum(line.startswith("status ") for line in lines) == 1
    if result.bad:
        assert lines == [lines[0]] and lines[0].startswith("bad message: ")


@settings(max_examples=200, deadline=5000)
@given(messages())
def test_fuzz_dashboard_over_a_real_socket_counts_or_shows_every_message(wire: tuple[zmq.Socket, zmq.Socket],
                                                                         parts: list[bytes]) -> None:
    pub, sub = wire
    pub.send_multipart(parts)
    assert sub.poll(5000), "the message did not arrive"
    state = DashboardState(history=5)
    outcome = state.ingest("tcp://fuzz", sub.recv_multipart())
    assert outcome in ("verdict", "status", "malformed", "invalid")
    assert (sum(state.rejected.values()) == 1) == (outcome in ("malformed", "invalid"))
    page = json.loads(json.dumps(views.update(state, None), allow_nan=False))  # what the browser would get
    assert page["totals"]["frames"] == (outcome == "verdict")


def test_listen_process_survives_hostile_messages_then_counts_valid_ones(tmp_path: Path) -> None:
    bomb = valid_verdict(0)
    bomb[2] = png_bomb()  # a valid header with a bomb as heatmap: counted, its overlay refused
    huge = json.loads(bomb[1])
    huge["image"] = {"width": 30000, "height": 30000}
    hostile = [[b"verdict.cam1"], [b"verdict.cam1", b"\xff\xfe"], [b"verdict.cam1", b"[" * 100_000],
               [b"verdict.cam1", b'{"seq": 1' + b"0" * 5000 + b"}"], [b"verdict.x", b"{}"],
               [bomb[0], json.dumps(huge).encode(), bomb[2]]]
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 1000)
    pub.bind("tcp://127.0.0.1:*")
    command = [sys.executable, "-c", "from linewatch.runtime.listen import main; main()", "--connect",
               pub.getsockopt_string(zmq.LAST_ENDPOINT), "--count", "3", "--timeout", "20", "--save-overlays",
               str(tmp_path / "overlays")]
    listener = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert pub.poll(30_000), "inspect-listen never subscribed"
        assert pub.recv() == b"\x01verdict."
        for parts in [*hostile, bomb, valid_verdict(1), valid_verdict(2)]:
            pub.send_multipart(parts)
        stdout, stderr = listener.communicate(timeout=30)
    finally:
        if listener.poll() is None:
            listener.kill()
        pub.close()
    assert listener.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert stdout.count("bad message: ") == len(hostile) and stdout.count("overlay not saved: ") == 1
    assert f"received 3 verdicts, 0 gaps, 0 lost, {len(hostile)} bad messages (count)" in stdout
    assert sorted(p.name for p in (tmp_path / "overlays").iterdir()) == ["cam1_000001.png", "cam1_000002.png"]
