"""Picture files for upload tests: real encodings, and small files claiming huge sizes."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np


def encoded(ext: str, width: int = 64, height: int = 48, **kwargs) -> bytes:
    image = np.random.default_rng(1).integers(0, 255, (height, width, 3), np.uint8)
    if ext in (".pfm", ".hdr"):
        image = image.astype(np.float32) / 255
    ok, data = cv2.imencode(ext, image, **kwargs)
    assert ok
    return data.tobytes()


def png_claiming(width: int, height: int) -> bytes:
    """A real PNG of the given size: 1-bit grey, all black, so it compresses to almost nothing."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row * 1000) for _ in range(height // 1000)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header is rewritten to claim another size."""
    data = bytearray(encoded(".jpg", 8, 8))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)
