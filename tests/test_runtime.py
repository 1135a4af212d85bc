"""inspect-run end to end on real parts: ONNX in onnxruntime, ZeroMQ on loopback, OpenCV files and videos."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import eval_scores

from linewatch.data.synthetic import make_synthetic_category
from linewatch.export.cli import main as export_main
from linewatch.runtime.cli import main as run_main
from linewatch.runtime.journal import read_journal
from linewatch.runtime.listen import ListenResult, listen
from linewatch.runtime.pipeline import RUNTIME_BLAS_THREADS, RUNTIME_TORCH_SCORER_THREADS, RunOptions, Runtime
from linewatch.runtime.stats import STAGES
from linewatch.train.options import resolve_training
from linewatch.train.pipeline import train

LOOPBACK = "tcp://127.0.0.1:*"


@pytest.fixture(scope="module")
def category(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_category(tmp_path_factory.mktemp("rt") / "cat", size=96, n_train=30, n_test_good=6,
                                   n_test_defect=4)


def _bundle(category: Path, out: Path, model: str) -> Path:
    train(resolve_training(None, {"data": category, "out": out, "model": model, "image_size": 96}),
          progress=False)
    result = CliRunner().invoke(export_main, [str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module", params=["patchcore", "padim"])
def bundle(request: pytest.FixtureRequest, category: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bundle(category, tmp_path_factory.mktemp("bundles") / request.param, request.param)


def run_with_listener(options: RunOptions, expected: int) -> tuple[dict, ListenResult]:
    """Run the runtime to completion while a real SUB socket listens; the runtime waits for it. The listener
    stops at the `expected` verdicts or after 3 s of silence, whichever comes first."""
    runtime = Runtime(options)
    received: dict[str, ListenResult] = {}
    thread = threading.Thread(target=lambda: received.update(
        result=listen(runtime.publisher.endpoint, count=expected, timeout_s=3.0, echo=lambda *_: None)))
    thread.start()
    summary = runtime.run()
    thread.join(timeout=30)
    assert not thread.is_alive()
    return summary, received["result"]


def test_folder_source_publishes_every_frame_matching_eval_scores(bundle: Path, category: Path,
                                                                   tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    options = RunOptions(bundle=bundle, sources=(str(category / "test"),), publish=LOOPBACK, wait_subscribers=1,
                         journal=journal, engine="onnxruntime", device="cpu")
    images = sorted((category / "test").rglob("*.png"))
    summary, result = run_with_listener(options, len(images))
    assert summary["frames"] == len(images) == result.received
    assert result.gaps == 0 and [h["seq"] for h in result.headers] == list(range(len(images)))
    assert read_journal(journal) == result.headers
    assert set(summary["stage_ms"]) == set(STAGES) and summary["drops"] == 0 and summary["errors"] == 0
    assert "onnxruntime" in summary["engine"]

    expected = eval_scores(bundle, category, tmp_path / "report")
    published = {Path(h["path"]).relative_to(category).as_posix(): h["raw_score"] for h in result.headers}
    assert published.keys() == expected.keys()
    for path, score in expected.items():
        assert published[path] == pytest.approx(score, rel=1e-4), path
    defects = [h for h in result.headers if "/good/" not in h["path"]]
    assert sum(h["verdict"] == "defect" for h in defects) >= len(defects) // 2
    assert any(h["regions"] for h in defects if h["verdict"] == "defect")


def test_a_torch_scorer_runs_on_one_thread_beside_another_engine(bundle: Path, category: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """PaDiM scores on torch: beside onnxruntime the runtime gives it one thread (its idle OpenMP threads
    spin on the cores the maps and sources need) and gives torch its threads back when the run ends."""
    import torch

    runtime = Runtime(RunOptions(bundle=bundle, sources=(str(category / "test" / "good"),), publish=LOOPBACK,
                                 engine="onnxruntime", device="cpu"))
    seen: list[int] = []
    score = runtime.inspector.score
    monkeypatch.setattr(runtime.inspector, "score", lambda *a, **k: seen.append(torch.get_num_threads())
                        or score(*a, **k))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runtime.run()
        assert seen and set(seen) == {RUNTIME_TORCH_SCORER_THREADS} and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_every_blas_runs_on_one_thread_while_the_runtime_scores(bundle: Path, category: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenCV's, numpy's and FAISS's OpenBLAS split small products over threads whose caller spins until they get
    a core: the runtime limits them to one while it runs and gives them their threads back when it ends."""
    from threadpoolctl import threadpool_info

    before = {info["filepath"]: info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}
    runtime = Runtime(RunOptions(bundle=bundle, sources=(str(category / "test" / "good"),), publish=LOOPBACK,
                                 device="cpu"))
    seen: list[dict[str, int]] = []
    score = runtime.inspector.score
    monkeypatch.setattr(runtime.inspector, "score", lambda *a, **k: seen.append(
        {info["filepath"]: info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"})
        or score(*a, **k))
    runtime.run()
    assert seen and all(set(pools.values()) == {RUNTIME_BLAS_THREADS} for pools in seen)
    assert len(seen[0]) >= 2  # OpenCV's and numpy's at least (and FAISS's where it is loaded)
    after = {info["filepath"]: info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"}
    assert {path: after[path] for path in before} == before


def test_video_source_and_corrupt_file(bundle: Path, category: Path, tmp_path: Path) -> None:
    frames = [cv2.imread(str(p)) for p in sorted((category / "test").rglob("*.png"))[:6]]
    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 96))
    for frame in frames:
        writer.write(frame)
    writer.release()
    folder = tmp_path / "folder"
    folder.mkdir()
    for index, image in enumerate(frames[:3]):
        cv2.imwrite(str(folder / f"{index}.png"), image)
    (folder / "1b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    options = RunOptions(bundle=bundle, sources=(f"cam={video}", str(folder)), publish=LOOPBACK, wait_subscribers=1,
                         batch=4, device="cpu")
    summary, result = run_with_listener(options, 6 + 3)
    by_source = {name: [h for h in result.headers if h["source"] == name] for name in ("cam", "folder")}
    assert [h["frame"] for h in by_source["cam"]] == list(range(6))
    assert len(by_source["folder"]) == 3 and summary["errors"] == 1
    assert summary["sources"]["folder"]["errors"] == 1 and summary["drops"] == 0


def test_unexported_bundle_is_refused_naming_the_fix(category: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "plain"
    train(resolve_training(None, {"data": category, "out": bundle, "weights": "none", "image_size": 64}),
          progress=False)
    result = CliRunner().invoke(run_main, ["--bundle", str(bundle), "--source", str(category / "test"),
                                           "--engine", "onnxruntime", "--publish", LOOPBACK])
    assert result.exit_code != 0 and f"export-model {bundle} --format onnx" in result.output


def test_cli_sigterm_drains_writes_summary_and_complete_journal(bundle: Path, category: Path, tmp_path: Path) -> None:
    if bundle.name != "patchcore":
        pytest.skip("one model is enough for the signal path")
    folder = tmp_path / "watched"
    shutil.copytree(category / "test" / "good", folder)
    journal, summary_file = tmp_path / "j.jsonl", tmp_path / "summary.json"
    command = [sys.executable, "-c", "from linewatch.runtime.cli import main; main()", "--bundle", str(bundle),
               "--source", str(folder), "--watch", "--publish", LOOPBACK, "--journal", str(journal),
               "--summary", str(summary_file), "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 180  # a loaded machine can take minutes to start the runtime
        while time.monotonic() < deadline and (not journal.exists() or len(read_journal(journal)) < 6):
            time.sleep(0.1)
        assert len(read_journal(journal)) >= 6, process.stderr.read1().decode() if process.poll() else ""
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr.decode()
    summary = json.loads(summary_file.read_text())
    assert summary["frames"] == len(read_journal(journal)) == 6
    assert {"frames", "drops", "errors", "wall_s", "fps", "latency_ms", "stage_ms"} <= set(summary)
    assert "frames in" in stdout.decode()


def test_status_messages_report_runtime_health(bundle: Path, category: Path) -> None:
    import zmq

    if bundle.name != "patchcore":
        pytest.skip("one model is enough for status messages")
    runtime = Runtime(RunOptions(bundle=bundle, sources=(str(category / "test"),), publish=LOOPBACK,
                                 wait_subscribers=1, device="cpu", status_interval_s=0.0))
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(runtime.publisher.endpoint)
    sub.subscribe(b"")
    runtime.run()
    statuses = []
    while sub.poll(500):
        parts = sub.recv_multipart()
        if parts[0].startswith(b"status."):
            statuses.append(json.loads(parts[1]))
    sub.close()
    assert statuses and statuses[-1]["schema"] == "linewatch.status/1"
    assert {"fps", "queues", "drops", "errors", "uptime_s"} <= set(statuses[-1])
    assert np.isfinite(statuses[-1]["fps"])


def test_the_exit_summary_says_preprocessing_is_cpu_time() -> None:
    """The stage means printed at exit: preprocessing is the source threads' CPU time (`SourceRunner._push`),
    the other stages wall time, and the line says so."""
    from linewatch.runtime.cli import _format_summary

    summary = {"frames": 2, "wall_s": 1.0, "fps": 2.0, "drops": 0, "errors": 0,
               "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0}, "stage_ms": dict.fromkeys(STAGES, 0.5),
               "engine": "onnxruntime", "model": "m", "endpoint": "tcp://127.0.0.1:1", "sources": {}}
    line = next(line for line in _format_summary(summary).splitlines() if "mean ms per frame" in line)
    assert "preprocess (CPU) 0.50" in line and "network 0.50" in line and "network (CPU)" not in line
