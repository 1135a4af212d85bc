"""Which part of the domain shift costs a clean model its accuracy: evaluate one bundle on its test split
shifted by one group of transforms at a time (the others at identity), same seed as the full shift.

    .venv/bin/python tools/shift_ablation.py --bundle bench-out/reference/cells/bottle/patchcore/clean-s0/bundle \
        --data ../shared/data/mvtec_ad/bottle --out bench-out/ablation/bottle-patchcore

Prints a table and writes ablation.json (image AUROC, pixel AUROC, PRO per variant). The full shift is the
bench's `shift` cell; no shift is its `clean` cell.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import click

from linewatch.data import scan_category
from linewatch.data.shift import ShiftRanges, shift_sample
from linewatch.evaluate.pipeline import evaluate

FULL = ShiftRanges()
IDENTITY = ShiftRanges(rotation_deg=(0, 0), crop_scale=(1, 1), crop_aspect=(1, 1), translate=(0, 0),
                       brightness=(1, 1), contrast=(1, 1), saturation=(1, 1), blur_kernel=(1, 1),
                       noise_sigma=(0, 0))
VARIANTS = {
    "geometric (rotation, crop, translation)": replace(FULL, brightness=(1, 1), contrast=(1, 1),
                                                       saturation=(1, 1), blur_kernel=(1, 1), noise_sigma=(0, 0)),
    "colour (brightness, contrast, saturation)": replace(IDENTITY, brightness=FULL.brightness,
                                                         contrast=FULL.contrast, saturation=FULL.saturation),
    "blur": replace(IDENTITY, blur_kernel=FULL.blur_kernel),
    "noise": replace(IDENTITY, noise_sigma=FULL.noise_sigma),
}


def _variant(category_root: Path, out: Path, ranges: ShiftRanges, seed: int) -> Path:
    """test/ shifted with `ranges` (the split's val defects live there too); train/ linked from the source,
    whose images evaluation does not score."""
    category = scan_category(category_root)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "train").exists():
        os.symlink(category.root / "train", out / "train")
    for sample in category.test:
        shift_sample(sample, category, out, seed, ranges, vignetting=False)
    return out


@click.command()
@click.option("--bundle", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path), help="The clean category.")
@click.option("--out", required=True, type=click.Path(path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Shift seed (the bench's shift.seed).")
def main(bundle: Path, data: Path, out: Path, seed: int) -> None:
    """Evaluate BUNDLE on its test split under each group of shift transforms alone."""
    rows = {}
    for name, ranges in VARIANTS.items():
        folder = _variant(data, out / name.split(" ")[0], ranges, seed)
        metrics = evaluate(bundle, folder, out / "eval" / name.split(" ")[0], progress=False, plots=False)
        rows[name] = {k: metrics[k] for k in ("image_auroc", "pixel_auroc", "pro", "f1")}
        click.echo(f"{name:45s} " + "  ".join(f"{k} {v:.4f}" for k, v in rows[name].items() if v is not None))
    (out / "ablation.json").write_text(json.dumps({"bundle": str(bundle), "seed": seed, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
