"""PatchCore in the registry: options, fit on frozen features, scorer loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from linewatch.config import Option
from linewatch.models.base import Detector, FitContext, Fitted
from linewatch.models.components.feature_memory import (
    FEATURE_OPTIONS,
    build_feature_network,
    feature_config,
    fit_feature_memory,
)
from linewatch.models.patchcore.knn import INDEX_TYPES
from linewatch.models.registry import DetectorSpec

DEFAULT_LAYERS = ("layer2", "layer3")

OPTIONS: dict[str, Option] = {
    **FEATURE_OPTIONS,
    "layers": Option(tuple, None, help="Comma-separated feature layers (PatchCore default layer2,layer3)."),
    "coreset_ratio": Option(float, 0.01, minimum=1e-4, maximum=1.0, help="Fraction of patches kept (default 0.01)."),
    "coreset_dims": Option(int, 128, minimum=8, help="Random-projection dims for coreset selection."),
    "knn": Option(int, 1, minimum=1, help="Neighbours averaged per patch (default 1)."),
    "index": Option(str, "flat", choices=INDEX_TYPES, help="FAISS index: flat, hnsw or ivf."),
    "reweight": Option(bool, False, help="The paper's image-score re-weighting (eq. 7)."),
}


def fit(context: FitContext) -> Fitted:
    from linewatch.models.patchcore.model import PatchCore, PatchCoreParams

    options = context.options
    params = PatchCoreParams(
        coreset_ratio=options["coreset_ratio"], coreset_dims=options["coreset_dims"], k=options["knn"],
        index=options["index"], reweight=options["reweight"], seed=options["seed"],
    )
    config = feature_config(options, DEFAULT_LAYERS, aggregate=True)
    return fit_feature_memory(
        context, config, lambda features: PatchCore.fit(features, params, progress=context.bars,
                                                        device=options["device"]))


def load(directory: Path, section: dict[str, Any], device: str) -> Detector:
    from linewatch.models.patchcore.model import PatchCore

    return PatchCore.load(directory, section, device=device)


SPEC = DetectorSpec(
    kind="patchcore",
    summary="PatchCore (Roth et al. 2022): kNN distance of patch features to a coreset memory bank",
    fit=fit,
    load=load,
    build_network=build_feature_network,
    options=OPTIONS,
    quick={"weights": "none", "coreset_ratio": 0.1},
)
