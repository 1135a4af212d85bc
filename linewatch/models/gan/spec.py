"""The GAN detector in the registry: a generator of good parts (WGAN-GP or DCGAN) and a reference bank of its
images; a test image is compared with its most similar generated image."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from linewatch.config import Option
from linewatch.models.base import Detector, FitContext, Fitted
from linewatch.models.components.feature_memory import FEATURE_OPTIONS
from linewatch.models.components.reconstruction import IMAGE_SCORES
from linewatch.models.registry import DetectorSpec
from linewatch.train.epoch_options import EPOCH_OPTIONS

OPTIONS: dict[str, Option] = {
    **EPOCH_OPTIONS,
    "epochs": replace(EPOCH_OPTIONS["epochs"], default=300),
    "lr": replace(EPOCH_OPTIONS["lr"], default=None,
                  help="Adam learning rate (default: 1e-4 for wgan-gp, 2e-4 for dcgan)."),
    "patience": replace(EPOCH_OPTIONS["patience"], default=0),
    "checkpoint_every": replace(EPOCH_OPTIONS["checkpoint_every"], default=10),
    "channels": replace(EPOCH_OPTIONS["channels"], default=3),
    "gan_loss": Option(str, "wgan-gp", choices=("wgan-gp", "dcgan"),
                       help="wgan-gp (critic without BatchNorm, gradient penalty 10, Adam 1e-4 betas 0/0.9) or dcgan "
                            "(BCE, BatchNorm discriminator, Adam 2e-4 beta1 0.5)."),
    "latent_size": Option(int, 128, minimum=2, help="Latent vector size."),
    "base_channels": Option(int, 64, minimum=4, help="Channels of the first stage (doubling per stage)."),
    "critic_channels": Option(int, None, minimum=4, help="Critic channels at half the image size (default: "
                                                         "--base-channels)."),
    "critic_steps": Option(int, None, minimum=1, help="Critic steps per generator step (default: 5 for wgan-gp, 1 "
                                                      "for dcgan)."),
    "critic_norm": Option(str, "layer", choices=("layer", "none"), help="WGAN-GP critic normalisation."),
    "upsampling": Option(str, "transposed", choices=("upsample", "transposed"),
                         help="Generator up-sampling: 4x4 stride-2 transposed convolution (sharper, lower "
                              "Fréchet distance on bottle) or nearest up-sample + 3x3 convolution."),
    "embedding": Option(str, "pixels", choices=("pixels", "features"),
                        help="How the bank is searched: downsampled pixels or pooled EfficientNet-Lite0 features."),
    "backbone": FEATURE_OPTIONS["backbone"],
    "weights": FEATURE_OPTIONS["weights"],
    "fid_samples": Option(int, 256, minimum=8, help="Generated images per Fréchet distance (every saved epoch)."),
    "bank_size": Option(int, 1000, minimum=1, help="Generated images kept in the bundle's reference bank."),
    "residual": Option(str, "abs+ssim", choices=("abs+ssim", "abs", "ssim"),
                       help="Anomaly map: mean of |x - match| and 1 - SSIM, or either alone."),
    "score": Option(str, "max", choices=IMAGE_SCORES, help="Image score: max of the blurred map, or mean residual."),
    "refine_steps": Option(int, 0, minimum=0,
                           help="AnoGAN latent-optimisation steps per match (0: off; not exportable or streamable)."),
}


def fit(context: FitContext) -> Fitted:
    from linewatch.models.gan.fit import fit_gan

    return fit_gan(context)


def load(directory: Path, section: dict[str, Any], device: str) -> Detector:
    from linewatch.models.gan.scorer import GanScorer

    return GanScorer.load(directory, section, device)


def build_network(section: dict[str, Any]) -> Any:
    from linewatch.models.gan.embedding import build_embedding

    return build_embedding(section["params"])


SPEC = DetectorSpec(
    kind="gan",
    summary="GAN of good parts (WGAN-GP or DCGAN): residual to the most similar image of a generated reference bank",
    fit=fit,
    load=load,
    build_network=build_network,
    options=OPTIONS,
    # A 4-pixel blur at 256 px is a 1-pixel blur at 64 px: the same share of the part.
    defaults={"image_size": (64, 64), "batch_size": 16, "blur_sigma": 1.0},
    quick={"image_size": 16, "epochs": 2, "checkpoint_every": 1, "base_channels": 8, "latent_size": 8,
           "bank_size": 16, "critic_steps": 1, "fid_samples": 16},
    trained=True,
)
