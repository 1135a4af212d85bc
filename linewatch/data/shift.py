"""MVTec-Shift: a copy of a category seen through another camera set-up (pose, optics, lighting, sensor).

Every image gets its own seeded draw (seed + a hash of its relative path, so adding files changes no
other image's draw) of:
- geometric transforms, applied to image and mask with the same matrix: rotation, random resized crop
  (area scale, aspect ratio) and a small translation. Pixels that come from outside the frame are filled
  by mirroring the image (OpenCV BORDER_REFLECT_101), and the mask the same way, so a defect mirrored into
  the border stays labelled; masks use nearest-neighbour interpolation and are re-binarised to 0 / 255;
- photometric transforms, image only: brightness, contrast and saturation factors, Gaussian blur and
  additive Gaussian noise, plus optional vignetting (a darkened, off-centre radial falloff).
The output is a category in MVTec layout with the same relative paths (so a clean split applies to it
unchanged) and `shift.json`, the parameters drawn for every image.
"""

from __future__ import annotations

import json
import math
import shutil
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np

from linewatch.cli_common import friendly_errors
from linewatch.data.dataset import Category, Sample, scan_category
from linewatch.data.errors import DataError
from linewatch.data.io import read_image, read_mask
from linewatch.progress import Bars

LOG = "shift.json"
SCHEMA = "linewatch.shift/1"
BORDER = "reflect-101 (OpenCV BORDER_REFLECT_101) for image and mask"
JPEG_QUALITY = 95


@dataclass(frozen=True)
class ShiftRanges:
    """Ranges every parameter is drawn from, uniformly (the aspect ratio log-uniformly)."""

    rotation_deg: tuple[float, float] = (-10.0, 10.0)
    crop_scale: tuple[float, float] = (0.9, 1.0)
    crop_aspect: tuple[float, float] = (0.9, 1.1)
    translate: tuple[float, float] = (-0.03, 0.03)  # fraction of width / height
    brightness: tuple[float, float] = (0.7, 1.3)
    contrast: tuple[float, float] = (0.7, 1.3)
    saturation: tuple[float, float] = (0.7, 1.3)
    blur_kernel: tuple[int, int] = (3, 5)  # odd sizes in this range
    noise_sigma: tuple[float, float] = (0.01, 0.05)  # of the [0, 1] range
    vignetting: tuple[float, float] = (0.2, 0.5)  # darkening at the far corner


# The transforms by group, for attributing a shift's cost (`restrict`; inspect-bench's `shift.ablation`).
GROUPS: dict[str, tuple[str, ...]] = {
    "geometric": ("rotation_deg", "crop", "translate"),
    "rotation": ("rotation_deg",),
    "crop": ("crop",),
    "translation": ("translate",),
    "colour": ("brightness", "contrast", "saturation"),
    "blur": ("blur_kernel",),
    "noise": ("noise_sigma",),
    "vignetting": ("vignetting",),
    "all": ("rotation_deg", "crop", "translate", "brightness", "contrast", "saturation", "blur_kernel", "noise_sigma",
            "vignetting"),
}
SINGLE_GROUPS = ("rotation", "crop", "translation", "colour", "blur", "noise")
IDENTITY: dict[str, Any] = {"rotation_deg": 0.0, "translate": [0.0, 0.0], "brightness": 1.0, "contrast": 1.0,
                            "saturation": 1.0, "blur_kernel": 1, "noise_sigma": 0.0, "vignetting": None}


def restrict(params: dict[str, Any], group: str, size: tuple[int, int]) -> dict[str, Any]:
    """One image's full-shift draw with every transform outside `group` at identity: the image gets exactly
    the `group` parameters the full shift gave it (drawing from narrowed ranges would not: a choice among
    one blur kernel consumes no randomness, so every later draw would move)."""
    if group not in GROUPS:
        raise ValueError(f"unknown shift group {group!r}; choose from {', '.join(GROUPS)}")
    kept = GROUPS[group]
    out = {**params, **{key: value for key, value in IDENTITY.items() if key not in kept}}
    if "crop" not in kept:
        height, width = size
        out.update(crop_scale=1.0, crop_aspect=1.0, crop=[0.0, 0.0, float(width), float(height)])
    return out


def draw_params(rng: np.random.Generator, size: tuple[int, int], ranges: ShiftRanges,
                vignetting: bool) -> dict[str, Any]:
    """One image's parameters; `size` is (height, width)."""
    height, width = size
    scale = rng.uniform(*ranges.crop_scale)
    aspect = math.exp(rng.uniform(math.log(ranges.crop_aspect[0]), math.log(ranges.crop_aspect[1])))
    crop_w = min(width, width * math.sqrt(scale * aspect))
    crop_h = min(height, height * math.sqrt(scale / aspect))
    kernels = [k for k in range(ranges.blur_kernel[0], ranges.blur_kernel[1] + 1) if k % 2]
    params: dict[str, Any] = {
        "rotation_deg": rng.uniform(*ranges.rotation_deg),
        "crop_scale": scale,
        "crop_aspect": aspect,
        "crop": [rng.uniform(0, width - crop_w), rng.uniform(0, height - crop_h), crop_w, crop_h],
        "translate": [rng.uniform(*ranges.translate) * width, rng.uniform(*ranges.translate) * height],
        "brightness": rng.uniform(*ranges.brightness),
        "contrast": rng.uniform(*ranges.contrast),
        "saturation": rng.uniform(*ranges.saturation),
        "blur_kernel": int(rng.choice(kernels)),
        "noise_sigma": rng.uniform(*ranges.noise_sigma),
        "noise_seed": int(rng.integers(2**31)),
        "vignetting": None,
    }
    if vignetting:
        params["vignetting"] = {"strength": rng.uniform(*ranges.vignetting),
                                "center": [rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height]}
    return {key: round(value, 6) if isinstance(value, float) else value for key, value in params.items()}


def affine_matrix(params: dict[str, Any], size: tuple[int, int]) -> np.ndarray:
    """2x3 forward map input -> output: rotate about the crop centre, stretch the crop to the frame, translate."""
    height, width = size
    x0, y0, crop_w, crop_h = params["crop"]
    center = np.array([x0 + crop_w / 2, y0 + crop_h / 2])
    angle = math.radians(params["rotation_deg"])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    linear = np.diag([width / crop_w, height / crop_h]) @ rotation
    offset = np.array([width / 2, height / 2]) + np.array(params["translate"]) - linear @ center
    return np.hstack([linear, offset[:, None]]).astype(np.float64)


def warp(image: np.ndarray, matrix: np.ndarray, nearest: bool = False) -> np.ndarray:
    height, width = image.shape[:2]
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.warpAffine(image, matrix, (width, height), flags=flags, borderMode=cv2.BORDER_REFLECT_101)


def fill_region(params: dict[str, Any], size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: output pixels the warp filled from outside the frame by mirroring, content that a real
    camera moved the same way would not show (`tools/shift_ablation.py --leave-out-fill` scores without it)."""
    height, width = size
    inside = cv2.warpAffine(np.ones(size, np.uint8), affine_matrix(params, size), (width, height),
                            flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return inside == 0


def is_grey(image: np.ndarray) -> bool:
    """An RGB image whose three channels are equal (a grey picture decoded as RGB): noise stays grey on it."""
    return bool((image[:, :, 0] == image[:, :, 1]).all() and (image[:, :, 1] == image[:, :, 2]).all())


def photometric(image: np.ndarray, params: dict[str, Any], grey: bool) -> np.ndarray:
    """Brightness, contrast, saturation, blur, vignetting, then sensor noise; uint8 RGB in and out."""
    x = image.astype(np.float32) * params["brightness"]
    luma = cv2.cvtColor(np.clip(x, 0, 255), cv2.COLOR_RGB2GRAY)
    x = (x - luma.mean()) * params["contrast"] + luma.mean()
    if not grey:
        luma = cv2.cvtColor(np.clip(x, 0, 255), cv2.COLOR_RGB2GRAY)[:, :, None]
        x = luma + (x - luma) * params["saturation"]
    k = params["blur_kernel"]
    x = cv2.GaussianBlur(x, (k, k), 0)
    if params["vignetting"]:
        height, width = x.shape[:2]
        cx, cy = params["vignetting"]["center"]
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        far = max(math.hypot(cx - a, cy - b) for a in (0, width) for b in (0, height))
        falloff = 1.0 - params["vignetting"]["strength"] * (np.hypot(xx - cx, yy - cy) / far) ** 2
        x = x * falloff[:, :, None]
    rng = np.random.default_rng(params["noise_seed"])
    channels = 1 if grey else 3
    x = x + rng.normal(0.0, params["noise_sigma"] * 255.0, (*x.shape[:2], channels)).astype(np.float32)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _write(path: Path, image: np.ndarray) -> None:
    """Encode next to the target, then rename: a killed run never leaves a half-written image behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    data = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if suffix in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(suffix, data, params)
    if not ok:
        raise DataError(f"{path}: OpenCV cannot encode {suffix} images")
    tmp = path.with_name(f".{path.name}.tmp")
    encoded.tofile(tmp)
    tmp.replace(path)


def shift_sample(sample: Sample, category: Category, out: Path, seed: int, ranges: ShiftRanges,
                 vignetting: bool, group: str | None = None) -> tuple[str, dict[str, Any]]:
    """Transform one image (and its mask) into `out`; return its relative path and parameters. With `group`,
    only that group of transforms is applied (`restrict`).

    Files already there (from an interrupted run with the same settings) are kept: the draw is the same.
    """
    image = read_image(sample.path)
    size = image.shape[:2]
    rng = np.random.default_rng([seed, zlib.crc32(sample.rel.encode())])
    params = draw_params(rng, size, ranges, vignetting)
    if group is not None:
        params = restrict(params, group, size)
    grey = is_grey(image)
    params["grey"] = grey
    rel_mask = sample.mask.relative_to(category.root).with_suffix(".png") if sample.mask is not None else None
    if rel_mask is not None:
        params["mask"] = rel_mask.as_posix()
    if (out / sample.rel).is_file() and (rel_mask is None or (out / rel_mask).is_file()):
        return sample.rel, params
    matrix = affine_matrix(params, size)
    if rel_mask is not None:
        mask = read_mask(sample.mask, size).astype(np.uint8) * 255
        _write(out / rel_mask, np.where(warp(mask, matrix, nearest=True) > 127, 255, 0).astype(np.uint8))
    shifted = photometric(warp(image, matrix), params, grey)
    _write(out / sample.rel, shifted[:, :, 0] if grey else shifted)
    return sample.rel, params


def _settings(source: Path, seed: int, vignetting: bool, ranges: ShiftRanges, group: str | None) -> dict[str, Any]:
    """What a shift folder was made with (`group`: only that group of transforms, test/ only)."""
    return json.loads(json.dumps({"schema": SCHEMA, "source": str(source.resolve()), "seed": seed,
                                  "vignetting": vignetting, "ranges": asdict(ranges), "border": BORDER,
                                  "jpeg_quality": JPEG_QUALITY, **({"group": group} if group else {})}))


def _same(log: dict[str, Any], settings: dict[str, Any]) -> bool:
    """Whether a shift log was written with `settings` (a one-group shift never passes for a full one)."""
    return log.get("group") == settings.get("group") and all(log.get(k) == v for k, v in settings.items())


def _prepare(out: Path, source: Path, settings: dict[str, Any]) -> None:
    """An empty folder, an interrupted shift with the same settings (continued), or an earlier shift output
    (replaced); anything else is refused."""
    if out.resolve() == source.resolve():
        raise DataError(f"{out}: the output folder is the input category")
    if out.exists() and any(out.iterdir()):
        try:
            log = json.loads((out / LOG).read_text())
        except (OSError, ValueError):
            raise DataError(f"{out}: folder is not empty and holds no {LOG}; refusing to write into it") from None
        if log.get("complete") or not _same(log, settings):
            for sub in ("train", "test", "ground_truth"):
                if (out / sub).is_symlink():  # a test-only shift's link to the source: never delete through it
                    (out / sub).unlink()
                else:
                    shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / LOG).write_text(json.dumps({**settings, "complete": False}, indent=1) + "\n")


def is_shifted(out: Path, data: Path, seed: int, vignetting: bool, group: str | None = None) -> bool:
    """True when `out` holds a complete shift of `data` with these settings (so it can be reused)."""
    try:
        log = json.loads((Path(out) / LOG).read_text())
    except (OSError, ValueError):
        return False
    settings = _settings(Path(data), seed, vignetting, ShiftRanges(), group)
    return log.get("complete") is True and _same(log, settings)


def shift_category(data: Path, out: Path, seed: int = 0, vignetting: bool = False,
                   ranges: ShiftRanges | None = None, progress: bool = True, workers: int = 2,
                   group: str | None = None) -> dict[str, Any]:
    """Write the shifted copy of `data` to `out` and return the log (also written to `out/shift.json`).

    `group`: apply only that group of transforms (`restrict`), to test/ (and its masks) only, with train/
    linked to the source: all that evaluating a clean model on it reads."""
    ranges = ranges or ShiftRanges()
    category = scan_category(data)
    out = Path(out)
    settings = _settings(category.root, seed, vignetting, ranges, group)
    _prepare(out, category.root, settings)
    if group and not (out / "train").exists():
        (out / "train").symlink_to(category.root / "train", target_is_directory=True)
    samples = [*category.test] if group else [*category.train, *category.test]
    bars = Bars(progress)
    step = bars(len(samples), f"shift {category.name}")

    def one(sample: Sample) -> tuple[str, dict[str, Any]]:
        result = shift_sample(sample, category, out, seed, ranges, vignetting, group)
        step(1)
        return result

    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = dict(pool.map(one, samples))
    bars.close()
    log = {**settings, "images": images, "complete": True}
    tmp = out / (LOG + ".tmp")
    tmp.write_text(json.dumps(log, indent=1) + "\n")
    tmp.replace(out / LOG)
    return log


def ensure_shifted(data: Path, out: Path, seed: int = 0, vignetting: bool = False, group: str | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """The shift log of `out`, after writing the shift unless a complete one with these settings is there."""
    if is_shifted(out, data, seed, vignetting, group):
        return json.loads((Path(out) / LOG).read_text())
    return shift_category(data, out, seed=seed, vignetting=vignetting, progress=progress, group=group)


@click.command(context_settings={"show_default": True})
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Category folder in MVTec layout.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder for the shifted category.")
@click.option("--seed", type=int, default=0, help="Seed of the per-image draws (same seed, same files).")
@click.option("--vignetting/--no-vignetting", default=False, help="Also darken each image with a radial falloff.")
@click.option("--group", type=click.Choice(list(GROUPS)), default=None,
              help="Only this group of transforms, with each image's full-shift draw of it, on test/ only "
                   "(train/ is linked): which transform costs a clean model what. Default: the full shift.")
@click.option("--workers", type=int, default=2, help="Images transformed in parallel.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@friendly_errors
def main(data: Path, out: Path, seed: int, vignetting: bool, group: str | None, workers: int, quiet: bool) -> None:
    """Write a domain-shifted copy of a category (same relative paths) plus shift.json."""
    log = shift_category(data, out, seed=seed, vignetting=vignetting, progress=not quiet, workers=workers,
                         group=group)
    what = f"{group} alone" if group else "the full shift"
    click.echo(f"{len(log['images'])} images shifted ({what}, seed {seed}) -> {out}; parameters in {out / LOG}")
