"""The built-in demo camera: real people (public-domain photos) moving in front of busy rooms.

Lets `make run` show the whole product on a PC with no camera. Each scene starts still for a few
seconds (a steady person shows whether the mask flickers), then the person sways and leans in
(motion exercises the temporal filter). Backgrounds are full of fine detail so the blur is obvious.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from appliance.frame import Frame, frame_from_rgb
from appliance.sources.base import Pacer

ASSETS = Path(__file__).resolve().parent / "demo_assets"
PEOPLE = ("grace_hopper", "astronaut", "cameraman")
BACKGROUNDS = ("bookshelf", "bricks", "garden")
SCENE_SECONDS = 10.0
STILL_SECONDS = 3.0
# Truth masks of a clip are kept at this fraction of the frame size (enough for IoU, and light).
TRUTH_SCALE = 4


def load_person(name: str) -> tuple[np.ndarray, np.ndarray]:
    rgb = cv2.cvtColor(cv2.imread(str(ASSETS / f"{name}.jpg")), cv2.COLOR_BGR2RGB)
    alpha = cv2.imread(str(ASSETS / f"{name}_alpha.png"), cv2.IMREAD_GRAYSCALE)
    return rgb, alpha


def render_background(kind: str, width: int, height: int) -> np.ndarray:
    """A deterministic, detailed room backdrop (RGB)."""
    rng = np.random.default_rng(BACKGROUNDS.index(kind) + 7)
    img = np.empty((height, width, 3), np.uint8)
    if kind == "bookshelf":
        img[:] = (150, 120, 90)
        shelf_h = height // 4
        for top in range(0, height, shelf_h):
            x = 0
            while x < width:
                bw = int(rng.integers(width // 90, width // 35))
                bh = int(rng.integers(shelf_h * 6 // 10, shelf_h - 8))
                colour = tuple(int(c) for c in rng.integers(30, 230, 3))
                cv2.rectangle(img, (x, top + shelf_h - 8 - bh), (x + bw - 2, top + shelf_h - 8), colour, -1)
                cv2.line(img, (x + 2, top + shelf_h - bh // 2), (x + bw - 4, top + shelf_h - bh // 2),
                         (240, 230, 200), 1)
                x += bw
            cv2.rectangle(img, (0, top + shelf_h - 8), (width, top + shelf_h), (90, 60, 35), -1)
    elif kind == "bricks":
        img[:] = (200, 195, 185)
        bh, bw = max(8, height // 24), max(16, width // 16)
        for row, y in enumerate(range(0, height, bh)):
            offset = (bw // 2) * (row % 2)
            for x in range(-offset, width, bw):
                shade = int(rng.integers(-25, 25))
                cv2.rectangle(img, (x + 2, y + 2), (x + bw - 2, y + bh - 2),
                              (160 + shade, 70 + shade, 50 + shade), -1)
    else:  # garden: sky, a fence and lots of leaves
        sky = np.linspace(235, 150, height)[:, None]
        img[:] = np.dstack([sky * 0.7, sky * 0.85, np.full_like(sky, 240)]).astype(np.uint8)
        for x in range(0, width, max(12, width // 40)):
            cv2.rectangle(img, (x, height // 2), (x + max(6, width // 100), height), (230, 230, 225), -1)
        for _ in range(400):
            c = (int(rng.integers(20, 90)), int(rng.integers(100, 200)), int(rng.integers(20, 80)))
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            axes = (int(rng.integers(4, max(6, width // 60))), int(rng.integers(2, max(4, width // 120))))
            cv2.ellipse(img, centre, axes, float(rng.integers(0, 180)), 0, 360, c, -1)
    return img


class DemoSource:
    """A camera that needs no hardware. Frames are paced to the requested rate."""

    name = "demo"

    def __init__(self, paced: bool = True) -> None:
        self.paced = paced
        self._people = [load_person(p) for p in PEOPLE]
        self._backgrounds: dict[tuple[str, int, int], np.ndarray] = {}
        self._seq = 0
        self._t0 = time.monotonic()

    def start(self, width: int, height: int, fps: float, lores_size: tuple[int, int]) -> None:
        self._size, self._lores_size, self._fps = (width, height), lores_size, fps
        self._pacer = Pacer(fps)

    def _background(self, kind: str) -> np.ndarray:
        w, h = self._size
        key = (kind, w, h)
        if key not in self._backgrounds:
            self._backgrounds[key] = render_background(kind, w, h)
        return self._backgrounds[key]

    def render(self, t: float) -> np.ndarray:
        """The scene at `t` seconds: deterministic, so tests and benchmarks can replay it."""
        return self.render_with_truth(t)[0]

    def render_with_truth(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """The scene and its true person mask (float32 0..1): the self-test's ground truth."""
        w, h = self._size
        scene = int(t // SCENE_SECONDS)
        local = t - scene * SCENE_SECONDS
        person, alpha = self._people[scene % len(self._people)]
        img = self._background(BACKGROUNDS[scene % len(BACKGROUNDS)]).copy()
        truth = np.zeros((h, w), np.float32)
        moving = max(0.0, local - STILL_SECONDS)
        sway = 0.18 * math.sin(moving * 0.9)
        zoom = 1.0 + 0.12 * math.sin(moving * 0.5)
        ph = int(h * 0.82 * zoom)
        pw = int(person.shape[1] * ph / person.shape[0])
        p = cv2.resize(person, (pw, ph), interpolation=cv2.INTER_LINEAR)
        a = cv2.resize(alpha, (pw, ph), interpolation=cv2.INTER_LINEAR)
        x = int(w / 2 - pw / 2 + sway * w)
        y = h - ph + int(h * 0.05)
        # Paste the part of the person that falls inside the frame.
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + pw, w), min(y + ph, h)
        if x1 > x0 and y1 > y0:
            pp, pa = p[y0 - y:y1 - y, x0 - x:x1 - x], a[y0 - y:y1 - y, x0 - x:x1 - x]
            region = img[y0:y1, x0:x1]
            weight = pa.astype(np.float32) * (1 / 255)
            region[:] = cv2.blendLinear(pp, region, weight, 1.0 - weight)
            truth[y0:y1, x0:x1] = weight
        return img, truth

    def read(self) -> Frame:
        ts = self._pacer.wait() if self.paced else time.monotonic()
        self._seq += 1
        t = (ts - self._t0) if self.paced else self._seq / self._fps
        return frame_from_rgb(self.render(t), self._lores_size, ts, self._seq)

    def stop(self) -> None:
        pass

    def set_controls(self, controls: dict[str, int]) -> None:
        pass  # the pipeline applies image controls in software for this source


@dataclass
class Clip:
    """Pre-rendered demo frames with the true person mask of every frame.

    `truths[i]` is frame i's person mask (bool), at 1/TRUTH_SCALE of the frame size."""

    frames: list[Frame]
    truths: list[np.ndarray]
    fps: float

    def __len__(self) -> int:
        return len(self.frames)


def moving_clip(width: int, height: int, lores_size: tuple[int, int], fps: float = 30.0,
                seconds_per_scene: float = 2.0) -> Clip:
    """Each person of the demo swaying as fast as the demo moves (the first seconds after the
    still part), at `fps`, with truth for every frame: what live-mask checks replay."""
    demo = DemoSource(paced=False)
    demo.start(width, height, fps, lores_size)
    frames: list[Frame] = []
    truths: list[np.ndarray] = []
    small = (width // TRUTH_SCALE, height // TRUTH_SCALE)
    n = max(1, round(seconds_per_scene * fps))
    for scene in range(len(PEOPLE)):
        for i in range(n):
            t = scene * SCENE_SECONDS + STILL_SECONDS + i / fps
            rgb, truth = demo.render_with_truth(t)
            frames.append(frame_from_rgb(rgb, lores_size, 0.0, len(frames)))
            truths.append(cv2.resize(truth, small, interpolation=cv2.INTER_AREA) > 0.5)
    return Clip(frames, truths, fps)


class ReplaySource:
    """Replays frames captured beforehand, looping, paced to at most `fps`: measures the pipeline,
    not the camera. Each read is stamped anew; `sequence` counts reads, so frame
    `sequence % len(frames)` is the one delivered. (A source that never blocks would starve the
    other threads of the GIL; a real camera blocks until its next frame.)"""

    name = "replay"

    def __init__(self, frames: list[Frame], fps: float = 240.0):
        self._frames = frames
        self._fps = fps
        self._seq = -1

    def start(self, *args) -> None:
        self._pacer = Pacer(self._fps)

    def read(self) -> Frame:
        ts = self._pacer.wait()
        self._seq += 1
        frame = self._frames[self._seq % len(self._frames)]
        return dataclasses.replace(frame, timestamp=ts, sequence=self._seq)

    def stop(self) -> None:
        pass

    def set_controls(self, controls: dict[str, int]) -> None:
        pass
