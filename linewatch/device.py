"""Where torch work runs: one reading of `--device cpu|auto|cuda` for engines and detectors."""

from __future__ import annotations

import os
import sys
from typing import Any

from linewatch.errors import DeviceUnavailable

DEVICES = ("cpu", "auto", "cuda")
# Linux exposes an NVIDIA GPU through these nodes (native driver; WSL2's GPU bridge). Without them torch
# cannot see CUDA, so `auto` can answer "cpu" without importing torch (~1.4 s and ~300 MB at start-up).
_GPU_NODES = ("/dev/nvidiactl", "/dev/dxg")


def cuda_possible() -> bool:
    """False when this machine certainly has no CUDA GPU (checked without importing torch)."""
    return not sys.platform.startswith("linux") or any(os.path.exists(node) for node in _GPU_NODES)


def use_cuda(device: str) -> bool:
    """True for cuda, or auto with a GPU torch can see; asking for cuda without one is an error."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose auto, cpu or cuda")
    if device == "cpu" or (device == "auto" and not cuda_possible()):
        return False
    import torch

    if torch.cuda.is_available():
        return True
    if device == "cuda":
        raise DeviceUnavailable("device 'cuda' asked for, but torch sees no CUDA GPU")
    return False


def torch_device(device: str) -> Any:
    """cpu, cuda, or auto (cuda when torch sees a GPU) as a torch.device."""
    import torch

    return torch.device("cuda" if use_cuda(device) else "cpu")
