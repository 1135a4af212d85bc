"""Proxy categories for data we do not have: misaligned parts and elongated grey parts, in MVTec layout.

- `misalign`: every image (train and test) gets its own seeded geometric transform, as the domain-shift
  protocol draws them: rotation +-10 deg, a resized crop of 90-100% of the area with aspect 0.9-1.1, a
  translation of up to 5% per axis (masks warped with the image). `--train N` keeps N train/good images
  (inspect-train then trains on 80% of them); `--drop-defects` leaves defect types out whose definition
  is a position (transistor's `misplaced` cannot be told from a misaligned good part).
- `band`: a grey, elongated part: a horizontal band of `--band` x the height around the centre, scaled to
  `--height` and padded (edge pixels repeated) to `--width`: capsule -> 200 x 512.
- `elongated`: keep only images whose aspect ratio is beyond `--min-ratio` (long side / short side),
  turning tall ones to landscape: magnetic tile's long tiles.
Defective images whose mask is empty after the transform are left out. Writes `proxy.json` beside the data.
Run: .venv/bin/python tools/proxy_data.py misalign --data ../shared/data/mvtec_ad/bottle --out DIR --train 54
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import click
import cv2
import numpy as np

from linewatch.data import Sample, read_image, read_mask, scan_category
from linewatch.data.image_header import read_header

Transform = Callable[[np.ndarray, np.ndarray | None, np.random.Generator], tuple[np.ndarray, np.ndarray | None]]


def misalign_matrix(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """The 3x3 map from original to proxy pixels: resized crop (area 0.9-1.0, aspect 0.9-1.1), rotation +-10 deg
    about the centre, shift <= 5%."""
    h, w = height, width
    area, ratio = rng.uniform(0.9, 1.0), math.exp(rng.uniform(math.log(0.9), math.log(1.1)))
    cw, ch = min(w, w * math.sqrt(area * ratio)), min(h, h * math.sqrt(area / ratio))
    x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
    crop = np.array([[w / cw, 0, -x0 * w / cw], [0, h / ch, -y0 * h / ch], [0, 0, 1]])
    rotate = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-10, 10), 1.0), [0, 0, 1]])
    shift = np.array([[1, 0, rng.uniform(-0.05, 0.05) * w], [0, 1, rng.uniform(-0.05, 0.05) * h], [0, 0, 1]])
    return shift @ rotate @ crop


def misalign(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator) -> tuple[np.ndarray,
                                                                                          np.ndarray | None]:
    """Each image moved by its own `misalign_matrix`."""
    h, w = image.shape[:2]
    matrix = misalign_matrix(h, w, rng)[:2]
    out = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if mask is None:
        return out, None
    return out, cv2.warpAffine(mask, matrix, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)


def band(fraction: float, height: int, width: int) -> Transform:
    def apply(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator) -> tuple[np.ndarray,
                                                                                            np.ndarray | None]:
        h, w = image.shape[:2]
        rows = round(h * fraction)
        top = (h - rows) // 2
        scaled_w = round(w * height / rows)
        pad = max(0, width - scaled_w)

        def fit(a: np.ndarray, interpolation: int, border: int) -> np.ndarray:
            a = cv2.resize(a[top : top + rows], (scaled_w, height), interpolation=interpolation)
            return cv2.copyMakeBorder(a, 0, 0, pad // 2, pad - pad // 2, border, value=0)[:, :width]

        grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        out = fit(grey, cv2.INTER_AREA, cv2.BORDER_REPLICATE)
        return out, None if mask is None else fit(mask, cv2.INTER_NEAREST, cv2.BORDER_CONSTANT)

    return apply


def elongated(min_ratio: float) -> Callable[[np.ndarray], bool]:
    return lambda image: max(image.shape[:2]) / min(image.shape[:2]) >= min_ratio


def landscape(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator) -> tuple[np.ndarray,
                                                                                            np.ndarray | None]:
    if image.shape[0] <= image.shape[1]:
        return image, mask
    turn = cv2.ROTATE_90_COUNTERCLOCKWISE
    return cv2.rotate(image, turn), None if mask is None else cv2.rotate(mask, turn)


def write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path.with_suffix(".png")), image):
        raise click.ClickException(f"cannot write {path}")


def streams(data: Path, seed: int, train: int | None) -> list[Sample]:
    """The source samples in the order `build` draws their transforms (sample i uses rng([seed, i]))."""
    category = scan_category(data)
    goods = category.train
    if train is not None:
        picks = np.sort(np.random.default_rng([seed, 99]).permutation(len(goods))[:train])
        goods = [goods[i] for i in picks]
    return [*goods, *category.test]


def misalign_matrices(proxy: Path) -> dict[str, np.ndarray]:
    """A `misalign` proxy's true 3x3 maps (original -> proxy pixels) by the proxy's relative path, replayed
    from its proxy.json: what registration is measured against (tools/bench_align.py)."""
    recipe = json.loads((proxy / "proxy.json").read_text())
    if recipe.get("kind") != "misalign":
        raise click.ClickException(f"{proxy} is not a misalign proxy (proxy.json kind {recipe.get('kind')!r})")
    matrices = {}
    for stream, sample in enumerate(streams(Path(recipe["source"]), recipe["seed"], recipe["train_kept"])):
        header = read_header(sample.path.read_bytes())
        if header is None:
            raise click.ClickException(f"{sample.path}: not an image linewatch reads")
        matrices[str(Path(sample.rel).with_suffix(".png"))] = misalign_matrix(
            header.height, header.width, np.random.default_rng([recipe["seed"], stream]))
    return matrices


def build(data: Path, out: Path, transform: Transform, seed: int, train: int | None,
          keep: Callable[[np.ndarray], bool] | None, drop: tuple[str, ...], recipe: dict) -> dict:
    """Write the proxy category; returns its counts."""
    counts = {"train": 0, "test_good": 0, "test_defect": 0, "dropped_empty_mask": 0, "dropped_shape": 0}
    for stream, sample in enumerate(streams(data, seed, train)):
        if sample.defect in drop:
            continue
        image = read_image(sample.path)
        if keep is not None and not keep(image):
            counts["dropped_shape"] += 1
            continue
        mask = None if sample.mask is None else read_mask(sample.mask, image.shape[:2]).astype(np.uint8) * 255
        image, mask = transform(image, mask, np.random.default_rng([seed, stream]))
        if sample.label and mask is not None and not mask.any():
            counts["dropped_empty_mask"] += 1
            continue
        write(out / sample.rel, image)
        if mask is not None:
            write(out / "ground_truth" / sample.defect / f"{Path(sample.rel).stem}_mask.png", mask)
        key = "train" if sample.rel.startswith("train/") else "test_defect" if sample.label else "test_good"
        counts[key] += 1
    (out / "proxy.json").write_text(json.dumps({"source": str(data), "seed": seed, **recipe, **counts}, indent=2))
    return counts


@click.command()
@click.argument("kind", type=click.Choice(["misalign", "band", "elongated"]))
@click.option("--data", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--train", type=int, help="Keep this many train/good images (seeded choice).")
@click.option("--drop-defects", default="", help="Comma-separated defect types to leave out.")
@click.option("--band-fraction", type=float, default=0.5, show_default=True, help="band: rows kept, of the height.")
@click.option("--height", type=int, default=200, show_default=True)
@click.option("--width", type=int, default=512, show_default=True)
@click.option("--min-ratio", type=float, default=2.0, show_default=True, help="elongated: long / short side.")
def main(kind: str, data: Path, out: Path, seed: int, train: int | None, drop_defects: str, band_fraction: float,
         height: int, width: int, min_ratio: float) -> None:
    """Write a proxy category (MVTec layout) under OUT."""
    if out.exists() and any(out.iterdir()):
        raise click.ClickException(f"{out} is not empty")
    drop = tuple(d for d in drop_defects.split(",") if d)
    recipe: dict = {"kind": kind, "train_kept": train, "dropped_defect_types": list(drop)}
    keep = None
    if kind == "misalign":
        transform: Transform = misalign
    elif kind == "band":
        transform = band(band_fraction, height, width)
        recipe.update(band_fraction=band_fraction, height=height, width=width)
    else:
        transform, keep = landscape, elongated(min_ratio)
        recipe.update(min_ratio=min_ratio)
    counts = build(data, out, transform, seed, train, keep, drop, recipe)
    click.echo(f"{out}: {counts}")


if __name__ == "__main__":
    main()
