"""The settings page's preview pictures: one view of a processed frame as a small JPEG.

Views: the camera's picture ("original"), the person mask ("mask"), what the host gets ("output"),
or all three side by side in one picture ("all": one stream, the three from the same frame).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import cv2
import numpy as np

from appliance.control import check_preview_view
from appliance.encode import MjpegEncoder
from appliance.frame import rgb_to_i420, split_i420
from appliance.sources.base import SourceError
from appliance.text import draw_centered

if TYPE_CHECKING:
    from appliance.supervisor import Supervisor

WIDTH = 640        # a single view
TILE_WIDTH = 480   # each of the three in "all"
QUALITY = 80
WAIT = 2.0  # how long a preview request waits for a newer frame
START_WAIT = 10.0  # and, before that, for the pipeline to start (first model load, slow cameras)
NO_MASK_REASONS = {"none": "No mask: the effect is Off", "privacy": "No mask: the privacy card is on"}


def render(latest, view: str, no_mask_reason: str = "") -> bytes:
    """A JPEG of `view` of `latest` (the pipeline's Processed: frame, yuv, alpha_low).

    Without a mask (effects that do not look for the person) the mask view says so in words
    instead of showing a white picture that would look like a mask of everything.
    """
    if view == "all":
        tiles = [_view_i420(latest, v, TILE_WIDTH, no_mask_reason) for v in ("original", "mask", "output")]
        return MjpegEncoder(QUALITY).encode(_side_by_side(tiles))
    return MjpegEncoder(QUALITY).encode(_view_i420(latest, view, WIDTH, no_mask_reason))


def _size(latest, width: int) -> tuple[int, int]:
    w = min(width, latest.frame.width)
    return w // 2 * 2, round(w * latest.frame.height / latest.frame.width) // 2 * 2


def _view_i420(latest, view: str, width: int, no_mask_reason: str) -> np.ndarray:
    w, h = _size(latest, width)
    if view == "mask":
        if latest.alpha_low is None:
            return _notice_i420(w, h, no_mask_reason or "No mask for this effect")
        gray = cv2.resize((latest.alpha_low * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
        out = np.full((h * 3 // 2, w), 128, np.uint8)
        out[:h] = gray
        return out
    return _shrink_i420(latest.frame.yuv if view == "original" else latest.yuv, w, h)


def _notice_i420(w: int, h: int, text: str) -> np.ndarray:
    rgb = np.full((h, w, 3), (52, 58, 66), np.uint8)
    draw_centered(rgb, text, h // 2, max(10, h // 14), (225, 228, 232))
    return rgb_to_i420(rgb)


def _shrink_i420(yuv: np.ndarray, width: int, height: int) -> np.ndarray:
    y, u, v = split_i420(yuv)
    if y.shape == (height, width):
        return yuv
    out = np.empty((height * 3 // 2, width), np.uint8)
    oy, ou, ov = split_i420(out)
    cv2.resize(y, (width, height), oy, interpolation=cv2.INTER_AREA)
    cv2.resize(u, (width // 2, height // 2), ou, interpolation=cv2.INTER_AREA)
    cv2.resize(v, (width // 2, height // 2), ov, interpolation=cv2.INTER_AREA)
    return out


def _side_by_side(tiles: list[np.ndarray]) -> np.ndarray:
    planes = [split_i420(t) for t in tiles]
    ys = np.hstack([p[0] for p in planes])
    us = np.hstack([p[1] for p in planes])
    vs = np.hstack([p[2] for p in planes])
    # I420 keeps each plane contiguous: the chroma rows of the wide picture are not image rows.
    return np.concatenate([ys.ravel(), us.ravel(), vs.ravel()]).reshape(-1, ys.shape[1])


class Previews:
    """The page's preview: asking keeps the pipeline running (see Supervisor.watching_preview);
    each frame and view is encoded once, however many pages watch it."""

    def __init__(self, supervisor: Supervisor, effect: Callable[[], str]):
        self.supervisor = supervisor
        self._effect = effect  # the effect in force, for the mask view's notice
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[object, bytes]] = {}

    def next(self, view: str, after: int, wait: float = WAIT) -> tuple[int, bytes]:
        """The first frame newer than sequence number `after` (waiting up to `wait` s), as
        (sequence, JPEG of `view`). With nothing newer in time, the newest frame again with the
        same number: a streaming client sends a frame only when the number moves on."""
        check_preview_view(view)
        with self.supervisor.watching_preview(START_WAIT) as (runner, slot):
            newest, _ = slot.latest()
            if after > newest:
                after = 0  # a number from before a restart of the pipeline
            if newest == 0:
                wait = max(wait, START_WAIT)  # a fresh start: the model's first run is the slow one
            deadline = time.monotonic() + wait
            got = slot.get(after, timeout=wait)
            if got is None and after:
                got = slot.get(0, timeout=max(0.0, deadline - time.monotonic()))
        latest = runner.latest
        if got is None or latest is None:
            raise SourceError(f"no frame from the camera ({runner.error or 'timed out'})")
        return got[0], self._jpeg(latest, view)

    def _jpeg(self, latest, view: str) -> bytes:
        with self._lock:
            cached = self._cache.get(view)
            if cached is not None and cached[0] is latest:
                return cached[1]
        jpeg = render(latest, view, NO_MASK_REASONS.get(self._effect(), ""))
        with self._lock:
            self._cache[view] = (latest, jpeg)
        return jpeg
