"""Fan-in benchmark: ZeroMQ through inspect-proxy vs direct, and K runtimes through one proxy (local or Triton).

Part 1, messages (separate sender / proxy / receiver processes on loopback): throughput of 64 KB
messages sent as fast as the sender can, and latency of messages sent at a steady rate (monotonic clock
stamped in the message), direct (PUB bind -> SUB) and through the proxy (PUB connect -> XSUB | XPUB -> SUB).
Part 2, runtimes: K = 1, 2, 4 `inspect-run` processes, each over its own copy of the test folder
(`--data`'s test/), publishing into one proxy, one subscriber behind it: aggregate fps over the whole
run, latency capture -> subscriber (p50 / p99), and sequence gaps per source. `--engines` adds rows for
`triton` (a local Triton server from nvidia-pytriton serving the bundle's ONNX through its Python backend).
Prints tables and writes JSON. Run: .venv/bin/python tools/bench_proxy.py [--ks 1,2,4] [--engines onnxruntime,triton]
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import zmq
from bench_runtime import BOTTLE, ensure_bundle  # sibling script: tools/ is on sys.path when run

from linewatch.runtime.proxy import Proxy

SIZE = 64 * 1024
TOPIC = b"bench"


def _proxy_process(ready: Any, stop: Any, endpoints: dict) -> None:
    proxy = Proxy("tcp://127.0.0.1:*", "tcp://127.0.0.1:*").start()
    endpoints.update(proxy.endpoints)
    ready.set()
    stop.wait()
    proxy.stop()


def _sender(address: str, bind: bool, count: int, interval_s: float, out: Any) -> None:
    sock = zmq.Context.instance().socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, 0)  # unbounded: a burst benchmark must not drop
    sock.bind(address) if bind else sock.connect(address)
    out.put(sock.getsockopt_string(zmq.LAST_ENDPOINT))
    sock.recv()  # the receiver's subscription: the path is up
    payload = bytes(SIZE)
    for _ in range(count):
        sock.send_multipart([TOPIC, time.monotonic_ns().to_bytes(8, "little"), payload])
        if interval_s:
            time.sleep(interval_s)
    sock.close(linger=-1)
    zmq.Context.instance().term()  # blocks until every message is out: a forked child exits without terminating it


def _receiver(address: str, count: int, out: Any) -> None:
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(address)
    sock.setsockopt(zmq.SUBSCRIBE, TOPIC)
    latencies, first = [], None
    while len(latencies) < count and sock.poll(120_000):  # a starved sender on a busy machine is not a loss
        _, stamp, _ = sock.recv_multipart()
        now = time.monotonic_ns()
        first = first or now
        latencies.append((now - int.from_bytes(stamp, "little")) / 1e6)
    out.put({"received": len(latencies), "seconds": (time.monotonic_ns() - (first or 0)) / 1e9,
             "latencies_ms": latencies})
    sock.close(linger=0)


def message_run(through_proxy: bool, count: int, interval_s: float) -> dict[str, Any]:
    """One sender and one receiver process, direct or through a proxy process."""
    ctx = mp.get_context("fork")  # the parent holds no ZeroMQ context yet
    queue = ctx.Queue()
    proxy = None
    if through_proxy:
        manager = ctx.Manager()
        endpoints, ready, stop = manager.dict(), manager.Event(), manager.Event()
        proxy = ctx.Process(target=_proxy_process, args=(ready, stop, endpoints))
        proxy.start()
        ready.wait(30)
        sender = ctx.Process(target=_sender, args=(endpoints["frontend"], False, count, interval_s, queue))
        sender.start()
        queue.get(timeout=30)
        receive_at = endpoints["backend"]
    else:
        sender = ctx.Process(target=_sender, args=("tcp://127.0.0.1:*", True, count, interval_s, queue))
        sender.start()
        receive_at = queue.get(timeout=30)
    receiver = ctx.Process(target=_receiver, args=(receive_at, count, queue))
    receiver.start()
    result = queue.get(timeout=600)
    for proc in (receiver, sender):
        proc.join(30)
    if proxy is not None:
        stop.set()
        proxy.join(30)
    lat = np.array(result["latencies_ms"])
    return {"path": "proxy" if through_proxy else "direct", "messages": result["received"], "sent": count,
            "msgs_per_s": round(result["received"] / max(result["seconds"], 1e-9), 1),
            "latency_ms": {"p50": round(float(np.median(lat)), 3), "p99": round(float(np.percentile(lat, 99)), 3)}}


def messages(count: int, latency_count: int) -> list[dict[str, Any]]:
    rows = []
    for through_proxy in (False, True):
        burst = message_run(through_proxy, count, 0.0)
        steady = message_run(through_proxy, latency_count, 0.002)
        rows.append({**burst, "latency_ms": steady["latency_ms"], "latency_messages": steady["messages"]})
    return rows


def runtimes(bundle: Path, data: Path, k: int, engine: str, threads: int, work: Path,
             triton_url: str | None) -> dict[str, Any]:
    """K inspect-run processes, one folder source each, through one proxy to one subscriber."""
    context = zmq.Context()
    proxy = Proxy("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", context=context).start()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 100_000)
    sub.connect(proxy.endpoints["backend"])
    sub.setsockopt(zmq.SUBSCRIBE, b"verdict.")
    frames = len([p for p in (data / "test").rglob("*") if p.is_file()])
    procs = []
    for i in range(k):
        command = [sys.executable, "-c", "from linewatch.runtime.cli import main; main()", "--bundle", str(bundle),
                   "--source", f"line{i}={data / 'test'}", "--publish-connect", proxy.endpoints["frontend"],
                   "--wait-subscribers", "1", "--engine", engine, "--device", "cpu", "--threads", str(threads),
                   "--name", f"runtime{i}", "--summary", str(work / f"summary-{engine}-{k}-{i}.json")]
        if triton_url:
            command += ["--triton-url", triton_url]
        with open(work / f"run-{engine}-{k}-{i}.log", "w") as log:  # the child keeps its own copy of the descriptor
            procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log))
    seen: dict[str, list[int]] = {}
    latencies, first, last = [], None, None
    while sum(map(len, seen.values())) < k * frames and sub.poll(60_000):
        _, header, *_ = sub.recv_multipart()
        now = time.time()
        h = json.loads(header)
        seen.setdefault(h["source"], []).append(h["seq"])
        latencies.append(1000 * (now - h["t_capture"]))
        first, last = first or now, now
    for proc in procs:
        proc.wait(120)
    proxy.stop()
    context.destroy(linger=0)
    gaps = sum(sum(1 for a, b in zip(s, s[1:], strict=False) if b != a + 1) + (s[0] != 0) for s in seen.values() if s)
    received = sum(map(len, seen.values()))
    lat = np.array(latencies)
    return {"engine": engine, "k": k, "frames": received, "expected": k * frames, "gaps": gaps,
            "fps": round(received / max((last or 0) - (first or 0), 1e-9), 2),
            "latency_ms": {"p50": round(float(np.median(lat)), 1), "p99": round(float(np.percentile(lat, 99)), 1)},
            "exit_codes": [p.returncode for p in procs]}


@click.command()
@click.option("--bundle", type=click.Path(path_type=Path), default=Path("bench-out/bundle-patchcore-bottle"),
              show_default=True)
@click.option("--data", type=click.Path(path_type=Path), default=BOTTLE, show_default=True)
@click.option("--ks", default="1,2,4", show_default=True, help="Runtime processes per run ('' = messages only).")
@click.option("--engines", default="onnxruntime,triton", show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="--threads of each runtime.")
@click.option("--messages", "count", type=int, default=20_000, show_default=True)
@click.option("--latency-messages", type=int, default=2_000, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-out/proxy.json"), show_default=True)
def main(bundle: Path, data: Path, ks: str, engines: str, threads: int, count: int, latency_messages: int,
         out: Path) -> None:
    logging.basicConfig(level=logging.WARNING)
    load = {"start": os.getloadavg()}
    rows = messages(count, latency_messages)
    print(f"{'path':<8} {'msgs/s (64 KB)':>15} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(f"{r['path']:<8} {r['msgs_per_s']:>15.0f} {r['latency_ms']['p50']:>8.3f} {r['latency_ms']['p99']:>8.3f}")
    results: list[dict[str, Any]] = []
    if data.is_dir() and ks:
        ensure_bundle(bundle, data)
        work = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
        for engine in engines.split(","):
            server = None
            if engine == "triton":
                from linewatch.engines.local_triton import LocalTriton, problem

                if problem():
                    print(f"triton rows skipped: {problem()}")
                    continue
                subprocess.run([sys.executable, "-c", "from linewatch.export.cli import main; main()", str(bundle),
                                "--format", "triton", "--out", str(work / "repo"), "--backend", "python", "--kind",
                                "cpu", "--server-threads", str(threads)], check=True, stdout=subprocess.DEVNULL)
                server = LocalTriton(work / "repo").start()
            try:
                for k in (int(x) for x in ks.split(",")):
                    results.append(runtimes(bundle, data, k, engine, threads, work, server.url if server else None))
            finally:
                if server:
                    server.close()
        shutil.rmtree(work, ignore_errors=True)
        print(f"{'engine':<12} {'K':>2} {'frames':>7} {'fps':>7} {'p50 ms':>8} {'p99 ms':>8} {'gaps':>5}")
        for r in results:
            print(f"{r['engine']:<12} {r['k']:>2} {r['frames']:>4}/{r['expected']:<4} {r['fps']:>5.1f} "
                  f"{r['latency_ms']['p50']:>8.1f} {r['latency_ms']['p99']:>8.1f} {r['gaps']:>5}")
    elif ks:
        print(f"{data} not found: runtime rows skipped (they need MVTec-layout data)")
    load["end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"messages": rows, "runtimes": results, "threads": threads, "bundle": str(bundle),
                               "data": str(data), "loadavg": load}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
