"""The video formats the webcam offers: one table for the configfs descriptors and the negotiation.

configfs.py builds the gadget's streaming descriptors from `offered_formats()`, and the UVC
userspace reads the same table back from configfs (`configfs.read_formats`) so that what it
negotiates is always exactly what the host was told.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from appliance.stream import StreamFormat

FRAME_RATES = (30, 25, 15)
MJPEG_SIZES = ((640, 360), (640, 480), (1280, 720), (1920, 1080))
# USB 2.0 high-speed isochronous carries about 24 MB/s: 640x480 YUYV at 30 fps is 18.4 MB/s,
# 1280x720 would be 55 MB/s, so uncompressed stops at 480p.
YUYV_SIZES = ((640, 360), (640, 480))

Encoding = Literal["mjpeg", "yuyv"]


def interval_from_fps(fps: float) -> int:
    """Frame interval in the 100 ns units UVC uses (30 fps -> 333333)."""
    return int(10_000_000 // fps)


def fps_from_interval(interval: int) -> float:
    return round(10_000_000 / interval, 3)


def max_frame_bytes(width: int, height: int) -> int:
    """Buffer bound for one frame: exact for YUYV, a safe ceiling for MJPEG at any quality."""
    return width * height * 2


@dataclass(frozen=True)
class FrameSize:
    index: int  # bFrameIndex, 1-based
    width: int
    height: int
    intervals: tuple[int, ...]  # offered frame intervals, 100 ns units, shortest (fastest) first
    default_interval: int
    max_frame_size: int

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    def nearest_interval(self, interval: int) -> int:
        """The offered interval closest to `interval`; 0 means 'the device's choice'."""
        if interval <= 0:
            return self.default_interval
        return min(self.intervals, key=lambda offered: (abs(offered - interval), offered))


@dataclass(frozen=True)
class VideoFormat:
    index: int  # bFormatIndex, 1-based
    encoding: Encoding
    frames: tuple[FrameSize, ...]

    def frame(self, index: int) -> FrameSize | None:
        return next((f for f in self.frames if f.index == index), None)


def find_format(formats: tuple[VideoFormat, ...], index: int) -> VideoFormat | None:
    return next((f for f in formats if f.index == index), None)


def stream_format(fmt: VideoFormat, frame: FrameSize, interval: int) -> StreamFormat:
    return StreamFormat(fmt.encoding, frame.width, frame.height, fps_from_interval(interval))


def _frames(sizes: list[tuple[int, int]]) -> tuple[FrameSize, ...]:
    intervals = tuple(sorted(interval_from_fps(fps) for fps in FRAME_RATES))
    return tuple(
        FrameSize(i, w, h, intervals, interval_from_fps(30), max_frame_bytes(w, h))
        for i, (w, h) in enumerate(sizes, start=1))


def offered_formats(resolutions: list[str] | tuple[str, ...]) -> tuple[VideoFormat, ...]:
    """MJPEG at the sizes in the `resolutions` setting, then YUYV at the sizes USB 2.0 can carry."""
    wanted = set(resolutions)
    mjpeg = [(w, h) for w, h in MJPEG_SIZES if f"{w}x{h}" in wanted]
    if not mjpeg:
        raise ValueError(f"no offered MJPEG size in resolutions {list(resolutions)!r}")
    return (VideoFormat(1, "mjpeg", _frames(mjpeg)),
            VideoFormat(2, "yuyv", _frames(list(YUYV_SIZES))))
