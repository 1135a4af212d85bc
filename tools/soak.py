"""Soak benchmark: `inspect-run` over a looping folder or video for a long time, with a fast and a slow subscriber.

Every --interval seconds it samples the runtime process (resident memory, open file descriptors, threads,
CPU), its status topic (queue depths, fps) and the fast subscriber (latency p50 / p99 from capture to
receipt over the last interval). At the end it stops the runtime with SIGTERM and checks that the verdicts
scored (the summary), journalled (journal lines) and received by the fast subscriber are the same.
Prints the samples and a result table, and writes JSON (bench-out/soak.json by default).
Run: .venv/bin/python tools/soak.py --bundle runs/b --source ../shared/data/mvtec_ad/bottle/test [--minutes 30]
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import psutil
import zmq

ROOT = Path(__file__).resolve().parents[1]
SLOW_SUBSCRIBER = """
import json, sys, time, zmq
sock = zmq.Context().socket(zmq.SUB)
sock.connect(sys.argv[1])
sock.subscribe(b"verdict.")
received = gaps = lost = 0
expected = None
stop = time.monotonic() + float(sys.argv[3])
while time.monotonic() < stop:
    if not sock.poll(200):
        continue
    seq = json.loads(sock.recv_multipart()[1])["seq"]
    received += 1
    if expected is not None and seq > expected:
        gaps, lost = gaps + 1, lost + seq - expected
    expected = seq + 1
    time.sleep(float(sys.argv[2]))
print(json.dumps({"received": received, "gaps": gaps, "lost": lost}), flush=True)
"""


class FastSubscriber(threading.Thread):
    """Reads every verdict as soon as it arrives; counts, checks seq, keeps receipt latencies per interval."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.sock = zmq.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, 0)  # no limit: this one must lose nothing
        self.sock.connect(endpoint)
        self.sock.subscribe(b"verdict.")
        self.sock.subscribe(b"status.")
        self.received = self.gaps = self.lost = 0
        self.expected: int | None = None
        self.latencies: list[float] = []
        self.status: dict[str, Any] = {}
        self.last_message = time.monotonic()
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.halt.is_set():
            if not self.sock.poll(100):
                continue
            topic, header, *_ = self.sock.recv_multipart()
            now = time.time()
            self.last_message = time.monotonic()
            data = json.loads(header)
            if topic.startswith(b"status."):
                self.status = data
                continue
            with self.lock:
                if self.expected is not None and data["seq"] != self.expected:
                    self.gaps += 1
                    self.lost += data["seq"] - self.expected
                self.expected = data["seq"] + 1
                self.received += 1
                self.latencies.append(1000 * (now - data["t_capture"]))
        self.sock.close(linger=0)

    def take_latencies(self) -> list[float]:
        with self.lock:
            taken, self.latencies = self.latencies, []
        return taken


def _endpoint(log: Path, process: subprocess.Popen, timeout_s: float = 300) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"inspect-run exited early:\n{log.read_text()}")
        found = re.findall(r"publishing on (tcp://\S+)", log.read_text())
        if found:
            return found[0]
        time.sleep(0.2)
    raise SystemExit("inspect-run did not start in time")


def _sample(t0: float, proc: psutil.Process, fast: FastSubscriber) -> dict[str, Any]:
    latencies = fast.take_latencies()
    status = fast.status
    with proc.oneshot():
        row = {"t_s": round(time.monotonic() - t0, 1), "rss_mb": round(proc.memory_info().rss / 2**20, 1),
               "fds": proc.num_fds(), "threads": proc.num_threads(), "cpu_percent": proc.cpu_percent()}
    row.update({
        "received": fast.received, "fps": status.get("fps"), "queues": status.get("queues", {}),
        "latency_p50_ms": round(float(np.percentile(latencies, 50)), 1) if latencies else None,
        "latency_p99_ms": round(float(np.percentile(latencies, 99)), 1) if latencies else None,
    })
    return row


def _drift(samples: list[dict[str, Any]], key: str, window: int) -> dict[str, float | None]:
    """Median of `key` over the first and the last `window` samples after warm-up."""
    values = [s[key] for s in samples if s[key] is not None]
    if len(values) < 2:
        return {"first": None, "last": None}
    window = max(1, min(window, len(values) // 2))
    return {"first": float(np.median(values[:window])), "last": float(np.median(values[-window:]))}


def _slope_per_hour(samples: list[dict[str, Any]], key: str) -> float:
    t = np.array([s["t_s"] for s in samples]) / 3600
    return float(np.polyfit(t, [s[key] for s in samples], 1)[0]) if len(samples) > 2 else 0.0


@click.command()
@click.option("--bundle", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--source", required=True, help="Folder or video, looped (inspect-run --loop).")
@click.option("--minutes", type=click.FloatRange(min=0.1), default=30.0, show_default=True)
@click.option("--interval", type=click.FloatRange(min=1), default=10.0, show_default=True, help="Seconds per sample.")
@click.option("--warmup", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Seconds left out of growth and drift figures (model load, caches, allocator warm-up).")
@click.option("--slow-delay", type=click.FloatRange(min=0), default=0.2, show_default=True,
              help="Seconds the slow subscriber sleeps per verdict.")
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "bench-out" / "soak.json", show_default=True)
@click.argument("run_args", nargs=-1)
def main(bundle: Path, source: str, minutes: float, interval: float, warmup: float, slow_delay: float, out: Path,
         run_args: tuple[str, ...]) -> None:
    """Soak the runtime; RUN_ARGS after `--` go to inspect-run (e.g. -- --batch 4 --engine onnxruntime)."""
    work = out.parent / out.stem
    work.mkdir(parents=True, exist_ok=True)
    journal, summary_file, log = work / "journal.jsonl", work / "summary.json", work / "runtime.log"
    journal.unlink(missing_ok=True)
    command = [str(Path(sys.executable).parent / "inspect-run"), "--bundle", str(bundle), "--source", source,
               "--loop", "--journal", str(journal), "--summary", str(summary_file), "--wait-subscribers", "2",
               "--wait-timeout", "120", "--publish", "tcp://127.0.0.1:*", *run_args]
    with log.open("wb") as log_file:
        runtime = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log_file, text=True)
        endpoint = _endpoint(log, runtime)
        fast = FastSubscriber(endpoint)
        fast.start()
        slow = subprocess.Popen([sys.executable, "-c", SLOW_SUBSCRIBER, endpoint, str(slow_delay), str(minutes * 60)],
                                stdout=subprocess.PIPE, text=True)
        proc = psutil.Process(runtime.pid)
        proc.cpu_percent()
        t0 = time.monotonic()
        samples = []
        click.echo(f"soaking {source} for {minutes:g} min, sampling every {interval:g} s (runtime pid {runtime.pid})")
        while time.monotonic() - t0 < minutes * 60:
            time.sleep(interval)
            if runtime.poll() is not None:
                raise SystemExit(f"inspect-run died:\n{log.read_text()[-3000:]}")
            samples.append(_sample(t0, proc, fast))
            s = samples[-1]
            click.echo(f"{s['t_s']:7.0f} s  rss {s['rss_mb']:7.1f} MB  fds {s['fds']:3d}  threads {s['threads']:3d}  "
                       f"cpu {s['cpu_percent']:5.1f}%  fps {s['fps']}  queues {s['queues']}  "
                       f"latency p50 {s['latency_p50_ms']} / p99 {s['latency_p99_ms']} ms  received {s['received']}")
        runtime.send_signal(signal.SIGTERM)
        stdout, _ = runtime.communicate(timeout=120)
    while time.monotonic() - fast.last_message < 3:  # the last verdicts are still on their way
        time.sleep(0.2)
    fast.halt.set()
    fast.join(timeout=10)
    slow_result = json.loads(slow.communicate(timeout=120)[0] or "{}")
    summary = json.loads(summary_file.read_text())
    with journal.open("rb") as fh:
        journalled = sum(1 for _ in fh)
    steady = [s for s in samples if s["t_s"] >= warmup] or samples
    window = max(1, int(300 / interval))  # 5 minutes
    result = {
        "config": {"bundle": str(bundle), "source": source, "minutes": minutes, "interval_s": interval,
                   "warmup_s": warmup, "slow_delay_s": slow_delay, "run_args": list(run_args),
                   "engine": summary.get("engine")},
        "verdicts": {"scored": summary["frames"], "journalled": journalled, "received_fast": fast.received,
                     "fast_gaps": fast.gaps, "fast_lost": fast.lost,
                     "equal": summary["frames"] == journalled == fast.received and fast.lost == 0},
        "slow_subscriber": slow_result,
        "rss_mb": {"after_warmup": steady[0]["rss_mb"], "end": steady[-1]["rss_mb"],
                   "growth": round(steady[-1]["rss_mb"] - steady[0]["rss_mb"], 1),
                   "slope_mb_per_hour": round(_slope_per_hour(steady, "rss_mb"), 2),
                   "max": max(s["rss_mb"] for s in samples)},
        "fds": {"after_warmup": steady[0]["fds"], "end": steady[-1]["fds"], "max": max(s["fds"] for s in samples)},
        "threads": {"after_warmup": steady[0]["threads"], "end": steady[-1]["threads"]},
        "latency_p50_ms": _drift(steady, "latency_p50_ms", window),
        "latency_p99_ms": _drift(steady, "latency_p99_ms", window),
        "fps": summary["fps"], "errors": summary["errors"], "drops": summary["drops"],
        "max_queue": max((max(s["queues"].values(), default=0) for s in samples), default=0),
        "samples": samples,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    v = result["verdicts"]
    click.echo(stdout.strip())
    click.echo(f"\nverdicts scored {v['scored']}, journalled {v['journalled']}, received by the fast subscriber "
               f"{v['received_fast']} ({'equal' if v['equal'] else 'NOT EQUAL'}); slow subscriber: {slow_result}")
    click.echo(f"RSS {result['rss_mb']}; fds {result['fds']}; threads {result['threads']}")
    click.echo(f"latency p50 {result['latency_p50_ms']} ms, p99 {result['latency_p99_ms']} ms (first / last 5 min)")
    click.echo(f"wrote {out}")
    if not v["equal"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
