"""GANomaly in the registry: options, adversarial training through the epoch loop, latent-distance scorer."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from linewatch.config import Option
from linewatch.models.base import FitContext, Fitted
from linewatch.models.components.dcgan import power_of_two
from linewatch.models.components.reconstruction import ReconstructionScorer
from linewatch.models.registry import DetectorSpec
from linewatch.train.epoch_options import EPOCH_OPTIONS

OPTIONS: dict[str, Option] = {
    **EPOCH_OPTIONS,
    "lr": replace(EPOCH_OPTIONS["lr"], default=2e-4),
    "select": replace(EPOCH_OPTIONS["select"], default="val-auroc"),
    "channels": replace(EPOCH_OPTIONS["channels"], default=3),
    "patience": replace(EPOCH_OPTIONS["patience"], default=0),
    "latent_size": Option(int, 100, minimum=2, help="Latent vector size."),
    "base_channels": Option(int, 64, minimum=4, help="Channels of the first stage (doubling per stage)."),
    "w_adv": Option(float, 1.0, minimum=0.0, help="Weight of the adversarial (feature-matching) loss."),
    "w_con": Option(float, 50.0, minimum=0.0, help="Weight of the contextual (L1 reconstruction) loss."),
    "w_enc": Option(float, 1.0, minimum=0.0, help="Weight of the latent (encoder) loss."),
}


def fit(context: FitContext) -> Fitted:
    from linewatch.models.ganomaly.model import GanomalyModel
    from linewatch.train.trained import fit_trained

    options = context.options
    return fit_trained(context, lambda size: GanomalyModel(size, options), _square_power_of_two,
                       ReconstructionScorer("ganomaly", "latent_distance"), "GANomaly")


def _square_power_of_two(size: tuple[int, int]) -> tuple[int, int]:
    """DCGAN pyramids halve a square down to 4 x 4: the nearest power of two of the longer side."""
    side = power_of_two(max(size))
    return side, side


def build_network(section: dict[str, Any]) -> Any:
    from linewatch.models.ganomaly.network import build

    return build(section["params"])


SPEC = DetectorSpec(
    kind="ganomaly",
    summary="GANomaly (Akcay et al. 2018): latent distance ||G_E(x) - E(G(x))||^2 of an adversarial autoencoder",
    fit=fit,
    load=ReconstructionScorer.load,
    build_network=build_network,
    options=OPTIONS,
    defaults={"image_size": (64, 64), "batch_size": 32, "epochs": 15},  # within 15 min on 2 CPU cores (README)
    quick={"image_size": 32, "epochs": 3, "checkpoint_every": 1, "base_channels": 8, "latent_size": 16},
    trained=True,
)
