"""Training the autoencoder: Adam with weight decay, ReduceLROnPlateau on the validation loss (reference design)."""

from __future__ import annotations

from typing import Any

import torch

from linewatch.models.autoencoder.loss import RESIDUALS, reconstruction_loss
from linewatch.models.autoencoder.network import ConvAutoencoder
from linewatch.models.network import network_section

ARCHITECTURE = "conv_autoencoder"
PLATEAU = {"factor": 0.5, "patience": 5}


# 1 - SSIM divides variances (E[x^2] - mu^2, which cancel in float32) by sigma^2 + C2 with C2 = 9e-4: two
# conv implementations' summation orders then move the map by up to ~2e-3 of its maximum on bottle, while the
# image scores (the blurred map's maximum) stay within 1e-5. The map output is checked at this limit instead.
SSIM_PARITY = 1e-2


class AutoencoderModel:
    """A `TrainedModel` for the epoch loop; `network` is what gets exported."""

    precise_batch_norm = True  # the epoch loop re-estimates BatchNorm statistics after each epoch

    def __init__(self, size: tuple[int, int], options: dict[str, Any]) -> None:
        self.size, self.loss = size, options["loss"]
        self.params = {"channels": options["channels"], "depth": options["depth"],
                       "base_channels": options["base_channels"], "bottleneck": options["bottleneck"],
                       "dropout": options["dropout"], "residual": RESIDUALS[self.loss]}
        self.network = ConvAutoencoder(**self.params)
        self.modules = {"autoencoder": self.network}
        optimizer = torch.optim.Adam(self.network.parameters(), lr=options["lr"], weight_decay=options["weight_decay"])
        self.optimizers = {"adam": optimizer}
        self.schedulers = {"plateau": torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **PLATEAU)}

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        x = batch / 255.0
        loss = reconstruction_loss(x, self.network.reconstruct(x).float(), self.loss)
        optimizer = self.optimizers["adam"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach())}

    def validation_losses(self, batch: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():
            x = batch / 255.0
            return {"loss": float(reconstruction_loss(x, self.network.reconstruct(x), self.loss))}

    def reconstruct(self, batch: torch.Tensor) -> torch.Tensor:
        return self.network.reconstruct(batch / 255.0)

    def end_epoch(self, validation: dict[str, float]) -> None:
        self.schedulers["plateau"].step(validation["loss"])

    def learning_rates(self) -> dict[str, float]:
        return {"adam": self.optimizers["adam"].param_groups[0]["lr"]}

    def network_section(self) -> dict[str, Any]:
        tolerance = {"parity_tolerance": {"residual": SSIM_PARITY}} if self.loss == "ssim" else {}
        return network_section(ARCHITECTURE, self.params, self.size, self.params["channels"], ("residual",),
                               {"scale": "x / 255 inside the network"}, **tolerance)
