"""Feature engines: the backbone as numpy in, numpy out, whatever runs it (torch, onnxruntime, TensorRT).

The export parity check and the streaming runtime both go through these classes, so the numbers the
export command prints are the numbers the runtime produces. Scoring stays outside (see `inspector`).
Input: float32 NCHW RGB in 0..255 at the bundle's image size; output: (N, C, h, w) float32 features.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from linewatch.bundle import BundleError
from linewatch.errors import LinewatchError

log = logging.getLogger(__name__)

ONNX_FILE = "backbone.onnx"
PLAN_FILE = "backbone.plan"
INPUT_NAME = "images"
OUTPUT_NAME = "features"
ENGINE_CHOICES = ("auto", "onnxruntime", "tensorrt", "torch")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
GPU_EXTRA = "pip install -e '.[gpu]' (the gpu extra: onnxruntime-gpu, tensorrt, faiss-gpu-cu12)"
_ORT_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class EngineUnavailable(LinewatchError, ValueError):
    """The requested engine or device cannot run on this machine; the message says what is missing."""


class FeatureEngine(Protocol):
    name: str
    device: str

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 0..255 -> (N, C, h, w) float32 features."""

    def describe(self) -> str:
        """One line for logs: engine, version, device / providers."""


def _check_batch(batch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if batch.ndim != 4 or batch.shape[1] != 3 or tuple(batch.shape[2:]) != tuple(size):
        raise ValueError(f"expected a (N, 3, {size[0]}, {size[1]}) batch, got {batch.shape}")
    return np.ascontiguousarray(batch, dtype=np.float32)


def _torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _ort_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "linewatch" / "ort-tensorrt"


class OnnxRuntimeEngine:
    """`backbone.onnx` in onnxruntime; logs the providers that really run (GPU builds fall back silently)."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        import onnxruntime as ort

        if device not in DEVICE_CHOICES:
            raise ValueError(f"device {device!r} is not one of {', '.join(DEVICE_CHOICES)}")
        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise BundleError(f"ONNX model not found: {self.path}")
        available = ort.get_available_providers()
        gpu = [p for p in _ORT_GPU_PROVIDERS if p in available] if device != "cpu" else []
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
        running_gpu = [p for p in self.providers if p in _ORT_GPU_PROVIDERS]
        if gpu and not running_gpu:
            message = (f"onnxruntime asked for {', '.join(gpu)} but runs on CPU only (CUDA/cuDNN/TensorRT "
                       f"libraries missing or not loadable?); see onnxruntime's log above")
            if device == "cuda":
                raise EngineUnavailable(f"device 'cuda' was requested but {message}")
            log.warning("%s", message)
        self.device = "cuda" if running_gpu else "cpu"
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.output_name = self.session.get_outputs()[0].name
        if not all(isinstance(d, int) for d in model_input.shape[1:]):
            raise BundleError(f"{self.path}: input {model_input.shape} must have a fixed size; re-export it "
                              f"with export-model BUNDLE --format onnx")
        self.input_size = (model_input.shape[2], model_input.shape[3])
        log.info("onnxruntime runs %s with %s", self.path.name, ", ".join(self.providers))

    @staticmethod
    def _provider(name: str) -> Any:
        if name == "TensorrtExecutionProvider":
            return (name, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(_ort_cache_dir())})
        return name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        inputs = _check_batch(batch, self.input_size)
        return self.session.run([self.output_name], {self.input_name: inputs})[0]

    def describe(self) -> str:
        import onnxruntime as ort

        threads = f", {self.threads} threads" if self.threads else ""
        return f"onnxruntime {ort.__version__} {self.path.name} on {'+'.join(self.providers)}{threads}"


class TorchEngine:
    """The PyTorch extractor, eager; the reference the exported engines are checked against."""

    name = "torch"

    def __init__(self, extractor: Any, device: str = "auto") -> None:
        from linewatch.inspector import torch_features

        if device not in DEVICE_CHOICES:
            raise ValueError(f"device {device!r} is not one of {', '.join(DEVICE_CHOICES)}")
        cuda = _torch_cuda()
        if device == "cuda" and not cuda:
            raise EngineUnavailable("device 'cuda' was requested but torch sees no CUDA GPU "
                                    "(torch.cuda.is_available() is False)")
        self.device = "cuda" if device == "cuda" or (device == "auto" and cuda) else "cpu"
        self.input_size = tuple(extractor.config.image_size)
        self._run = torch_features(extractor, self.device)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._run(_check_batch(batch, self.input_size))

    def describe(self) -> str:
        import torch

        threads = f", {torch.get_num_threads()} threads" if self.device == "cpu" else ""
        return f"torch {torch.__version__} eager on {self.device}{threads}"


def tensorrt_problem() -> str | None:
    """Why TensorRT cannot run here (missing package and/or GPU), or None when it can."""
    import importlib.util

    missing = []
    if importlib.util.find_spec("tensorrt") is None:
        missing.append("the Python package `tensorrt` is not installed")
    if not _torch_cuda():
        missing.append("no CUDA GPU is visible (torch.cuda.is_available() is False)")
    if not missing:
        return None
    return f"TensorRT cannot run here: {'; '.join(missing)}. On a machine with an NVIDIA GPU: {GPU_EXTRA}"


def import_tensorrt() -> Any:
    """Import tensorrt lazily, or stop with a message naming what is missing and how to install it."""
    problem = tensorrt_problem()
    if problem:
        raise EngineUnavailable(problem)
    import tensorrt

    return tensorrt


class TensorRTEngine:
    """A serialized TensorRT engine (`backbone.plan`); torch CUDA tensors are its I/O buffers."""

    name = "tensorrt"
    device = "cuda"

    def __init__(self, plan_path: str | Path) -> None:
        trt = import_tensorrt()
        import torch

        self.path = Path(plan_path)
        if not self.path.is_file():
            raise BundleError(f"TensorRT engine not found: {self.path}")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise BundleError(f"{self.path}: TensorRT could not load this engine (built by another TensorRT "
                              f"version or for another GPU?); rebuild it: export-model BUNDLE --format trt")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise BundleError(f"{self.path}: expected one input and one output, got {inputs} -> {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        for tensor in (self.input_name, self.output_name):
            dtype = self.engine.get_tensor_dtype(tensor)
            if dtype != trt.float32:
                raise BundleError(f"{self.path}: tensor {tensor!r} is {dtype}, expected float32")
        shape = tuple(self.engine.get_tensor_shape(self.input_name))
        self.input_size = (int(shape[2]), int(shape[3]))
        self.max_batch = int(self.engine.get_tensor_profile_shape(self.input_name, 0)[2][0])
        self.version = trt.__version__
        self.stream = torch.cuda.Stream()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.cuda.stream(self.stream):
            inputs = torch.from_numpy(batch).to("cuda", non_blocking=True)
            if not self.context.set_input_shape(self.input_name, tuple(inputs.shape)):
                raise ValueError(f"TensorRT rejected input shape {tuple(inputs.shape)}")
            output = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=torch.float32,
                                 device="cuda")
            self.context.set_tensor_address(self.input_name, inputs.data_ptr())
            self.context.set_tensor_address(self.output_name, output.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"TensorRT failed to run {self.path.name}")
            result = output.to("cpu", non_blocking=True)
        self.stream.synchronize()
        return result.numpy()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        inputs = _check_batch(batch, self.input_size)
        chunks = [self._run(inputs[i : i + self.max_batch]) for i in range(0, len(inputs), self.max_batch)]
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def describe(self) -> str:
        import torch

        gpu = torch.cuda.get_device_name()
        return f"tensorrt {self.version} {self.path.name} on {gpu} (max batch {self.max_batch})"


def _recorded(bundle: Path, manifest: dict[str, Any], name: str) -> bool:
    """A file counts as exported when it exists and the manifest lists it (so its hash was checked)."""
    if not (bundle / name).is_file():
        return False
    if name not in manifest["files"]:
        raise BundleError(f"{bundle / name} is not recorded in the manifest (interrupted export?); "
                          f"re-run export-model {bundle} --format {'onnx' if name == ONNX_FILE else 'trt'}")
    return True


def _check_size(engine: Any, manifest: dict[str, Any], bundle: Path, fmt: str) -> Any:
    expected = tuple(manifest["features"]["image_size"])
    height, width = engine.input_size
    if (height, width) != expected:
        raise BundleError(f"{engine.path.name} takes {height}x{width} images but the bundle's image_size is "
                          f"{expected[0]}x{expected[1]}; re-export it: export-model {bundle} --format {fmt}")
    return engine


def _plan_is_stale(manifest: dict[str, Any]) -> bool:
    """A plan built from an older backbone.onnx no longer carries the bundle's parity guarantee."""
    built_from = manifest.get("export", {}).get("tensorrt", {}).get("onnx_sha256")
    current = manifest["files"].get(ONNX_FILE, {}).get("sha256")
    return bool(built_from and current and built_from != current)


def open_engine(
    bundle_dir: str | Path,
    manifest: dict[str, Any],
    extractor_loader: Callable[[], Any],
    engine: str = "auto",
    device: str = "auto",
    threads: int | None = None,
) -> FeatureEngine:
    """Open the feature engine for a bundle; `auto` prefers TensorRT, then onnxruntime, then torch.

    `threads` sets onnxruntime's intra-op threads (torch keeps `torch.set_num_threads`).
    """
    bundle = Path(bundle_dir)
    if engine not in ENGINE_CHOICES:
        raise ValueError(f"engine {engine!r} is not one of {', '.join(ENGINE_CHOICES)}")
    if device not in DEVICE_CHOICES:
        raise ValueError(f"device {device!r} is not one of {', '.join(DEVICE_CHOICES)}")
    if engine == "torch":
        return _chosen(TorchEngine(extractor_loader(), device), "requested")
    if engine == "tensorrt":
        if device == "cpu":
            raise EngineUnavailable("TensorRT runs on a GPU only; use the onnxruntime or torch engine on CPU")
        if not _recorded(bundle, manifest, PLAN_FILE):
            raise BundleError(f"{bundle} has no {PLAN_FILE}: run export-model {bundle} --format trt")
        if _plan_is_stale(manifest):
            raise BundleError(f"{PLAN_FILE} was built from an older {ONNX_FILE}: rebuild it with "
                              f"export-model {bundle} --format trt")
        return _chosen(_check_size(TensorRTEngine(bundle / PLAN_FILE), manifest, bundle, "trt"), "requested")
    if engine == "onnxruntime":
        if not _recorded(bundle, manifest, ONNX_FILE):
            raise BundleError(f"{bundle} has no {ONNX_FILE}: run export-model {bundle} --format onnx")
        onnx_engine = OnnxRuntimeEngine(bundle / ONNX_FILE, device, threads)
        return _chosen(_check_size(onnx_engine, manifest, bundle, "onnx"), "requested")
    return _auto(bundle, manifest, extractor_loader, device, threads)


def _auto(
    bundle: Path, manifest: dict[str, Any], extractor_loader: Callable[[], Any], device: str,
    threads: int | None,
) -> FeatureEngine:
    if device == "cpu":
        why_not_trt = "device is cpu"
    elif not _recorded(bundle, manifest, PLAN_FILE):
        why_not_trt = f"no {PLAN_FILE}"
    elif _plan_is_stale(manifest):
        why_not_trt = f"{PLAN_FILE} is older than {ONNX_FILE} (rebuild with --format trt)"
    else:
        why_not_trt = tensorrt_problem()
        if why_not_trt is None:
            try:
                trt_engine = TensorRTEngine(bundle / PLAN_FILE)
            except (BundleError, RuntimeError) as exc:
                why_not_trt = str(exc)
            else:
                trt_engine = _check_size(trt_engine, manifest, bundle, "trt")
                return _chosen(trt_engine, f"{PLAN_FILE} present, GPU present")
    if _recorded(bundle, manifest, ONNX_FILE):
        onnx_engine = OnnxRuntimeEngine(bundle / ONNX_FILE, device, threads)
        _check_size(onnx_engine, manifest, bundle, "onnx")
        return _chosen(onnx_engine, f"{ONNX_FILE} present; not TensorRT: {why_not_trt}")
    return _chosen(TorchEngine(extractor_loader(), device),
                   f"no {ONNX_FILE} (export-model {bundle} --format onnx makes CPU inference faster)")


def _chosen(engine: Any, reason: str) -> FeatureEngine:
    log.info("feature engine: %s (%s)", engine.describe(), reason)
    return engine
