"""Where a detector's torch scoring runs: one reading of `--device cpu|auto|cuda` for every detector."""

from __future__ import annotations

import torch

from linewatch.errors import DeviceUnavailable

DEVICES = ("cpu", "auto", "cuda")


def torch_device(device: str) -> torch.device:
    """cpu, cuda, or auto (cuda when torch sees a GPU); asking for cuda without one is an error."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose auto, cpu or cuda")
    if device != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    if device == "cuda":
        raise DeviceUnavailable("device 'cuda' asked for, but torch sees no CUDA GPU")
    return torch.device("cpu")
