"""A Triton Inference Server model repository for the bundle's network, and its record in the manifest.

Layout (Triton's): `MODEL_REPO/<model>/config.pbtxt` + `MODEL_REPO/<model>/1/model.onnx` (or `model.plan`).
The config names the network's tensors with their dims without the batch axis (read from the ONNX file
itself, so it cannot disagree with it), enables dynamic batching (the lines' requests are merged into
preferred batch sizes within a short queue delay) and says how many instances run where. The network's
SHA-256 is a config parameter the Triton engine checks, so a runtime never scores features of another
bundle's network. `backend` `python` serves the same ONNX file through onnxruntime inside Triton's Python
backend, for Triton builds without the onnxruntime backend (the server in `nvidia-pytriton`).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import onnx

from linewatch.bundle import BundleError, bundle_id, write_manifest
from linewatch.config import ConfigError
from linewatch.engines import INT8_FILE, ONNX_FILE, PLAN_FILE, exported_file
from linewatch.engines.triton_engine import SHA_PARAMETER

KINDS = ("gpu", "cpu")
BACKENDS = ("onnxruntime", "python", "tensorrt")
DEFAULT_MAX_BATCH = 16
DEFAULT_QUEUE_DELAY_US = 2000
VERSION = "1"
_PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")
_ONNX_TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32"}


def model_name(manifest: dict[str, Any], precision: str) -> str:
    """Default model name: the bundle id (detector kind + data hash), `-int8` for the quantised network."""
    return bundle_id(manifest) + ("-int8" if precision == "int8" else "")


def preferred_batches(max_batch: int) -> list[int]:
    """Powers of two from 4 below the maximum, and the maximum itself."""
    return sorted({n for n in (4, 8, 16, 32, 64, 128, 256) if n < max_batch} | {max_batch})


def onnx_tensors(path: Path) -> list[dict[str, Any]]:
    """Inputs then outputs of an ONNX graph: name, Triton type, dims without the (dynamic) batch axis."""
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    tensors = []
    for role, values in (("input", [v for v in graph.input if v.name not in initializers]), ("output", graph.output)):
        for value in values:
            tensor = value.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
            if tensor.elem_type not in _ONNX_TYPES:
                raise BundleError(f"{path}: {role} {value.name!r} has ONNX type {tensor.elem_type}; expected float32")
            if not dims or dims[0] != -1 or any(d < 1 for d in dims[1:]):
                raise BundleError(f"{path}: {role} {value.name!r} has shape {dims}; Triton batching needs a "
                                  f"dynamic batch axis and static other dims (re-export with export-model)")
            tensors.append({"role": role, "name": value.name, "data_type": _ONNX_TYPES[tensor.elem_type],
                            "dims": dims[1:]})
    return tensors


def config_pbtxt(name: str, backend: str, tensors: list[dict[str, Any]], max_batch: int, instances: int, kind: str,
                 queue_delay_us: int, sha256: str, threads: int | None = None) -> str:
    """Triton's ModelConfig in protobuf text format; `threads` = onnxruntime intra-op threads per instance."""
    engine = {"onnxruntime": 'platform: "onnxruntime_onnx"', "tensorrt": 'platform: "tensorrt_plan"',
              "python": 'backend: "python"'}[backend]
    lines = [f'name: "{name}"', engine, f"max_batch_size: {max_batch}"]
    for role in ("input", "output"):
        entries = [f'  {{\n    name: "{t["name"]}"\n    data_type: {t["data_type"]}\n'
                   f'    dims: [ {", ".join(map(str, t["dims"]))} ]\n  }}' for t in tensors if t["role"] == role]
        lines.append(f"{role} [\n" + ",\n".join(entries) + "\n]")
    preferred = ", ".join(map(str, preferred_batches(max_batch)))
    lines.append(f"dynamic_batching {{\n  preferred_batch_size: [ {preferred} ]\n"
                 f"  max_queue_delay_microseconds: {queue_delay_us}\n}}")
    lines.append(f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_{kind.upper()}\n  }}\n]")
    parameters = {SHA_PARAMETER: sha256, **({"intra_op_thread_count": str(threads)} if threads else {})}
    lines += [f'parameters {{\n  key: "{key}"\n  value: {{ string_value: "{value}" }}\n}}'
              for key, value in parameters.items()]
    return "\n".join(lines) + "\n"


def _network_file(bundle: Path, manifest: dict[str, Any], backend: str, precision: str) -> tuple[str, str]:
    """(file in the bundle to serve, ONNX file whose tensors describe it); refuses what is missing or stale."""
    key = "onnx_int8" if precision == "int8" else "onnx"
    onnx_file = exported_file(manifest, key)
    if onnx_file not in manifest["files"]:
        flag = " --int8" if precision == "int8" else ""
        raise BundleError(f"{bundle} has no {INT8_FILE if precision == 'int8' else ONNX_FILE}: "
                          f"run export-model {bundle} --format onnx{flag}")
    if backend != "tensorrt":
        return onnx_file, onnx_file
    if precision == "int8":
        raise BundleError("--backend tensorrt serves the bundle's network.plan, which is not the int8 ONNX network")
    plan = exported_file(manifest, "tensorrt")
    if plan not in manifest["files"]:
        raise BundleError(f"{bundle} has no {PLAN_FILE}: run export-model {bundle} --format trt on the GPU model "
                          f"and TensorRT version the Triton server runs")
    if manifest["export"]["tensorrt"].get("onnx_sha256") != manifest["files"][onnx_file]["sha256"]:
        raise BundleError(f"{PLAN_FILE} was built from an older ONNX file: export-model {bundle} --format trt")
    return plan, onnx_file


def write_repository(
    bundle: Path, manifest: dict[str, Any], repository: Path, name: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH, instances: int = 1, kind: str = "gpu", backend: str = "onnxruntime",
    precision: str = "fp32", queue_delay_us: int = DEFAULT_QUEUE_DELAY_US, threads: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write `repository/<name>/` (replacing an older copy whole) and record it in the bundle's manifest.

    Returns (updated manifest, the record: model, repository, paths, config facts).
    """
    bundle, repository = Path(bundle), Path(repository)
    if kind not in KINDS or backend not in BACKENDS:
        raise ConfigError(f"kind must be one of {KINDS} and backend one of {BACKENDS}, got {kind!r}, {backend!r}")
    if max_batch < 1 or instances < 1:
        raise ConfigError(f"--max-batch and --instances must be at least 1, got {max_batch} and {instances}")
    if backend == "tensorrt" and kind != "gpu":
        raise ConfigError("a TensorRT plan runs on a GPU only: use --kind gpu")
    served, described = _network_file(bundle, manifest, backend, precision)
    if backend == "tensorrt" and max_batch > int(manifest["export"]["tensorrt"]["batch"]["max"]):
        raise ConfigError(f"--max-batch {max_batch} is above the plan's largest batch "
                         f"{manifest['export']['tensorrt']['batch']['max']}: rebuild it with --max-batch")
    name = name or model_name(manifest, precision)
    sha = manifest["files"][served]["sha256"]
    config = config_pbtxt(name, backend, onnx_tensors(bundle / described), max_batch, instances, kind,
                          queue_delay_us, sha, threads)
    repository.mkdir(parents=True, exist_ok=True)
    staging = repository / f".{name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / VERSION).mkdir(parents=True)
    target_file = "model.plan" if backend == "tensorrt" else "model.onnx"
    shutil.copyfile(bundle / served, staging / VERSION / target_file)
    if backend == "python":
        shutil.copyfile(_PYTHON_MODEL, staging / VERSION / "model.py")
    (staging / "config.pbtxt").write_text(config)
    final = repository / name
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    record = {"model": name, "repository": str(repository.resolve()), "config": str(final / "config.pbtxt"),
              "file": f"{name}/{VERSION}/{target_file}", "from": served, "network_sha256": sha, "backend": backend,
              "kind": kind, "max_batch_size": max_batch, "instances": instances,
              "preferred_batch_sizes": preferred_batches(max_batch), "max_queue_delay_us": queue_delay_us,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    triton = {**manifest.get("export", {}).get("triton", {}), precision: record}
    updated = write_manifest(bundle, {**manifest, "export": {**manifest.get("export", {}), "triton": triton}},
                             list(manifest["files"]))
    return updated, record
