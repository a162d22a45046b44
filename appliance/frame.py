"""The unit of work: one camera frame, as every source delivers it."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from appliance.segment import model_input


@dataclass
class Frame:
    """One captured frame.

    `yuv` is the full image in I420 (planar YUV 4:2:0, full-range BT.601 as JPEG expects), shape
    (height * 3 // 2, width): the Y plane on top, then U, then V. Working in the camera's own YUV
    means a frame is never converted to RGB and back on its way to the JPEG encoder.
    `lores` is the same picture as RGB at the segmentation model's input size (on a Pi the ISP
    scales it for free).
    """

    yuv: np.ndarray
    lores: np.ndarray
    timestamp: float  # time.monotonic() at capture
    sequence: int = 0
    # The part of the camera's whole picture this frame shows, as (x, y, width, height) in the
    # whole picture's pixels, when auto-framing cropped it; None = all of it.
    view: tuple[int, int, int, int] | None = None

    @property
    def width(self) -> int:
        return self.yuv.shape[1]

    @property
    def height(self) -> int:
        return self.yuv.shape[0] * 2 // 3

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of the Y, U and V planes (no copies)."""
        return split_i420(self.yuv)


def split_i420(yuv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h = yuv.shape[0] * 2 // 3
    w = yuv.shape[1]
    flat = yuv.reshape(-1)
    y = flat[: h * w].reshape(h, w)
    q = (h // 2) * (w // 2)
    u = flat[h * w: h * w + q].reshape(h // 2, w // 2)
    v = flat[h * w + q: h * w + 2 * q].reshape(h // 2, w // 2)
    return y, u, v


def rgb_to_i420(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (h, w, 3) with even h, w -> I420 (h*3/2, w), full-range BT.601 (JFIF).

    OpenCV's YCrCb conversion is exactly JFIF's matrix (its "YUV" is the analogue PAL one and its
    *_I420 variants are limited range: either would shift colours at the host's JPEG decoder).
    """
    h, w = rgb.shape[:2]
    full = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    out = np.empty((h * 3 // 2, w), np.uint8)
    y, u, v = split_i420(out)
    cv2.extractChannel(full, 0, y)
    chroma = cv2.resize(full, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    cv2.extractChannel(chroma, 2, u)  # Cb
    cv2.extractChannel(chroma, 1, v)  # Cr
    return out


def i420_to_rgb(yuv: np.ndarray) -> np.ndarray:
    """I420 (full-range BT.601) -> RGB uint8 (h, w, 3). For previews and tests."""
    y, u, v = split_i420(yuv)
    h, w = y.shape
    full = cv2.merge([y, cv2.resize(v, (w, h)), cv2.resize(u, (w, h))])
    return cv2.cvtColor(full, cv2.COLOR_YCrCb2RGB)


def frame_from_rgb(rgb: np.ndarray, lores_size: tuple[int, int], timestamp: float,
                   sequence: int = 0) -> Frame:
    """Wrap an RGB picture as a Frame, as sources without a YUV pipeline of their own do."""
    lores = model_input(rgb, lores_size)
    return Frame(yuv=rgb_to_i420(rgb), lores=lores, timestamp=timestamp, sequence=sequence)


def fit_cover(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale an image to cover width x height, cropping the overflow around the centre."""
    h, w = rgb.shape[:2]
    if (w, h) == (width, height):
        return rgb
    s = max(width / w, height / h)
    nw, nh = max(width, round(w * s)), max(height, round(h * s))
    scaled = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    x0, y0 = (nw - width) // 2, (nh - height) // 2
    return np.ascontiguousarray(scaled[y0:y0 + height, x0:x0 + width])
