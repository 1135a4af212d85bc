"""Engines that run a bundle's network (torch, onnxruntime, TensorRT, Triton) behind one interface with named outputs.

Export (parity checks) and the runtime both use these, so the numbers the export command prints are
the numbers the runtime produces. `open_engine` picks one for a bundle and says why; `auto` never picks
Triton (a remote server is always an explicit choice). `precision` int8 selects the quantised ONNX file.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from linewatch.bundle import BundleError
from linewatch.config import ConfigError
from linewatch.engines.base import (
    DEVICE_CHOICES,
    ENGINE_CHOICES,
    GPU_EXTRA,
    INT8_FILE,
    ONNX_FILE,
    PLAN_FILE,
    PRECISION_CHOICES,
    Engine,
    EngineUnavailable,
    NetworkIO,
)

__all__ = [
    "DEVICE_CHOICES", "ENGINE_CHOICES", "GPU_EXTRA", "INT8_FILE", "ONNX_FILE", "PLAN_FILE", "PRECISION_CHOICES",
    "Engine", "EngineUnavailable", "NetworkIO", "exported_file", "open_engine",
]

log = logging.getLogger(__name__)
_FORMAT = {"onnx": "onnx", "tensorrt": "trt", "onnx_int8": "onnx --int8"}
_DEFAULT_FILE = {"onnx": ONNX_FILE, "tensorrt": PLAN_FILE, "onnx_int8": INT8_FILE}
_ONNX_KEY = {"fp32": "onnx", "int8": "onnx_int8"}


def exported_file(manifest: dict[str, Any], key: str) -> str:
    """The file an export wrote (`export.<key>.file`), or this version's default name."""
    return manifest.get("export", {}).get(key, {}).get("file", _DEFAULT_FILE[key])


def _recorded(bundle: Path, manifest: dict[str, Any], key: str) -> bool:
    """An export counts when its file exists and the manifest lists it (so its hash was checked)."""
    name = exported_file(manifest, key)
    if not (bundle / name).is_file():
        return False
    if name not in manifest["files"]:
        raise BundleError(f"{bundle / name} is not recorded in the manifest (interrupted export?); "
                          f"re-run export-model {bundle} --format {_FORMAT[key]}")
    return True


def _plan_is_stale(manifest: dict[str, Any]) -> bool:
    """A plan built from an older ONNX file no longer carries the bundle's parity guarantee."""
    built_from = manifest.get("export", {}).get("tensorrt", {}).get("onnx_sha256")
    current = manifest["files"].get(exported_file(manifest, "onnx"), {}).get("sha256")
    return bool(built_from and current and built_from != current)


def open_engine(
    bundle_dir: str | Path,
    manifest: dict[str, Any],
    network_loader: Callable[[], Any],
    engine: str = "auto",
    device: str = "auto",
    threads: int | None = None,
    precision: str = "fp32",
    triton: dict[str, Any] | None = None,
    cancel: threading.Event | None = None,
) -> Engine:
    """Open the engine for a bundle; `auto` prefers TensorRT, then onnxruntime, then torch.

    `network_loader` builds the PyTorch network only when the torch engine is chosen; `threads` sets
    onnxruntime's intra-op threads or torch's. `triton`: `url` (HOST:PORT), `model` (None: the one the
    bundle's manifest records), optional `timeout_s` / `retry_s`; `cancel` interrupts the Triton engine's retries.
    """
    bundle = Path(bundle_dir)
    if engine not in ENGINE_CHOICES:
        raise ValueError(f"engine {engine!r} is not one of {', '.join(ENGINE_CHOICES)}")
    if device not in DEVICE_CHOICES:
        raise ValueError(f"device {device!r} is not one of {', '.join(DEVICE_CHOICES)}")
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISION_CHOICES)}")
    io = NetworkIO.from_section(manifest["network"])
    if engine == "triton":
        return _triton(bundle, manifest, io, precision, triton, cancel)
    if precision == "int8":
        return _int8(bundle, manifest, io, engine, device, threads)
    if engine == "torch":
        from linewatch.engines.torch_engine import TorchEngine

        return _chosen(TorchEngine(network_loader(), io, device, threads), "requested")
    if engine == "tensorrt":
        from linewatch.engines.tensorrt_engine import TensorRTEngine

        if device == "cpu":
            raise EngineUnavailable("TensorRT runs on a GPU only; use the onnxruntime or torch engine on CPU")
        if not _recorded(bundle, manifest, "tensorrt"):
            raise BundleError(f"{bundle} has no {PLAN_FILE}: run export-model {bundle} --format trt")
        if _plan_is_stale(manifest):
            raise BundleError(f"{PLAN_FILE} was built from an older ONNX file: rebuild it with "
                              f"export-model {bundle} --format trt")
        return _chosen(TensorRTEngine(bundle / exported_file(manifest, "tensorrt"), io), "requested")
    if engine == "onnxruntime":
        from linewatch.engines.onnxruntime_engine import OnnxRuntimeEngine

        if not _recorded(bundle, manifest, "onnx"):
            raise BundleError(f"{bundle} has no {ONNX_FILE}: run export-model {bundle} --format onnx")
        onnx_engine = OnnxRuntimeEngine(bundle / exported_file(manifest, "onnx"), io, device, threads)
        return _chosen(onnx_engine, "requested")
    return _auto(bundle, manifest, io, network_loader, device, threads)


def _triton(bundle: Path, manifest: dict[str, Any], io: NetworkIO, precision: str,
            triton: dict[str, Any] | None, cancel: threading.Event | None) -> Engine:
    """The Triton engine for the model the bundle's manifest records (or the one named)."""
    from linewatch.engines.triton_engine import TritonEngine, TritonTarget

    triton = {key: value for key, value in (triton or {}).items() if value is not None}
    if not triton.get("url"):
        raise ConfigError("--engine triton needs --triton-url HOST:PORT (Triton's gRPC port, usually 8001)")
    key = _ONNX_KEY[precision]
    if not _recorded(bundle, manifest, key):
        raise BundleError(f"{bundle} has no {_DEFAULT_FILE[key]}: run export-model {bundle} --format {_FORMAT[key]}, "
                          f"then export-model {bundle} --format triton --out MODEL_REPO")
    recorded = manifest.get("export", {}).get("triton", {}).get(precision, {})
    model = triton.pop("model", None) or recorded.get("model")
    if not model:
        raise BundleError(f"{bundle} records no Triton model for {precision}: run export-model {bundle} --format "
                          f"triton --out MODEL_REPO{' --precision int8' if precision == 'int8' else ''}, or pass "
                          f"--triton-model NAME")
    sha = manifest["files"][exported_file(manifest, key)]["sha256"]
    return _chosen(TritonEngine(TritonTarget(model=model, **triton), io, sha, cancel), "requested")


def _int8(bundle: Path, manifest: dict[str, Any], io: NetworkIO, engine: str, device: str,
          threads: int | None) -> Engine:
    """The quantised ONNX file in onnxruntime: the only local engine that runs it."""
    from linewatch.engines.onnxruntime_engine import OnnxRuntimeEngine

    if engine not in ("auto", "onnxruntime"):
        raise EngineUnavailable(f"--precision int8 runs on the onnxruntime or triton engine, not {engine}")
    if not _recorded(bundle, manifest, "onnx_int8"):
        raise BundleError(f"{bundle} has no {INT8_FILE}: run export-model {bundle} --format onnx --int8")
    onnx_engine = OnnxRuntimeEngine(bundle / exported_file(manifest, "onnx_int8"), io, device, threads)
    return _chosen(onnx_engine, "int8 requested")


def _auto(bundle: Path, manifest: dict[str, Any], io: NetworkIO, network_loader: Callable[[], Any], device: str,
          threads: int | None) -> Engine:
    if device == "cpu":
        why_not_trt = "device is cpu"
    elif not _recorded(bundle, manifest, "tensorrt"):
        why_not_trt = f"no {PLAN_FILE}"
    elif _plan_is_stale(manifest):
        why_not_trt = f"{PLAN_FILE} is older than the ONNX file (rebuild with --format trt)"
    else:
        from linewatch.engines.tensorrt_engine import TensorRTEngine, tensorrt_problem

        why_not_trt = tensorrt_problem()
        if why_not_trt is None:
            try:
                return _chosen(TensorRTEngine(bundle / exported_file(manifest, "tensorrt"), io),
                               f"{PLAN_FILE} present, GPU present")
            except (BundleError, RuntimeError) as exc:
                why_not_trt = str(exc)
    if _recorded(bundle, manifest, "onnx"):
        from linewatch.engines.onnxruntime_engine import OnnxRuntimeEngine

        onnx_engine = OnnxRuntimeEngine(bundle / exported_file(manifest, "onnx"), io, device, threads)
        return _chosen(onnx_engine, f"ONNX export present; not TensorRT: {why_not_trt}")
    from linewatch.engines.torch_engine import TorchEngine

    return _chosen(TorchEngine(network_loader(), io, device, threads),
                   f"no {ONNX_FILE} (export-model {bundle} --format onnx makes CPU inference faster)")


def _chosen(engine: Any, reason: str) -> Engine:
    log.info("engine: %s (%s)", engine.describe(), reason)
    return engine
