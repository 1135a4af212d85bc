"""Field-by-field checks of a received verdict header, so a subscriber can trust what it then reads.

Anything can arrive on a socket (another program on the port, a newer or broken publisher, garbage):
every field a subscriber uses is checked for type and range here, and image geometry is bounded by the
pixel limit, so a hostile header can neither crash a subscriber nor make it allocate gigabytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from linewatch.errors import LinewatchError
from linewatch.limits import max_image_pixels

_REGION_INTS = ("x", "y", "width", "height", "area")


class MessageError(LinewatchError, ValueError):
    """A ZeroMQ message that is not a linewatch verdict or status message; the text says what is wrong."""


class FieldError(MessageError):
    """A verdict of the right shape (topic, schema, parts, keys) with a field of the wrong type or range."""


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    return _integer(value) and value >= 0


def _number(value: Any) -> bool:
    return (_integer(value) or isinstance(value, float)) and math.isfinite(value)


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _size(where: str, value: Any) -> None:
    """A {"width", "height"} object of positive ints whose area is within the pixel limit."""
    if not isinstance(value, dict):
        raise FieldError(f"{where} must be an object, got {type(value).__name__}")
    width, height = value.get("width"), value.get("height")
    if not (_count(width) and _count(height) and width > 0 and height > 0):
        raise FieldError(f"{where} needs positive integer width and height, got {width!r} x {height!r}")
    if width * height > max_image_pixels():
        raise FieldError(f"{where} {width}x{height} exceeds the pixel limit of {max_image_pixels():,}")


def _region(index: int, region: Any) -> None:
    if not isinstance(region, dict):
        raise FieldError(f"regions[{index}] must be an object, got {type(region).__name__}")
    bad = [key for key in _REGION_INTS if not _count(region.get(key))]
    if bad or not _number(region.get("peak")):
        raise FieldError(f"regions[{index}] needs non-negative integers {list(_REGION_INTS)} and a number peak")


_SCALARS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seq": (_count, "a non-negative integer"),
    "frame": (_count, "a non-negative integer"),
    "source": (_text, "a string"),
    "score": (_number, "a finite number"),
    "raw_score": (_number, "a finite number"),
    "threshold": (_number, "a finite number"),
}


def check_verdict_fields(header: dict[str, Any]) -> None:
    """Raise FieldError unless every field a subscriber reads has the documented type and range."""
    for key, (ok, expected) in _SCALARS.items():
        if not ok(header.get(key)):
            raise FieldError(f"verdict field {key!r} must be {expected}, got {header.get(key)!r}")
    if header.get("verdict") not in ("ok", "defect"):
        raise FieldError(f"verdict field 'verdict' must be 'ok' or 'defect', got {header.get('verdict')!r}")
    if not (header.get("path") is None or _text(header.get("path"))):
        raise FieldError(f"verdict field 'path' must be a string or null, got {header.get('path')!r}")
    _size("image", header.get("image"))
    _size("heatmap", header.get("heatmap"))
    regions = header.get("regions")
    if not isinstance(regions, list):
        raise FieldError(f"verdict field 'regions' must be a list, got {type(regions).__name__}")
    for index, region in enumerate(regions):
        _region(index, region)
