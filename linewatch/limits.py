"""The largest image linewatch decodes, shared by its own header check and OpenCV's.

linewatch reads every image's declared size from its header and refuses anything above the limit
before decoding (see `data.image_header`). OpenCV has its own limit (1 Gpixel by default) for the
decoders linewatch does not check; it reads it once, when cv2 is imported, so `linewatch/__init__.py`
sets it to the same value before any linewatch module imports cv2.
"""

from __future__ import annotations

import os

DEFAULT_MAX_IMAGE_PIXELS = 100_000_000  # 10,000 x 10,000: ~300 MB as 8-bit RGB, above any camera linewatch serves
MAX_PIXELS_ENV = "LINEWATCH_MAX_IMAGE_PIXELS"
OPENCV_PIXELS_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"


def max_image_pixels() -> int:
    """$LINEWATCH_MAX_IMAGE_PIXELS when set (a whole number, `_` allowed), else the default."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    from linewatch.config import ConfigError

    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise ConfigError(f"{MAX_PIXELS_ENV}={text!r} is not a whole number of pixels") from None
    if value < 1:
        raise ConfigError(f"{MAX_PIXELS_ENV}={text!r} must be at least 1")
    return value


def limit_opencv() -> None:
    """Give OpenCV's decoders the same limit, unless the user set theirs (only effective before cv2 is imported)."""
    try:
        limit = max_image_pixels()
    except ValueError:
        return  # reported with its message when an image is decoded
    os.environ.setdefault(OPENCV_PIXELS_ENV, str(limit))
