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


# Frames are full-range (JFIF) YCbCr, as JPEG wants; uncompressed UVC video is read by hosts
# (uvcvideo's default quantization, GStreamer, OpenCV, Windows) as BT.601 video range: luma
# 16..235, chroma 16..240 around 128. Sent unscaled, the host's picture has crushed blacks and
# clipped whites.
_LEVELS = np.arange(256, dtype=np.float64)
_Y_TO_VIDEO = np.round(16 + _LEVELS * 219 / 255).astype(np.uint8)
_C_TO_VIDEO = np.round(128 + (_LEVELS - 128) * 224 / 255).astype(np.uint8)
_Y_TO_FULL = np.clip(np.round((_LEVELS - 16) * 255 / 219), 0, 255).astype(np.uint8)
_C_TO_FULL = np.clip(np.round(128 + (_LEVELS - 128) * 255 / 224), 0, 255).astype(np.uint8)


class YuyvEncoder:
    """Packed YUYV 4:2:2 (the uncompressed UVC format) in video range: each chroma row is used
    for two lines."""

    def encode(self, yuv: np.ndarray) -> bytes:
        y, u, v = split_i420(yuv)
        h, w = y.shape
        out = np.empty((h, w // 2, 4), np.uint8)
        out[:, :, 0] = y[:, 0::2]
        out[:, :, 2] = y[:, 1::2]
        out[:, :, 1] = np.repeat(u, 2, axis=0)
        out[:, :, 3] = np.repeat(v, 2, axis=0)
        np.take(_Y_TO_VIDEO, out[:, :, 0::2], out=out[:, :, 0::2])
        np.take(_C_TO_VIDEO, out[:, :, 1::2], out=out[:, :, 1::2])
        return out.tobytes()


def encoder_for(fmt: StreamFormat, quality: int = 85) -> MjpegEncoder | YuyvEncoder:
    if fmt.encoding == "mjpeg":
        return MjpegEncoder(quality)
    if fmt.encoding == "yuyv":
        return YuyvEncoder()
    raise ValueError(f"unknown encoding {fmt.encoding!r}: expected mjpeg or yuyv")


def yuyv_to_i420(data: bytes, width: int, height: int) -> np.ndarray:
    """The inverse of YuyvEncoder (chroma of even lines, back to full range), for tests."""
    packed = np.frombuffer(data, np.uint8).reshape(height, width // 2, 4)
    out = np.empty((height * 3 // 2, width), np.uint8)
    y, u, v = split_i420(out)
    y[:, 0::2] = _Y_TO_FULL[packed[:, :, 0]]
    y[:, 1::2] = _Y_TO_FULL[packed[:, :, 2]]
    u[:] = _C_TO_FULL[packed[0::2, :, 1]]
    v[:] = _C_TO_FULL[packed[0::2, :, 3]]
    return out
