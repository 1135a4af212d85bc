"""What every engine shares: the network's named input and outputs, file names, choices and errors.

An engine runs "the detector's network" (a feature extractor, an autoencoder, ...) on a preprocessed
batch and returns its named outputs as numpy arrays; the scorer (`linewatch.scoring`) does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from linewatch.bundle import BundleError
from linewatch.errors import LinewatchError

ONNX_FILE = "network.onnx"
INT8_FILE = "network.int8.onnx"
PLAN_FILE = "network.plan"
ENGINE_CHOICES = ("auto", "onnxruntime", "tensorrt", "torch", "triton")  # `auto` never picks a remote server
DEVICE_CHOICES = ("auto", "cpu", "cuda")
PRECISION_CHOICES = ("fp32", "int8")
GPU_EXTRA = "pip install -e '.[gpu]' (the gpu extra: onnxruntime-gpu, tensorrt, faiss-gpu-cu12)"
TRITON_EXTRA = "pip install -e '.[triton]' (the triton extra: tritonclient[grpc])"


class EngineUnavailable(LinewatchError, ValueError):
    """The requested engine or device cannot run on this machine; the message says what is missing."""


@dataclass(frozen=True)
class NetworkIO:
    """The network's contract: one float32 NCHW input (0..255) and named float32 outputs."""

    input_name: str
    channels: int
    size: tuple[int, int]
    outputs: tuple[str, ...]

    @classmethod
    def from_section(cls, network: dict[str, Any]) -> NetworkIO:
        spec = network["input"]
        return cls(str(spec["name"]), int(spec["channels"]), (int(spec["size"][0]), int(spec["size"][1])),
                   tuple(str(name) for name in network["outputs"]))

    def check(self, batch: np.ndarray) -> np.ndarray:
        """A contiguous float32 batch of the expected shape, or a ValueError naming both shapes."""
        expected = (self.channels, *self.size)
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            raise ValueError(f"expected a (N, {', '.join(map(str, expected))}) batch, got {batch.shape}")
        return np.ascontiguousarray(batch, dtype=np.float32)


class Engine(Protocol):
    name: str
    device: str
    io: NetworkIO

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """(N, C, H, W) float32 0..255 -> {output name: (N, ...) float32}."""

    def describe(self) -> str:
        """One line for logs: engine, version, device / providers."""


def check_names(path: Any, io: NetworkIO, inputs: list[str], outputs: list[str]) -> None:
    """Refuse a graph whose tensor names differ from the bundle's network section."""
    if inputs != [io.input_name] or sorted(outputs) != sorted(io.outputs):
        raise BundleError(f"{path}: graph has inputs {inputs} and outputs {outputs}, but the bundle's network "
                          f"takes {io.input_name!r} and returns {list(io.outputs)}; re-export it with export-model")


def torch_cuda() -> bool:
    """Whether torch sees a CUDA GPU (without importing torch on machines that certainly have none)."""
    from linewatch.device import cuda_possible

    if not cuda_possible():
        return False
    import torch

    return torch.cuda.is_available()
