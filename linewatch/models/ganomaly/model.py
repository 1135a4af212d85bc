"""Training GANomaly: Adam(2e-4, betas 0.5/0.999) for G and D; D re-initialised when its loss collapses."""

from __future__ import annotations

from typing import Any

import torch

from linewatch.models.components.dcgan import init_weights
from linewatch.models.ganomaly.loss import discriminator_loss, generator_terms
from linewatch.models.ganomaly.network import Discriminator, GanomalyNetwork, to_unit
from linewatch.models.network import network_section

ARCHITECTURE = "ganomaly"
D_COLLAPSE = 1e-5  # the reference implementation re-initialises D below this loss


class GanomalyModel:
    """A `TrainedModel` for the epoch loop: `network` (the generator with its score terms) is exported."""

    precise_batch_norm = True  # the epoch loop re-estimates BatchNorm statistics after each epoch

    def __init__(self, size: tuple[int, int], options: dict[str, Any]) -> None:
        self.size = size
        self.params = {"size": size[0], "channels": options["channels"], "latent": options["latent_size"],
                       "features": options["base_channels"]}
        self.weights = {"adv": options["w_adv"], "con": options["w_con"], "enc": options["w_enc"]}
        self.network = GanomalyNetwork(**self.params)
        self.generator = self.network.generator
        self.discriminator = Discriminator(size[0], options["channels"], options["base_channels"])
        self.modules = {"generator": self.generator, "discriminator": self.discriminator}
        betas = (0.5, 0.999)
        self.optimizers = {"generator": torch.optim.Adam(self.generator.parameters(), lr=options["lr"], betas=betas),
                           "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=options["lr"],
                                                             betas=betas)}
        self.schedulers: dict[str, Any] = {}

    def _generator_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        fake, z, z_again = self.generator(x)
        _, real_features = self.discriminator(x)
        _, fake_features = self.discriminator(fake)
        terms = generator_terms(real_features, fake_features, x, fake, z, z_again)
        return sum(self.weights[k] * v for k, v in terms.items()), terms, fake

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        x = batch / 127.5 - 1.0
        loss, terms, fake = self._generator_loss(x)
        g_opt, d_opt = self.optimizers["generator"], self.optimizers["discriminator"]
        g_opt.zero_grad(set_to_none=True)
        loss.backward()
        g_opt.step()
        real_logits, _ = self.discriminator(x)
        fake_logits, _ = self.discriminator(fake.detach())
        d_loss = discriminator_loss(real_logits.float(), fake_logits.float())
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        if float(d_loss.detach()) < D_COLLAPSE:
            self.discriminator.apply(init_weights)
        return {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()},
                "d": float(d_loss.detach())}

    def validation_losses(self, batch: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():
            loss, terms, _ = self._generator_loss(batch / 127.5 - 1.0)
        return {"loss": float(loss), **{k: float(v) for k, v in terms.items()}}

    def reconstruct(self, batch: torch.Tensor) -> torch.Tensor:
        return to_unit(self.generator(batch / 127.5 - 1.0)[0])

    def end_epoch(self, validation: dict[str, float]) -> None:
        """GANomaly trains at a constant learning rate."""

    def learning_rates(self) -> dict[str, float]:
        return {name: opt.param_groups[0]["lr"] for name, opt in self.optimizers.items()}

    def network_section(self) -> dict[str, Any]:
        return network_section(ARCHITECTURE, self.params, self.size, self.params["channels"],
                               ("residual", "latent_distance"), {"scale": "x / 127.5 - 1 inside the network"})
