"""Feature-memory detectors (PatchCore, PaDiM): a frozen pretrained extractor is the network; fitting gathers
statistics of its training features. Shared options, the network section and the fit live here."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from linewatch.config import AutoSize, Option
from linewatch.features.align import ALIGN_METHODS
from linewatch.features.catalog import BACKBONES, get_spec
from linewatch.features.preprocess import AUTO_SPREAD, INTENSITY_CHOICES, Preprocessor, auto_intensity, lighting_spread
from linewatch.models.base import Detector, FitContext, Fitted
from linewatch.models.network import network_section

if TYPE_CHECKING:
    from linewatch.batches import Transform

COLOURS = ("auto", "rgb", "grey")
FEATURE_OPTIONS: dict[str, Option] = {
    "backbone": Option(str, "efficientnet_lite0", choices=tuple(BACKBONES),
                       help="Pretrained backbone: efficientnet_lite0, efficientnet_lite2, resnet18, wide_resnet50_2."),
    "weights": Option(str, "default", help="'default' (packaged / torch hub cache), 'none' (random) or a file."),
    "layers": Option(tuple, None, help="Comma-separated feature layers, e.g. layer2,layer3."),
    "projection_dims": Option(int, None, minimum=8, help="Project features to this many dims (default: none)."),
    "align": Option(str, "none", choices=ALIGN_METHODS,
                    help="Align each frame to a reference training view before the network; maps are moved back "
                         "onto the frame. lk: rotation + shift (Lucas-Kanade, 0.2-0.6 ms per frame), lk-affine: also "
                         "scale and shear; ecc, ecc-affine: the same motions with OpenCV's ECC (1.3-1.7 ms)."),
    "intensity": Option(str, "auto", choices=INTENSITY_CHOICES,
                        help="standardize: bring each frame's channels to one mean and contrast before the network, "
                             "for lines whose lighting or exposure varies (magnetic tile: 0.916 -> 0.942); auto: "
                             f"standardize when the training images' mean brightness varies by > {AUTO_SPREAD:.0%}."),
    "colour": Option(str, "auto", choices=COLOURS,
                     help="grey: the network takes one channel, the frame turned grey (monochrome cameras: a third of "
                          "the preprocessing, and on grey frames the very features RGB gives); auto: grey when every "
                          "training image read has equal R, G and B."),
    "photometric_copies": Option(int, 0, minimum=0, maximum=8,
                                 help="Also fit on this many photometric copies of every training image (lighting, "
                                      "blur, sensor noise: linewatch.data.augment), for lines whose camera "
                                      "conditions drift."),
    "val_goods": Option(bool, True,
                        help="Also fit on val-clean's good images (every good image, as anomalib does); each is "
                             "calibrated by a model fitted without it (2 folds), so thresholds stay unbiased."),
}
VAL_GOOD_FOLDS = 2
AUTO_IMAGES = 64  # training images `--intensity auto` and `--colour auto` read (evenly spaced; ~1 s of reading)
# The input keeps the training images' aspect ratio at about 256 x 256 pixels: identical to the square 256 on
# square parts, better on elongated ones (capsule as 200 x 512 bands: image AUROC 0.944 -> 0.974 fitted on
# train-clean only, 0.965 with --val-goods; README).
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
    """Build the pretrained extractor, feed train-clean's features (and val-clean's goods') into `fit`, describe
    the network.

    With `val_goods` the memory also holds val-clean's good images: train-clean + 20% more goods raised test
    image AUROC by ~0.01 on transistor and capsule (README). Those goods cannot calibrate the detector that
    remembers them (they would score ~0), so `VAL_GOOD_FOLDS` more detectors are fitted, each without one fold
    of them, and score that fold in calibration (`Fitted.calibration`); val-clean's defects are scored by the
    final detector as before. Features are computed once; only the fit is repeated.
    """
    import torch

    from linewatch.engines.torch_engine import run_network
    from linewatch.features.extractor import build_extractor

    torch.manual_seed(context.options["seed"])
    extractor, weights = build_extractor(config, context.options["weights"])
    options, decided = resolve_input(context.options, context.splits.train)
    preprocess = preprocessor_for(options, context.splits.train, config.image_size, config.layers)
    goods = [s for s in context.splits.val if not s.label] if context.options.get("val_goods") else []
    train_samples = context.splits.train
    copies = len(train_samples) * (len(memory_transforms(options)) - 1)
    step = context.bars(len(train_samples) + copies + len(goods), "features")

    def features_of(samples: list[Any], transform: Transform | None = None) -> Iterator[np.ndarray]:
        return memory_features(samples, preprocess, context.options["batch_size"],
                               lambda inputs: run_network(extractor, inputs, "cpu", ("features",))["features"], step,
                               transform)

    if not goods:
        detector, calibration = fit(train_features(train_samples, features_of, options)), []
    else:
        train = list(train_features(train_samples, features_of, options))
        per_good = per_image(features_of(goods))
        detector = fit(iter([*train, *per_good]))
        calibration = held_out_fits(fit, train, goods, per_good)
    spec = get_spec(config.backbone)
    params = {**config.to_dict(), "out_dims": config.out_dims, "feature_size": list(config.feature_size)}
    section = network_section(
        ARCHITECTURE, params, config.image_size, preprocess.channels, ("features",),
        {"mean": list(spec.mean), "std": list(spec.std), "where": "inside the network"},
        pretrained={"source": weights.source, "sha256": weights.sha256},
    )
    facts = {"memory_images": len(train_samples) + copies + len(goods), "val_goods_in_memory": len(goods),
             **({"photometric_copies": copies} if copies else {}),
             "val_goods_calibration": f"{VAL_GOOD_FOLDS}-fold cross-fit" if goods else None,
             **decided}
    return Fitted(network=extractor, network_section=section, detector=detector, aligner=preprocess.align,
                  intensity=preprocess.intensity, training=facts, calibration=calibration)


Scorers = list[tuple[list[Any], Detector]]  # val-clean samples, each group with the detector that scores it


def memory_features(samples: list[Any], preprocess: Any, batch_size: int, network: Callable[[np.ndarray], np.ndarray],
                    step: Callable[[int], None] | None, transform: Transform | None = None) -> Iterator[np.ndarray]:
    """Feature batches of `samples`, as training fits the memory on them. `calibration_scorers` refits through
    the same batches, which is what makes its detectors equal training's to the last float."""
    from linewatch.batches import iter_batches

    for batch in iter_batches(samples, preprocess, batch_size, transform=transform):
        yield network(batch.inputs)
        if step:
            step(len(batch.samples))


def memory_transforms(options: dict[str, Any]) -> list[Transform | None]:
    """How train-clean enters the memory: as it is (None), then once per `--photometric-copies` copy
    (`data.augment.perturbed`, seeded by copy, seed and path). Training, the calibration refit and the
    tuner's cache all read train-clean through these, so they hold the same copies."""
    from linewatch.data.augment import perturbed

    copies = int(options.get("photometric_copies") or 0)  # bundles from before the option lack it
    return [None, *(partial(perturbed, copy=copy, seed=options["seed"]) for copy in range(1, copies + 1))]


def train_features(train: list[Any], features_of: Callable[..., Iterator[np.ndarray]],
                   options: dict[str, Any]) -> Iterator[np.ndarray]:
    """Train-clean's feature batches, then those of each of its photometric copies (`memory_transforms`)."""
    for transform in memory_transforms(options):
        yield from features_of(train, transform)


def per_image(batches: Iterator[np.ndarray]) -> list[np.ndarray]:
    """Feature batches split into one-image batches, so folds can leave single images out."""
    return [image[None] for batch in batches for image in batch]


def held_out_fits(fit: Callable[[Iterator[np.ndarray]], Detector], train: list[np.ndarray], goods: list[Any],
                  per_good: list[np.ndarray]) -> Scorers:
    """`VAL_GOOD_FOLDS` detectors fitted on train-clean and all val goods but one fold (every k-th good), each
    with the fold it has not seen."""
    folds = []
    for fold in range(VAL_GOOD_FOLDS):
        held = set(range(fold, len(goods), VAL_GOOD_FOLDS))
        if held:
            kept = [features for i, features in enumerate(per_good) if i not in held]
            folds.append(([goods[i] for i in sorted(held)], fit(iter([*train, *kept]))))
    return folds


def calibration_scorers(inspector: Any, val: list[Any], train: list[Any],
                        bars: Callable[[int, str], Callable[[int], None]] | None = None) -> Scorers:
    """How a loaded bundle's calibration scored val-clean: every sample its detector has not seen with it, and
    with `val_goods` its val goods by the held-out detectors, fitted again as training fitted them (same
    features, batches and seeds, hence the same detectors). What re-scores val-clean (the int8 export, the
    evaluation's threshold study) uses this, or a remembered good would score ~0."""
    from linewatch.bundle import BundleError
    from linewatch.models.registry import get_spec

    training = inspector.manifest.get("training", {})
    remembered = int(training.get("val_goods_in_memory") or 0)
    if not remembered:
        return [(list(val), inspector.detector)]
    goods = [sample for sample in val if not sample.label]
    if len(goods) != remembered:
        raise BundleError(f"{inspector.directory}: its memory holds {remembered} val-clean good images but the "
                          f"split lists {len(goods)}; evaluate it on the data it was trained on")
    options = {**training["options"], "device": "cpu"}
    engine = inspector.reference_engine()
    count = len(train) * len(memory_transforms(options)) + len(goods)
    step = bars(count, "held-out features") if bars else None

    def features_of(samples: list[Any], transform: Transform | None = None) -> Iterator[np.ndarray]:
        return memory_features(samples, inspector.preprocessor, options["batch_size"],
                               lambda inputs: engine(inputs)["features"], step, transform)

    search = get_spec(inspector.detector.kind).search
    per_good = per_image(features_of(goods))
    folds = held_out_fits(lambda features: search.fit(options, features, None),
                          list(train_features(train, features_of, options)), goods, per_good)
    return calibration_groups(val, inspector.detector, folds)


def calibration_groups(val: list[Any], detector: Detector, held_out: Scorers) -> Scorers:
    """Val-clean split into (samples, the detector that scores them): `detector` for every sample no held-out
    detector takes, the held-out ones for theirs."""
    held = {sample.path for group, _ in held_out for sample in group}
    unseen = [sample for sample in val if sample.path not in held]
    return [(unseen, detector), *held_out] if unseen else list(held_out)


def preprocessor_for(options: dict[str, Any], train: Any, size: tuple[int, int], layers: tuple[str, ...]) -> Any:
    """The preprocessing a resolved `--colour`, `--align` and `--intensity` ask for, at the model size; the
    alignment's unscored margin follows the coarsest of `layers`. Bundles from before `--colour` are RGB."""
    return Preprocessor(size, 1 if options.get("colour") == "grey" else 3,
                        align=aligner_for(options, train, size, layers), intensity=options.get("intensity", "none"))


def resolve_input(options: dict[str, Any], train: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """`--intensity auto` (`auto_intensity`) and `--colour auto` decided on up to `AUTO_IMAGES` training images,
    read once: the options with the decisions, and what each was based on (the manifest's `intensity_auto`,
    `colour_auto`); other values pass through. Grey needs every image read to be grey (`is_grey`), so a colour
    line never loses its colour; a grey picture decoded as RGB gives the network the same input either way."""
    auto = [key for key in ("intensity", "colour") if options.get(key) == "auto"]
    if not auto:
        return options, {}
    from linewatch.data import evenly_spaced, read_image
    from linewatch.data.shift import is_grey

    images = [read_image(sample.path) for sample in evenly_spaced(train, AUTO_IMAGES)]
    options, facts = dict(options), {}
    if "intensity" in auto:
        spread = lighting_spread(images)
        options["intensity"] = auto_intensity(spread)
        facts["intensity_auto"] = {"lighting_spread": round(spread, 4), "threshold": AUTO_SPREAD,
                                   "images": len(images), "chosen": options["intensity"]}
    if "colour" in auto:
        grey = sum(is_grey(image) for image in images)
        options["colour"] = "grey" if grey == len(images) else "rgb"
        facts["colour_auto"] = {"images": len(images), "grey_images": grey, "chosen": options["colour"]}
    return options, facts


def aligner_for(options: dict[str, Any], train: Any, size: tuple[int, int], layers: tuple[str, ...]) -> Any:
    """The reference-view aligner `--align` asks for, built from train-clean at the model size, or None."""
    if options.get("align", "none") == "none":
        return None
    from linewatch.features.align import margin_for, reference_from_samples

    return reference_from_samples(train, size, options["align"], margin_for(layers))
