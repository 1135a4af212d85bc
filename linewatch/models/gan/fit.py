"""Fitting the GAN detector: the epoch loop (through `fit_trained`), then the reference bank of the best epoch.

The bank is `bank_size` images generated from seeded noise, stored as uint8 exactly as a camera frame would
arrive, and their embeddings computed by the exported network from those uint8 images, so an image equal
to a bank image finds itself at distance 0.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from linewatch.models.base import FitContext, Fitted
from linewatch.models.gan import quality
from linewatch.models.gan.embedding import EmbeddingNetwork, embedding_params
from linewatch.models.gan.model import GanModel
from linewatch.models.gan.network import valid_size
from linewatch.models.gan.plots import plot_gan_history
from linewatch.models.gan.scorer import GanScorer
from linewatch.train import history
from linewatch.train.trained import fit_trained

log = logging.getLogger(__name__)
TITLES = {"wgan-gp": "WGAN-GP", "dcgan": "DCGAN"}
VAL_AUROC_BANK = 256  # bank size while `--select val-auroc` scores each epoch


def make_bank(model: GanModel, network: torch.nn.Module, count: int, seed: int,
              batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 images (N, C, H, W), float32 embeddings (N, D), float32 latents (N, latent)) from seeded noise."""
    noise = torch.Generator().manual_seed(seed + 2)
    latents = torch.randn(count, model.generator.latent, generator=noise)
    images = (model.generate(latents, batch_size) * 255.0).round().to(torch.uint8).cpu()
    device = next(iter(network.parameters()), torch.zeros(0)).device
    embeddings = []
    with torch.no_grad():
        for start in range(0, count, batch_size):
            embeddings.append(network(images[start : start + batch_size].float().to(device))[0].float().cpu())
    return images.numpy(), torch.cat(embeddings).numpy(), latents.numpy()


class LiveBankScorer:
    """The scorer during training (`--select val-auroc`): a small bank regenerated whenever the generator moved."""

    kind = "gan"

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.model: GanModel | None = None
        self._scorer: GanScorer | None = None
        self._version = -1

    def _current(self) -> GanScorer:
        model = self.model
        assert model is not None, "the model is attached before the loop scores"
        if self._scorer is None or self._version != model.generator_version:
            images, embeddings, _ = make_bank(model, model.network, min(VAL_AUROC_BANK, self.options["bank_size"]),
                                              self.options["seed"])
            self._scorer = GanScorer(images, embeddings, self.options["residual"], self.options["score"])
            self._version = model.generator_version
        return self._scorer

    @property
    def scores_from_maps(self) -> bool:
        return self.options["score"] == "max"

    def patch_scores(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        return self._current().patch_scores(outputs)

    def image_scores(self, patch: np.ndarray, maps: np.ndarray, outputs: dict[str, np.ndarray]) -> np.ndarray:
        return self._current().image_scores(patch, maps, outputs)

    def save(self, directory: Any) -> tuple[dict[str, Any], list[str]]:
        raise RuntimeError("the training-time scorer is not saved; the bank of the best epoch is")


def fit_gan(context: FitContext) -> Fitted:
    options = context.options
    size = valid_size(options["image_size"])
    params = embedding_params(size, options["channels"], options["embedding"], options["backbone"])
    network = EmbeddingNetwork(params, options["weights"] if options["embedding"] == "features" else None).eval()
    live = LiveBankScorer(options)
    training_dir = context.out / "training"

    def build(size: tuple[int, int]) -> GanModel:
        live.model = GanModel(size, options, network, training_dir)
        return live.model

    title = f"{TITLES[options['gan_loss']]} {size[0]}x{size[1]} ({options['upsampling']} up-sampling)"
    fitted = fit_trained(context, build, valid_size, live, title, plot_gan_history)
    model = live.model
    assert model is not None
    history.write_gif(training_dir, frames_dir=quality.SAMPLES_DIR, name=quality.SAMPLES_GIF)
    network.cpu().eval()
    step = context.bars(options["bank_size"], "reference bank")
    images, embeddings, latents = make_bank(model, network, options["bank_size"], options["seed"])
    step(len(images))
    context.bars.close()
    state = {k: v.detach().cpu().contiguous().numpy() for k, v in model.generator.state_dict().items()}
    scorer = GanScorer(images, embeddings, options["residual"], options["score"], options["refine_steps"],
                       {"params": model.generator_params, "state": state}, latents)
    return replace(fitted, detector=scorer, training={**fitted.training, **_summary(fitted.history or [])})


def _summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The Fréchet distance at the first saved epoch and at its best, for the manifest and the README."""
    saved = [(r["epoch"], r["extra"]["frechet"]) for r in records if "frechet" in r.get("extra", {})]
    if not saved:
        return {}
    best = min(saved, key=lambda item: item[1])
    drop = 1.0 - best[1] / saved[0][1] if saved[0][1] > 0 else 0.0
    return {"frechet": {"first_epoch": saved[0][0], "first": saved[0][1], "best_epoch": best[0], "best": best[1],
                        "drop": drop}}
