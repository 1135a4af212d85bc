"""Engines that run a bundle's network (torch, onnxruntime, TensorRT) behind one interface with named outputs.

Export (parity checks) and the runtime both use these, so the numbers the export command prints are
the numbers the runtime produces. `open_engine` picks one for a bundle and says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from linewatch.bundle import BundleError
from linewatch.engines.base import (
    DEVICE_CHOICES,
    ENGINE_CHOICES,
    GPU_EXTRA,
    ONNX_FILE,
    PLAN_FILE,
    Engine,
    EngineUnavailable,
    NetworkIO,
)

__all__ = [
    "DEVICE_CHOICES", "ENGINE_CHOICES", "GPU_EXTRA", "ONNX_FILE", "PLAN_FILE", "Engine", "EngineUnavailable",
    "NetworkIO", "exported_file", "open_engine",
]

log = logging.getLogger(__name__)
_FORMAT = {"onnx": "onnx", "tensorrt": "trt"}
_DEFAULT_FILE = {"onnx": ONNX_FILE, "tensorrt": PLAN_FILE}


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
) -> Engine:
    """Open the engine for a bundle; `auto` prefers TensorRT, then onnxruntime, then torch.

    `network_loader` builds the PyTorch network only when the torch engine is chosen; `threads` sets
    onnxruntime's intra-op threads or torch's.
    """
    bundle = Path(bundle_dir)
    if engine not in ENGINE_CHOICES:
        raise ValueError(f"engine {engine!r} is not one of {', '.join(ENGINE_CHOICES)}")
    if device not in DEVICE_CHOICES:
        raise ValueError(f"device {device!r} is not one of {', '.join(DEVICE_CHOICES)}")
    io = NetworkIO.from_section(manifest["network"])
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
