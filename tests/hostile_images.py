"""Hostile image files for tests: random bytes, truncated files and decompression bombs.

Each bomb is a real, small encoded image whose header was patched to declare BOMB_SIDE x BOMB_SIDE
(WebP's 14-bit fields cap it at 16383), so a decoder that trusted the header would allocate gigabytes.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

BOMB_SIDE = 30_000


def encoded(ext: str, side: int = 16, seed: int = 0, params: tuple[int, ...] = ()) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(side: int = BOMB_SIDE) -> bytes:
    """A complete PNG (valid CRCs, IEND) declaring side x side RGB with a few rows of zeros as data."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + 3 * side) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def jpeg_bomb(side: int = BOMB_SIDE) -> bytes:
    data = bytearray(encoded(".jpg"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def bmp_bomb(side: int = BOMB_SIDE) -> bytes:
    data = bytearray(encoded(".bmp"))
    data[18:26] = struct.pack("<ii", side, side)
    return bytes(data)


def webp_bomb(lossless: bool = True) -> bytes:
    """16383 x 16383 (the 14-bit maximum) in a lossless (VP8L) or lossy (VP8) WebP."""
    data = bytearray(encoded(".webp", params=() if lossless else (cv2.IMWRITE_WEBP_QUALITY, 80)))
    if lossless:
        assert data[12:16] == b"VP8L", data[12:16]
        (bits,) = struct.unpack("<I", data[21:25])
        data[21:25] = struct.pack("<I", (bits & ~0xFFFFFFF) | 0x3FFF | 0x3FFF << 14)
    else:
        assert data[12:16] == b"VP8 ", data[12:16]
        data[26:30] = struct.pack("<HH", 0x3FFF, 0x3FFF)
    return bytes(data)


def tiff_bomb(side: int = BOMB_SIDE) -> bytes:
    """Patch the width and length tags of the first IFD (written little-endian by OpenCV)."""
    data = bytearray(encoded(".tiff"))
    assert data[:4] == b"II*\x00"
    (ifd,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[ifd : ifd + 2])
    for entry in range(count):
        at = ifd + 2 + 12 * entry
        tag, kind = struct.unpack("<HH", data[at : at + 4])
        if tag in (256, 257):
            value = struct.pack("<H", side) + b"\0\0" if kind == 3 else struct.pack("<I", side)
            data[at + 8 : at + 12] = value
    return bytes(data)


def bombs() -> dict[str, bytes]:
    return {"bomb.png": png_bomb(), "bomb.jpg": jpeg_bomb(), "bomb.bmp": bmp_bomb(), "bomb.webp": webp_bomb(),
            "lossy-bomb.webp": webp_bomb(lossless=False), "bomb.tiff": tiff_bomb()}


def broken() -> dict[str, bytes]:
    """Random bytes, cut-off PNG and JPEG, an empty file: each must be refused, never decoded half-way."""
    png, jpg = encoded(".png", 32), encoded(".jpg", 32)
    return {"random.png": np.random.default_rng(1).bytes(3000), "cut.png": png[: len(png) // 2],
            "cut.jpg": jpg[: len(jpg) - 40], "empty.jpg": b""}
