"""inspect-proxy: three real inspect-run processes publish through one proxy to two subscribers (and a capture)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
from click.testing import CliRunner

from linewatch.data.synthetic import make_synthetic_category
from linewatch.export.cli import main as export_main
from linewatch.runtime.proxy import Proxy
from linewatch.runtime.publisher import Publisher
from linewatch.train.options import resolve_training
from linewatch.train.pipeline import train

RUNTIMES = 3
PROBE_TOPIC = b"verdict.__probe"


def _command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-c", f"from {module} import main; main()", *args]


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A tiny exported bundle and one image folder per line (different images per line)."""
    root = tmp_path_factory.mktemp("proxy")
    data = make_synthetic_category(root / "cat", size=64, n_train=10, n_test_good=3, n_test_defect=3)
    bundle = root / "bundle"
    train(resolve_training(None, {"data": data, "out": bundle, "weights": "none", "image_size": 64}), progress=False)
    assert CliRunner().invoke(export_main, [str(bundle)]).exit_code == 0
    images = sorted((data / "test").rglob("*.png"))
    folders = []
    for line in range(RUNTIMES):
        folder = root / f"line{line}"
        folder.mkdir()
        for image in images[line:]:  # 6, 5, 4 frames: each line's count differs
            shutil.copy(image, folder / f"{image.parent.name}_{image.name}")
        folders.append(folder)
    return bundle, folders


def _start_proxy(capture: bool) -> tuple[subprocess.Popen, dict[str, str]]:
    args = ["--frontend", "tcp://127.0.0.1:*", "--backend", "tcp://127.0.0.1:*"]
    if capture:
        args += ["--capture", "tcp://127.0.0.1:*"]
    proc = subprocess.Popen(_command("linewatch.runtime.proxy", *args), stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    endpoints = dict(re.findall(r"(frontend|backend|capture) (tcp://[\d.]+:\d+)", line))
    assert {"frontend", "backend"} <= set(endpoints), line
    return proc, endpoints


def _subscriber(context: zmq.Context, address: str) -> zmq.Socket:
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(address)
    socket.setsockopt(zmq.SUBSCRIBE, b"verdict.")
    return socket


def _until_probed(context: zmq.Context, frontend: str, subscribers: list[zmq.Socket]) -> None:
    """Publish probes into the proxy until every subscriber got one: the whole path is up, deterministically."""
    probe = context.socket(zmq.PUB)
    probe.setsockopt(zmq.LINGER, 0)
    probe.connect(frontend)
    pending = set(range(len(subscribers)))
    deadline = time.monotonic() + 15
    while pending and time.monotonic() < deadline:
        probe.send_multipart([PROBE_TOPIC, b"{}"])
        for index in list(pending):
            if subscribers[index].poll(50):
                subscribers[index].recv_multipart()
                pending.discard(index)
    probe.close()
    assert not pending, "the proxy did not forward probes to every subscriber"


def _collect(socket: zmq.Socket, expected: int, timeout_s: float) -> list[dict]:
    headers: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while len(headers) < expected and time.monotonic() < deadline:
        if socket.poll(100):
            topic, header, *_ = socket.recv_multipart()
            if topic != PROBE_TOPIC and topic.startswith(b"verdict."):
                headers.append(json.loads(header))
    return headers


def test_three_runtimes_through_the_proxy_reach_both_subscribers_without_gaps(lines: tuple[Path, list[Path]],
                                                                              tmp_path: Path) -> None:
    bundle, folders = lines
    context = zmq.Context()
    proxy, endpoints = _start_proxy(capture=True)
    runtimes: list[subprocess.Popen] = []
    try:
        subscribers = [_subscriber(context, endpoints["backend"]) for _ in range(2)]
        capture = _subscriber(context, endpoints["capture"])
        _until_probed(context, endpoints["frontend"], subscribers)
        for index, folder in enumerate(folders):
            runtimes.append(subprocess.Popen(_command(
                "linewatch.runtime.cli", "--bundle", str(bundle), "--source", f"line{index}={folder}",
                "--publish-connect", endpoints["frontend"], "--wait-subscribers", "1", "--wait-timeout", "30",
                "--engine", "onnxruntime", "--device", "cpu", "--threads", "1", "--name", f"runtime{index}",
                "--summary", str(tmp_path / f"summary{index}.json")), stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
        expected = {f"line{i}": len(list(folder.iterdir())) for i, folder in enumerate(folders)}
        total = sum(expected.values())
        received = [_collect(s, total, 120) for s in subscribers]
        captured = _collect(capture, total, 10)
        for proc in runtimes:
            assert proc.wait(timeout=60) == 0
    finally:
        for proc in runtimes:
            proc.kill() if proc.poll() is None else None
        proxy.send_signal(signal.SIGTERM)
        _, stderr = proxy.communicate(timeout=20)
        context.destroy(linger=0)
    assert proxy.returncode == 0 and "inspect-proxy stopped: frontend_msgs_in" in stderr
    for headers in [*received, captured]:
        assert len(headers) == total
        for source, count in expected.items():
            mine = [h for h in headers if h["source"] == source]
            assert [h["seq"] for h in mine] == list(range(count))  # per runtime: every verdict, gap-free, in order
            assert sorted(h["frame"] for h in mine) == list(range(count))
    for index, source in enumerate(expected):
        summary = json.loads((tmp_path / f"summary{index}.json").read_text())
        assert summary["frames"] == summary["published"] == expected[source]
        assert summary["endpoint"] == endpoints["frontend"]


def test_publisher_connects_to_a_proxy_and_stop_reports_counters() -> None:
    context = zmq.Context()
    proxy = Proxy("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", context=context).start()
    subscriber = _subscriber(context, proxy.endpoints["backend"])
    publisher = Publisher(runtime_name="r", context=context, connect=proxy.endpoints["frontend"])
    try:
        assert publisher.wait_subscribers(1, 10.0) == 1  # the subscription travelled upstream through the proxy
        header = publisher.publish_verdict({"source": "cam"}, b"heat")
        assert subscriber.poll(5000)
        topic, body, heatmap = subscriber.recv_multipart()
        assert topic == b"verdict.cam" and json.loads(body)["seq"] == header["seq"] == 0 and heatmap == b"heat"
    finally:
        publisher.close()
        subscriber.close()
        stats = proxy.stop()
        context.destroy(linger=0)
    assert stats["frontend_msgs_in"] >= 1 and stats["backend_msgs_out"] >= 1


def test_proxy_refuses_an_address_it_cannot_bind() -> None:
    context = zmq.Context()
    try:
        with pytest.raises(ValueError, match="cannot bind the proxy frontend"):
            Proxy("bogus://nowhere", "tcp://127.0.0.1:*", context=context)
    finally:
        context.destroy(linger=0)
