"""Which part of the domain shift costs a clean model its accuracy: evaluate one bundle on its test split
shifted by one group of transforms at a time (the others at identity), same seed as the full shift.

    .venv/bin/python tools/shift_ablation.py --bundle bench-out/reference/cells/bottle/patchcore/clean-s0/bundle \\
        --data ../shared/data/mvtec_ad/bottle --out bench-out/ablation/bottle-patchcore [--leave-out-fill 16]

Prints a table and writes ablation.json (image AUROC, pixel AUROC, PRO per variant). The full shift is the
bench's `shift` cell; no shift is its `clean` cell. `--leave-out-fill PX` also scores the full shift with
the mirrored border the warp brought in (and PX input pixels around it) left out, image AUROC only: how much
of the drop is that synthetic content, which no real camera move would show.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

from linewatch.batches import iter_batches
from linewatch.data import scan_category
from linewatch.data.shift import ensure_shifted, fill_region
from linewatch.evaluate.pipeline import evaluate, select_samples
from linewatch.inspector import Inspector
from linewatch.scoring import score_outputs

VARIANTS = {
    "geometric (rotation, crop, translation)": "geometric",
    "rotation": "rotation",
    "crop (area scale, aspect ratio)": "crop",
    "translation": "translation",
    "colour (brightness, contrast, saturation)": "colour",
    "blur": "blur",
    "noise": "noise",
}


def fill_left_out(bundle: Path, folder: Path, params: dict[str, dict[str, Any]], margin: int) -> dict[str, float]:
    """Image AUROC of the shifted test split as scored, and with each image's fill region left out."""
    inspector = Inspector.from_bundle(bundle)
    pre, engine = inspector.preprocessor, inspector.reference_engine()
    samples = select_samples(scan_category(folder), bundle, "test")
    labels, scored, left = [], [], []
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    for batch in iter_batches(samples, pre, 8):
        outputs = engine(batch.inputs)
        unseen = pre.unseen(batch.warps)
        scored += list(score_outputs(inspector.detector, outputs, pre.size, inspector.blur_sigma, unseen=unseen).scores)
        masks = []
        for sample, image, warp, seen in zip(batch.samples, batch.images, batch.warps,
                                             unseen or [None] * len(batch.samples), strict=True):
            # any input pixel the fill touches counts (a float resize keeps strips thinner than one input pixel)
            fill = fill_region(params[sample.rel], image.shape[:2]).astype(np.float32)
            fill = (cv2.resize(fill, pre.size[::-1], interpolation=cv2.INTER_AREA) > 0).astype(np.uint8)
            if warp is not None:  # an aligned input: the fill moves with the frame
                fill = cv2.warpAffine(fill, warp, pre.size[::-1], flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                      borderMode=cv2.BORDER_CONSTANT, borderValue=1)
            fill = cv2.dilate(fill, kernel) > 0
            masks.append(fill if seen is None else fill | seen)
        left += list(score_outputs(inspector.detector, outputs, pre.size, inspector.blur_sigma, unseen=masks).scores)
        labels += [sample.label for sample in batch.samples]
    return {"image_auroc": float(roc_auc_score(labels, scored)),
            "image_auroc_fill_left_out": float(roc_auc_score(labels, left))}


@click.command()
@click.option("--bundle", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path), help="The clean category.")
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Shift seed (the bench's shift.seed).")
@click.option("--variants", default=",".join(VARIANTS.values()), show_default=True,
              help="Which variants, by first word.")
@click.option("--leave-out-fill", "margin", type=click.IntRange(0), default=None,
              help="Also score the full shift without its mirrored border, dilated by this many input pixels.")
def main(bundle: Path, data: Path, out: Path, seed: int, variants: str, margin: int | None) -> None:
    """Evaluate BUNDLE on its test split under each group of shift transforms alone."""
    chosen = {key.strip() for key in variants.split(",")}
    unknown = chosen - set(VARIANTS.values())
    if unknown:
        raise click.BadParameter(f"unknown variants {sorted(unknown)}", param_hint="--variants")
    rows: dict[str, Any] = {}
    for name, group in VARIANTS.items():
        if group not in chosen:
            continue
        folder = out / group  # test/ shifted by the group alone, train/ linked from the source
        ensure_shifted(data, folder, seed, group=group, progress=False)
        metrics = evaluate(bundle, folder, out / "eval" / group, progress=False, plots=False)
        rows[name] = {k: metrics[k] for k in ("image_auroc", "pixel_auroc", "pro", "f1")}
        click.echo(f"{name:45s} " + "  ".join(f"{k} {v:.4f}" for k, v in rows[name].items() if v is not None))
    if margin is not None:
        folder = out / "full"
        params = ensure_shifted(data, folder, seed, group="all", progress=False)["images"]
        result = fill_left_out(bundle, folder, params, margin)
        rows[f"full shift, fill left out ({margin} px margin)"] = result
        click.echo(f"full shift: image AUROC {result['image_auroc']:.4f}, "
                   f"fill left out {result['image_auroc_fill_left_out']:.4f}")
    (out / "ablation.json").write_text(json.dumps({"bundle": str(bundle), "seed": seed, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
