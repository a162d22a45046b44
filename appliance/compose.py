"""The effects: what the host sees behind the person.

All work is done on I420 planes. The blur is computed at low resolution and blended at full
resolution; it is weighted by the background mask (normalised convolution), so the person's own
colours never smear into the blurred background: no halo around the head and shoulders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from appliance.frame import fit_cover, rgb_to_i420, split_i420
from appliance.text import check, draw_centered

# The blur radius aimed for at low resolution; the downscale factor makes up the rest.
_LOW_RES_SIGMA = 4.0
# Regularises the weighted blur where almost no background is visible nearby (kept small: it
# mixes in the unweighted blur, person colours and all).
_WEIGHT_EPS = 0.002
_NEIGHBOURS = np.ones((3, 3), np.uint8)


def blur_sigma(strength: int, width: int) -> float:
    """Gaussian sigma in full-resolution pixels: strength 100 is a 1/20 of the frame width."""
    return 1.0 + (strength / 100.0) * width / 20.0


def downscale_factor(width: int, height: int, wanted: float) -> int:
    """The integer factor (at least 2) nearest to `wanted` that divides both chroma plane sides:
    OpenCV's area resize is several times faster on exact integer ratios."""
    g = math.gcd(width // 2, height // 2)
    divisors = [d for d in range(2, g + 1) if g % d == 0] or [1]
    return min(divisors, key=lambda d: abs(d - wanted))


def background_weight(person: np.ndarray) -> np.ndarray:
    """How much each cell of the small blur grid counts as background, from the person's share
    of it. A cell the person only touches still carries some of the person's colour, so a cell
    counts only as far as neither it nor its neighbours hold the person, and edge cells (part
    person) are trusted less again."""
    weight = 1.0 - cv2.dilate(person, _NEIGHBOURS)
    weight *= weight
    return weight


def _weighted_blur(plane: np.ndarray, factor: int, weight: np.ndarray, sigma: float,
                   size: tuple[int, int]) -> np.ndarray:
    """Blur `plane` at 1/factor resolution counting only background pixels (a normalised
    convolution), then scale it to `size`."""
    h, w = plane.shape
    small = cv2.resize(plane, (w // factor, h // factor), interpolation=cv2.INTER_AREA).astype(np.float32)
    num = cv2.GaussianBlur(small * weight, (0, 0), sigma)
    den = cv2.GaussianBlur(weight, (0, 0), sigma)
    plain = cv2.GaussianBlur(small, (0, 0), sigma)
    filled = ((num + _WEIGHT_EPS * plain) / (den + _WEIGHT_EPS)).astype(np.uint8)
    return cv2.resize(filled, size, interpolation=cv2.INTER_LINEAR)


def blurred_background(yuv: np.ndarray, alpha_low: np.ndarray, strength: int,
                       luma_half: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The background alone, blurred, with the person's area filled in from the surrounding
    background: its Y, U and V planes, all at half the frame's size (the blur is smooth, so the
    half size carries all of it). `luma_half` (the Y plane at half size) saves shrinking Y again."""
    y, u, v = split_i420(yuv)
    h, w = y.shape
    factor = downscale_factor(w, h, blur_sigma(strength, w) / _LOW_RES_SIGMA)
    sigma = blur_sigma(strength, w) / factor
    lw, lh = w // factor, h // factor
    weight = background_weight(cv2.resize(alpha_low, (lw, lh), interpolation=cv2.INTER_AREA))
    weight_c = cv2.resize(weight, (lw // 2, lh // 2), interpolation=cv2.INTER_AREA)
    half = (w // 2, h // 2)
    if factor % 2 == 0 and luma_half is not None:  # shrink the half-size copy: cheaper
        bg_y = _weighted_blur(luma_half, factor // 2, weight, sigma, half)
    else:
        bg_y = _weighted_blur(y, factor, weight, sigma, half)
    return bg_y, _weighted_blur(u, factor, weight_c, sigma / 2, half), _weighted_blur(v, factor, weight_c, sigma / 2, half)


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
    # Settings checked the text when it was saved; check() again only drops what cannot be drawn.
    draw_centered(rgb, check(text).text, int(height * 0.68), round(height * 0.075), (220, 224, 230))
    card = rgb_to_i420(rgb)
    card.setflags(write=False)
    return card


def _blend_plane(fg: np.ndarray, bg: np.ndarray, alpha: np.ndarray, out: np.ndarray,
                 inverse: np.ndarray | None = None) -> None:
    """out = (alpha * fg + (255 - alpha) * bg) / 255 on uint8 planes: two scaled products and a
    sum, each one SIMD pass (exact where alpha is 0 or 255, within one level elsewhere)."""
    cv2.multiply(fg, alpha, out, scale=1 / 255)
    inverse = cv2.bitwise_not(alpha) if inverse is None else inverse
    cv2.add(out, cv2.multiply(bg, inverse, scale=1 / 255), out)


def blend(fg: np.ndarray, bg: np.ndarray, alpha_full: np.ndarray, alpha_half: np.ndarray) -> np.ndarray:
    """out = alpha * fg + (1 - alpha) * bg, plane by plane; alpha is uint8 0..255 at each plane's
    resolution (`alpha_full` for Y, `alpha_half` for U and V)."""
    out = np.empty_like(fg)
    for (f, b, o), a in zip(zip(split_i420(fg), split_i420(bg), split_i420(out)),
                            (alpha_full, alpha_half, alpha_half)):
        _blend_plane(f, b, a, o)
    return out


def blend_blurred(fg: np.ndarray, bg_half: tuple[np.ndarray, np.ndarray, np.ndarray],
                  alpha_full: np.ndarray, alpha_half: np.ndarray) -> np.ndarray:
    """`blend` for a smooth background given at half size (`blurred_background`). For Y, the
    background's share (1 - alpha) * bg is formed at half size and scaled up: where the
    background barely changes from one pixel to the next, that equals forming it at full size,
    and it spares the full-size frame two passes."""
    out = np.empty_like(fg)
    (fy, fu, fv), (oy, ou, ov) = split_i420(fg), split_i420(out)
    inverse = cv2.bitwise_not(alpha_half)
    share = cv2.multiply(bg_half[0], inverse, scale=1 / 255)
    cv2.resize(share, (oy.shape[1], oy.shape[0]), oy, interpolation=cv2.INTER_LINEAR)
    cv2.add(oy, cv2.multiply(fy, alpha_full, scale=1 / 255), oy)
    _blend_plane(fu, bg_half[1], alpha_half, ou, inverse)
    _blend_plane(fv, bg_half[2], alpha_half, ov, inverse)
    return out


def mirror(yuv: np.ndarray) -> np.ndarray:
    out = np.empty_like(yuv)
    for src, dst in zip(split_i420(yuv), split_i420(out)):
        cv2.flip(src, 1, dst)
    return out


@dataclass(frozen=True)
class Masks:
    """A frame's person mask at each resolution the masked effects use."""

    low: np.ndarray  # float32 0..1 at the model's resolution
    full: np.ndarray  # uint8 0..255 at the Y plane's resolution
    half: np.ndarray  # uint8 0..255 at the U and V planes' resolution
    luma_half: np.ndarray  # the frame's Y plane at half size


MASKED_EFFECTS = ("blur", "replace")


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

    def compose(self, yuv: np.ndarray, effect: str, masks: Masks | None = None, *,
                blur_strength: int = 60, privacy_text: str = "") -> np.ndarray:
        """The effect on an I420 frame; the masked effects (MASKED_EFFECTS) need `masks`."""
        h, w = yuv.shape[0] * 2 // 3, yuv.shape[1]
        if effect == "privacy":
            return privacy_card(w, h, privacy_text)
        if effect == "none":
            return yuv
        if masks is None:
            raise ValueError(f"effect {effect!r} needs the frame's person mask, and none was given")
        if effect == "replace" and self.has_background:
            return blend(yuv, self._background_for(w, h), masks.full, masks.half)
        # "blur", or "replace" before any background was uploaded
        return blend_blurred(yuv, blurred_background(yuv, masks.low, blur_strength, masks.luma_half),
                             masks.full, masks.half)
