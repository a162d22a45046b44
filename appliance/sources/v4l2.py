"""Frames from a V4L2 capture device (a USB webcam plugged into the Pi, or a PC's webcam)."""

from __future__ import annotations

import os
import time

import cv2

from appliance.frame import Frame, fit_cover, frame_from_rgb
from appliance.sources.base import SourceError


class V4L2Source:
    def __init__(self, device: str):
        self.device = device
        self.name = f"v4l2:{device}"
        self._cap: cv2.VideoCapture | None = None
        self._seq = 0

    def start(self, width: int, height: int, fps: float, lores_size: tuple[int, int]) -> None:
        if not os.path.exists(self.device):
            raise SourceError(f"V4L2 device {self.device} does not exist")
        # Most USB webcams reach 720p30 only in MJPEG; a device without it (e.g. vivid) gets
        # YUYV, which every UVC camera has; a device refusing both is reopened as it comes.
        for fourcc in ("MJPG", "YUYV", None):
            cap = self._open()
            if fourcc is None:
                break
            code = cv2.VideoWriter.fourcc(*fourcc)
            if cap.set(cv2.CAP_PROP_FOURCC, code) and int(cap.get(cv2.CAP_PROP_FOURCC)) == code:
                break
            cap.release()
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        cap.set(cv2.CAP_PROP_FPS, fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 2)  # stale frames add latency
        self._cap, self._size, self._lores_size = cap, (width, height), lores_size

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        if not cap.isOpened():
            raise SourceError(f"cannot open V4L2 device {self.device} (busy, or not a capture device)")
        return cap

    def read(self) -> Frame:
        if self._cap is None:
            raise SourceError(f"{self.device}: read() before start()")
        ok, bgr = self._cap.read()
        if not ok:
            raise SourceError(f"V4L2 device {self.device} stopped delivering frames")
        if bgr.ndim != 3 or bgr.shape[2] != 3 or min(bgr.shape[:2]) < 16:
            # OpenCV hands out the raw buffer for pixel formats it cannot convert.
            raise SourceError(f"V4L2 device {self.device} delivers a pixel format OpenCV cannot "
                              f"decode (frame shape {bgr.shape})")
        rgb = fit_cover(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), *self._size)
        self._seq += 1
        return frame_from_rgb(rgb, self._lores_size, time.monotonic(), self._seq)

    def stop(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def set_controls(self, controls: dict[str, int]) -> None:
        pass  # webcams differ too much in ranges; the pipeline adjusts in software
