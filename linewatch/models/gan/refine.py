"""AnoGAN-style refinement (Schlegl et al. 2017): a few Adam steps on the matched image's latent vector so the
generated image moves closer to the test image. Needs PyTorch and the generator, so it runs only in the
scorer of `inspect-eval`; the runtime and export refuse such bundles (`GanScorer.stream_problem`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from linewatch.models.gan.network import build_generator


class Refiner:
    def __init__(self, generator: dict[str, Any], steps: int, lr: float) -> None:
        from safetensors.torch import load_file

        self.network = build_generator(generator["params"]).eval()
        self.network.load_state_dict(load_file(str(generator["path"])))
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)
        self.steps, self.lr = steps, lr

    def __call__(self, pixels: np.ndarray, latents: np.ndarray) -> np.ndarray:
        """[0, 1] images (N, C, H, W) and their matches' latents -> refined matches in [0, 1]."""
        target = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)) * 2.0 - 1.0
        z = torch.from_numpy(np.ascontiguousarray(latents, dtype=np.float32)).clone().requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=self.lr)
        with torch.enable_grad():
            for _ in range(self.steps):
                loss = (self.network(z) - target).abs().mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            return ((self.network(z) + 1.0) / 2.0).clamp(0.0, 1.0).numpy()
