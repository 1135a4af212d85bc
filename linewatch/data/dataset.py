"""Scan a category folder in MVTec AD layout into a deterministic list of labelled samples.

Layout: `train/good/*`, `test/good/*`, `test/<defect>/*`, `ground_truth/<defect>/<stem>_mask.png`.
Anything that is not an image (readme, .DS_Store, macOS `._*` forks) is ignored so real folders copied
around by people scan the same as pristine ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from linewatch.data.errors import DataError
from linewatch.data.io import IMAGE_EXTENSIONS, is_image_file

GOOD = "good"


@dataclass(frozen=True)
class Sample:
    """One image: `rel` (POSIX, relative to the category root) is its stable id in splits and reports."""

    path: Path
    rel: str
    label: int
    defect: str
    mask: Path | None = None


@dataclass(frozen=True)
class Category:
    """A scanned category: train holds train/good, test holds all of test/ sorted by `rel`."""

    root: Path
    name: str
    train: list[Sample]
    test: list[Sample]


def _images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted; hidden files are skipped (they are OS debris)."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_image_file(p)
    )


def _mask_index(folder: Path) -> dict[str, Path]:
    """Map image stem -> mask file; `<stem>_mask.png` wins over other `<stem>_mask.*`, then `<stem>.*`."""
    if not folder.is_dir():
        return {}
    rank = {".png": 0, **{ext: 1 for ext in sorted(IMAGE_EXTENSIONS - {".png"})}}
    best: dict[str, tuple[tuple[int, int, str], Path]] = {}
    for mask in _images(folder):
        stem, tagged = mask.stem, mask.stem.endswith("_mask")
        key = stem.removesuffix("_mask") if tagged else stem
        order = (0 if tagged else 1, rank[mask.suffix.lower()], mask.name)
        if key not in best or order < best[key][0]:
            best[key] = (order, mask)
    return {key: mask for key, (_, mask) in best.items()}


def _sample(root: Path, path: Path, defect: str, mask: Path | None) -> Sample:
    return Sample(path, path.relative_to(root).as_posix(), int(defect != GOOD), defect, mask)


def scan_category(root: str | Path) -> Category:
    """Scan `root`; a defective image without a mask is kept (mask=None), good images never get one."""
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DataError(f"{root}: category folder not found")
    train_dir = root / "train" / GOOD
    if not train_dir.is_dir():
        raise DataError(f"{train_dir}: missing; a category needs good training images in train/good")
    train = [_sample(root, p, GOOD, None) for p in _images(train_dir)]
    if not train:
        raise DataError(f"{train_dir}: holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    test: list[Sample] = []
    test_dir = root / "test"
    if test_dir.is_dir():
        for folder in sorted(p for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            masks = {} if folder.name == GOOD else _mask_index(root / "ground_truth" / folder.name)
            test += [_sample(root, p, folder.name, masks.get(p.stem)) for p in _images(folder)]
    return Category(root, root.name, train, sorted(test, key=lambda s: s.rel))
