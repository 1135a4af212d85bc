"""PaDiM in the registry: options, Gaussian fit on frozen features, scorer loading."""

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
from linewatch.models.registry import DetectorSpec

DEFAULT_LAYERS = ("layer1", "layer2", "layer3")
DEFAULT_DIMS = {"wide_resnet50_2": 550}
DEFAULT_DIMS_OTHER = 100

OPTIONS: dict[str, Option] = {
    **FEATURE_OPTIONS,
    "layers": Option(tuple, None, help="Comma-separated feature layers (PaDiM default layer1,layer2,layer3)."),
    "padim_dims": Option(int, None, minimum=1, help="Random channel subset size (default 100; 550 for WRN50)."),
    "padim_epsilon": Option(float, 0.01, minimum=0.0, help="Covariance regularisation (default 0.01)."),
}


def fit(context: FitContext) -> Fitted:
    from linewatch.models.padim.model import Padim, PadimParams

    options = context.options
    dims = options["padim_dims"] or DEFAULT_DIMS.get(options["backbone"], DEFAULT_DIMS_OTHER)
    config = feature_config(options, DEFAULT_LAYERS, aggregate=False, channel_subset=dims)
    params = PadimParams(epsilon=options["padim_epsilon"])
    return fit_feature_memory(
        context, config, lambda features: Padim.fit(features, params, progress=context.bars,
                                                    device=options["device"]))


def load(directory: Path, section: dict[str, Any], device: str) -> Detector:
    from linewatch.models.padim.model import Padim

    return Padim.load(directory, section, device=device)


SPEC = DetectorSpec(
    kind="padim",
    summary="PaDiM (Defard et al. 2021): Mahalanobis distance to a Gaussian per feature position",
    fit=fit,
    load=load,
    build_network=build_feature_network,
    options=OPTIONS,
    quick={"weights": "none"},
)
