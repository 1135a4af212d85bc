"""The PyTorch network, eager: the reference the exported engines are checked against."""

from __future__ import annotations

from typing import Any

import numpy as np

from linewatch.engines.base import DEVICE_CHOICES, EngineUnavailable, NetworkIO, torch_cuda


def run_network(module: Any, batch: np.ndarray, device: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """numpy batch -> {name: numpy output}; a network returns one tensor or a tuple in `names` order."""
    import torch

    with torch.inference_mode():
        result = module(torch.from_numpy(batch).to(device))
    tensors = (result,) if isinstance(result, torch.Tensor) else tuple(result)
    if len(tensors) != len(names):
        raise ValueError(f"network returned {len(tensors)} outputs, expected {list(names)}")
    return {name: t.float().cpu().numpy() for name, t in zip(names, tensors, strict=True)}


class TorchEngine:
    """An `nn.Module` whose forward returns the outputs named by `io`, in that order."""

    name = "torch"

    def __init__(self, module: Any, io: NetworkIO, device: str = "auto", threads: int | None = None) -> None:
        if device not in DEVICE_CHOICES:
            raise ValueError(f"device {device!r} is not one of {', '.join(DEVICE_CHOICES)}")
        cuda = torch_cuda()
        if device == "cuda" and not cuda:
            raise EngineUnavailable("device 'cuda' was requested but torch sees no CUDA GPU "
                                    "(torch.cuda.is_available() is False)")
        self.device = "cuda" if device == "cuda" or (device == "auto" and cuda) else "cpu"
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.io = io
        self.module = module.to(self.device).eval()

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return run_network(self.module, self.io.check(batch), self.device, self.io.outputs)

    def describe(self) -> str:
        import torch

        threads = f", {torch.get_num_threads()} threads" if self.device == "cpu" else ""
        return f"torch {torch.__version__} eager on {self.device}{threads}"
