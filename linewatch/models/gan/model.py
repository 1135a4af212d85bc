"""Training the GAN in the shared epoch loop.

WGAN-GP (Gulrajani et al. 2017): Adam 1e-4, betas (0, 0.9), lambda 10, five critic steps per generator
step. DCGAN (Radford et al. 2016): Adam 2e-4, betas (0.5, 0.999), BCE, one discriminator step per
generator step. Each `train_step` is one critic step on the loop's batch; every `critic_steps`-th also
steps the generator (counted from the critic optimizer's own step count, so `--resume` keeps the rhythm).

The validation loss is what the detector depends on: the residual between each good validation image and
its nearest image among a fixed-noise pool of samples (lower: good parts are reproduced better).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from linewatch.models.components.ssim import ssim_map
from linewatch.models.gan import quality
from linewatch.models.gan.embedding import GanFeatures, feature_params
from linewatch.models.gan.loss import GP_WEIGHT, critic_terms, generator_loss, gradient_penalty
from linewatch.models.gan.network import Critic, Generator
from linewatch.models.network import network_section

ADAM = {"wgan-gp": {"lr": 1e-4, "betas": (0.0, 0.9)}, "dcgan": {"lr": 2e-4, "betas": (0.5, 0.999)}}
CRITIC_STEPS = {"wgan-gp": 5, "dcgan": 1}
ARCHITECTURE = "gan_embedding"
OUTPUTS = ("embedding", "pixels")
POOL = 128  # fixed-noise samples the validation images are matched against during training


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Network range [-1, 1] -> image range [0, 1]."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def match_residual(x: torch.Tensor, match: torch.Tensor, kind: str) -> torch.Tensor:
    """(N,) mean of the detector's residual (`scorer.residual_maps`: |x - m|, 1 - SSIM or their mean) on [0, 1]."""
    absolute = (x - match).abs().mean(dim=1, keepdim=True)
    dissimilarity = 1.0 - ssim_map(x, match)
    residual = {"abs": absolute, "ssim": dissimilarity, "abs+ssim": (absolute + dissimilarity) / 2}[kind]
    return residual.mean(dim=(1, 2, 3))


class GanModel:
    """A `TrainedModel` for the epoch loop; `network` (the embedding network) is what gets exported."""

    def __init__(self, size: tuple[int, int], options: dict[str, Any], network: torch.nn.Module,
                 training_dir: Path) -> None:
        self.size, self.loss, self.residual = size, options["gan_loss"], options["residual"]
        self.generator_params = {"size": list(size), "channels": options["channels"],
                                 "latent": options["latent_size"], "base_channels": options["base_channels"],
                                 "upsampling": options["upsampling"]}
        self.generator = Generator(size, options["channels"], options["latent_size"], options["base_channels"],
                                   options["upsampling"])
        norm = "batch" if self.loss == "dcgan" else options["critic_norm"]
        self.critic = Critic(size, options["channels"], options["critic_channels"] or options["base_channels"], norm)
        self.network = network
        self.modules = {"generator": self.generator, "critic": self.critic}
        adam = {**ADAM[self.loss], **({"lr": options["lr"]} if options["lr"] else {})}
        self.optimizers = {"generator": torch.optim.Adam(self.generator.parameters(), **adam),
                           "critic": torch.optim.Adam(self.critic.parameters(), **adam)}
        self.schedulers: dict[str, Any] = {}
        self.critic_steps = options["critic_steps"] or CRITIC_STEPS[self.loss]
        self.generator_version = 0  # generator steps taken in this process (invalidates cached samples)
        noise = torch.Generator().manual_seed(options["seed"] + 1)
        self.fixed_noise = torch.randn(max(POOL, options["fid_samples"]), options["latent_size"], generator=noise)
        self.quality = quality.QualityTracker(self, training_dir, options["fid_samples"])
        self._features: torch.nn.Module | None = getattr(network, "features", None)
        self._feature_setup = (feature_params(size, options["backbone"]), options["weights"])
        self._pool: torch.Tensor | None = None

    @property
    def features(self) -> torch.nn.Module:
        """The pretrained features behind the Fréchet distance (the embedding network's own, if it has them)."""
        if self._features is None:
            self._features = GanFeatures(*self._feature_setup)
        return self._features

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def _critic_step_count(self) -> int:
        state = self.optimizers["critic"].state.get(next(iter(self.critic.parameters())), {})
        return int(state["step"]) if "step" in state else 0

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        real = batch / 127.5 - 1.0
        n = len(real)
        with torch.no_grad():
            fake = self.generator(torch.randn(n, self.generator.latent, device=real.device))
        fake_scores = self.critic(fake).float()
        terms = critic_terms(self.critic(real).float(), fake_scores, self.loss)
        terms["generator"] = generator_loss(fake_scores.detach(), self.loss)  # against the critic before its step
        loss = terms["critic"]
        if self.loss == "wgan-gp":
            alpha = torch.rand(n, 1, 1, 1, device=real.device)
            terms["gp"] = gradient_penalty(self.critic, real, fake, alpha).float()
            loss = loss + GP_WEIGHT * terms["gp"]
        critic_opt = self.optimizers["critic"]
        critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        critic_opt.step()
        if self._critic_step_count() % self.critic_steps == 0:
            self._generator_step(n, real.device)
        return {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}}

    def _generator_step(self, n: int, device: torch.device) -> None:
        fake = self.generator(torch.randn(n, self.generator.latent, device=device))
        loss = generator_loss(self.critic(fake).float(), self.loss)
        optimizer = self.optimizers["generator"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        self.generator_version += 1
        self._pool = None

    def generate(self, z: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """[0, 1] images from latent vectors, in eval mode (the bank and the curves see what the bundle keeps)."""
        mode = self.generator.training
        self.generator.eval()
        with torch.no_grad():
            out = torch.cat([to_unit(self.generator(z[i : i + batch_size].to(self.device)).float())
                             for i in range(0, len(z), batch_size)])
        self.generator.train(mode)
        return out

    def pool(self) -> torch.Tensor:
        """The fixed-noise samples validation images are matched against (regenerated after each generator step)."""
        if self._pool is None:
            self._pool = self.generate(self.fixed_noise[:POOL])
        return self._pool

    def reconstruct(self, batch: torch.Tensor) -> torch.Tensor:
        """Each image's nearest pool sample (the detector's match, found on downsampled pixels)."""
        x = batch / 255.0
        pool = self.pool()
        index = quality.nearest(x, pool)
        return pool[index]

    def validation_losses(self, batch: torch.Tensor) -> dict[str, float]:
        x = batch / 255.0
        return {"loss": float(match_residual(x, self.reconstruct(batch), self.residual).mean())}

    def extra_metrics(self, epoch: int, data: Any, saved: bool) -> dict[str, float]:
        return self.quality.measure(epoch, data, saved)

    def end_epoch(self, validation: dict[str, float]) -> None:
        """GANs train at a constant learning rate."""

    def learning_rates(self) -> dict[str, float]:
        return {name: opt.param_groups[0]["lr"] for name, opt in self.optimizers.items()}

    def network_section(self) -> dict[str, Any]:
        features = getattr(self.network, "features", None)
        extra = {"pretrained": features.pretrained} if features is not None and features.pretrained else {}
        return network_section(ARCHITECTURE, self.network.params, self.size, self.generator_params["channels"],
                               OUTPUTS, {"scale": "x / 255 inside the network; features: backbone mean/std inside"},
                               **extra)
