"""Training options: the common ones here, each detector's own in its registry spec.

`options_for(kind)` is the schema `--config` files and the CLI are validated against for one detector;
`all_options()` is the union the CLI offers. An option given explicitly (command line or file) that the
chosen detector does not take is an error naming the detectors that do.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from linewatch.config import ConfigError, ImageSize, Option, read_config_file, resolve
from linewatch.models.registry import DETECTOR_KINDS, all_specs, get_spec

COMMON_OPTIONS: dict[str, Option] = {
    "data": Option(Path, must_exist=True, required=True, help="Category folder in MVTec layout."),
    "model": Option(str, "patchcore", choices=DETECTOR_KINDS, help="Detector (default patchcore)."),
    "out": Option(Path, required=True, help="Bundle directory to write."),
    "image_size": Option(ImageSize, (256, 256), minimum=16, maximum=2048,
                         help="Network input size: 256 (square), HxW such as 144x256, or auto[:N] (the training "
                              "images' median aspect ratio at about N x N pixels, N default 256)."),
    "batch_size": Option(int, 8, minimum=1, help="Images per forward pass / optimisation step."),
    "blur_sigma": Option(float, 4.0, minimum=0.0,
                         help="Anomaly-map Gaussian blur sigma in pixels. PatchCore without it: chosen from 4, 6, 8 by "
                              "val-clean PRO (its image scores do not depend on it)."),
    "threshold_method": Option(str, "f1", choices=("f1", "fpr"), help="Calibration: max F1 or target FPR."),
    "target_fpr": Option(float, 0.01, minimum=0.0, maximum=1.0,
                         help="With --threshold-method fpr: allowed false-positive rate."),
    "pixel_threshold_method": Option(str, "f1", choices=("f1", "3sigma"),
                                     help="Pixel threshold for defect masks: max pixel F1 on val-clean's masks, or "
                                          "mean + 3 sigma of its good images' pixels."),
    "seed": Option(int, 0, help="Seed for splits, sampling, projections and initialisation (default 0)."),
    "device": Option(str, "cpu", choices=("auto", "cpu", "cuda"), help="Where fitting/training runs (default cpu)."),
}


def options_for(kind: str) -> dict[str, Option]:
    """The options one detector takes, with its own defaults."""
    spec = get_spec(kind)
    merged = {**COMMON_OPTIONS, **spec.options}
    return {key: replace(option, default=spec.defaults[key]) if key in spec.defaults else option
            for key, option in merged.items()}


def all_options() -> dict[str, tuple[Option, tuple[str, ...]]]:
    """Every option any detector takes -> (the option, the detectors taking it); types must agree."""
    merged = {key: (opt, DETECTOR_KINDS) for key, opt in COMMON_OPTIONS.items()}
    for spec in all_specs():
        for key, option in spec.options.items():
            if key in merged:
                known, kinds = merged[key]
                if known.type is not option.type or known.choices != option.choices:
                    raise RuntimeError(f"option {key!r} of {spec.kind} conflicts with its other definition")
                merged[key] = (known, (*kinds, spec.kind) if spec.kind not in kinds else kinds)
            else:
                merged[key] = (option, (spec.kind,))
    return merged


def resolve_training(config_file: Path | None, cli: dict[str, Any]) -> dict[str, Any]:
    """Merge defaults < config file < command line for the chosen detector, refusing options it does not take."""
    known = all_options()
    from_file = read_config_file(config_file, {key: opt for key, (opt, _) in known.items()}) if config_file else {}
    kind = cli.get("model") or from_file.get("model") or COMMON_OPTIONS["model"].default
    if kind not in DETECTOR_KINDS:
        raise ConfigError(f"'model' ({config_file or '--model'}): {kind!r} is not one of {', '.join(DETECTOR_KINDS)}")
    schema = options_for(kind)
    given = {key: "--" + key.replace("_", "-") for key, value in cli.items() if value is not None}
    given.update({key: str(config_file) for key in from_file if key not in given})
    foreign = sorted(key for key in given if key not in schema)
    if foreign:
        key = foreign[0]
        raise ConfigError(f"{key!r} ({given[key]}) does not apply to model {kind!r}; it is an option of "
                          f"{', '.join(known[key][1])}")
    return resolve(schema, config_file, cli)


def explicit_keys(config_file: Path | None, cli: dict[str, Any]) -> set[str]:
    """Options the user set (command line or config file), which `--tune` holds fixed."""
    known = {key: opt for key, (opt, _) in all_options().items()}
    from_file = read_config_file(config_file, known) if config_file else {}
    return {key for key, value in cli.items() if value is not None} | set(from_file)
