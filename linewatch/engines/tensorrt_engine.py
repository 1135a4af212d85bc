"""A serialized TensorRT engine (`network.plan`) with named outputs; torch CUDA tensors are its I/O buffers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.bundle import BundleError
from linewatch.engines.base import GPU_EXTRA, EngineUnavailable, NetworkIO, check_names, torch_cuda


def tensorrt_problem() -> str | None:
    """Why TensorRT cannot run here (missing package and/or GPU), or None when it can."""
    missing = []
    if importlib.util.find_spec("tensorrt") is None:
        missing.append("the Python package `tensorrt` is not installed")
    if not torch_cuda():
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
    """TensorRT 10 API: named I/O tensors, one optimisation profile, `execute_async_v3` on a private stream."""

    name = "tensorrt"
    device = "cuda"

    def __init__(self, plan_path: str | Path, io: NetworkIO) -> None:
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
        check_names(self.path, io, inputs, outputs)
        for tensor in names:
            dtype = self.engine.get_tensor_dtype(tensor)
            if dtype != trt.float32:
                raise BundleError(f"{self.path}: tensor {tensor!r} is {dtype}, expected float32")
        shape = tuple(self.engine.get_tensor_shape(io.input_name))
        if tuple(int(d) for d in shape[1:]) != (io.channels, *io.size):
            raise BundleError(f"{self.path}: input {shape} does not take the bundle's images; rebuild it with "
                              f"export-model BUNDLE --format trt")
        self.io = io
        self.max_batch = int(self.engine.get_tensor_profile_shape(io.input_name, 0)[2][0])
        self.version = trt.__version__
        self.stream = torch.cuda.Stream()

    def _run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.cuda.stream(self.stream):
            inputs = torch.from_numpy(batch).to("cuda", non_blocking=True)
            if not self.context.set_input_shape(self.io.input_name, tuple(inputs.shape)):
                raise ValueError(f"TensorRT rejected input shape {tuple(inputs.shape)}")
            self.context.set_tensor_address(self.io.input_name, inputs.data_ptr())
            outputs = {}
            for name in self.io.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                outputs[name] = torch.empty(shape, dtype=torch.float32, device="cuda")
                self.context.set_tensor_address(name, outputs[name].data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"TensorRT failed to run {self.path.name}")
            host = {name: tensor.to("cpu", non_blocking=True) for name, tensor in outputs.items()}
        self.stream.synchronize()
        return {name: tensor.numpy() for name, tensor in host.items()}

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        inputs = self.io.check(batch)
        chunks = [self._run(inputs[i : i + self.max_batch]) for i in range(0, len(inputs), self.max_batch)]
        if len(chunks) == 1:
            return chunks[0]
        return {name: np.concatenate([c[name] for c in chunks]) for name in self.io.outputs}

    def describe(self) -> str:
        import torch

        gpu = torch.cuda.get_device_name()
        return f"tensorrt {self.version} {self.path.name} on {gpu} (max batch {self.max_batch})"
