"""The mask holds still on a still person, and still follows a person who moves."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from appliance import frame as frame_module
from appliance.frame import frame_from_rgb, split_i420
from appliance.pipeline import FramePipeline
from appliance.refine import guided_upsample, half_size
from appliance.settings import Settings
from appliance.sources.demo import DemoSource


def masks_for(frames_rgb, settings: Settings) -> list[np.ndarray]:
    pipeline = FramePipeline(settings)
    return [pipeline.segment(frame_from_rgb(rgb, pipeline.lores_size, i / 30)) for i, rgb in enumerate(frames_rgb)]


def test_on_a_still_scene_the_mask_does_not_change_from_frame_to_frame(portrait):
    rgb, _ = portrait
    masks = masks_for([rgb] * 15, Settings())
    changes = [float(np.abs(b - a).max()) for a, b in zip(masks, masks[1:])]
    assert max(changes) < 1e-6


def test_temporal_smoothing_damps_flicker_from_sensor_noise(portrait):
    rgb, _ = portrait
    rng = np.random.default_rng(3)
    noisy = [np.clip(rgb.astype(np.int16) + rng.normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)
             for _ in range(12)]

    def flicker(smoothing: float) -> float:
        masks = masks_for(noisy, Settings(temporal_smoothing=smoothing))[4:]  # after settling
        return float(np.mean([np.abs(b - a).mean() for a, b in zip(masks, masks[1:])]))

    raw, smoothed = flicker(0.0), flicker(0.8)
    assert raw > 0  # the noise does make the raw mask flicker...
    assert smoothed < 0.5 * raw  # ...and smoothing takes at least half of it away


def test_the_mask_follows_a_person_who_moves_within_a_few_frames(portrait):
    rgb, truth = portrait
    shifted = np.roll(rgb, 300, axis=1)
    masks = masks_for([rgb] * 5 + [shifted] * 4, Settings(temporal_smoothing=0.9))
    target = masks_for([shifted], Settings(temporal_smoothing=0.0))[0]
    # Three frames after the jump the heavily smoothed mask is already where the person is.
    assert np.abs(masks[7] - target).mean() < 0.02


def sensor_noise(rgb: np.ndarray, rng) -> np.ndarray:
    """A camera's noise: shot noise growing with brightness plus read noise (about 1 grey level
    in the dark, 4 in the highlights), new every frame."""
    f = rgb.astype(np.float32)
    noise = rng.standard_normal(f.shape, dtype=np.float32) * np.sqrt(0.06 * f + 1.0)
    return np.clip(f + noise, 0, 255).astype(np.uint8)


def worst_edge_flicker(rgb: np.ndarray, settings: Settings) -> int:
    """The largest frame-to-frame change of the full-resolution alpha (0..255) on a still
    person under sensor noise, after the first frames."""
    rng = np.random.default_rng(5)
    pipeline = FramePipeline(settings)
    lores_size = pipeline.lores_size_for(rgb.shape[1], rgb.shape[0])
    alphas = []
    for i in range(9):
        frame = frame_from_rgb(sensor_noise(rgb, rng), lores_size, i / 30)
        luma_half = half_size(split_i420(frame.yuv)[0])
        full, _ = guided_upsample(pipeline.segment(frame), luma_half, (frame.width, frame.height))
        alphas.append(full.astype(np.int16))
    return max(int(np.abs(b - a).max()) for a, b in zip(alphas[3:], alphas[4:]))


@pytest.fixture(scope="module")
def demo_people():
    demo = DemoSource(paced=False)
    demo.start(1280, 720, 30, (256, 256))  # the most used stream size
    return [demo.render(t) for t in (1.0, 11.0)]  # two people, standing still


def test_at_the_default_settings_a_still_person_does_not_flicker(demo_people):
    # No pixel's alpha moves by more than 8 % between frames: an edge pixel never blinks
    # between person and background.
    for rgb in demo_people:
        assert worst_edge_flicker(rgb, Settings()) <= 20


def test_fed_bilinear_samples_instead_of_pixel_averages_the_same_noise_makes_edges_blink(
        demo_people, monkeypatch):
    # The negative control, and why the model input averages pixels (as MediaPipe does not):
    # sampled bilinearly, a 720p frame's noise reaches the model nearly undamped.
    monkeypatch.setattr(frame_module, "model_input",
                        lambda rgb, size: cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR))
    assert max(worst_edge_flicker(rgb, Settings()) for rgb in demo_people) > 20
