"""Pictures from outside (uploaded backgrounds): exactly JPEG, PNG, WebP or BMP, decoded in
bounded memory.

A picture file says its own size in its first bytes. A few hundred bytes can claim 65500x65500
pixels, and a small PNG can really hold 30000x30000 (it compresses to almost nothing): decoding
either would take gigabytes. So the header is read first, without decoding, and anything over
MAX_PIXELS is refused with a sentence saying so. A large JPEG is then decoded at 1/2, 1/4 or 1/8
of its size by the JPEG decoder itself when that still covers the size it is wanted at.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import cv2
import numpy as np

ACCEPTED = "JPEG, PNG, WebP or BMP"
MAX_PIXELS = 24_000_000  # a 24-megapixel photo; decoded RGB ~72 MB
MAX_JPEG_PIXELS = 100_000_000  # JPEGs are decoded scaled down (see decode)
MAX_SIDE = 30_000

# What other picture formats look like, to name them in the refusal.
_OTHER_FORMATS = ((b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"GIF8", "GIF"), (b"PF", "PFM"),
                  (b"Pf", "PFM"), (b"#?RADIANCE", "Radiance HDR"), (b"#?RGBE", "Radiance HDR"),
                  (b"\x59\xa6\x6a\x95", "Sun raster"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
                  (b"\x76\x2f\x31\x01", "OpenEXR"), (b"%PDF", "PDF"), (b"<svg", "SVG"), (b"<?xml", "XML/SVG"))


class PictureError(ValueError):
    """Not a picture we accept; str() says why in one sentence."""


@dataclass(frozen=True)
class PictureHeader:
    format: str  # "JPEG", "PNG", "WebP" or "BMP"
    width: int
    height: int


def _u16be(data: bytes, at: int) -> int:
    return struct.unpack_from(">H", data, at)[0]


def _jpeg_size(data: bytes) -> tuple[int, int]:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise PictureError("the JPEG's header is damaged")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            at += 2
            continue
        length = _u16be(data, at + 2)
        # SOF0..SOF15 carry the frame size; C4 (tables), C8 (reserved) and CC (coding) do not.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and at + 9 <= len(data):
            return _u16be(data, at + 7), _u16be(data, at + 5)
        if marker == 0xDA:  # image data begins: a frame header should have come before
            break
        at += 2 + length
    raise PictureError("the JPEG has no frame header (damaged or cut short)")


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack_from("<HH", data, 26)
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = struct.unpack_from("<I", data, 21)[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return (int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
    raise PictureError("the WebP's header is damaged")


def _bmp_size(data: bytes) -> tuple[int, int]:
    if len(data) < 26:
        raise PictureError("the BMP's header is cut short")
    if struct.unpack_from("<I", data, 14)[0] == 12:  # the old OS/2 header
        return struct.unpack_from("<HH", data, 18)
    w, h = struct.unpack_from("<ii", data, 18)
    return abs(w), abs(h)  # a negative height means rows top to bottom


def read_header(data: bytes) -> PictureHeader:
    """The format and size a picture claims, from its first bytes; PictureError otherwise."""
    if data.startswith(b"\xff\xd8\xff"):
        fmt, (w, h) = "JPEG", _jpeg_size(data)
    elif data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        fmt, (w, h) = "PNG", struct.unpack_from(">II", data, 16)
    elif data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        fmt, (w, h) = "WebP", _webp_size(data)
    elif data.startswith(b"BM"):
        fmt, (w, h) = "BMP", _bmp_size(data)
    else:
        other = next((name for magic, name in _OTHER_FORMATS if data.startswith(magic)), None)
        if other is None and data[:1] == b"P" and data[1:2] in b"1234567":
            other = "PNM (PBM/PGM/PPM)"
        raise PictureError(f"{'a ' + other + ' file' if other else 'not a picture'}; "
                           f"only {ACCEPTED} pictures are accepted")
    if w < 1 or h < 1:
        raise PictureError(f"the {fmt} claims an empty size ({w}x{h})")
    limit = MAX_JPEG_PIXELS if fmt == "JPEG" else MAX_PIXELS
    if w * h > limit or max(w, h) > MAX_SIDE:
        raise PictureError(f"the {fmt} is {w}x{h} pixels ({w * h / 1e6:.0f} megapixels); at most "
                           f"{limit // 1_000_000} megapixels and {MAX_SIDE} pixels a side are accepted")
    return PictureHeader(fmt, w, h)


def _jpeg_reduction(header: PictureHeader, fit: tuple[int, int] | None) -> int:
    """By how much (1, 2, 4 or 8) the JPEG decoder shrinks the picture: never left above
    MAX_PIXELS, and as far as it still covers `fit`."""
    if header.format != "JPEG":
        return 1
    factor = 1
    while header.width * header.height > MAX_PIXELS * factor * factor:
        factor *= 2
    while (fit is not None and factor < 8 and header.width // (2 * factor) >= fit[0]
           and header.height // (2 * factor) >= fit[1]):
        factor *= 2
    return factor


_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}


def decode(data: bytes, fit: tuple[int, int] | None = None) -> np.ndarray:
    """Picture bytes as RGB uint8, checked first (PictureError). With `fit` (width, height), a
    JPEG may come back smaller than it is, but never smaller than needed to cover `fit`."""
    header = read_header(data)
    factor = _jpeg_reduction(header, fit)
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED[factor])
    except cv2.error:
        bgr = None
    if bgr is None:
        raise PictureError(f"the {header.format} could not be decoded (damaged or cut short)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
