"""The effects: what the host sees behind the person.

All work is done on I420 planes. The blur is computed at low resolution and blended at full
resolution; it is weighted by the background mask (normalised convolution), so the person's own
colours never smear into the blurred background: no halo around the head and shoulders.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from appliance.frame import fit_cover, rgb_to_i420, split_i420

# The blur radius aimed for at low resolution; the downscale factor makes up the rest.
_LOW_RES_SIGMA = 4.0
# Regularises the weighted blur where almost no background is visible nearby.
_WEIGHT_EPS = 0.02


def blur_sigma(strength: int, width: int) -> float:
    """Gaussian sigma in full-resolution pixels: strength 100 is a 1/20 of the frame width."""
    return 1.0 + (strength / 100.0) * width / 20.0


def downscale_factor(width: int, height: int, wanted: float) -> int:
    """The integer factor (at least 2) nearest to `wanted` that divides both chroma plane sides:
    OpenCV's area resize is several times faster on exact integer ratios."""
    g = math.gcd(width // 2, height // 2)
    divisors = [d for d in range(2, g + 1) if g % d == 0] or [1]
    return min(divisors, key=lambda d: abs(d - wanted))


def _weighted_blur(plane: np.ndarray, weight: np.ndarray, factor: int, sigma: float) -> np.ndarray:
    """Blur `plane` at 1/factor resolution counting only background pixels, then upscale."""
    h, w = plane.shape
    size = (w // factor, h // factor)
    small = cv2.resize(plane, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    num = cv2.GaussianBlur(small * weight, (0, 0), sigma)
    den = cv2.GaussianBlur(weight, (0, 0), sigma)
    plain = cv2.GaussianBlur(small, (0, 0), sigma)
    filled = ((num + _WEIGHT_EPS * plain) / (den + _WEIGHT_EPS)).astype(np.uint8)
    return cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)


def blurred_background(yuv: np.ndarray, alpha_low: np.ndarray, strength: int) -> np.ndarray:
    """An I420 image of the background alone, blurred, with the person's area filled in from
    the surrounding background."""
    y, u, v = split_i420(yuv)
    h, w = y.shape
    factor = downscale_factor(w, h, blur_sigma(strength, w) / _LOW_RES_SIGMA)
    sigma = blur_sigma(strength, w) / factor
    lw, lh = w // factor, h // factor
    weight = 1.0 - cv2.resize(alpha_low, (lw, lh), interpolation=cv2.INTER_AREA)
    weight *= weight  # edge pixels are part person: trust them less
    weight_c = cv2.resize(weight, (lw // 2, lh // 2), interpolation=cv2.INTER_AREA)
    out = np.empty_like(yuv)
    oy, ou, ov = split_i420(out)
    oy[:] = _weighted_blur(y, weight, factor, sigma)
    ou[:] = _weighted_blur(u, weight_c, factor, sigma / 2)
    ov[:] = _weighted_blur(v, weight_c, factor, sigma / 2)
    return out


@lru_cache(maxsize=4)
def privacy_card(width: int, height: int, text: str) -> np.ndarray:
    """A calm still image shown instead of the camera: the camera picture is never used."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:] = (38, 44, 52)
    scale = width / 900
    thickness = max(1, round(2 * scale))
    cx, cy, r = width // 2, int(height * 0.42), int(height * 0.12)
    cv2.circle(rgb, (cx, cy), r, (120, 130, 140), thickness, cv2.LINE_AA)
    cv2.line(rgb, (cx - r, cy + r), (cx + r, cy - r), (120, 130, 140), thickness, cv2.LINE_AA)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    cv2.putText(rgb, text, ((width - tw) // 2, int(height * 0.68) + th // 2),
                cv2.FONT_HERSHEY_SIMPLEX, scale, (220, 224, 230), thickness, cv2.LINE_AA)
    card = rgb_to_i420(rgb)
    card.setflags(write=False)
    return card


def blend(fg: np.ndarray, bg: np.ndarray, alpha_full: np.ndarray, alpha_half: np.ndarray) -> np.ndarray:
    """out = alpha * fg + (1 - alpha) * bg, plane by plane (alpha at each plane's resolution)."""
    out = np.empty_like(fg)
    for (f, b, o), a in zip(zip(split_i420(fg), split_i420(bg), split_i420(out)),
                            (alpha_full, alpha_half, alpha_half)):
        o[:] = cv2.blendLinear(f, b, a, 1.0 - a)
    return out


def mirror(yuv: np.ndarray) -> np.ndarray:
    out = np.empty_like(yuv)
    for src, dst in zip(split_i420(yuv), split_i420(out)):
        cv2.flip(src, 1, dst)
    return out


class Compositor:
    """Applies the chosen effect. Holds the replacement background, scaled once per frame size."""

    def __init__(self) -> None:
        self._background_rgb: np.ndarray | None = None
        self._background_yuv: dict[tuple[int, int], np.ndarray] = {}

    def set_background(self, rgb: np.ndarray | None) -> None:
        self._background_rgb = rgb
        self._background_yuv.clear()

    @property
    def has_background(self) -> bool:
        return self._background_rgb is not None

    def _background_for(self, width: int, height: int) -> np.ndarray:
        key = (width, height)
        if key not in self._background_yuv:
            assert self._background_rgb is not None
            self._background_yuv[key] = rgb_to_i420(fit_cover(self._background_rgb, width, height))
        return self._background_yuv[key]

    def compose(self, yuv: np.ndarray, effect: str, *, alpha_low: np.ndarray | None = None,
                alpha_full: np.ndarray | None = None, alpha_half: np.ndarray | None = None,
                blur_strength: int = 60, privacy_text: str = "") -> np.ndarray:
        h, w = yuv.shape[0] * 2 // 3, yuv.shape[1]
        if effect == "privacy":
            return privacy_card(w, h, privacy_text)
        if effect == "none":
            return yuv
        if effect == "replace" and self.has_background:
            bg = self._background_for(w, h)
        else:  # "blur", or "replace" before any background was uploaded
            bg = blurred_background(yuv, alpha_low, blur_strength)
        return blend(yuv, bg, alpha_full, alpha_half)
