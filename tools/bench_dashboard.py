"""Benchmark `inspect-dashboard`: verdicts/s it keeps up with, and its CPU, while browsers watch.

For each rate a fresh dashboard process subscribes to a publisher in this process that sends
synthetic verdicts in the real wire format (a heatmap of --map-size, optionally a JPEG frame of
--frame-size) from --sources sources; --clients WebSocket clients read every update and, like the
page, fetch the newest verdict's images per update. Rate 0 publishes as fast as it can (capacity).
Reports verdicts/s processed, lost verdicts (seq gaps), the dashboard's CPU (% of one core) and RSS,
and how long after the last verdict the clients showed the final count. Prints a table and writes
bench-out/bench_dashboard.json.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import click
import psutil
import zmq

from linewatch.runtime.dashboard.feed import VerdictFactory

DEFECT_EVERY = 10  # one verdict in ten is a defect


def _start_dashboard(endpoint: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-c", "from linewatch.runtime.dashboard.cli import main; main()",
                                "--connect", endpoint, "--http", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    match = re.search(r"dashboard on (http://\S+/)", line)
    if not match:
        raise RuntimeError(f"dashboard did not start: {line}{process.stderr.read()}")
    return process, match.group(1)


def _health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "healthz", timeout=10) as response:
        return json.loads(response.read())


class Clients:
    """WebSocket readers in a thread of their own, fetching the images each update names (latest wins)."""

    def __init__(self, url: str, count: int, fetch_images: bool) -> None:
        self.url, self.count, self.fetch_images = url, count, fetch_images
        self.updates = self.bytes = self.images = 0
        self.last_frames = [0] * count
        self.final_at: list[float | None] = [None] * count
        self.expect: int | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _client(self, index: int, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(self.url.replace("http", "ws") + "ws", max_msg_size=0) as ws:
            while not self.stop.is_set():
                try:
                    message = await ws.receive(timeout=0.2)
                except asyncio.TimeoutError:
                    continue
                if message.type != aiohttp.WSMsgType.TEXT:
                    return
                update = json.loads(message.data)
                self.updates += 1
                self.bytes += len(message.data)
                self.last_frames[index] = update["totals"]["frames"]
                if self.expect is not None and self.final_at[index] is None and \
                        update["totals"]["frames"] >= self.expect:
                    self.final_at[index] = time.monotonic()
                if self.fetch_images:
                    for source in update["sources"]:
                        latest = source["latest"]
                        for kind, present in (("heatmap", latest["has_heatmap"]), ("frame", latest["has_frame"])):
                            if present:
                                async with session.get(f"{self.url}image/{latest['id']}/{kind}") as response:
                                    self.bytes += len(await response.read())
                                    self.images += 1

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self._client(i, session) for i in range(self.count)))


def run_rate(rate: float, seconds: float, clients: int, sources: int, factory: VerdictFactory, frames: bool,
             fetch_images: bool) -> dict[str, Any]:
    context = zmq.Context()
    pub = context.socket(zmq.XPUB)
    pub.setsockopt(zmq.SNDHWM, 100_000)
    pub.bind("tcp://127.0.0.1:*")
    endpoint = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    dashboard, url = _start_dashboard(endpoint)
    proc = psutil.Process(dashboard.pid)
    readers = Clients(url, clients, fetch_images)
    try:
        pub.recv()  # the dashboard's subscriptions (verdict. and status.)
        pub.recv()
        readers.thread.start()
        while _health(url)["clients"] < clients:
            time.sleep(0.05)
        n = int(rate * seconds) if rate else 20_000
        messages = [factory.parts(0, f"cam{i % sources}", i, i % DEFECT_EVERY == 0, runtime="bench",
                                  with_frame=frames) for i in range(min(n, 200))]
        cpu0, t0 = proc.cpu_times(), time.monotonic()
        for i in range(n):
            if rate:
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            topic, header, *images = messages[i % len(messages)]
            pub.send_multipart([topic, header.replace(b'"seq":0,', b'"seq":%d,' % i, 1), *images])
        t_sent = time.monotonic()
        readers.expect = n
        while True:
            state = _health(url)
            if state["verdicts"] + state["lost"] >= n or time.monotonic() - t_sent > 30:
                break
            time.sleep(0.05)
        t_done = time.monotonic()
        cpu1 = proc.cpu_times()
        wait_end = time.monotonic() + 5
        while any(f is None for f in readers.final_at) and time.monotonic() < wait_end:
            time.sleep(0.02)
        busy = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        wall = t_done - t0
        shown = [f - t_sent for f in readers.final_at if f is not None]
        return {
            "rate_target": rate or "max", "published": n, "processed": state["verdicts"],
            "lost": state["lost"], "wall_s": round(wall, 3), "processed_per_s": round(state["verdicts"] / wall, 1),
            "publish_per_s": round(n / (t_sent - t0), 1), "cpu_percent": round(100 * busy / wall, 1),
            "rss_mb": round(proc.memory_info().rss / 2**20, 1), "clients": clients,
            "client_updates_per_s": round(readers.updates / wall / max(clients, 1), 1),
            "client_kb_per_s": round(readers.bytes / wall / max(clients, 1) / 1024, 1),
            "images_fetched": readers.images,
            "final_count_shown_after_s": round(max(shown), 3) if len(shown) == clients else None,
        }
    finally:
        readers.stop.set()
        readers.thread.join(timeout=5)
        dashboard.terminate()
        dashboard.wait(timeout=10)
        pub.close(linger=0)
        context.term()


@click.command()
@click.option("--rates", default="100,500,0", show_default=True, help="Verdicts/s to publish; 0 = as fast as possible.")
@click.option("--seconds", type=float, default=10.0, show_default=True, help="Publishing time per rate.")
@click.option("--clients", type=int, default=2, show_default=True, help="WebSocket clients watching.")
@click.option("--sources", type=int, default=4, show_default=True)
@click.option("--frames/--no-frames", default=True, show_default=True, help="Send a JPEG frame with each verdict.")
@click.option("--frame-size", type=int, default=900, show_default=True)
@click.option("--map-size", type=int, default=256, show_default=True)
@click.option("--fetch-images/--no-fetch-images", default=True, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-out"), show_default=True)
def main(rates: str, seconds: float, clients: int, sources: int, frames: bool, frame_size: int, map_size: int,
         fetch_images: bool, out: Path) -> None:
    factory = VerdictFactory(map_size=map_size, frame_size=frame_size)
    rows = []
    for rate in (float(r) for r in rates.split(",")):
        row = run_rate(rate, seconds, clients, sources, factory, frames, fetch_images)
        rows.append(row)
        click.echo(json.dumps(row))
    setup = {"clients": clients, "sources": sources, "frames": frames, "frame_bytes": len(factory.frame),
             "heatmap_bytes": len(factory.heatmaps["ok"][0]), "fetch_images": fetch_images, "seconds": seconds,
             "cpus": psutil.cpu_count()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_dashboard.json").write_text(json.dumps({"setup": setup, "rows": rows}, indent=2) + "\n")
    click.echo(f"\nsetup: {setup}")
    click.echo("| target/s | processed/s | lost | dashboard CPU % | RSS MB | updates/s per client | "
               "KB/s per client | final count shown after s |")
    click.echo("|---|---|---|---|---|---|---|---|")
    keys = ("rate_target", "processed_per_s", "lost", "cpu_percent", "rss_mb", "client_updates_per_s",
            "client_kb_per_s", "final_count_shown_after_s")
    for r in rows:
        click.echo("| " + " | ".join(str(r[k]) for k in keys) + " |")
    click.echo(f"wrote {out / 'bench_dashboard.json'}")


if __name__ == "__main__":
    main()
