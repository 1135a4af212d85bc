"""inspect-dashboard against real ZeroMQ publishers on 127.0.0.1: counts, gaps, restarts, bad input, memory."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from dashboard_support import RawPublisher, ThreadedDashboard, wait_until
from prometheus_client.parser import text_string_to_metric_families

from linewatch.runtime.dashboard.feed import VerdictFactory, status_parts
from linewatch.runtime.dashboard.records import MAX_REGIONS
from linewatch.runtime.dashboard.state import RECENT_IMAGES
from linewatch.runtime.messages import encode_json

FACTORY = VerdictFactory()


@pytest.fixture
def publisher() -> Iterator[RawPublisher]:
    with RawPublisher() as pub:
        yield pub


def _runtimes(state: dict) -> dict[tuple[str, str], dict]:
    return {(r["endpoint"], r["label"]): r for r in state["runtimes"]}


def test_gaps_and_restarts_from_seq_and_status(publisher: RawPublisher) -> None:
    with ThreadedDashboard((publisher.endpoint,), stale_after_s=0.5) as dash:
        publisher.wait_subscribed()
        send = publisher.send
        for seq in (0, 1, 2, 3, 4, 7, 8):  # 5 and 6 lost: one gap
            send(FACTORY.parts(seq, "cam", seq, defect=seq in (1, 7), runtime="line"))
        send(status_parts("line", uptime_s=10.0, published=9))
        for seq in (0, 1):  # seq goes back: restart
            send(FACTORY.parts(seq, "cam", 100 + seq, defect=False, runtime="line"))
        send(status_parts("line", uptime_s=0.5, published=2))  # the same restart, confirmed: not counted again
        send(status_parts("line", uptime_s=5.0, published=2))
        send(status_parts("line", uptime_s=1.0, published=0))  # uptime back with no verdict: a second restart
        send(FACTORY.parts(0, "cam", 200, defect=False, runtime="line"))  # continues from `published`: nothing
        state = wait_until(dash.state, lambda s: s["totals"]["frames"] == 10)
        totals = state["totals"]
        assert (totals["gaps"], totals["lost"], totals["restarts"], totals["defects"]) == (1, 2, 2, 2)
        runtime = state["runtimes"][0]
        kinds = [e["kind"] for e in runtime["events"]]
        assert kinds == ["gap", "restart", "restart"], runtime["events"]
        assert "expected seq 5, got 7" in runtime["events"][0]["message"]
        assert runtime["online"] and runtime["engine"] == "synthetic"
        # No status for longer than --stale-after: the runtime shows offline.
        state = wait_until(dash.state, lambda s: not s["runtimes"][0]["online"], timeout_s=5)
        assert state["totals"]["runtimes_online"] == 0


def test_runtimes_with_the_same_source_names_stay_apart() -> None:
    with RawPublisher() as proxy, RawPublisher() as other, ThreadedDashboard((proxy.endpoint, other.endpoint)) as dash:
        proxy.wait_subscribed()
        other.wait_subscribed()
        for i in range(4):  # two named runtimes through one connection (as through inspect-proxy)
            proxy.send(FACTORY.parts(i, "cam1", i, defect=i == 0, runtime="line-A"))
            proxy.send(FACTORY.parts(i, "cam1", i, defect=False, runtime="line-C"))
        for i in range(3):  # an older runtime without the header field: named by its status later
            other.send(FACTORY.parts(i, "cam1", i, defect=True))
        other.send(status_parts("line-A", uptime_s=1.0, published=3))
        other.send(FACTORY.parts(3, "cam1", 3, defect=False))
        state = wait_until(dash.state, lambda s: s["totals"]["frames"] == 12)
    runtimes = _runtimes(state)
    assert set(runtimes) == {(proxy.endpoint, "line-A"), (proxy.endpoint, "line-C"), (other.endpoint, "line-A")}
    assert all(r["restarts"] == 0 and r["gaps"] == 0 for r in runtimes.values())
    counts = {(s["runtime"], s["name"], s["frames"], s["defects"]) for s in state["sources"]}
    assert counts == {("line-A", "cam1", 4, 1), ("line-C", "cam1", 4, 0), ("line-A", "cam1", 4, 3)}
    assert len({s["id"] for s in state["sources"]}) == 3


def test_malformed_and_foreign_messages_are_counted_not_fatal(publisher: RawPublisher) -> None:
    good = FACTORY.parts(0, "cam", 0, defect=True, runtime="line")
    header = json.loads(good[1])
    bad_messages = {
        "malformed": [
            [b"verdict.cam"],
            [b"verdict.cam", b"{not json", b""],
            [b"verdict.cam", b"[1, 2]", b""],
            [b"verdict.cam", b"\xff\xfe", b""],
            [b"verdict.cam", encode_json({**header, "schema": "acme.verdict/1"}), b""],
            [b"verdict.other", good[1], good[2]],  # topic does not match the source
            [b"verdict.cam", encode_json({k: v for k, v in header.items() if k != "score"}), good[2]],
            [b"status.line", b'{"schema": "acme.status/1"}'],
        ],
        "invalid": [
            [b"verdict.cam", encode_json({**header, "seq": "seven"}), good[2]],
            [b"verdict.cam", good[1].replace(b'"score":', b'"score":NaN,"x":'), good[2]],
            [b"verdict.cam", encode_json({**header, "regions": "everywhere"}), good[2]],
            [b"verdict.cam", encode_json({**header, "verdict": "<b>maybe</b>"}), good[2]],
            [b"verdict.cam", encode_json({**header, "source": "cam", "runtime": 5}), good[2]],
            [b"status.line", encode_json({"schema": "linewatch.status/1", "uptime_s": 1.0})],  # no runtime
        ],
    }
    v2 = {**header, "schema": "linewatch.verdict/2", "seq": 2, "defect_type": "scratch", "defect_similarity": 0.91,
          "latency_ms": {"decode": 1.0, "network": 9.5, "total": 20.0},
          "regions": header["regions"] * 40}
    with ThreadedDashboard((publisher.endpoint,)) as dash:
        publisher.wait_subscribed()
        for parts in [*bad_messages["malformed"], *bad_messages["invalid"]]:
            publisher.send(parts)
        publisher.send(good)
        publisher.send([good[0], encode_json({**header, "seq": 1}), b"not a png"])  # usable, but no heatmap
        publisher.send([good[0], encode_json(v2), good[2]])
        state = wait_until(dash.state, lambda s: s["totals"]["frames"] == 3)
        status, _, body = dash.get("/healthz")
    assert state["rejected"]["by_reason"] == {reason: len(msgs) for reason, msgs in bad_messages.items()}
    assert state["totals"]["rejected"] == sum(len(m) for m in bad_messages.values())
    assert {r["reason"] for r in state["rejected"]["recent"]} == {"malformed", "invalid"}
    assert status == 200 and json.loads(body)["status"] == "ok"
    latest = state["sources"][0]["latest"]
    assert latest["schema"] == "linewatch.verdict/2" and latest["defect_type"] == "scratch"
    assert latest["latency_ms"]["network"] == 9.5 and len(latest["regions"]) == MAX_REGIONS
    assert [d["has_heatmap"] for d in state["defects"]] == [True, False, True]


async def _stall_and_read(url: str, done: threading.Event) -> tuple[socket.socket, list[dict]]:
    """Open one WebSocket that never reads (tiny receive buffer) and one that reads until ``done``."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((host, int(port)))
    stalled.sendall(f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    assert stalled.recv(12) == b"HTTP/1.1 101"
    received: list[dict] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url + "ws") as ws:
        deadline = time.monotonic() + 120  # ends when `done` is set; bounded all the same
        while time.monotonic() < deadline and not done.is_set():
            try:
                message = await ws.receive(timeout=0.5)
            except asyncio.TimeoutError:
                continue
            assert message.type == aiohttp.WSMsgType.TEXT, message
            received.append(json.loads(message.data))
    return stalled, received


def test_flood_with_a_stalled_browser_keeps_memory_bounded(publisher: RawPublisher) -> None:
    sent, history = 3000, 100
    # A reading browser shares this process (and its GIL) with the dashboard and the publisher: 3 s lets it
    # keep up on a loaded machine, while the stalled one is still dropped within seconds.
    options = {"history": history, "refresh_s": 0.05, "send_timeout_s": 3.0}
    with ThreadedDashboard((publisher.endpoint,), **options) as dash:
        publisher.wait_subscribed()
        clients: dict = {}
        done = threading.Event()
        reader = threading.Thread(target=lambda: clients.update(result=asyncio.run(_stall_and_read(dash.url, done))))
        reader.start()
        wait_until(dash.state, lambda s: s["server"]["clients"] == 2)
        buffers = []
        for seq in range(sent):  # every verdict a defect with a frame: the largest updates and images
            publisher.send(FACTORY.parts(seq, f"cam{seq % 4}", seq, defect=True, runtime="line", with_frame=True))
            if seq % 500 == 0:
                buffers.append(dash.state()["server"]["max_client_buffer_bytes"])
        state = wait_until(dash.state, lambda s: s["totals"]["frames"] + s["totals"]["lost"] == sent)
        dropped = wait_until(dash.state, lambda s: s["server"]["dropped_clients"] == 1, timeout_s=30)
        time.sleep(0.3)  # a few more updates for the reading browser
        done.set()
        reader.join(timeout=30)
        stalled, received = clients["result"]
        stalled.close()
    assert state["totals"]["lost"] <= sent // 10, "the receive loop fell behind the publisher"
    image_bound = (4 * RECENT_IMAGES + history) * (len(FACTORY.frame) + len(FACTORY.heatmaps["defect"][0]))
    assert 0 < state["server"]["image_bytes"] <= image_bound
    assert max(buffers) < 1_000_000
    assert dropped["server"]["clients"] == 1  # the stalled browser is gone, the reading one stays
    assert received[0]["type"] == "snapshot" and received[-1]["totals"]["frames"] == state["totals"]["frames"]
    assert len(received[-1]["defects"]) <= history


def test_metrics_and_healthz(publisher: RawPublisher) -> None:
    with ThreadedDashboard((publisher.endpoint,)) as dash:
        publisher.wait_subscribed()
        for seq in range(6):
            publisher.send(FACTORY.parts(seq, "cam1" if seq % 2 else "cam2", seq, defect=seq < 2, runtime="line"))
        publisher.send(status_parts("line", uptime_s=3.0, published=6, sources={
            "cam1": {"frames": 3, "drops": 4, "errors": 1, "reopens": 0, "queue": 0, "state": "running"}}))
        publisher.send([b"verdict.cam1", b"nope"])
        wait_until(dash.state, lambda s: s["totals"]["frames"] == 6 and s["totals"]["rejected"] == 1)
        status, headers, body = dash.get("/metrics")
        health_status, _, health = dash.get("/healthz")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body.decode()) for s in family.samples}
    labels = {"runtime": "line", "endpoint": publisher.endpoint}

    def value(name: str, **extra: str) -> float:
        return samples[(name, tuple(sorted({**labels, **extra}.items())))]

    assert value("linewatch_frames_total", source="cam1") == 3 and value("linewatch_frames_total", source="cam2") == 3
    assert value("linewatch_defects_total", source="cam1") == 1 and value("linewatch_defects_total", source="cam2") == 1
    assert value("linewatch_fps", source="cam1") > 0
    assert value("linewatch_latency_seconds_count", source="cam1") == 3
    assert math.isclose(value("linewatch_latency_seconds_sum", source="cam1"), 0.09)
    assert value("linewatch_latency_seconds_bucket", source="cam1", le="0.025") == 0
    assert value("linewatch_latency_seconds_bucket", source="cam1", le="0.05") == 3
    assert value("linewatch_source_drops_total", source="cam1") == 4
    assert value("linewatch_runtime_up") == 1
    assert samples[("linewatch_dashboard_rejected_messages_total", (("reason", "malformed"),))] == 1
    health_json = json.loads(health)
    assert health_status == 200 and health_json["status"] == "ok" and health_json["received"] == 8
    assert (health_json["verdicts"], health_json["rejected"], health_json["runtimes_online"]) == (6, 1, 1)


def test_a_backlog_does_not_starve_the_web_server(publisher: RawPublisher) -> None:
    """A consumer slowed to 4 ms per message makes the backlog last seconds on any machine, so the answer
    can only arrive mid-drain if the receive loop yields to the web server (it did not, before the fix)."""
    sent, per_message_s = 1_000, 0.004
    message = FACTORY.parts(0, "cam", 0, defect=False, runtime="line")
    with ThreadedDashboard((publisher.endpoint,)) as dash:
        ingest = dash.dashboard.state.ingest

        def slow_ingest(endpoint: str, parts: list[bytes]) -> None:
            time.sleep(per_message_s)
            ingest(endpoint, parts)

        dash.dashboard.state.ingest = slow_ingest
        publisher.wait_subscribed()
        for seq in range(sent):  # queued much faster than the dashboard takes them
            publisher.send([message[0], message[1].replace(b'"seq":0,', b'"seq":%d,' % seq, 1), message[2]])
        status, _, body = dash.get("/healthz")
        assert status == 200 and json.loads(body)["received"] < sent  # answered while the backlog is drained
        wait_until(dash.state, lambda s: s["totals"]["frames"] == sent, timeout_s=60)


def test_the_page_ships_in_the_wheel(tmp_path: Path) -> None:
    """A non-editable install must carry the static page (package data), not only the Python modules."""
    root = Path(__file__).resolve().parents[1]
    source = tmp_path / "src"
    shutil.copytree(root / "linewatch", source / "linewatch", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                    "-w", str(tmp_path / "wheel")], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "wheel").glob("linewatch-*.whl")
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if "/dashboard/static/" in name}
    static = root / "linewatch" / "runtime" / "dashboard" / "static"
    assert shipped == {f"linewatch/runtime/dashboard/static/{p.name}" for p in static.iterdir()}
