"""A clip for the auto-framing tests: a person walks across a room, sits down and stays (nearly) still.

Made from the package's own photos (the demo camera's cut-out person and rooms), with the truth
for every frame: the person's mask, box and head centre. The head centre comes from OpenCV's
face detector on the photo, not from the framing code's own idea of where a head is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

from appliance.sources.demo import load_person, render_background

PERSON = "grace_hopper"
ENTER_S, WALK_S, SIT_S, STILL_S = 1.0, 4.0, 1.0, 12.0
DURATION_S = ENTER_S + WALK_S + SIT_S + STILL_S


@dataclass(frozen=True)
class ClipFrame:
    t: float
    phase: str  # "standing", "walking", "sitting" or "still"
    rgb: np.ndarray
    truth: np.ndarray  # float32 0..1, the person's true mask
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 of the person
    head: tuple[float, float]  # the centre of the face


@cache
def _face_centre() -> tuple[float, float]:
    rgb, _ = load_person(PERSON)
    detector = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    faces = detector.detectMultiScale(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 1.1, 5, minSize=(40, 40))
    assert len(faces) == 1, f"expected one face in the {PERSON} photo, found {len(faces)}"
    x, y, w, h = faces[0]
    return x + w / 2, y + h / 2


def phase_at(t: float) -> str:
    if t < ENTER_S:
        return "standing"
    if t < ENTER_S + WALK_S:
        return "walking"
    if t < ENTER_S + WALK_S + SIT_S:
        return "sitting"
    return "still"


def _placement(t: float, width: int, height: int) -> tuple[float, float]:
    """Top-left of the person at time t: stands on the left, walks right (bobbing), sits down."""
    left, right = 0.05 * width, 0.55 * width
    top, seated = 0.30 * height, 0.45 * height
    walked = min(1.0, max(0.0, (t - ENTER_S) / WALK_S))
    ease = 0.5 - 0.5 * math.cos(math.pi * walked)  # starts and stops gently, as people do
    x = left + (right - left) * ease
    bob = 0.012 * height * abs(math.sin(2 * math.pi * 0.9 * (t - ENTER_S))) if phase_at(t) == "walking" else 0.0
    sat = min(1.0, max(0.0, (t - ENTER_S - WALK_S) / SIT_S))
    y = top + (seated - top) * (0.5 - 0.5 * math.cos(math.pi * sat)) - bob
    if phase_at(t) == "still":  # nobody sits perfectly still: a slow sway and breathing
        x += 0.008 * width * math.sin(2 * math.pi * 0.3 * t)
        y += 0.006 * height * math.sin(2 * math.pi * 0.25 * t)
    return x, y


def walking_clip(width: int = 1280, height: int = 720, fps: float = 30.0,
                 noise: float = 2.0, seed: int = 0) -> Iterator[ClipFrame]:
    """Every frame of the clip. `noise` is the standard deviation of sensor-like noise (levels)."""
    person, alpha = load_person(PERSON)
    ph = int(0.62 * height)
    pw = int(person.shape[1] * ph / person.shape[0])
    scale = ph / person.shape[0]
    p = cv2.resize(person, (pw, ph), interpolation=cv2.INTER_AREA)
    a = cv2.resize(alpha, (pw, ph), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    room = render_background("bookshelf", width, height)
    face_x, face_y = _face_centre()
    rng = np.random.default_rng(seed)
    for i in range(int(DURATION_S * fps)):
        t = i / fps
        fx, fy = _placement(t, width, height)
        x, y = int(round(fx)), int(round(fy))
        img = room.copy()
        truth = np.zeros((height, width), np.float32)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + pw, width), min(y + ph, height)
        region = img[y0:y1, x0:x1]
        weight = a[y0 - y:y1 - y, x0 - x:x1 - x]
        region[:] = cv2.blendLinear(p[y0 - y:y1 - y, x0 - x:x1 - x], region, weight, 1.0 - weight)
        truth[y0:y1, x0:x1] = weight
        if noise:
            img = np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
        yield ClipFrame(t, phase_at(t), img, truth, (x0, y0, x1, y1),
                        (x + face_x * scale, y + face_y * scale))
