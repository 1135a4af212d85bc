"""A small synthetic category in MVTec layout, so the whole pipeline can run and be tested without real data.

Good images are one machined "part" (brushed texture, low-frequency shading, a raised ring) seen with a
small shift, brightness jitter and sensor grain. Defects are painted clearly on top: bright scratches,
rust spots and dark holes, each with an exact mask. Every image draws from its own seeded stream, so the
files are byte-identical for a seed and changing one count does not change the other images.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import click
import cv2
import numpy as np

from linewatch.cli_common import friendly_errors
from linewatch.data.errors import DataError

DEFECT_TYPES = ("scratch", "spot", "hole")
MARKER = "synthetic.json"
_SHIFT = 3  # largest shift in pixels between good images
_GRAIN = 3.0  # sensor noise (std, grey levels)


def _template(rng: np.random.Generator, size: int) -> np.ndarray:
    """The noiseless part, a little larger than `size` so crops give shifted views without wrap-around."""
    full = size + 2 * _SHIFT
    tone = np.array([118.0, 124.0, 130.0]) + rng.uniform(-8, 8, 3)
    grey, tint = rng.normal(0, 10, (5, 5)), rng.normal(0, 3, (5, 5, 3))
    shading = cv2.resize(grey[:, :, None] + tint, (full, full), interpolation=cv2.INTER_CUBIC)
    streaks = cv2.GaussianBlur(rng.normal(0, 6, (full, 1)), (1, 3), 0)
    image = tone + shading + streaks[:, :, None]
    ring = np.zeros((full, full), np.uint8)
    cv2.circle(ring, (full // 2, full // 2), int(size * 0.3), 1, max(2, size // 24), cv2.LINE_AA)
    return (image + 28.0 * ring[:, :, None]).astype(np.float32)


def _good(template: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    dy, dx = rng.integers(0, 2 * _SHIFT + 1, 2)
    return template[dy : dy + size, dx : dx + size] + np.float32(rng.uniform(-3, 3))


def _finish(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = image + rng.normal(0, _GRAIN, image.shape).astype(np.float32)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def _point(rng: np.random.Generator, size: int) -> np.ndarray:
    return rng.uniform(0.2 * size, 0.8 * size, 2)


def _scratch(mask: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    start, angle = _point(rng, size), rng.uniform(0, np.pi)
    bend = angle + rng.uniform(-0.4, 0.4)
    step = size * rng.uniform(0.12, 0.2)
    points = [start, start + step * np.array([np.cos(angle), np.sin(angle)])]
    points.append(points[1] + step * np.array([np.cos(bend), np.sin(bend)]))
    cv2.polylines(mask, [np.round(points).astype(np.int32)], False, 255, max(2, size // 48))
    return np.array([238.0, 236.0, 230.0])


def _spot(mask: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    center = _point(rng, size)
    for _ in range(3):
        offset = rng.normal(0, size / 40, 2)
        cv2.circle(mask, tuple(int(v) for v in center + offset), int(size * rng.uniform(0.04, 0.07)), 255, -1)
    return np.array([150.0, 72.0, 34.0])


def _hole(mask: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    center = tuple(int(v) for v in _point(rng, size))
    cv2.circle(mask, center, int(size * rng.uniform(0.05, 0.09)), 255, -1)
    return np.array([18.0, 16.0, 15.0])


_PAINTERS: dict[str, Callable[[np.ndarray, np.random.Generator, int], np.ndarray]] = {
    "scratch": _scratch, "spot": _spot, "hole": _hole,
}


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    cv2.imencode(".png", image)[1].tofile(path)


def _prepare(out: Path, params: dict[str, int]) -> None:
    """Start from an empty folder; a previous synthetic category there is replaced, anything else refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise DataError(f"{out}: folder is not empty and holds no {MARKER}; refusing to write into it")
        for sub in ("train", "test", "ground_truth"):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps(params, indent=2) + "\n")


def make_synthetic_category(
    out: Path,
    *,
    n_train: int = 40,
    n_test_good: int = 10,
    n_test_defect: int = 6,
    size: int = 128,
    seed: int = 0,
) -> Path:
    """Write train/good, test/{good,scratch,spot,hole} and ground_truth masks under `out`; return `out`."""
    out = Path(out)
    params = {"seed": seed, "size": size, "n_train": n_train, "n_test_good": n_test_good,
              "n_test_defect": n_test_defect}
    _prepare(out, params)
    template = _template(np.random.default_rng([seed, 0]), size)
    for stream, folder, count in ((1, "train/good", n_train), (2, "test/good", n_test_good)):
        for i in range(count):
            rng = np.random.default_rng([seed, stream, i])
            _write_png(out / folder / f"{i:03d}.png", _finish(_good(template, rng, size), rng))
    for stream, defect in enumerate(DEFECT_TYPES, start=3):
        for i in range(n_test_defect):
            rng = np.random.default_rng([seed, stream, i])
            image, mask = _good(template, rng, size), np.zeros((size, size), np.uint8)
            color = _PAINTERS[defect](mask, rng, size)
            image[mask > 0] = color + rng.normal(0, 6, (int(np.count_nonzero(mask)), 3))
            _write_png(out / "test" / defect / f"{i:03d}.png", _finish(image, rng))
            _write_png(out / "ground_truth" / defect / f"{i:03d}_mask.png", mask)
    return out


@click.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Category folder to write.")
@click.option("--size", type=int, default=128, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--n-train", type=int, default=40, show_default=True)
@click.option("--n-test-good", type=int, default=10, show_default=True)
@click.option("--n-test-defect", type=int, default=6, show_default=True, help="Images per defect type.")
@friendly_errors
def main(out: Path, size: int, seed: int, n_train: int, n_test_good: int, n_test_defect: int) -> None:
    """Generate a synthetic MVTec-layout category."""
    path = make_synthetic_category(out, n_train=n_train, n_test_good=n_test_good,
                                   n_test_defect=n_test_defect, size=size, seed=seed)
    click.echo(f"synthetic category written to {path}")


if __name__ == "__main__":
    main()
