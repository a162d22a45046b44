"""Re-create the built-in replacement backgrounds (appliance/background_images/*.jpg).

All of them are drawn here, so they carry the project's own licence: soft gradients, a bokeh
"window" and two rooms of the demo camera seen out of focus. The outputs are committed
(1280x720 JPEGs, a few tens of KB each); run this again only to change them:
    .venv/bin/python tools/make_backgrounds.py
"""

from __future__ import annotations

import cv2
import numpy as np

from appliance.backgrounds import BUILTIN, BUILTIN_DIR
from appliance.sources.demo import render_background

W, H = 1280, 720


def gradient(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> np.ndarray:
    t = np.linspace(0.0, 1.0, H, dtype=np.float32)[:, None, None]
    column = np.array(top, np.float32) * (1 - t) + np.array(bottom, np.float32) * t
    return np.repeat(column, W, axis=1)


def vignette(rgb: np.ndarray, strength: float) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    r = np.hypot((xx - W / 2) / (W / 2), (yy - H * 0.45) / (H / 2))
    return rgb * (1.0 - strength * np.clip(r, 0, 1.4)[..., None] ** 2)


def bokeh(rgb: np.ndarray, seed: int, colours: list[tuple[int, int, int]]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    light = np.zeros_like(rgb)
    for _ in range(70):
        centre = (int(rng.integers(0, W)), int(rng.integers(0, H * 2 // 3)))
        radius = int(rng.integers(18, 70))
        colour = np.array(colours[int(rng.integers(0, len(colours)))], np.float32) * rng.uniform(0.15, 0.45)
        disc = np.zeros_like(rgb)
        cv2.circle(disc, centre, radius, tuple(float(c) for c in colour), -1, cv2.LINE_AA)
        light += disc
    return rgb + cv2.GaussianBlur(light, (0, 0), 6)


def out_of_focus(kind: str, sigma: float, tint: tuple[float, float, float]) -> np.ndarray:
    room = render_background(kind, W, H).astype(np.float32)
    return cv2.GaussianBlur(room, (0, 0), sigma) * np.array(tint, np.float32)


def make() -> dict[str, np.ndarray]:
    return {
        "studio": vignette(gradient((150, 154, 160), (112, 116, 122)), 0.35),
        "dusk": vignette(gradient((58, 52, 110), (236, 140, 90)), 0.25),
        "ocean": bokeh(vignette(gradient((18, 92, 120), (8, 34, 60)), 0.3), 3,
                       [(120, 220, 255), (255, 255, 255), (80, 200, 200)]),
        "evening-window": bokeh(gradient((40, 34, 52), (22, 20, 28)), 11,
                                [(255, 190, 110), (255, 230, 170), (240, 120, 80)]),
        "bookshelf": out_of_focus("bookshelf", 22, (0.95, 0.9, 0.85)),
        "garden": out_of_focus("garden", 12, (0.9, 0.95, 0.9)),
    }


def main() -> None:
    BUILTIN_DIR.mkdir(parents=True, exist_ok=True)
    images = make()
    assert set(images) == set(BUILTIN), "appliance/backgrounds.py and this script list the same names"
    for name, rgb in images.items():
        bgr = cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
        path = BUILTIN_DIR / f"{name}.jpg"
        cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 88, cv2.IMWRITE_JPEG_OPTIMIZE, 1])
        print(f"{path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
