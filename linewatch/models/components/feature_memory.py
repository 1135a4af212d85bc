"""Feature-memory detectors (PatchCore, PaDiM): a frozen pretrained extractor is the network; fitting gathers
statistics of its training features. Shared options, the network section and the fit live here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from linewatch.config import AutoSize, Option
from linewatch.features.catalog import BACKBONES, get_spec
from linewatch.models.base import Detector, FitContext, Fitted
from linewatch.models.network import network_section

FEATURE_OPTIONS: dict[str, Option] = {
    "backbone": Option(str, "efficientnet_lite0", choices=tuple(BACKBONES),
                       help="Pretrained backbone: efficientnet_lite0, efficientnet_lite2, resnet18, wide_resnet50_2."),
    "weights": Option(str, "default", help="'default' (packaged / torch hub cache), 'none' (random) or a file."),
    "layers": Option(tuple, None, help="Comma-separated feature layers, e.g. layer2,layer3."),
    "projection_dims": Option(int, None, minimum=8, help="Project features to this many dims (default: none)."),
    "align": Option(str, "none", choices=("none", "ecc", "ecc-affine"),
                    help="Align each frame to a reference training view before the network (OpenCV ECC; ecc: "
                         "rotation + shift, ecc-affine: also scale and shear); maps are moved back onto the frame."),
}
# The input keeps the training images' aspect ratio at about 256 x 256 pixels: identical to the square 256 on
# square parts, better on elongated ones (capsule as 200 x 512 bands: image AUROC 0.944 -> 0.974; README).
FEATURE_DEFAULTS: dict[str, Any] = {"image_size": AutoSize(256)}
ARCHITECTURE = "feature_extractor"


@dataclass(frozen=True)
class FeatureSearch:
    """What `inspect-train --tune` may vary for a feature-memory detector, and its two halves, so the search
    fits candidates on cached backbone outputs with the same code `inspect-train` runs.

    `config(options)` gives the FeatureConfig; `fit(options, feature batches, bars)` the fitted scorer;
    `layers` are the layer sets tried (stage 1, with every backbone and input size); `grid` maps the
    detector's own options to the values tried around the best features (stage 2); `cost` scales a
    measured candidate's seconds to another's, so the budget can skip what it cannot afford.
    """

    config: Callable[[dict[str, Any]], Any]
    fit: Callable[[dict[str, Any], Iterator[np.ndarray], Any], Detector]
    layers: tuple[tuple[str, ...], ...]
    grid: dict[str, tuple[Any, ...]]
    cost: Callable[[dict[str, Any]], float] | None = None  # relative fit + scoring cost, for the budget
    aligns: tuple[str, ...] = ("none",)  # --align values tried in stage 1 (each one a feature extraction)

    def relative_cost(self, options: dict[str, Any]) -> float:
        return float(self.cost(options)) if self.cost else 1.0


def feature_config(options: dict[str, Any], default_layers: tuple[str, ...], aggregate: bool,
                   channel_subset: int | None = None) -> Any:
    from linewatch.features.extractor import FeatureConfig

    return FeatureConfig(
        backbone=options["backbone"],
        layers=tuple(options["layers"] or default_layers),
        image_size=options["image_size"],
        aggregate=aggregate,
        projection_dims=options["projection_dims"],
        channel_subset=channel_subset,
        seed=options["seed"],
    )


def build_feature_network(section: dict[str, Any]) -> Any:
    """The extractor described by a network section (weights are filled by the caller)."""
    from linewatch.features.extractor import FeatureConfig, FeatureExtractor

    return FeatureExtractor(FeatureConfig.from_dict(section["params"]))


def fit_feature_memory(
    context: FitContext, config: Any, fit: Callable[[Iterator[np.ndarray]], Detector]
) -> Fitted:
    """Build the pretrained extractor, stream train-clean's features into `fit`, describe the network."""
    import torch

    from linewatch.batches import iter_batches
    from linewatch.engines.torch_engine import run_network
    from linewatch.features.extractor import build_extractor
    from linewatch.features.preprocess import Preprocessor

    torch.manual_seed(context.options["seed"])
    extractor, weights = build_extractor(config, context.options["weights"])
    aligner = aligner_for(context.options, context.splits.train, config.image_size)
    step = context.bars(len(context.splits.train), "features")

    def train_features() -> Iterator[np.ndarray]:
        preprocess = Preprocessor(config.image_size, align=aligner)
        for batch in iter_batches(context.splits.train, preprocess, context.options["batch_size"]):
            yield run_network(extractor, batch.inputs, "cpu", ("features",))["features"]
            step(len(batch.samples))

    detector = fit(train_features())
    spec = get_spec(config.backbone)
    params = {**config.to_dict(), "out_dims": config.out_dims, "feature_size": list(config.feature_size)}
    section = network_section(
        ARCHITECTURE, params, config.image_size, 3, ("features",),
        {"mean": list(spec.mean), "std": list(spec.std), "where": "inside the network"},
        pretrained={"source": weights.source, "sha256": weights.sha256},
    )
    return Fitted(network=extractor, network_section=section, detector=detector, aligner=aligner)


def aligner_for(options: dict[str, Any], train: Any, size: tuple[int, int]) -> Any:
    """The reference-view aligner `--align` asks for, built from train-clean at the model size, or None."""
    if options.get("align", "none") == "none":
        return None
    from linewatch.features.align import reference_from_samples

    return reference_from_samples(train, size, options["align"])
