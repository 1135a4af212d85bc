"""Hostile images: random bytes, truncated files and decompression bombs are refused, cheaply."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hostile_images import BOMB_SIDE, bombs, broken, encoded
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from linewatch.data import DataError, decode_image, read_image
from linewatch.data.image_header import read_header
from linewatch.data.io import _decode_png8, to_rgb
from linewatch.limits import DEFAULT_MAX_IMAGE_PIXELS, MAX_PIXELS_ENV, OPENCV_PIXELS_ENV

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP", ".webp": "WebP", ".tiff": "TIFF"}


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_header_size_is_read_for_every_format(ext: str) -> None:
    image = np.zeros((16, 24, 3), np.uint8)
    header = read_header(cv2.imencode(ext, image)[1].tobytes())
    assert header is not None and (header.format, header.width, header.height) == (FORMATS[ext], 24, 16)
    gray = read_header(cv2.imencode(ext, np.zeros((5, 7), np.uint8))[1].tobytes())
    assert (gray.width, gray.height) == (7, 5)
    if ext == ".webp":  # OpenCV writes lossless VP8L by default, lossy VP8 below quality 100
        lossy = read_header(cv2.imencode(ext, image, [cv2.IMWRITE_WEBP_QUALITY, 80])[1].tobytes())
        assert (lossy.width, lossy.height) == (24, 16)


@pytest.mark.parametrize("name", sorted(bombs()))
def test_decompression_bombs_are_refused_naming_the_declared_size(name: str) -> None:
    with pytest.raises(DataError, match="decompression bomb") as info:
        decode_image(bombs()[name], name)
    assert name in str(info.value) and "pixels, more than the limit of 100,000,000" in str(info.value)


@pytest.mark.parametrize("name", sorted(broken()))
def test_random_truncated_and_empty_files_are_refused(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(broken()[name])
    with pytest.raises(DataError) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_other_formats_never_reach_opencv() -> None:
    pgm = b"P5\n4 4\n255\n" + bytes(16)  # a valid PGM that OpenCV would decode
    assert cv2.imdecode(np.frombuffer(pgm, np.uint8), cv2.IMREAD_UNCHANGED).shape == (4, 4)
    with pytest.raises(DataError, match="not a PNG, JPEG, BMP, TIFF or WebP image"):
        decode_image(pgm, "odd.png")


def test_pixel_limit_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encoded(".png", 20)
    assert decode_image(data, "a").shape == (20, 20, 3)
    with pytest.raises(DataError, match="20x20 = 400 pixels, more than the limit of 399"):
        decode_image(data, "a", max_pixels=399)
    monkeypatch.setenv(MAX_PIXELS_ENV, "399")
    with pytest.raises(DataError, match="limit of 399"):
        decode_image(data, "a")
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match=f"{MAX_PIXELS_ENV}='lots' is not a whole number"):
        decode_image(data, "a")


def test_opencv_gets_the_same_limit_before_it_is_imported() -> None:
    env = {k: v for k, v in os.environ.items() if k not in (MAX_PIXELS_ENV, OPENCV_PIXELS_ENV)}
    code = "import os, linewatch, cv2; print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == str(DEFAULT_MAX_IMAGE_PIXELS), out.stderr
    out = subprocess.run([sys.executable, "-c", code], env={**env, MAX_PIXELS_ENV: "5000"}, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "5000", out.stderr


_MEASURE = """
import resource, sys
from pathlib import Path
from linewatch.data import DataError, read_image
read_image(sys.argv[1])  # warm up: the first decode loads codec state
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
refused = 0
for path in sys.argv[2:]:
    try:
        read_image(path)
    except DataError:
        refused += 1
print(refused, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_bombs_cost_no_memory(tmp_path: Path) -> None:
    """Peak RSS of a fresh process grows by well under 50 MB while refusing 30,000 x 30,000 bombs (2.7 GB each)."""
    good = tmp_path / "good.png"
    good.write_bytes(encoded(".png"))
    paths = []
    for name, data in {**bombs(), **broken()}.items():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(good), *map(str, paths)], capture_output=True,
                         text=True, timeout=120)
    refused, grown_kib = map(int, out.stdout.split())
    assert refused == len(paths), out.stderr
    assert grown_kib < 50 * 1024, f"peak RSS grew by {grown_kib} KiB; {BOMB_SIDE}^2 RGB would be 2.7 GB"


def _mutations(draw: st.DrawFn) -> bytes:
    data = bytearray(encoded(draw(st.sampled_from(sorted(FORMATS))), side=draw(st.integers(1, 24)), seed=3))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))]) if draw(st.booleans()) else bytes(data)


def _check_decode(data: bytes) -> None:
    try:
        image = decode_image(data, "fuzz")
    except DataError as exc:
        assert str(exc).startswith("fuzz: ")
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@settings(max_examples=150)
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes_decode_or_raise_data_error(data: bytes) -> None:
    _check_decode(data)


@settings(max_examples=150)
@given(st.composite(_mutations)())
def test_fuzz_corrupted_images_decode_or_raise_data_error(data: bytes) -> None:
    _check_decode(data)


@settings(max_examples=100)
@given(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"BM", b"RIFF\0\0\0\0WEBP", b"II*\x00", b"MM\x00*"]),
       st.binary(max_size=64))
def test_fuzz_headers_of_known_formats_never_crash(magic: bytes, rest: bytes) -> None:
    _check_decode(magic + rest)


@pytest.mark.parametrize(("mode", "options", "fast"), [
    ("L", {}, True), ("RGB", {}, True), ("RGB", {"transparency": (1, 2, 3)}, True), ("P", {}, True),
    ("P", {"transparency": 0}, True), ("RGBA", {}, True), ("LA", {}, False), ("1", {}, False), ("I;16", {}, False)])
def test_png_fast_path_decodes_every_colour_type_like_opencv(mode: str, options: dict, fast: bool) -> None:
    """8-bit grey / RGB / palette / RGBA PNGs go through libspng, others through OpenCV; both give the pixels
    of OpenCV + `to_rgb`."""
    rgb = np.random.default_rng(0).integers(0, 256, (37, 53, 3), np.uint8)
    image = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257 + 7) if mode == "I;16" else \
        Image.fromarray(rgb).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    data = buffer.getvalue()
    expected = to_rgb(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED))
    assert (_decode_png8(data, "x") is not None) == fast
    decoded = decode_image(data, "x")
    assert decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, expected)


def test_png_with_corrupt_pixel_data_is_refused_by_the_fast_path() -> None:
    """Complete chunk structure and valid CRCs, but the compressed rows are garbage: a DataError, not pixels."""
    png = encoded(".png", 32)
    start = png.index(b"IDAT") - 4
    length = struct.unpack(">I", png[start : start + 4])[0]
    payload = bytes(np.random.default_rng(2).integers(0, 256, length, np.uint8))
    idat = struct.pack(">I", length) + b"IDAT" + payload + struct.pack(">I", zlib.crc32(b"IDAT" + payload))
    with pytest.raises(DataError, match="^corrupt.png: cannot decode image"):
        decode_image(png[:start] + idat + png[start + 12 + length :], "corrupt.png")
