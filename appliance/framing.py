"""Auto-framing: a virtual camera that keeps the person framed, head and shoulders.

The person's mask (already computed for the blur) says where they are. From it comes a target
crop: head and shoulders, the frame's aspect ratio, no more zoom than allowed. A virtual camera
follows that target the way a good camera operator would:

- a dead zone in space and time: a still or fidgeting person, or a brief false blob in the
  background, never moves the picture. The camera holds an exact integer crop, so "still" means
  not one pixel of movement;
- when the person really moves, it follows with velocity proportional to the remaining distance
  (an overdamped approach, so it never overshoots or oscillates), with bounded speed and
  acceleration, so no frame-to-frame jerk;
- when nobody has been seen for a while, it eases back out to the full frame.

Coordinates are pixels of the "canvas": the full frame in software, the sensor's full area on a
camera that crops in hardware (libcamera's ScalerCrop). A mask covers a "view" of the canvas: the
whole canvas in software, the crop in effect for that frame in hardware.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import cv2
import numpy as np

from appliance.frame import split_i420

FramingSpeed = Literal["slow", "normal", "fast"]


@dataclass(frozen=True)
class Crop:
    """A rectangle of the canvas, in whole pixels."""

    x: int
    y: int
    w: int
    h: int

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2


class SensorCrop(Protocol):
    """A camera that crops on the sensor (libcamera's ScalerCrop on a Pi): framing costs no CPU
    and loses no sharpness there. `crop_canvas` is the size of the area it can crop from, in
    its own pixels, with the output's aspect ratio (None: this camera cannot crop); frames it
    delivers carry the crop that was in effect for them as `Frame.view`."""

    crop_canvas: tuple[int, int] | None

    def set_crop(self, crop: Crop) -> None:
        """Show `crop` of the canvas from the next frames on (the stream keeps running)."""


@dataclass(frozen=True)
class PersonBox:
    """Where the person is, in canvas pixels: the head-and-shoulders box and the head's centre."""

    x0: float
    y0: float
    x1: float
    y1: float
    head_x: float
    head_y: float
    shoulder_width: float


@dataclass(frozen=True)
class Motion:
    """How the virtual camera moves, per second, in units of the canvas width (speed preset)."""

    gain: float  # 1/s: velocity = gain * remaining distance (time constant 1/gain)
    max_speed: float  # canvas widths per second
    max_accel: float  # canvas widths per second squared; >= gain * max_speed: never overshoots
    hold_s: float  # the target must stay outside the dead zone this long before the camera moves
    settle_s: float  # a moving target that stays put this long becomes the new held crop


MOTIONS: dict[str, Motion] = {
    "slow": Motion(gain=1.5, max_speed=0.25, max_accel=0.4, hold_s=0.8, settle_s=0.8),
    "normal": Motion(gain=4.0, max_speed=0.5, max_accel=2.0, hold_s=0.25, settle_s=0.5),
    "fast": Motion(gain=5.0, max_speed=1.0, max_accel=5.0, hold_s=0.2, settle_s=0.3),
}

# Composition: the shoulders fill about half the crop's width, the top of the head sits a little
# below the crop's top edge.
SHOULDERS_FRACTION = 0.5
HEADROOM = 0.08
# The dead zone: the target may drift this far (fraction of the crop) without the camera moving.
DEAD_ZONE_CENTRE = 0.08
DEAD_ZONE_SIZE = 0.12
# Mask blobs smaller than this fraction of the biggest one are ignored (stray detections).
BLOB_KEEP = 0.3
MIN_PERSON_AREA = 0.004  # of the view; below this nobody is there
MAX_FIND_PIXELS = 20_000  # find_person works on masks at most this big
LOST_AFTER_S = 2.0  # no person for this long: ease back out to the full frame
SNAP_PX = 0.5  # closer than this to a held target, the camera stops exactly on it


def find_person(alpha: np.ndarray, view: Crop, threshold: float = 0.5) -> PersonBox | None:
    """The head-and-shoulders box of the person (or people) in a mask covering `view`.

    Small blobs are ignored. The box's width comes from the shoulders (the widest rows of the
    upper body), its top from the top of the head, so arms, hands and a desk do not pull it around.
    """
    # Framing needs no finer grid than ~128 mask pixels across (10 px of a 720p frame, far inside
    # the dead zone); halving a larger mask first makes this several times cheaper.
    while alpha.size > MAX_FIND_PIXELS:
        alpha = cv2.resize(alpha, (alpha.shape[1] // 2, alpha.shape[0] // 2), interpolation=cv2.INTER_AREA)
    mask = (alpha >= threshold).view(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
        mask, 8, cv2.CV_16U, cv2.CCL_SPAGHETTI)
    if count <= 1:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    biggest = int(areas.max())
    if biggest < MIN_PERSON_AREA * mask.size:
        return None
    keep = np.zeros(count, bool)
    keep[1:] = areas >= BLOB_KEEP * biggest
    person = keep[labels]
    # Mask pixels need not be square (a 16:9 view squeezed into a square model input): measure
    # lengths in canvas pixels, and turn horizontal lengths into mask rows with `rows_per_px`.
    sx, sy = view.w / alpha.shape[1], view.h / alpha.shape[0]
    rows_per_px = 1 / sy
    widths = np.count_nonzero(person, axis=1) * sx
    rows = np.flatnonzero(widths)
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    kept = stats[1:][keep[1:]]
    box_w = (int((kept[:, cv2.CC_STAT_LEFT] + kept[:, cv2.CC_STAT_WIDTH]).max())
             - int(kept[:, cv2.CC_STAT_LEFT].min())) * sx
    # The upper body: from the top of the head down by about the body's own width (the shoulder
    # line lies within it); its widest rows are the shoulders.
    upper = np.sort(widths[top:min(bottom, top + max(2, int(round(box_w * rows_per_px))))])
    shoulders = float(upper[int(0.9 * (len(upper) - 1))])
    band_rows = max(2, int(round(1.2 * shoulders * rows_per_px)))
    centre_x = _mean_column(person[top:top + band_rows]) * sx
    head_rows = max(1, int(round(0.5 * shoulders * rows_per_px)))
    head = person[top:top + head_rows]
    head_y = top + float(np.dot(np.arange(head.shape[0]) + 0.5, np.count_nonzero(head, axis=1))) / np.count_nonzero(head)
    return PersonBox(
        x0=view.x + centre_x - shoulders / 2, x1=view.x + centre_x + shoulders / 2,
        y0=view.y + top * sy, y1=view.y + min(bottom, top + band_rows) * sy,
        head_x=view.x + _mean_column(head) * sx, head_y=view.y + head_y * sy,
        shoulder_width=shoulders)


def _mean_column(mask: np.ndarray) -> float:
    """The mean x (in pixels, centres at +0.5) of a boolean mask's set pixels."""
    counts = np.count_nonzero(mask, axis=0)
    return float(np.dot(np.arange(mask.shape[1]) + 0.5, counts)) / float(counts.sum())


Camera = tuple[float, float, float]  # a virtual camera position: centre x, centre y, crop width


def target_crop(person: PersonBox, canvas: tuple[int, int], max_zoom: float) -> Camera:
    """The ideal crop for a person as (centre x, centre y, width), inside the canvas."""
    cw, ch = canvas
    width = min(cw, max(cw / max_zoom, person.shoulder_width / SHOULDERS_FRACTION,
                        (person.x1 - person.x0) * 1.1))
    height = width * ch / cw
    cx = (person.x0 + person.x1) / 2
    cy = person.y0 - HEADROOM * height + height / 2
    return _inside(cx, cy, width, canvas)


def _inside(cx: float, cy: float, width: float, canvas: tuple[int, int]) -> Camera:
    cw, ch = canvas
    height = width * ch / cw
    cx = min(max(cx, width / 2), cw - width / 2)
    cy = min(max(cy, height / 2), ch - height / 2)
    return cx, cy, width


class Framer:
    """The virtual camera. Call `update` once per frame with that frame's mask; it returns the
    crop to show. Time comes in explicitly (seconds), so a recorded clip replays exactly.
    (Positions are plain tuples of floats: three numbers do not need numpy's per-call cost.)"""

    def __init__(self, canvas: tuple[int, int], max_zoom: float = 2.0, speed: FramingSpeed = "normal"):
        self.canvas = canvas
        self.max_zoom = max_zoom
        self.motion = MOTIONS[speed]
        self._pos = self._full()  # where the camera is
        self._vel: Camera = (0.0, 0.0, 0.0)
        self._held = self._full()  # the crop the camera rests on while the person stays put
        self._tracking = False  # following a moving person rather than resting on `_held`
        self._goal = self._full()  # where the camera heads while tracking
        self._outside_since: float | None = None  # when the person left the dead zone
        self._still_ref = self._full()  # while tracking: where the person has stayed put
        self._still_since = 0.0
        self._last_seen: float | None = None
        self._last_t: float | None = None

    def _full(self) -> Camera:
        return self.canvas[0] / 2, self.canvas[1] / 2, float(self.canvas[0])

    def configure(self, max_zoom: float, speed: FramingSpeed) -> None:
        self.max_zoom, self.motion = max_zoom, MOTIONS[speed]

    @property
    def full_frame(self) -> Crop:
        return Crop(0, 0, self.canvas[0], self.canvas[1])

    def update(self, alpha: np.ndarray | None, t: float, view: Crop | None = None) -> Crop:
        """Take the mask of the frame shown at time `t` (covering `view`, default the whole
        canvas) and return the crop for that frame."""
        person = find_person(alpha, view or self.full_frame) if alpha is not None else None
        if person is not None:
            self._last_seen = t
            self._decide(target_crop(person, self.canvas, self.max_zoom), t)
        elif self._last_seen is None or t - self._last_seen >= LOST_AFTER_S:
            self._decide(self._full(), t)  # nobody there: ease back out to the whole picture
        # else: nobody in this frame, but only briefly (a missed mask): keep going as before
        dt = 0.0 if self._last_t is None else min(0.2, max(0.0, t - self._last_t))
        self._last_t = t
        self._move(self._goal if self._tracking else self._held, dt)
        return self.crop

    def rest_on(self, alpha: np.ndarray, view: Crop | None = None) -> Crop:
        """Frame a still picture: go straight to where the camera would come to rest for this
        mask (the whole picture if nobody is in it)."""
        person = find_person(alpha, view or self.full_frame)
        target = self._full() if person is None else target_crop(person, self.canvas, self.max_zoom)
        self._held = self._pos = self._whole_pixels(target)
        self._vel, self._tracking, self._outside_since = (0.0, 0.0, 0.0), False, None
        return self.crop

    def _whole_pixels(self, camera: Camera) -> Camera:
        cx, cy, width = (float(round(v)) for v in camera)
        return _inside(cx, cy, width, self.canvas)

    # -- deciding where to go ------------------------------------------------------------------
    def _outside_dead_zone(self, candidate: Camera, ref: Camera) -> bool:
        aspect = self.canvas[1] / self.canvas[0]
        return (abs(candidate[0] - ref[0]) > DEAD_ZONE_CENTRE * ref[2]
                or abs(candidate[1] - ref[1]) > DEAD_ZONE_CENTRE * ref[2] * aspect
                or abs(math.log(candidate[2] / ref[2])) > DEAD_ZONE_SIZE)

    def _decide(self, candidate: Camera, t: float) -> None:
        m = self.motion
        if not self._tracking:
            if not self._outside_dead_zone(candidate, self._held):
                self._outside_since = None
                return
            if self._outside_since is None:
                self._outside_since = t
            if t - self._outside_since < m.hold_s:
                return  # a brief excursion (a false blob, a lean) does not move the camera
            self._tracking, self._still_ref, self._still_since = True, candidate, t
        self._goal = candidate
        if self._outside_dead_zone(candidate, self._still_ref):
            self._still_ref, self._still_since = candidate, t
        elif t - self._still_since >= m.settle_s:
            # The person has stopped: rest on this crop, on whole pixels, until they move again.
            self._held = self._whole_pixels(candidate)
            self._tracking, self._outside_since = False, None

    # -- moving ----------------------------------------------------------------------------
    def _move(self, goal: Camera, dt: float) -> None:
        m, cw = self.motion, self.canvas[0]
        error = [g - p for g, p in zip(goal, self._pos)]
        if not self._tracking and all(abs(e) < SNAP_PX for e in error):
            self._pos, self._vel = goal, (0.0, 0.0, 0.0)  # at rest, exactly on the held crop
            return
        if dt <= 0:
            return
        top_speed, top_change = m.max_speed * cw, m.max_accel * cw * dt
        pos, vel = [], []
        for p, v, e in zip(self._pos, self._vel, error):
            wanted = min(max(m.gain * e, -top_speed), top_speed)
            v += min(max(wanted - v, -top_change), top_change)
            step = v * dt
            # Velocity follows the remaining distance, so the approach slows down and never
            # passes the goal; this only guards the last step against rounding.
            pos.append(p + (e if abs(step) > abs(e) else step))
            vel.append(v)
        self._pos, self._vel = _inside(pos[0], pos[1], pos[2], self.canvas), (vel[0], vel[1], vel[2])

    @property
    def crop(self) -> Crop:
        return even_crop(*self._pos, self.canvas)


def manual_crop(canvas: tuple[int, int], zoom: int, pan: int, tilt: int, travel: int) -> Crop:
    """The crop a host's Zoom and Pan/Tilt controls ask for: `zoom` in hundredths (100 = 1x),
    `pan`/`tilt` from -travel (left/top edge) to +travel (right/bottom edge)."""
    cw, ch = canvas
    width = cw * 100 / max(100, zoom)
    height = width * ch / cw
    cx = cw / 2 + (cw - width) / 2 * max(-1.0, min(1.0, pan / travel))
    cy = ch / 2 + (ch - height) / 2 * max(-1.0, min(1.0, tilt / travel))
    return even_crop(cx, cy, width, canvas)


def even_crop(cx: float, cy: float, width: float, canvas: tuple[int, int]) -> Crop:
    """The crop centred at (cx, cy), `width` wide with the canvas's aspect ratio, inside the
    canvas, in whole even pixels (I420 chroma needs even offsets and sizes)."""
    cw, ch = canvas
    w = min(cw, max(2, round(width / 2) * 2))
    h = min(ch, max(2, round(w * ch / cw / 2) * 2))
    x = min(max(0, round((cx - w / 2) / 2) * 2), cw - w)
    y = min(max(0, round((cy - h / 2) / 2) * 2), ch - h)
    return Crop(x, y, w, h)


def crop_i420(yuv: np.ndarray, crop: Crop, out: np.ndarray | None = None) -> np.ndarray:
    """The crop of an I420 frame, scaled back up to the frame's own size."""
    y, u, v = split_i420(yuv)
    h, w = y.shape
    if (crop.x, crop.y, crop.w, crop.h) == (0, 0, w, h):
        return yuv
    if out is None:
        out = np.empty_like(yuv)
    oy, ou, ov = split_i420(out)
    cv2.resize(y[crop.y:crop.y + crop.h, crop.x:crop.x + crop.w], (w, h), oy, interpolation=cv2.INTER_LINEAR)
    cx, cyy, cw2, ch2 = crop.x // 2, crop.y // 2, crop.w // 2, crop.h // 2
    cv2.resize(u[cyy:cyy + ch2, cx:cx + cw2], (w // 2, h // 2), ou, interpolation=cv2.INTER_LINEAR)
    cv2.resize(v[cyy:cyy + ch2, cx:cx + cw2], (w // 2, h // 2), ov, interpolation=cv2.INTER_LINEAR)
    return out


def crop_mask(alpha: np.ndarray, crop: Crop, canvas: tuple[int, int]) -> np.ndarray:
    """The part of a mask (covering the whole canvas) under `crop`, at the mask's own size, so
    that the mask stays registered with the cropped picture."""
    ah, aw = alpha.shape
    if (crop.x, crop.y, crop.w, crop.h) == (0, 0, canvas[0], canvas[1]):
        return alpha
    sx, sy = aw / canvas[0], ah / canvas[1]
    # Output pixel (i, j) samples mask coordinates x = x0 + i * scale_x (pixel centres matched).
    scale_x, scale_y = crop.w * sx / aw, crop.h * sy / ah
    x0 = crop.x * sx + 0.5 * scale_x - 0.5
    y0 = crop.y * sy + 0.5 * scale_y - 0.5
    m = np.array([[scale_x, 0, x0], [0, scale_y, y0]], np.float32)
    return cv2.warpAffine(alpha, m, (aw, ah), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
