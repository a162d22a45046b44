"""Auto-framing: the virtual camera keeps the person framed, smoothly, and holds still when they do."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from appliance.frame import frame_from_rgb, rgb_to_i420, split_i420
from appliance.framing import MOTIONS, Crop, Framer, crop_i420, crop_mask, find_person
from appliance.pipeline import FramePipeline
from appliance.settings import Settings
from tests.support.walking_clip import ENTER_S, SIT_S, WALK_S, walking_clip

W, H, FPS = 640, 360, 15.0  # 15 fps keeps the real-model clip quick; the bounds scale with it
SETTLE_S = 1.5
# Head-and-shoulders composition: the face anywhere in the middle 50% across and between 10% and
# 55% down is well framed (a face lower than that starts to lose the chin to the bottom edge).
TARGET_X, TARGET_Y = (0.25, 0.75), (0.10, 0.55)


def person_mask(shape, head_centre, shoulders, top) -> np.ndarray:
    """A mask shaped like a person: a head and the shoulders below it (float 0/1)."""
    import cv2
    mask = np.zeros(shape, np.float32)
    hx = int(head_centre)
    head_r = max(2, int(shoulders * 0.22))
    cv2.circle(mask, (hx, top + head_r), head_r, 1.0, -1)
    cv2.rectangle(mask, (hx - shoulders // 2, top + 2 * head_r), (hx + shoulders // 2, shape[0] - 1), 1.0, -1)
    return mask


@pytest.fixture(scope="module")
def clip_run():
    """The clip through the real model and the framer, once: (clip frames, masks, crops)."""
    pipeline = FramePipeline(Settings())
    lores = pipeline.lores_size
    framer = Framer((W, H), max_zoom=2.0, speed="normal")
    frames, masks, crops = [], [], []
    for cf in walking_clip(W, H, FPS):
        alpha = pipeline.segment(frame_from_rgb(cf.rgb, lores, cf.t))
        frames.append(cf)
        masks.append(alpha)
        crops.append(framer.update(alpha, cf.t))
    return frames, masks, crops


def replay(masks, frames, speed="normal", edit=None) -> list[Crop]:
    framer = Framer((W, H), max_zoom=2.0, speed=speed)
    out = []
    for i, (alpha, cf) in enumerate(zip(masks, frames)):
        if edit is not None:
            alpha = edit(i, cf.t, alpha.copy())
        out.append(framer.update(alpha, cf.t))
    return out


def centres(crops) -> np.ndarray:
    return np.array([[c.x + c.w / 2, c.y + c.h / 2, c.w] for c in crops])


# -- where the person is ------------------------------------------------------------------------
def test_the_person_box_ignores_small_stray_blobs_and_is_centred_on_head_and_shoulders():
    mask = person_mask((144, 256), head_centre=100, shoulders=60, top=30)
    mask[10:18, 220:228] = 1.0  # a stray blob in the background
    box = find_person(mask, Crop(0, 0, 256, 144))
    assert abs((box.x0 + box.x1) / 2 - 100.5) < 2
    assert abs(box.shoulder_width - 61) < 3
    assert box.y0 == pytest.approx(30, abs=1)
    assert abs(box.head_x - 100.5) < 2 and box.head_y < 30 + 0.5 * 61


def test_the_person_box_is_measured_in_canvas_pixels_even_from_a_squeezed_mask():
    import cv2
    mask = person_mask((360, 640), head_centre=300, shoulders=160, top=60)
    square = cv2.resize(mask, (256, 256), interpolation=cv2.INTER_AREA)  # a 16:9 view in a square model
    wide = cv2.resize(mask, (256, 144), interpolation=cv2.INTER_AREA)
    a, b = find_person(square, Crop(0, 0, 640, 360)), find_person(wide, Crop(0, 0, 640, 360))
    for f in ("x0", "x1", "y0", "head_x", "head_y", "shoulder_width"):
        assert getattr(a, f) == pytest.approx(getattr(b, f), abs=6), f


def test_an_empty_mask_has_no_person():
    assert find_person(np.zeros((144, 256), np.float32), Crop(0, 0, 640, 360)) is None


# -- following the person -----------------------------------------------------------------------
def test_after_settling_the_head_stays_in_the_target_region(clip_run):
    frames, _, crops = clip_run
    sat_at = ENTER_S + WALK_S
    judged = inside = 0
    for cf, c in zip(frames, crops):
        if cf.t < SETTLE_S or sat_at <= cf.t < sat_at + SIT_S + SETTLE_S and cf.phase != "walking":
            continue  # the first look, and the moment of sitting down, may take 1.5 s to settle
        judged += 1
        hx, hy = (cf.head[0] - c.x) / c.w, (cf.head[1] - c.y) / c.h
        inside += TARGET_X[0] <= hx <= TARGET_X[1] and TARGET_Y[0] <= hy <= TARGET_Y[1]
    assert inside / judged >= 0.95, f"head in the target region in {inside}/{judged} frames"


def test_the_camera_zooms_to_head_and_shoulders_but_no_further_than_allowed(clip_run):
    frames, _, crops = clip_run
    widths = np.array([c.w for c in crops])
    assert widths.min() >= W / 2.0 - 2
    assert widths[-1] < 0.8 * W  # it did zoom in on the seated person
    for c in crops:
        assert abs(c.w / c.h - W / H) < 0.02 and 0 <= c.x <= W - c.w and 0 <= c.y <= H - c.h


def test_the_crop_never_jerks(clip_run):
    """Bounds: speed ≤ the preset's max_speed (0.5 frame widths/s: a calm pan), acceleration ≤
    max_accel (2 widths/s²), each plus 2 px of rounding to even pixels per coordinate."""
    *_, crops = clip_run
    m = MOTIONS["normal"]
    c = centres(crops)
    step = np.abs(np.diff(c, axis=0))
    accel = np.abs(np.diff(c, n=2, axis=0))
    assert step.max() <= m.max_speed * W / FPS + 2, step.max(axis=0)
    assert accel.max() <= m.max_accel * W / FPS ** 2 + 4, accel.max(axis=0)


def test_a_still_person_gets_a_picture_that_does_not_move_a_single_pixel_for_10_s(clip_run):
    frames, _, crops = clip_run
    still = [c for cf, c in zip(frames, crops) if cf.phase == "still" and cf.t >= frames[-1].t - 10.0]
    assert len(still) >= 10 * FPS - 1
    assert len(set(still)) == 1, f"{len(set(still))} different crops while the person sat still"


def test_a_brief_false_blob_in_the_background_does_not_move_the_view(clip_run):
    frames, masks, crops = clip_run
    blob_from = frames[-1].t - 6.0

    def add_blob(seconds):
        def edit(_, t, alpha):
            if blob_from <= t < blob_from + seconds:  # someone's poster, a flicker of the model
                alpha[20:110, 10:70] = 1.0
            return alpha
        return edit

    brief = replay(masks, frames, edit=add_blob(0.2))
    assert brief == crops
    # The same blob staying for two seconds is real (a second person): the view does change.
    lasting = replay(masks, frames, edit=add_blob(2.0))
    assert lasting != crops


def test_the_camera_reaches_a_new_place_without_overshoot_or_oscillation():
    framer = Framer((W, H), max_zoom=2.0)
    left, right = (person_mask((144, 256), x, 50, 30) for x in (60, 190))
    xs = []
    for i in range(int(10 * FPS)):  # settle on the left for 4 s, then the person moves right
        crop = framer.update(left if i < 4 * FPS else right, i / FPS)
        xs.append(crop.x + crop.w / 2)
    assert len(set(xs[int(3 * FPS):int(4 * FPS)])) == 1
    after = np.array(xs[int(4 * FPS):])
    assert np.all(np.diff(after) >= 0), "the camera moved backwards on its way"
    assert after.max() == after[-1], "the camera passed its final position"
    assert after[-1] - after[0] > W / 4


def test_a_faster_preset_gets_there_sooner():
    def time_to_arrive(speed):
        framer = Framer((W, H), max_zoom=2.0, speed=speed)
        left, right = (person_mask((144, 256), x, 50, 30) for x in (60, 190))
        crops = [framer.update(left if i < FPS else right, i / FPS) for i in range(int(10 * FPS))]
        final = crops[-1]
        return next(i for i, c in enumerate(crops) if i > FPS and c == final) / FPS
    assert time_to_arrive("fast") < time_to_arrive("normal") < time_to_arrive("slow")


def test_with_nobody_in_view_the_camera_eases_back_out_to_the_full_frame():
    framer = Framer((W, H), max_zoom=2.0)
    person, nobody = person_mask((144, 256), 128, 50, 30), np.zeros((144, 256), np.float32)
    for i in range(int(4 * FPS)):
        zoomed = framer.update(person, i / FPS)
    assert zoomed.w < W
    crops = [framer.update(nobody, 4 + i / FPS) for i in range(int(8 * FPS))]
    assert crops[int(1.5 * FPS)] == zoomed  # a second without a mask is not "gone"
    assert crops[-1] == Crop(0, 0, W, H)
    widths = [c.w for c in crops]
    assert all(b >= a for a, b in zip(widths, widths[1:])), "easing out is one smooth zoom out"


# -- applying the crop --------------------------------------------------------------------------
def test_the_full_frame_crop_leaves_the_picture_and_mask_untouched():
    rng = np.random.default_rng(1)
    yuv = rng.integers(0, 256, (H * 3 // 2, W), dtype=np.uint8)
    alpha = rng.random((144, 256), dtype=np.float32)
    full = Crop(0, 0, W, H)
    assert crop_i420(yuv, full) is yuv
    assert crop_mask(alpha, full, (W, H)) is alpha


def test_the_cropped_mask_stays_registered_with_the_cropped_picture(clip_run):
    import cv2
    frames, _, crops = clip_run
    cf, crop = frames[-1], crops[-1]
    assert crop.w < W
    cropped = crop_i420(rgb_to_i420(cf.rgb), crop)
    assert cropped.shape == (H * 3 // 2, W)
    truth_low = cv2.resize(cf.truth, (256, 144), interpolation=cv2.INTER_AREA)
    mask = crop_mask(truth_low, crop, (W, H))
    truth_cropped = cv2.resize(cf.truth[crop.y:crop.y + crop.h, crop.x:crop.x + crop.w], (W, H))
    up = cv2.resize(mask, (W, H), interpolation=cv2.INTER_LINEAR)
    a, b = up > 0.5, truth_cropped > 0.5
    assert (a & b).sum() / (a | b).sum() > 0.97
    # And the picture is the same crop: its luma matches the truth-cropped photo's.
    y = split_i420(cropped)[0].astype(float)
    expected = cv2.resize(cv2.cvtColor(cf.rgb[crop.y:crop.y + crop.h, crop.x:crop.x + crop.w],
                                       cv2.COLOR_RGB2YCrCb)[..., 0], (W, H)).astype(float)
    assert np.abs(y - expected).mean() < 3


# -- in the pipeline ----------------------------------------------------------------------------
FLAT = (40, 160, 60)  # a flat green replacement background: whatever is not green is the person


def person_in_output(yuv: np.ndarray) -> np.ndarray:
    """Where the output shows the person rather than the flat background (bool, frame size)."""
    from appliance.frame import i420_to_rgb
    rgb = i420_to_rgb(yuv).astype(np.int16)
    return np.abs(rgb - np.array(FLAT, np.int16)).max(axis=2) > 40


def truth_in_view(cf, view) -> np.ndarray:
    import cv2
    x, y, w, h = view or (0, 0, W, H)
    return cv2.resize(cf.truth[y:y + h, x:x + w], (W, H), interpolation=cv2.INTER_LINEAR) > 0.5


def replay_through_pipeline(settings, frames):
    pipeline = FramePipeline(settings, background_rgb=np.full((H, W, 3), FLAT, np.uint8))
    out = []
    for i, cf in enumerate(frames):
        r = pipeline.process(frame_from_rgb(cf.rgb, pipeline.lores_size, cf.t, i), at=cf.t)
        out.append((cf, r))
    return out


def iou(a, b) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_with_framing_off_the_pipeline_is_unchanged():
    pipeline = FramePipeline(Settings(framing="off"))
    cf = next(walking_clip(W, H, FPS))
    frame = frame_from_rgb(cf.rgb, pipeline.lores_size, 0.0)
    alpha = pipeline.segment(frame)
    framed, framed_alpha = pipeline.reframe(frame, alpha)
    assert framed is frame and framed_alpha is alpha and framed.view is None


def test_the_effect_follows_the_cropped_picture_exactly(clip_run):
    """Replace the background with flat green, framing on and off, over the walk and the sit:
    the person the output shows matches the true person in the shown part of the picture as
    well with framing as without."""
    frames = [cf for cf in clip_run[0] if 4.0 <= cf.t < 10.0]
    on = replay_through_pipeline(Settings(effect="replace", framing="auto"), frames)
    off = replay_through_pipeline(Settings(effect="replace"), frames)
    judged = [i for i, (cf, _) in enumerate(on) if cf.t >= 7.5]  # settled after sitting down
    assert any(on[i][1].frame.view[2] < W * 0.8 for i in judged), "the camera zoomed in"
    ious_on = [iou(person_in_output(on[i][1].yuv), truth_in_view(on[i][0], on[i][1].frame.view)) for i in judged]
    ious_off = [iou(person_in_output(off[i][1].yuv), truth_in_view(off[i][0], None)) for i in judged]
    assert np.percentile(ious_on, 10) >= np.percentile(ious_off, 10) - 0.03, (np.percentile(ious_on, 10), np.percentile(ious_off, 10))
    assert np.mean(ious_on) > 0.85


class SensorCroppingCamera:
    """A camera that crops on its sensor, as a Pi's ISP does with ScalerCrop (libcamera's
    virtual camera cannot, see tests/appliance/sources/test_picamera2_virtual.py): it shows the
    walking clip from a 1280x720 sensor, applies a requested crop two frames later, and says in
    each frame which crop it applied."""

    name = "sensor-cropping"
    LATENCY = 2  # frames between a request and the first frame showing it

    def __init__(self, clip, lores_size):
        self.clip, self.lores_size = clip, lores_size
        self.crop_canvas = (1280, 720)
        self.requests: list[Crop] = []
        self._pending: list[Crop] = []
        self._applied = Crop(0, 0, 1280, 720)

    def set_crop(self, crop: Crop) -> None:
        self.requests.append(crop)
        self._pending.append(crop)

    def frame(self, i: int):
        import cv2
        if len(self._pending) > self.LATENCY:
            self._applied = self._pending[-self.LATENCY - 1]
            self._pending = self._pending[-self.LATENCY:]
        c, cf = self._applied, self.clip[i]
        rgb = cv2.resize(cf.rgb[c.y:c.y + c.h, c.x:c.x + c.w], (W, H), interpolation=cv2.INTER_AREA)
        frame = frame_from_rgb(rgb, self.lores_size, cf.t, i)
        return replace(frame, view=(c.x, c.y, c.w, c.h))


def test_a_camera_that_crops_on_its_sensor_gets_the_crop_and_the_pipeline_copies_nothing():
    clip = [cf for cf in walking_clip(1280, 720, FPS, noise=0) if 4.0 <= cf.t < 10.0]
    pipeline = FramePipeline(Settings(effect="replace", framing="auto"),
                             background_rgb=np.full((H, W, 3), FLAT, np.uint8))
    camera = SensorCroppingCamera(clip, pipeline.lores_size)
    pipeline.sensor_crop = camera
    ious = []
    for i, cf in enumerate(clip):
        frame = camera.frame(i)
        r = pipeline.process(frame, at=cf.t)
        assert r.frame is frame, "no software crop on top of the sensor's"
        if cf.t >= 7.5:
            x, y, w, h = frame.view
            import cv2
            truth = cv2.resize(cf.truth[y:y + h, x:x + w], (W, H)) > 0.5
            ious.append(iou(person_in_output(r.yuv), truth))
    assert all(0 <= c.x and 0 <= c.y and c.x + c.w <= 1280 and c.y + c.h <= 720 for c in camera.requests)
    assert camera._applied.w < 1280 * 0.8, "the sensor crop zoomed in on the seated person"
    assert np.percentile(ious, 10) > 0.9, np.percentile(ious, 10)
    # Framing off again: the sensor goes back to the whole picture.
    pipeline.configure(Settings(effect="replace"))
    pipeline.process(camera.frame(len(clip) - 1))
    assert camera.requests[-1] == Crop(0, 0, 1280, 720)


# -- the host's Zoom and Pan/Tilt (framing off) --------------------------------------------------
def test_zoom_and_pan_tilt_pick_the_crop_a_host_asks_for():
    from appliance.framing import manual_crop
    canvas = (1280, 720)
    assert manual_crop(canvas, 100, 36000, -36000, 36000) == Crop(0, 0, 1280, 720)  # no zoom: no travel
    assert manual_crop(canvas, 200, 0, 0, 36000) == Crop(320, 180, 640, 360)
    assert manual_crop(canvas, 200, 36000, -36000, 36000) == Crop(640, 0, 640, 360)  # right, top
    assert manual_crop(canvas, 200, -18000, 18000, 36000) == Crop(160, 270, 640, 360)  # halfway
    assert manual_crop(canvas, 300, 0, 0, 36000).w == 426


def test_with_framing_off_the_zoom_controls_crop_picture_and_mask_together(clip_run):
    frames = [cf for cf in clip_run[0] if cf.phase == "still"][:10]
    # 2x zoom, half way right, all the way down: onto the seated person. The person the output
    # shows matches the true person in that part of the picture as well as without the zoom.
    zoomed = replay_through_pipeline(Settings(effect="replace", zoom=200, pan=18000, tilt=36000), frames)
    whole = replay_through_pipeline(Settings(effect="replace"), frames)
    assert all(r.frame.view == (240, 180, 320, 180) for _, r in zoomed)
    ious_zoomed = [iou(person_in_output(r.yuv), truth_in_view(cf, r.frame.view)) for cf, r in zoomed]
    ious_whole = [iou(person_in_output(r.yuv), truth_in_view(cf, None)) for cf, r in whole]
    assert np.mean(ious_zoomed) >= np.mean(ious_whole) - 0.03, (ious_zoomed, ious_whole)
