"""The effects: no halo of the person's colours in the blurred background."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from appliance import compose
from appliance.frame import frame_from_rgb, i420_to_rgb
from appliance.pipeline import FramePipeline
from appliance.settings import Settings

WALL, PERSON = (70, 130, 190), (230, 60, 40)


@pytest.fixture(scope="module")
def red_person_on_a_blue_wall():
    """A flat wall, a red person (head and shoulders to the bottom edge) and the true mask."""
    mask = np.zeros((720, 1280), np.uint8)
    cv2.ellipse(mask, (640, 250), (110, 140), 0, 0, 360, 255, -1)
    cv2.rectangle(mask, (470, 360), (810, 720), 255, -1)
    rgb = np.where(mask[..., None] > 0, np.uint8(PERSON), np.uint8(WALL)).astype(np.uint8)
    return rgb, mask


def halo(scene, strength: int) -> np.ndarray:
    """Per pixel, how far the output moved from the wall colour in the band 12-60 px outside
    the person (levels, mean over R, G, B), with the true mask as the model's mask."""
    rgb, mask = scene
    pipeline = FramePipeline(Settings(effect="blur", blur_strength=strength))
    frame = frame_from_rgb(rgb, pipeline.lores_size, 0.0)
    alpha = cv2.resize(mask.astype(np.float32) / 255, pipeline.lores_size, interpolation=cv2.INTER_AREA)
    out = i420_to_rgb(pipeline.finish(frame, alpha)).astype(np.int16)
    wall = i420_to_rgb(frame.yuv).astype(np.int16)  # the wall as the camera delivered it
    outside = cv2.distanceTransform((mask == 0).astype(np.uint8), cv2.DIST_L2, 5)
    band = (outside >= 12) & (outside <= 60)
    return np.abs(out - wall).mean(axis=2)[band]


@pytest.mark.parametrize("strength", [30, 60, 100])
def test_the_blurred_wall_beside_the_person_keeps_the_wall_colour(red_person_on_a_blue_wall, strength):
    moved = halo(red_person_on_a_blue_wall, strength)
    assert np.percentile(moved, 99) <= 8, f"halo: the wall moved {np.percentile(moved, 99):.1f} levels"


def test_an_unweighted_blur_would_leave_a_halo(red_person_on_a_blue_wall, monkeypatch):
    # The negative control: let every pixel count (weight 1, as a plain blur does) and the same
    # measurement sees the red person smeared into the wall.
    monkeypatch.setattr(compose, "background_weight", np.ones_like)
    moved = halo(red_person_on_a_blue_wall, 60)
    assert moved.mean() > 15


@pytest.mark.parametrize("effect", ["blur", "replace"])
def test_a_frame_let_in_without_a_mask_just_before_a_masked_effect_was_chosen_leaves_as_it_came(
        red_person_on_a_blue_wall, effect):
    # The threaded pipeline decides per frame whether it needs a mask, and `finish` reads the
    # settings again later: a change from "none" to a masked effect in between left a frame with
    # no mask to blur with, which crashed the compose thread (and so the stream).
    rgb, _ = red_person_on_a_blue_wall
    pipeline = FramePipeline(Settings(effect="none"), background_rgb=np.zeros_like(rgb))
    frame = frame_from_rgb(rgb, pipeline.lores_size, 0.0)
    pipeline.configure(Settings(effect=effect))
    out = pipeline.finish(frame, None)
    assert np.array_equal(out, frame.yuv)


def test_a_masked_effect_without_a_mask_is_refused_with_a_message_naming_it(red_person_on_a_blue_wall):
    rgb, _ = red_person_on_a_blue_wall
    yuv = frame_from_rgb(rgb, (256, 144), 0.0).yuv
    with pytest.raises(ValueError, match="effect 'blur' needs the frame's person mask"):
        compose.Compositor().compose(yuv, "blur")
