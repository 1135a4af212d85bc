"""Image and mask reading that never silently returns a half-decoded picture.

Everything downstream assumes HxWx3 uint8 RGB, whatever the file held (grey, alpha, 16-bit), so all
conversion happens here. OpenCV can decode a truncated JPEG/PNG into a grey-filled image without
complaint, and a cut-off upload would then be learned as a "good" part, so completeness is checked
from the file structure before decoding. The declared size is checked first of all: a small file
declaring a huge picture (a decompression bomb) is refused before the decoder allocates it.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import imagecodecs
import numpy as np

from linewatch.data.errors import DataError
from linewatch.data.image_header import HeaderError, ImageHeader, read_header
from linewatch.limits import MAX_PIXELS_ENV, max_image_pixels

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_image_file(path: str | Path) -> bool:
    """True when the suffix is a supported image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """Convert an OpenCV frame (grey, BGR or BGRA; 8- or 16-bit) to HxWx3 uint8 RGB."""
    if frame.dtype == np.uint16:
        frame = np.round(frame / 257.0).astype(np.uint8)
    elif frame.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {frame.dtype} (expected 8- or 16-bit integers)")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    raise ValueError(f"unsupported frame shape {frame.shape} (expected grey, BGR or BGRA)")


def _png_complete(data: bytes) -> bool:
    """Walk the chunk list: a complete PNG reaches an IEND chunk inside the buffer."""
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        pos += 12 + length
        if kind == b"IEND":
            return pos <= len(data)
    return False


def _truncation(data: bytes) -> str | None:
    """Why the encoded buffer looks cut off, or None when it looks complete (or the format has no check)."""
    if data.startswith(b"\xff\xd8"):
        return None if data.rstrip(b"\x00").endswith(b"\xff\xd9") else "JPEG has no end-of-image marker"
    if data.startswith(_PNG_SIGNATURE):
        return None if _png_complete(data) else "PNG has no complete IEND chunk"
    if data.startswith(b"BM") and len(data) >= 6:
        declared = struct.unpack("<I", data[2:6])[0]
        return None if len(data) >= declared else f"BMP holds {len(data)} of {declared} bytes"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        declared = struct.unpack("<I", data[4:8])[0] + 8
        return None if len(data) >= declared else f"WebP holds {len(data)} of {declared} bytes"
    return None


_SPNG_COLOUR_TYPES = frozenset({0, 2, 3, 6})  # grey, RGB, palette, RGBA (libspng refuses grey + alpha)


def _decode_png8(data: bytes, name: str) -> np.ndarray | None:
    """An 8-bit PNG decoded by libspng as RGB, or None for images OpenCV decodes (16-bit, grey + alpha, others).

    libspng (`imagecodecs`, which releases the GIL like OpenCV, so source threads decode in parallel with
    inference) decodes bottle's 900 x 900 PNGs ~1.5x faster than OpenCV's libpng, and decoding is the
    largest per-frame cost of a PNG stream (`tools/bench_decode.py`). The pixels equal OpenCV + `to_rgb`'s
    (tested per colour type)."""
    if (not data.startswith(_PNG_SIGNATURE) or len(data) < 26 or data[12:16] != b"IHDR" or data[24] != 8
            or data[25] not in _SPNG_COLOUR_TYPES):
        return None
    try:
        image = imagecodecs.spng_decode(data)
    except (RuntimeError, ValueError) as exc:
        raise DataError(f"{name}: cannot decode image ({exc})") from exc
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(image[:, :, :3]) if image.shape[2] == 4 else image


def check_declared_size(data: bytes, name: str, max_pixels: int | None = None) -> ImageHeader:
    """The header's format and size, refusing other formats and more than `max_pixels` (default: the limit)."""
    try:
        header = read_header(data)
    except HeaderError as exc:
        raise DataError(f"{name}: not a readable image ({exc})") from None
    if header is None:
        raise DataError(f"{name}: not a PNG, JPEG, BMP, TIFF or WebP image")
    size = f"{header.width}x{header.height}"
    if header.width < 1 or header.height < 1:
        raise DataError(f"{name}: {header.format} declares an empty {size} image")
    limit = max_image_pixels() if max_pixels is None else max_pixels
    if header.pixels > limit:
        raise DataError(f"{name}: {header.format} declares {size} = {header.pixels:,} pixels, more than the limit "
                        f"of {limit:,} (a decompression bomb? {MAX_PIXELS_ENV} raises the limit)")
    return header


def decode_image(buf: bytes | np.ndarray, name: str, max_pixels: int | None = None) -> np.ndarray:
    """Decode an encoded image held in memory to HxWx3 uint8 RGB; `name` is used in error messages.

    The declared size is checked against `max_pixels` (default: `limits.max_image_pixels()`) first.
    """
    data = buf.tobytes() if isinstance(buf, np.ndarray) else bytes(buf)
    if not data:
        raise DataError(f"{name}: file is empty")
    check_declared_size(data, name, max_pixels)
    reason = _truncation(data)
    if reason is not None:
        raise DataError(f"{name}: image is truncated ({reason})")
    fast = _decode_png8(data, name)
    if fast is not None:
        return fast
    try:
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise DataError(f"{name}: cannot decode image ({exc.err})") from exc
    if frame is None or frame.size == 0:
        raise DataError(f"{name}: not a readable image")
    try:
        return to_rgb(frame)
    except ValueError as exc:
        raise DataError(f"{name}: {exc}") from exc


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB (np.fromfile so non-ASCII paths work on every OS)."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    return decode_image(data, str(path))


def read_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Read a ground-truth mask as HxW bool (>127 is defect), insisting it matches its image's size."""
    mask = read_image(path).max(axis=2) > 127
    if mask.shape != tuple(shape):
        raise DataError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {shape[1]}x{shape[0]} "
            "(width x height); expected the same size"
        )
    return mask
