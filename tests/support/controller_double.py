"""A stand-in for appliance.daemon.Controller: the same contract, on the real SettingsStore.

It draws a synthetic scene (a textured background and a 'person' ellipse) instead of running the
camera and model, so the web layer's tests see previews that really change with the settings.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from appliance import __version__
from appliance.settings import Settings, SettingsError, SettingsStore

PREVIEW_SIZE = (320, 180)
UPLOAD_NAME = "background-0123456789ab.jpg"  # shaped like the daemon's names (appliance/backgrounds.py)


def _scene(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A checkerboard background with a person-shaped ellipse in front; and its mask."""
    yy, xx = np.mgrid[0:height, 0:width]
    checker = (((xx // 8) + (yy // 8)) % 2 * 160 + 40).astype(np.uint8)
    image = np.dstack([checker, checker // 2 + 60, 255 - checker])
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (width // 2, height), (width // 6, height * 3 // 4), 0, 0, 360, 255, -1)
    image[mask > 0] = (200, 150, 120)
    return image, mask


class ControllerDouble:
    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.settings = SettingsStore(self.state_dir)
        self.started = time.monotonic()
        self.preview_requests = 0

    def update_settings(self, changes: dict) -> Settings:
        return self.settings.update(changes)

    def status(self) -> dict:
        s = self.settings.current
        return {"state": "preview" if self.preview_requests else "idle", "fps": 30.0,
                "inference_ms": 4.2, "frame_ms": 9.5, "source": "double", "stream_format": None,
                "host_connected": False, "uptime_s": time.monotonic() - self.started,
                "version": __version__, "cpu_load": [0.5, 0.4, 0.3], "temperature_c": None,
                "throttled": None, "model": s.model, "precision": s.precision,
                "controls": {k: getattr(s, k) for k in ("brightness", "contrast", "saturation", "sharpness")}}

    def preview(self, view: str) -> bytes:
        self.preview_requests += 1
        image, mask = _scene(*PREVIEW_SIZE)
        if view == "all":
            view = "output"
        if view == "mask":
            out = cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR)
        elif view == "original":
            out = image
        else:
            k = 2 * (self.settings.current.blur_strength // 4) + 1
            blurred = cv2.GaussianBlur(image, (k, k), 0)
            out = np.where(mask[..., None] > 0, image, blurred)
        ok, jpeg = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        return jpeg.tobytes()

    def preview_next(self, view: str, after: int) -> tuple[int, bytes]:
        return after + 1, self.preview(view)

    def set_background(self, data: bytes) -> Settings:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        if image is None:
            raise SettingsError({"background": "not an image this device can decode "
                                               "(JPEG, PNG, WebP, BMP)"})
        image = cv2.resize(image, (1280, 720), interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", image)
        (self.state_dir / UPLOAD_NAME).write_bytes(jpeg.tobytes())
        return self.settings.update({"background": UPLOAD_NAME})
