"""How frames are fed to the model (models/preprocessing.py): the app's choice, measured on the
evaluation set against the alternatives, and the person at the frame's bottom edge."""

from __future__ import annotations

import cv2
import pytest

from appliance.frame import frame_from_rgb
from appliance.pipeline import FramePipeline
from appliance.settings import Settings
from models import evalset
from models.preprocessing import VARIANTS, score

APP, BEFORE, GENERAL_BILINEAR, LETTERBOX, SIGNED = VARIANTS[:5]


@pytest.fixture(scope="module")
def wide_scores(landscape_eval):
    """Every variant on the 16:9 (640x360) evaluation composites."""
    return {v: score(landscape_eval.composites, v) for v in (APP, BEFORE, GENERAL_BILINEAR, LETTERBOX, SIGNED)}


def test_on_16_9_frames_the_app_finds_the_person_far_better_than_before(wide_scores):
    app, before = wide_scores[APP], wide_scores[BEFORE]
    assert app.iou_mean > before.iou_mean + 0.03
    assert app.iou_p10 > before.iou_p10 + 0.15  # the squeezed general model's bad frames


def test_letterboxing_16_9_into_the_square_model_is_worse_than_the_app(wide_scores):
    assert wide_scores[LETTERBOX].iou_mean < wide_scores[APP].iou_mean - 0.015


def test_the_model_wants_values_in_0_1_not_minus_1_1(wide_scores):
    assert wide_scores[SIGNED].iou_mean < wide_scores[GENERAL_BILINEAR].iou_mean - 0.05


def test_on_4_3_frames_the_app_is_as_good_as_before(general_eval):
    app, before = score(general_eval.composites, APP), score(general_eval.composites, BEFORE)
    assert app.iou_mean >= before.iou_mean - 0.005


def test_the_lower_torso_at_the_bottom_edge_stays_the_person(general_float):
    # The case: the astronaut photo's person standing in from the bottom edge of a 720p
    # frame over a busy background (grass). Before, the general model squeezed to a square lost
    # the lower torso (recall 0.57 in the bottom 72 rows; a fifth of the person blurred).
    edge = evalset.astronaut_at_the_bottom_edge(general_float, 1280, 720)
    rgb, truth, (h, w) = edge.rgb, edge.truth, edge.truth.shape
    pipeline = FramePipeline(Settings())
    frame = frame_from_rgb(rgb, pipeline.lores_size_for(w, h), 0.0)
    mask = cv2.resize(pipeline.segment(frame), (w, h)) > 0.5
    body = truth > 0.5
    bottom_recall = (mask[-72:] & body[-72:]).sum() / body[-72:].sum()
    blurred = (body & ~mask).sum() / body.sum()
    assert bottom_recall > 0.9 and blurred < 0.08, (bottom_recall, blurred)
