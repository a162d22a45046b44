"""Frames from an image or a video file: for `blurcam process`, tests, and trying settings on
your own footage."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from appliance import picture
from appliance.frame import Frame, fit_cover, frame_from_rgb
from appliance.sources.base import Pacer, SourceError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def read_image(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8, or SourceError saying why not."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"input file {path} does not exist")
    data = np.fromfile(path, np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise SourceError(f"{path} is not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_image(data: bytes, what: str = "upload", fit: tuple[int, int] | None = None) -> np.ndarray:
    """Uploaded picture bytes (exactly JPEG, PNG, WebP or BMP) as RGB uint8, decoded in bounded
    memory (see appliance/picture.py), or SourceError saying what is wrong."""
    try:
        return picture.decode(data, fit)
    except picture.PictureError as exc:
        raise SourceError(f"{what}: {exc}") from None


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


class FileSource:
    """An image (repeated) or a video (looped), paced to the requested frame rate.

    With `loop=False` a video ends: read() raises EOFError after the last frame.
    `paced=False` returns frames as fast as they decode (offline processing).
    """

    def __init__(self, path: str | Path, loop: bool = True, paced: bool = True):
        self.path = Path(path)
        self.name = f"file:{self.path}"
        self.loop, self.paced = loop, paced
        self._image: np.ndarray | None = None
        self._video: cv2.VideoCapture | None = None
        self._seq = 0
        if not self.path.is_file():
            raise SourceError(f"input file {self.path} does not exist")
        if is_image_path(self.path):
            self._image = read_image(self.path)
            self.native_size = (self._image.shape[1], self._image.shape[0])
            self.native_fps = 30.0
        else:
            # One probe answers everything: readable at all, its size and its frame rate.
            probe = cv2.VideoCapture(str(self.path))
            ok = probe.isOpened() and probe.read()[0]
            self.native_size = (int(probe.get(cv2.CAP_PROP_FRAME_WIDTH)),
                                int(probe.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            self.native_fps = probe.get(cv2.CAP_PROP_FPS) or 30.0
            probe.release()
            if not ok:
                raise SourceError(f"{self.path} is not a readable image or video")

    def start(self, width: int, height: int, fps: float, lores_size: tuple[int, int]) -> None:
        self._size, self._lores_size = (width, height), lores_size
        self._pacer = Pacer(fps)
        if self._image is not None:
            self._still = fit_cover(self._image, width, height)
        else:
            self._video = cv2.VideoCapture(str(self.path))

    def _next_rgb(self) -> np.ndarray:
        if self._image is not None:
            return self._still
        assert self._video is not None, "start() first"
        ok, bgr = self._video.read()
        if not ok and self.loop:
            self._video.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._video.read()
        if not ok:
            raise EOFError(str(self.path))
        return fit_cover(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), *self._size)

    def read(self) -> Frame:
        import time
        rgb = self._next_rgb()
        ts = self._pacer.wait() if self.paced else time.monotonic()
        self._seq += 1
        return frame_from_rgb(rgb, self._lores_size, ts, self._seq)

    def stop(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None

    def set_controls(self, controls: dict[str, int]) -> None:
        pass  # a file has no camera controls; the pipeline adjusts in software
