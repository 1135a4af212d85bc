"""Triton: the model repository export-model writes, and the engine against a real Triton server on 127.0.0.1.

The server is the `tritonserver` binary that `nvidia-pytriton` ships (Python backend only), serving the
bundle's ONNX file through onnxruntime inside Triton's Python backend (`--backend python`). The
onnxruntime-platform repository (what a production Triton serves) is checked by parsing config.pbtxt
with Triton's own ModelConfig protobuf and comparing it with the ONNX file's tensors.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from helpers import eval_scores, tiny_bundle, tiny_category

from linewatch.bundle import BundleError, bundle_id, read_manifest, sha256
from linewatch.data import read_image
from linewatch.engines import ONNX_FILE, NetworkIO, open_engine
from linewatch.engines.local_triton import LocalTriton, free_port
from linewatch.engines.local_triton import problem as server_problem
from linewatch.engines.triton_engine import SHA_PARAMETER, TritonEngine, TritonTarget, TritonUnavailable
from linewatch.export.cli import main as export_main
from linewatch.inspector import Inspector
from linewatch.runtime.journal import read_journal
from linewatch.runtime.pipeline import RunOptions, Runtime

SIZE = 64
needs_server = pytest.mark.skipif(server_problem() is not None, reason=f"no local Triton server: {server_problem()}")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_category(tmp_path_factory.mktemp("triton"), SIZE)


@pytest.fixture(scope="module")
def bundle(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny PatchCore bundle without ONNX: the Triton export adds its ONNX export first."""
    return tiny_bundle(data, tmp_path_factory.mktemp("triton-bundle") / "bundle", SIZE)


def _export(bundle: Path, repo: Path, *args: str) -> str:
    result = CliRunner().invoke(export_main, [str(bundle), "--format", "triton", "--out", str(repo), *args])
    assert result.exit_code == 0, result.output
    return result.output


def _config(path: Path):  # noqa: ANN202 - a generated protobuf message
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_repository_layout_and_config_match_the_onnx_file(bundle: Path, tmp_path: Path) -> None:
    from tritonclient.grpc import model_config_pb2

    repo = tmp_path / "repo"
    output = _export(bundle, repo, "--max-batch", "8", "--instances", "2", "--kind", "cpu")
    manifest = read_manifest(bundle)
    name = bundle_id(manifest)
    record = manifest["export"]["triton"]["fp32"]
    assert record["model"] == name and record["repository"] == str(repo.resolve()) and f"'{name}'" in output
    model_file = repo / name / "1" / "model.onnx"
    assert sha256(model_file) == sha256(bundle / ONNX_FILE) == record["network_sha256"]
    config = _config(repo / name / "config.pbtxt")  # Triton's own schema: an unknown field or bad enum fails here
    assert config.name == name and config.platform == "onnxruntime_onnx" and config.max_batch_size == 8
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    for declared, actual in ((config.input, session.get_inputs()), (config.output, session.get_outputs())):
        assert [t.name for t in declared] == [t.name for t in actual]
        assert [list(t.dims) for t in declared] == [list(t.shape[1:]) for t in actual]  # dims without the batch
        assert all(t.data_type == model_config_pb2.DataType.TYPE_FP32 for t in declared)
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    kinds = [(g.count, g.kind) for g in config.instance_group]
    assert kinds == [(2, model_config_pb2.ModelInstanceGroup.Kind.KIND_CPU)]
    assert config.parameters[SHA_PARAMETER].string_value == record["network_sha256"]


def test_python_backend_repository_and_rewrite_replaces_the_model(bundle: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _export(bundle, repo, "--kind", "cpu", "--model-name", "bottle_line")
    (repo / "bottle_line" / "1" / "stale.txt").write_text("left over")
    _export(bundle, repo, "--kind", "cpu", "--model-name", "bottle_line", "--backend", "python",
            "--server-threads", "1")
    files = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())
    assert files == ["bottle_line/1/model.onnx", "bottle_line/1/model.py", "bottle_line/config.pbtxt"]
    config = _config(repo / "bottle_line" / "config.pbtxt")
    assert config.backend == "python" and not config.platform and config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    assert config.parameters["intra_op_thread_count"].string_value == "1"
    assert "TritonPythonModel" in (repo / "bottle_line" / "1" / "model.py").read_text()


def test_triton_export_refuses_what_it_cannot_serve(bundle: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(export_main, [str(bundle), "--format", "triton"])
    assert result.exit_code != 0 and "--out MODEL_REPO" in result.output
    result = runner.invoke(export_main, [str(bundle), "--format", "triton", "--out", str(tmp_path), "--precision",
                                         "int8"])
    assert result.exit_code != 0 and "--format onnx --int8" in result.output
    result = runner.invoke(export_main, [str(bundle), "--format", "triton", "--out", str(tmp_path), "--backend",
                                         "tensorrt"])
    assert result.exit_code != 0 and "network.plan" in result.output


def test_triton_engine_needs_a_url_and_a_recorded_model(bundle: Path, tmp_path: Path) -> None:
    manifest = read_manifest(bundle)
    with pytest.raises(ValueError, match="--triton-url"):
        open_engine(bundle, manifest, lambda: None, "triton", triton={"url": None})


def test_triton_engine_reports_a_server_that_is_down() -> None:
    target = TritonTarget(f"127.0.0.1:{free_port()}", "nothing", timeout_s=1.0, retry_s=1.0)
    with pytest.raises(TritonUnavailable, match="unreachable"):
        TritonEngine(target, NetworkIO("images", 3, (SIZE, SIZE), ("features",)))


@pytest.fixture(scope="module")
def server(bundle: Path, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - yields a LocalTriton
    if server_problem():
        pytest.skip(f"no local Triton server: {server_problem()}")
    repo = tmp_path_factory.mktemp("triton-repo")
    _export(bundle, repo, "--kind", "cpu", "--backend", "python", "--max-batch", "8", "--server-threads", "1")
    local = LocalTriton(repo).start()
    yield local
    local.close()


@needs_server
def test_inspect_run_through_triton_publishes_inspect_eval_scores(server: LocalTriton, bundle: Path, data: Path,
                                                                 tmp_path: Path) -> None:
    expected = eval_scores(bundle, data, tmp_path / "report")
    journal = tmp_path / "journal.jsonl"
    options = RunOptions(bundle=bundle, sources=(str(data / "test"),), publish="tcp://127.0.0.1:*", journal=journal,
                         engine="triton", triton_url=server.url, batch=3)
    runtime = Runtime(options)
    assert "triton 2." in runtime.engine.describe() and server.url in runtime.engine.describe()
    summary = runtime.run()
    headers = read_journal(journal)
    assert summary["frames"] == len(expected) == len(headers) and summary["errors"] == 0
    got = {Path(h["path"]).relative_to(data).as_posix(): h["raw_score"] for h in headers}
    assert set(got) == set(expected)
    np.testing.assert_allclose([got[k] for k in sorted(got)], [expected[k] for k in sorted(got)], rtol=1e-4)


def _engine(bundle: Path, url: str, **target: float | str) -> TritonEngine:
    manifest = read_manifest(bundle)
    model = target.pop("model", manifest["export"]["triton"]["fp32"]["model"])
    return TritonEngine(TritonTarget(url, str(model), **target), Inspector.from_bundle(bundle).io,
                        manifest["files"][ONNX_FILE]["sha256"])


@needs_server
def test_triton_engine_refuses_a_missing_model_another_network_and_reports_timeouts(server: LocalTriton,
                                                                                  bundle: Path) -> None:
    with pytest.raises(TritonUnavailable, match="'absent' is not ready"):
        _engine(bundle, server.url, model="absent", retry_s=1.0)
    io = Inspector.from_bundle(bundle).io
    model = read_manifest(bundle)["export"]["triton"]["fp32"]["model"]
    with pytest.raises(BundleError, match="serves another network"):
        TritonEngine(TritonTarget(server.url, model, retry_s=1.0), io, "0" * 64)
    engine = _engine(bundle, server.url, retry_s=0.5)
    engine.target = dataclasses.replace(engine.target, timeout_s=1e-6)  # no server answers in a microsecond
    with pytest.raises(TritonUnavailable, match="did not answer within 1e-06 s"):
        engine(np.zeros((1, 3, SIZE, SIZE), np.float32))


@needs_server
def test_triton_engine_retries_a_batch_across_a_server_restart(server: LocalTriton, bundle: Path,
                                                               data: Path) -> None:
    inspector = Inspector.from_bundle(bundle)
    images = sorted((data / "test").rglob("*.png"))[:4]
    batch = inspector.preprocessor.batch([read_image(p) for p in images])
    engine = _engine(bundle, server.url, retry_s=90.0)
    before = engine(batch)
    server.stop()
    result: dict[str, dict[str, np.ndarray]] = {}
    worker = threading.Thread(target=lambda: result.update(out=engine(batch)))
    worker.start()
    worker.join(1.5)
    assert worker.is_alive() and engine.state.startswith("retrying") and "unreachable" in engine.describe()
    server.start()
    worker.join(60)
    assert not worker.is_alive() and engine.state == "ok" and engine.failures >= 1
    np.testing.assert_allclose(result["out"]["features"], before["features"], rtol=1e-5)


@needs_server
def test_frames_count_as_errors_while_triton_stays_down(server: LocalTriton, bundle: Path, data: Path,
                                                        tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    options = RunOptions(bundle=bundle, sources=(str(data / "test"),), publish="tcp://127.0.0.1:*", journal=journal,
                         engine="triton", triton_url=server.url, triton_retry_s=0.5, batch=4)
    runtime = Runtime(options)  # connects while the server is up
    server.stop()
    try:
        summary = runtime.run()
    finally:
        server.start()
    frames = len(list((data / "test").rglob("*.png")))
    assert summary["frames"] == 0 and summary["errors"] == frames  # every frame accounted for, none published
    assert not journal.exists() or read_journal(journal) == []
    assert "unavailable" in summary["engine"] and "unreachable" in summary["engine"]
