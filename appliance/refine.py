"""Mask refinement: from the model's raw probability to a clean, steady, full-resolution alpha.

Everything expensive happens at low resolution; the full-size mask is produced once, by a guided
filter that takes its edges from the camera image itself, so hair and shoulders keep their outline
instead of the model's 256-pixel blocks.
"""

from __future__ import annotations

import cv2
import numpy as np

# Working width of the guided filter: half of 720p. Edges are taken at this resolution, the
# result is bilinearly doubled for the luma plane and used directly for the chroma planes.
GUIDE_WIDTH = 640


class TemporalFilter:
    """Steadies the probability over time without lagging behind real motion.

    Each pixel moves towards the new value by a gain that grows with the size of the change: small
    frame-to-frame jitter (flicker at the edges of a still person) is damped by `smoothing`, while a
    large change (the person moved) passes through almost at once.
    """

    def __init__(self) -> None:
        self._state: np.ndarray | None = None

    def reset(self) -> None:
        self._state = None

    def __call__(self, prob: np.ndarray, smoothing: float) -> np.ndarray:
        if self._state is None or self._state.shape != prob.shape or smoothing <= 0:
            self._state = prob.astype(np.float32, copy=True)
            return self._state
        diff = prob - self._state
        gain = np.clip((1.0 - smoothing) + 2.0 * np.abs(diff), 0.0, 1.0)
        self._state += gain * diff
        return self._state


def soft_threshold(prob: np.ndarray, threshold: float, softness: float) -> np.ndarray:
    """Map probability to alpha: a ramp centred on `threshold`, wider for softer edges."""
    half_width = 0.02 + 0.25 * softness
    lo, hi = threshold - half_width, threshold + half_width
    alpha = np.clip((prob - lo) * (1.0 / (hi - lo)), 0.0, 1.0)
    return alpha * alpha * (3.0 - 2.0 * alpha)  # smoothstep: no visible kink at either end


def feather(alpha: np.ndarray, softness: float) -> np.ndarray:
    """Blur the alpha slightly at model resolution so the cut never shows stair steps."""
    sigma = 0.5 + 2.0 * softness
    return cv2.GaussianBlur(alpha, (0, 0), sigma)


def guided_upsample(alpha_low: np.ndarray, luma: np.ndarray, radius: int = 4,
                    eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Upsample alpha to the frame, snapping its edges to edges in the luma plane.

    A fast guided filter (He & Sun, 2015) computed at half resolution. Returns
    (alpha at full resolution, alpha at half resolution), both float32 in [0, 1]: the first
    weights the Y plane, the second the U and V planes of an I420 frame.
    """
    h, w = luma.shape
    gw, gh = w // 2, h // 2
    guide = cv2.resize(luma, (gw, gh), interpolation=cv2.INTER_AREA).astype(np.float32) * (1 / 255)
    p = cv2.resize(alpha_low, (gw, gh), interpolation=cv2.INTER_LINEAR)
    # Coefficients on a further-reduced grid: box filters there are cheap, and a and b are smooth.
    sw, sh = max(1, gw // 4), max(1, gh // 4)
    g_s = cv2.resize(guide, (sw, sh), interpolation=cv2.INTER_AREA)
    p_s = cv2.resize(p, (sw, sh), interpolation=cv2.INTER_AREA)
    k = (2 * radius + 1, 2 * radius + 1)
    mean_g = cv2.blur(g_s, k)
    mean_p = cv2.blur(p_s, k)
    cov_gp = cv2.blur(g_s * p_s, k) - mean_g * mean_p
    var_g = cv2.blur(g_s * g_s, k) - mean_g * mean_g
    a = cov_gp / (var_g + eps)
    b = mean_p - a * mean_g
    a = cv2.resize(cv2.blur(a, k), (gw, gh), interpolation=cv2.INTER_LINEAR)
    b = cv2.resize(cv2.blur(b, k), (gw, gh), interpolation=cv2.INTER_LINEAR)
    half = np.clip(a * guide + b, 0.0, 1.0)
    full = cv2.resize(half, (w, h), interpolation=cv2.INTER_LINEAR)
    return full, half


class MaskRefiner:
    """The refinement stages in order, with the temporal state they need."""

    def __init__(self) -> None:
        self.temporal = TemporalFilter()

    def reset(self) -> None:
        self.temporal.reset()

    def refine_low(self, prob: np.ndarray, threshold: float, softness: float,
                   smoothing: float) -> np.ndarray:
        """Model probability -> steady, soft-edged alpha at model resolution."""
        steady = self.temporal(prob, smoothing)
        return feather(soft_threshold(steady, threshold, softness), softness)
