"""Image controls applied in software, for sources whose hardware has none (demo, file, webcam).

The rows of appliance/controls.py marked software=True are applied here, each by its keyword of
`adjust()`. Brightness, contrast and saturation are lookup tables on the I420 planes (a fraction
of a millisecond at 720p); sharpness is an unsharp mask on the luma plane.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from appliance.controls import CONTROLS
from appliance.frame import split_i420

NEUTRAL = {c.name: c.neutral for c in CONTROLS if c.software}


@lru_cache(maxsize=8)
def _luma_lut(brightness: int, contrast: int) -> np.ndarray:
    x = np.arange(256, dtype=np.float32)
    y = (x - 128.0) * (contrast / 100.0) + 128.0 + brightness * 1.28
    return np.clip(np.round(y), 0, 255).astype(np.uint8)


@lru_cache(maxsize=8)
def _chroma_lut(saturation: int) -> np.ndarray:
    x = np.arange(256, dtype=np.float32)
    return np.clip(np.round((x - 128.0) * (saturation / 100.0) + 128.0), 0, 255).astype(np.uint8)


def is_neutral(controls: dict[str, int]) -> bool:
    return all(controls.get(k, v) == v for k, v in NEUTRAL.items())


def adjust(yuv: np.ndarray, brightness: int = 0, contrast: int = 100, saturation: int = 100,
           sharpness: int = 100) -> np.ndarray:
    """A new I420 frame with the controls applied (the input is left untouched)."""
    out = np.empty_like(yuv)
    (y, u, v), (oy, ou, ov) = split_i420(yuv), split_i420(out)
    cv2.LUT(y, _luma_lut(brightness, contrast), oy)
    if sharpness != 100:
        amount = (sharpness - 100) / 100.0  # negative softens, positive sharpens
        soft = cv2.GaussianBlur(oy, (0, 0), 1.2)
        cv2.addWeighted(oy, 1.0 + amount, soft, -amount, 0, dst=oy)
    lut = _chroma_lut(saturation)
    cv2.LUT(u, lut, ou)
    cv2.LUT(v, lut, ov)
    return out
