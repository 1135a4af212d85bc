"""Every training option, its type and default: the schema for `--config` files and the CLI."""

from __future__ import annotations

from pathlib import Path

from linewatch.config import Option
from linewatch.features.backbones import BACKBONES
from linewatch.models import DETECTOR_KINDS
from linewatch.models.patchcore.knn import INDEX_TYPES

TRAIN_OPTIONS: dict[str, Option] = {
    "data": Option(Path, must_exist=True, required=True),
    "model": Option(str, "patchcore", choices=DETECTOR_KINDS),
    "out": Option(Path, required=True),
    "backbone": Option(str, "efficientnet_lite0", choices=tuple(BACKBONES)),
    "weights": Option(str, "default"),
    "layers": Option(tuple, None),
    "image_size": Option(int, 256, minimum=32, maximum=2048),
    "batch_size": Option(int, 8, minimum=1),
    "coreset_ratio": Option(float, 0.01, minimum=1e-4, maximum=1.0),
    "coreset_dims": Option(int, 128, minimum=8),
    "projection_dims": Option(int, None, minimum=8),
    "knn": Option(int, 1, minimum=1),
    "index": Option(str, "flat", choices=INDEX_TYPES),
    "reweight": Option(bool, False),
    "padim_dims": Option(int, None, minimum=1),
    "padim_epsilon": Option(float, 0.01, minimum=0.0),
    "blur_sigma": Option(float, 4.0, minimum=0.0),
    "threshold_method": Option(str, "f1", choices=("f1", "fpr")),
    "target_fpr": Option(float, 0.01, minimum=0.0, maximum=1.0),
    "seed": Option(int, 0),
    "device": Option(str, "cpu", choices=("auto", "cpu", "cuda")),
}

DEFAULT_LAYERS = {
    "patchcore": ("layer2", "layer3"),
    "padim": ("layer1", "layer2", "layer3"),
}

DEFAULT_PADIM_DIMS = {"wide_resnet50_2": 550}
DEFAULT_PADIM_DIMS_OTHER = 100
