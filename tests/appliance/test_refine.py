"""The mask holds still on a still person, and still follows a person who moves."""

from __future__ import annotations

import numpy as np

from appliance.frame import frame_from_rgb
from appliance.pipeline import FramePipeline
from appliance.settings import Settings


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
