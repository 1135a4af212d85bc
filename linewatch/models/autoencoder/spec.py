"""The convolutional autoencoder in the registry: options, training through the epoch loop, scorer."""

from __future__ import annotations

from typing import Any

from linewatch.config import Option
from linewatch.models.base import FitContext, Fitted
from linewatch.models.components.reconstruction import IMAGE_SCORES, ReconstructionScorer
from linewatch.models.registry import DetectorSpec
from linewatch.train.epoch_options import EPOCH_OPTIONS

OPTIONS: dict[str, Option] = {
    **EPOCH_OPTIONS,
    "depth": Option(int, 3, minimum=1, maximum=6,
                    help="Strided convolution stages (the input size becomes a multiple of 2**depth)."),
    "base_channels": Option(int, 32, minimum=4, help="Channels of the first stage (doubling per stage)."),
    "bottleneck": Option(int, None, minimum=1, help="Channels of a 1x1 bottleneck after the encoder (default: none)."),
    "dropout": Option(float, 0.2, minimum=0.0, maximum=0.9, help="Dropout after each encoder stage."),
    "weight_decay": Option(float, 1e-5, minimum=0.0, help="Adam weight decay."),
    "loss": Option(str, "ssim", choices=("mse", "ssim"),
                   help="mse (AE-L2, squared-error map) or ssim (AE-SSIM, 1-SSIM map)."),
    "score": Option(str, "max", choices=IMAGE_SCORES,
                    help="Image score: mean residual (MSE) or max of the blurred map."),
}


def _valid_size(depth: int) -> Any:
    """Each side rounded to a multiple of the encoder's total stride."""
    stride = 2**depth
    return lambda size: tuple(max(stride, round(side / stride) * stride) for side in size)


def fit(context: FitContext) -> Fitted:
    from linewatch.models.autoencoder.model import AutoencoderModel
    from linewatch.train.trained import fit_trained

    options = context.options
    return fit_trained(context, lambda size: AutoencoderModel(size, options), _valid_size(options["depth"]),
                       ReconstructionScorer("autoencoder", options["score"]), "convolutional autoencoder")


def build_network(section: dict[str, Any]) -> Any:
    from linewatch.models.autoencoder.network import build

    return build(section["params"])


SPEC = DetectorSpec(
    kind="autoencoder",
    summary="Convolutional autoencoder: per-pixel reconstruction error (AE-L2) or 1-SSIM (AE-SSIM)",
    fit=fit,
    load=ReconstructionScorer.load,
    build_network=build_network,
    options=OPTIONS,
    defaults={"image_size": (128, 128), "batch_size": 16, "epochs": 100},  # within 15 min on 2 CPU cores (README)
    quick={"image_size": 32, "epochs": 3, "checkpoint_every": 1, "base_channels": 8},
    trained=True,
)
