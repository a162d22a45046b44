"""Where to look in the demo portrait: the face, and pure background."""

from __future__ import annotations

import numpy as np


def face_box(truth: np.ndarray) -> tuple[slice, slice]:
    """A patch in the middle of the face: the top of the person's silhouette, inset."""
    ys, xs = np.nonzero(truth > 0.99)
    top, height = ys.min(), ys.max() - ys.min()
    row = truth[top + height // 5] > 0.99
    cols = np.nonzero(row)[0]
    cx, half = (cols.min() + cols.max()) // 2, (cols.max() - cols.min()) // 4
    y0 = top + height // 8
    return slice(y0, y0 + height // 6), slice(cx - half, cx + half)


def background_box(truth: np.ndarray) -> tuple[slice, slice]:
    """A patch of pure background: the upper left quarter, which the person never reaches."""
    h, w = truth.shape
    box = (slice(0, h // 3), slice(0, w // 5))
    assert truth[box].max() == 0.0
    return box
