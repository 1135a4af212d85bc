"""The exported ONNX network in onnxruntime; logs the providers that really run (GPU builds fall back silently)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.bundle import BundleError
from linewatch.engines.base import DEVICE_CHOICES, GPU_EXTRA, EngineUnavailable, NetworkIO, check_names

log = logging.getLogger(__name__)
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "linewatch" / "ort-tensorrt"


class OnnxRuntimeEngine:
    """An ONNX file with named outputs; `io` is checked against the graph when given."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, io: NetworkIO, device: str = "auto", threads: int | None = None) -> None:
        import onnxruntime as ort

        if device not in DEVICE_CHOICES:
            raise ValueError(f"device {device!r} is not one of {', '.join(DEVICE_CHOICES)}")
        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise BundleError(f"ONNX model not found: {self.path}")
        available = ort.get_available_providers()
        gpu = [p for p in _GPU_PROVIDERS if p in available] if device != "cpu" else []
        if device == "cuda" and not gpu:
            raise EngineUnavailable(
                f"device 'cuda' was requested but this onnxruntime build has no GPU provider "
                f"(available: {', '.join(available)}); install onnxruntime-gpu: {GPU_EXTRA}"
            )
        providers: list[Any] = [self._provider(p) for p in gpu] + ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # Idle intra-op threads would spin after each run, taking the cores the scorer and decoders need next.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.threads = threads
        self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        self.providers: list[str] = self.session.get_providers()
        running_gpu = [p for p in self.providers if p in _GPU_PROVIDERS]
        if gpu and not running_gpu:
            message = (f"onnxruntime asked for {', '.join(gpu)} but runs on CPU only (CUDA/cuDNN/TensorRT "
                       f"libraries missing or not loadable?); see onnxruntime's log above")
            if device == "cuda":
                raise EngineUnavailable(f"device 'cuda' was requested but {message}")
            log.warning("%s", message)
        self.device = "cuda" if running_gpu else "cpu"
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        check_names(self.path, io, [i.name for i in inputs], [o.name for o in outputs])
        shape = inputs[0].shape
        if not all(isinstance(d, int) for d in shape[1:]) or tuple(shape[1:]) != (io.channels, *io.size):
            raise BundleError(f"{self.path}: input {shape} does not take the bundle's (N, {io.channels}, "
                              f"{io.size[0]}, {io.size[1]}) images; re-export it: export-model BUNDLE --format onnx")
        self.io = io
        log.info("onnxruntime runs %s with %s", self.path.name, ", ".join(self.providers))

    @staticmethod
    def _provider(name: str) -> Any:
        if name == "TensorrtExecutionProvider":
            return (name, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(_cache_dir())})
        return name

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        results = self.session.run(list(self.io.outputs), {self.io.input_name: self.io.check(batch)})
        return dict(zip(self.io.outputs, results, strict=True))

    def describe(self) -> str:
        import onnxruntime as ort

        threads = f", {self.threads} threads" if self.threads else ""
        return f"onnxruntime {ort.__version__} {self.path.name} on {'+'.join(self.providers)}{threads}"
