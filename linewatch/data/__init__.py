"""Reading images and masks, scanning MVTec-layout categories and splitting them reproducibly."""

from __future__ import annotations

from linewatch.data.dataset import Category, Sample, scan_category
from linewatch.data.errors import DataError
from linewatch.data.io import IMAGE_EXTENSIONS, decode_image, is_image_file, read_image, read_mask, to_rgb
from linewatch.data.splits import Splits, evenly_spaced, make_splits

__all__ = [
    "IMAGE_EXTENSIONS",
    "Category",
    "DataError",
    "Sample",
    "Splits",
    "decode_image",
    "evenly_spaced",
    "is_image_file",
    "make_splits",
    "read_image",
    "read_mask",
    "scan_category",
    "to_rgb",
]
