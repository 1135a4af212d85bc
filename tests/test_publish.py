from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from linewatch.metrics.calibrate import ScoreNormalizer
from linewatch.runtime.journal import Journal, read_journal
from linewatch.runtime.messages import STATUS_SCHEMA, VERDICT_SCHEMA, build_header, parse_message
from linewatch.runtime.postprocess import encode_frame_jpeg, encode_heatmap, find_regions
from linewatch.runtime.publisher import Publisher

NORM = ScoreNormalizer(threshold=1.0, low=0.0, high=4.0)
RECV_TIMEOUT_MS = 3000


@pytest.fixture
def ctx() -> zmq.Context:
    return zmq.Context.instance()


@pytest.fixture
def publisher() -> Iterator[Publisher]:
    pub = Publisher("tcp://127.0.0.1:*", runtime_name="line1")
    yield pub
    pub.close()


def _subscriber(ctx: zmq.Context, endpoint: str, topic: bytes = b"") -> zmq.Socket:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, RECV_TIMEOUT_MS)
    sock.connect(endpoint)
    sock.setsockopt(zmq.SUBSCRIBE, topic)
    return sock


def _verdict(index: int, source: str = "cam0") -> tuple[dict, bytes, np.ndarray]:
    amap = np.zeros((32, 32), dtype=np.float32)
    amap[4:8, 4:8] = 0.5 + index
    frame_shape = (64, 96)
    heatmap, meta = encode_heatmap(amap, NORM)
    header = build_header(
        seq=None,
        source=source,
        frame=index,
        path=f"/data/{index}.png",
        t_capture=time.time(),
        t_publish=None,
        raw_score=float(amap.max()),
        normalizer=NORM,
        model="test-model",
        latency_ms={"infer": 1.0},
        heatmap_meta=meta,
        regions=find_regions(amap, NORM.threshold, frame_shape, NORM),
        frame_shape=frame_shape,
    )
    image = np.full((*frame_shape, 3), 40 * index % 255, dtype=np.uint8)
    return header, heatmap, image


def test_endpoint_is_the_bound_address(publisher: Publisher) -> None:
    assert publisher.endpoint.startswith("tcp://127.0.0.1:")
    assert not publisher.endpoint.endswith(":*")
    with pytest.raises(ValueError, match="cannot bind"):
        Publisher(publisher.endpoint)


def test_wait_subscribers_times_out_with_none(publisher: Publisher) -> None:
    start = time.monotonic()
    assert publisher.wait_subscribers(1, timeout_s=0.3) == 0
    assert 0.25 <= time.monotonic() - start < 1.5
    start = time.monotonic()
    assert publisher.wait_subscribers(1, timeout_s=0.0) == 0
    assert time.monotonic() - start < 0.5


def test_wait_subscribers_returns_when_one_subscribes(publisher: Publisher, ctx: zmq.Context) -> None:
    status_only = _subscriber(ctx, publisher.endpoint, b"status.")
    assert publisher.wait_subscribers(1, timeout_s=0.3) == 0  # status listeners do not hold frames
    sub = _subscriber(ctx, publisher.endpoint, b"verdict.")
    try:
        start = time.monotonic()
        assert publisher.wait_subscribers(1, timeout_s=5.0) == 1
        assert time.monotonic() - start < 2.0
        assert publisher.wait_subscribers(1, timeout_s=0.0) == 1  # earlier subscriptions still count
    finally:
        sub.close()
        status_only.close()


def test_verdicts_and_status_arrive_in_sequence(publisher: Publisher, ctx: zmq.Context) -> None:
    sub = _subscriber(ctx, publisher.endpoint)
    try:
        assert publisher.wait_subscribers(1, timeout_s=5.0) == 1
        n = 5
        published = []
        for i in range(n):
            header, heatmap, image = _verdict(i, source="cam0" if i % 2 else "cam1")
            published.append(publisher.publish_verdict(header, heatmap, encode_frame_jpeg(image)))
        status = publisher.publish_status({"fps": 12.5, "queues": {"decode": 1}, "drops": 0, "errors": 0})
        received = []
        for _ in range(n):
            topic, header, heatmap, frame = parse_message(sub.recv_multipart())
            assert topic == f"verdict.{header['source']}" and heatmap and frame is None  # send_frames off
            received.append(header)
        topic, got_status, _, _ = parse_message(sub.recv_multipart())
    finally:
        sub.close()
    assert [h["seq"] for h in received] == list(range(n))
    assert received == published
    for h in received:
        assert h["schema"] == VERDICT_SCHEMA and h["t_publish"] >= h["t_capture"]
        assert h["verdict"] == ("defect" if h["raw_score"] >= 1.0 else "ok")
    assert received[0]["verdict"] == "ok" and received[1]["verdict"] == "defect"
    assert received[1]["regions"] and received[1]["regions"][0]["width"] == 12  # 4 map px * 96/32
    assert topic == "status.line1" and got_status == status
    assert got_status["schema"] == STATUS_SCHEMA and got_status["runtime"] == "line1"
    assert got_status["published"] == n and got_status["fps"] == 12.5


def test_send_frames_adds_a_jpeg_part(ctx: zmq.Context) -> None:
    with Publisher("tcp://127.0.0.1:*", send_frames=True) as pub:
        sub = _subscriber(ctx, pub.endpoint, b"verdict.")
        try:
            assert pub.wait_subscribers(1, timeout_s=5.0) == 1
            header, heatmap, image = _verdict(3)
            pub.publish_verdict(header, heatmap, encode_frame_jpeg(image))
            parts = sub.recv_multipart()
        finally:
            sub.close()
    assert len(parts) == 4
    _, header, _, frame = parse_message(parts)
    decoded = cv2.imdecode(np.frombuffer(frame, dtype=np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (header["image"]["height"], header["image"]["width"], 3)


def test_journal_is_written_before_send(publisher: Publisher, ctx: zmq.Context, tmp_path: Path) -> None:
    path = tmp_path / "journal" / "verdicts.jsonl"
    sub = _subscriber(ctx, publisher.endpoint, b"verdict.")
    received = []
    try:
        assert publisher.wait_subscribers(1, timeout_s=5.0) == 1
        with Journal(path) as journal:
            for i in range(4):
                header, heatmap, _ = _verdict(i)
                publisher.publish_verdict(header, heatmap, journal=journal)
                _, got, _, _ = parse_message(sub.recv_multipart())
                assert read_journal(path)[-1] == got  # already on disk when the subscriber sees it
                received.append(got)
    finally:
        sub.close()
    assert read_journal(path) == received
    assert [h["seq"] for h in received] == [0, 1, 2, 3]


def test_next_header_then_send(publisher: Publisher, ctx: zmq.Context) -> None:
    header, heatmap, _ = _verdict(0)
    with pytest.raises(ValueError, match="next_header"):
        publisher.send(header, heatmap)
    sub = _subscriber(ctx, publisher.endpoint, b"verdict.")
    try:
        assert publisher.wait_subscribers(1, timeout_s=5.0) == 1
        stamped = publisher.next_header(header)
        assert stamped is header and header["seq"] == 0 and isinstance(header["t_publish"], float)
        publisher.send(header, heatmap)
        assert parse_message(sub.recv_multipart())[1] == header
    finally:
        sub.close()
    assert publisher.published == 1


def test_journal_survives_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal(path, fsync=True) as journal:
        journal.write({"seq": 0})
    with path.open("ab") as fh:
        fh.write(b'{"seq": 1, "sour')  # crash mid-write
    assert read_journal(path) == [{"seq": 0}]
    with Journal(path) as journal:
        assert journal.next_seq == 1  # the torn line was never published: its seq is free again
        journal.write({"seq": 1})
    assert path.read_bytes() == b'{"seq":0}\n{"seq":1}\n'  # the torn bytes were cut off, not kept


def test_journal_continues_seq_from_its_last_whole_line(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    assert Journal(path).next_seq == 0
    path.write_bytes(b'{"seq":7}\n' + b'{"seq":8,"pad":"' + b"x" * 200_000 + b'"}\nnot json\n')
    assert Journal(path).next_seq == 9  # found across more than one read chunk, skipping a line that is not JSON


@pytest.mark.parametrize("on_error", ["stop", "continue"])
def test_journal_write_failure_leaves_whole_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  on_error: str) -> None:
    import errno
    import os

    import linewatch.runtime.journal as journal_module
    from linewatch.runtime.journal import JournalError

    path = tmp_path / "j.jsonl"
    journal = Journal(path, on_error=on_error)
    journal.write({"seq": 0})
    real_write = os.write

    def disk_fills_up(fd: int, data: bytes) -> int:
        real_write(fd, data[:5])  # the disk takes part of the line, then is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_module.os, "write", disk_fills_up)
    if on_error == "stop":
        with pytest.raises(JournalError, match=r"cannot write verdict seq 1 \(the disk is full\).*stopping"):
            journal.write({"seq": 1})
    else:
        assert journal.write({"seq": 1}) is False and journal.stats()["failing"] == "the disk is full"
    assert path.read_bytes() == b'{"seq":0}\n'
    monkeypatch.setattr(journal_module.os, "write", real_write)
    if on_error == "continue":
        assert journal.write({"seq": 2}) is True
        assert journal.stats() == {"path": str(path), "written": 2, "lost": 1, "failing": None}
    journal.close()
