"""The size an encoded image declares, read from its header before anything is decoded.

A decoder allocates the whole picture from the header's width and height before reading a pixel, so a
file of a few hundred bytes declaring 30,000 x 30,000 would cost gigabytes (a decompression bomb).
Reading the header first lets `decode_image` refuse such files cheaply. Only the formats linewatch
reads (PNG, JPEG, BMP, TIFF, WebP) are recognised; anything else is refused before it reaches OpenCV,
whose other decoders (PNM, HDR, JPEG 2000, ...) are then never fed untrusted bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOFn; C4/C8/CC are DHT, JPG and DAC
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01, 0xD8}  # RSTn, TEM and SOI carry no length
_TIFF_WIDTH, _TIFF_HEIGHT = 256, 257
_TIFF_SHORT, _TIFF_LONG = 3, 4


class HeaderError(ValueError):
    """The header of a recognised format cannot be read (cut short or inconsistent)."""


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _unpack(fmt: str, data: bytes, offset: int, what: str) -> tuple[int, ...]:
    end = offset + struct.calcsize(fmt)
    if offset < 0 or end > len(data):
        raise HeaderError(f"{what} header is cut short")
    return struct.unpack(fmt, data[offset:end])


def _png(data: bytes) -> ImageHeader:
    if data[12:16] != b"IHDR":
        raise HeaderError("PNG does not start with an IHDR chunk")
    width, height = _unpack(">II", data, 16, "PNG")
    return ImageHeader("PNG", width, height)


def _jpeg(data: bytes) -> ImageHeader:
    """Walk the marker segments up to the first start-of-frame (APPn thumbnails are skipped whole)."""
    pos = 2
    while pos + 1 < len(data):
        if data[pos] != 0xFF:
            raise HeaderError(f"JPEG has no marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in _JPEG_SOF:
            height, width = _unpack(">HH", data, pos + 5, "JPEG")
            return ImageHeader("JPEG", width, height)
        if marker in (0xD9, 0xDA):
            raise HeaderError("JPEG has no frame header before its image data")
        (length,) = _unpack(">H", data, pos + 2, "JPEG")
        if length < 2:
            raise HeaderError(f"JPEG segment at byte {pos} has length {length}")
        pos += 2 + length
    raise HeaderError("JPEG header is cut short")


def _bmp(data: bytes) -> ImageHeader:
    (info_size,) = _unpack("<I", data, 14, "BMP")
    if info_size == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sizes
        width, height = _unpack("<HH", data, 18, "BMP")
    else:
        width, height = _unpack("<ii", data, 18, "BMP")
    return ImageHeader("BMP", width, abs(height))  # a negative height means rows stored top-down


def _webp(data: bytes) -> ImageHeader:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise HeaderError("WebP VP8 frame has no start code")
        width, height = _unpack("<HH", data, 26, "WebP")
        return ImageHeader("WebP", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L":
        (bits,) = _unpack("<I", data, 21, "WebP")
        return ImageHeader("WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        raw = data[24:30]
        if len(raw) < 6:
            raise HeaderError("WebP header is cut short")
        return ImageHeader("WebP", int.from_bytes(raw[:3], "little") + 1, int.from_bytes(raw[3:], "little") + 1)
    raise HeaderError(f"WebP has an unknown first chunk {chunk!r}")


def _tiff(data: bytes) -> ImageHeader:
    """Width and height tags of the first image file directory (OpenCV decodes the first page)."""
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = _unpack(order + "I", data, 4, "TIFF")
    (count,) = _unpack(order + "H", data, ifd, "TIFF")
    size: dict[int, int] = {}
    for entry in range(count):
        tag, kind, _ = _unpack(order + "HHI", data, ifd + 2 + 12 * entry, "TIFF")
        if tag in (_TIFF_WIDTH, _TIFF_HEIGHT) and kind in (_TIFF_SHORT, _TIFF_LONG):
            value_fmt = order + ("H" if kind == _TIFF_SHORT else "I")
            (size[tag],) = _unpack(value_fmt, data, ifd + 2 + 12 * entry + 8, "TIFF")
    if _TIFF_WIDTH not in size or _TIFF_HEIGHT not in size:
        raise HeaderError("TIFF does not declare its width and height")
    return ImageHeader("TIFF", size[_TIFF_WIDTH], size[_TIFF_HEIGHT])


def read_header(data: bytes) -> ImageHeader | None:
    """The declared format and size; None for a format linewatch does not read; HeaderError when unreadable."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    if data.startswith(b"BM"):
        return _bmp(data)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return _webp(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff(data)
    return None
