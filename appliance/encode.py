"""Encoders: I420 frames into the bytes a UVC host (or a browser) receives."""

from __future__ import annotations

import numpy as np
import simplejpeg

from appliance.frame import split_i420
from appliance.stream import StreamFormat


class MjpegEncoder:
    """JPEG straight from the YUV planes (libjpeg-turbo): no RGB round trip."""

    def __init__(self, quality: int = 85):
        self.quality = quality

    def encode(self, yuv: np.ndarray) -> bytes:
        y, u, v = split_i420(yuv)
        return simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=self.quality, fastdct=True)


class YuyvEncoder:
    """Packed YUYV 4:2:2 (the uncompressed UVC format): each chroma row is used for two lines."""

    def encode(self, yuv: np.ndarray) -> bytes:
        y, u, v = split_i420(yuv)
        h, w = y.shape
        out = np.empty((h, w // 2, 4), np.uint8)
        out[:, :, 0] = y[:, 0::2]
        out[:, :, 2] = y[:, 1::2]
        out[:, :, 1] = np.repeat(u, 2, axis=0)
        out[:, :, 3] = np.repeat(v, 2, axis=0)
        return out.tobytes()


def encoder_for(fmt: StreamFormat, quality: int = 85) -> MjpegEncoder | YuyvEncoder:
    if fmt.encoding == "mjpeg":
        return MjpegEncoder(quality)
    if fmt.encoding == "yuyv":
        return YuyvEncoder()
    raise ValueError(f"unknown encoding {fmt.encoding!r}: expected mjpeg or yuyv")


def yuyv_to_i420(data: bytes, width: int, height: int) -> np.ndarray:
    """The inverse of YuyvEncoder (chroma of even lines), for tests and the V4L2 source."""
    packed = np.frombuffer(data, np.uint8).reshape(height, width // 2, 4)
    out = np.empty((height * 3 // 2, width), np.uint8)
    y, u, v = split_i420(out)
    y[:, 0::2] = packed[:, :, 0]
    y[:, 1::2] = packed[:, :, 2]
    u[:] = packed[0::2, :, 1]
    v[:] = packed[0::2, :, 3]
    return out
