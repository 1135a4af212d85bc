from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq
from click.testing import CliRunner

from linewatch.metrics.calibrate import ScoreNormalizer
from linewatch.overlay import overlay_heatmap
from linewatch.runtime.listen import listen, main
from linewatch.runtime.messages import build_header, encode_json
from linewatch.runtime.postprocess import encode_frame_jpeg, encode_heatmap, find_regions
from linewatch.runtime.publisher import Publisher

NORM = ScoreNormalizer(threshold=1.0, low=0.0, high=4.0)
FRAME_SHAPE = (60, 80)


def _verdict(index: int, seq: int | None = None) -> tuple[dict, bytes, bytes]:
    amap = np.zeros((16, 16), dtype=np.float32)
    amap[2:6, 3:9] = 0.5 + index
    heatmap, meta = encode_heatmap(amap, NORM)
    header = build_header(
        seq=seq,
        source="cam/0",
        frame=index,
        path=None,
        t_capture=time.time(),
        t_publish=time.time() if seq is not None else None,
        raw_score=float(amap.max()),
        normalizer=NORM,
        model="test-model",
        latency_ms={"infer": 1.0},
        heatmap_meta=meta,
        regions=find_regions(amap, NORM.threshold, FRAME_SHAPE, NORM),
        frame_shape=FRAME_SHAPE,
    )
    image = np.full((*FRAME_SHAPE, 3), 90, dtype=np.uint8)
    return header, heatmap, encode_frame_jpeg(image)


def _in_thread(target: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported by the test after join
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def _publish_when_subscribed(pub: Publisher, n: int) -> Callable[[], None]:
    def run() -> None:
        assert pub.wait_subscribers(1, timeout_s=5.0) == 1
        pub.publish_status({"fps": 1.0})
        for i in range(n):
            header, heatmap, jpeg = _verdict(i)
            pub.publish_verdict(header, heatmap, jpeg)

    return run


@pytest.mark.parametrize("send_frames", [False, True])
def test_listen_counts_and_saves_overlays(tmp_path: Path, send_frames: bool) -> None:
    lines: list[str] = []
    with Publisher("tcp://127.0.0.1:*", send_frames=send_frames) as pub:
        thread, errors = _in_thread(_publish_when_subscribed(pub, 3))
        result = listen(pub.endpoint, count=3, timeout_s=5.0, save_overlays=tmp_path, echo=lines.append)
        thread.join(timeout=5.0)
    assert not errors and not thread.is_alive()
    assert (result.received, result.gaps, result.lost, result.stopped) == (3, 0, 0, "count")
    assert [h["seq"] for h in result.headers] == [0, 1, 2]
    assert sum(line.startswith("seq=") for line in lines) == 3
    assert "regions=1" in lines[-1] and "verdict=defect" in lines[-1]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["cam_0_000000.png", "cam_0_000001.png", "cam_0_000002.png"]
    overlay = cv2.cvtColor(cv2.imread(str(tmp_path / "cam_0_000002.png")), cv2.COLOR_BGR2RGB)
    assert overlay.shape == (*FRAME_SHAPE, 3)
    base = np.full((*FRAME_SHAPE, 3), 90 if send_frames else 0, dtype=np.uint8)
    level = np.full(FRAME_SHAPE, NORM.normalize(0.0), dtype=np.float32)  # score of the blob-free corner
    expected = overlay_heatmap(base, level, 0.0, 1.0, alpha=0.5 if send_frames else 1.0)
    np.testing.assert_allclose(overlay[0, 0], expected[0, 0], atol=4)


def test_listen_reports_sequence_gaps() -> None:
    raw = zmq.Context.instance().socket(zmq.XPUB)  # a raw publisher; XPUB to see the listener join
    raw.setsockopt(zmq.LINGER, 0)
    raw.setsockopt(zmq.RCVTIMEO, 5000)
    raw.bind("tcp://127.0.0.1:*")
    endpoint = raw.getsockopt_string(zmq.LAST_ENDPOINT)

    def send_with_holes() -> None:
        assert raw.recv()[:1] == b"\x01"
        for seq in (0, 1, 4, 5, 9):
            header, heatmap, _ = _verdict(seq, seq=seq)
            raw.send_multipart([b"verdict.cam/0", encode_json(header), heatmap])

    lines: list[str] = []
    try:
        thread, errors = _in_thread(send_with_holes)
        result = listen(endpoint, count=5, timeout_s=5.0, echo=lines.append)
        thread.join(timeout=5.0)
    finally:
        raw.close()
    assert not errors
    assert (result.received, result.gaps, result.lost) == (5, 2, 5)
    assert "gap: expected seq 2, got 4 (2 lost)" in lines
    assert "gap: expected seq 6, got 9 (3 lost)" in lines


def test_listen_times_out_without_publisher() -> None:
    start = time.monotonic()
    result = listen("tcp://127.0.0.1:1", count=1, timeout_s=0.3, echo=lambda _: None)
    assert result.received == 0 and result.stopped == "timeout"
    assert time.monotonic() - start < 2.0


def test_cli_with_count(tmp_path: Path) -> None:
    with Publisher("tcp://127.0.0.1:*") as pub:
        thread, errors = _in_thread(_publish_when_subscribed(pub, 2))
        args = ["--connect", pub.endpoint, "--count", "2", "--timeout", "5", "--save-overlays", str(tmp_path)]
        outcome = CliRunner().invoke(main, args)
        thread.join(timeout=5.0)
    assert not errors
    assert outcome.exit_code == 0, outcome.output
    assert outcome.output.count("seq=") == 2
    assert "received 2 verdicts, 0 gaps, 0 lost, 0 bad messages (count)" in outcome.output
    assert len(list(tmp_path.glob("*.png"))) == 2


def test_cli_fails_when_count_not_reached() -> None:
    outcome = CliRunner().invoke(main, ["--connect", "tcp://127.0.0.1:1", "--count", "2", "--timeout", "0.2"])
    assert outcome.exit_code == 1
    assert "received 0 verdicts" in outcome.output
