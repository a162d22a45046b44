"""The calibration and evaluation images: separate, deterministic, meaningful."""
import hashlib

import numpy as np

from models import evalset, harness


def digest(frames) -> str:
    h = hashlib.sha256()
    for f in frames:
        h.update(f.name.encode())
        h.update(f.rgb.tobytes())
    return h.hexdigest()


def test_calibration_and_evaluation_share_no_background_and_no_seed():
    assert not set(evalset.CALIBRATION_BACKGROUNDS) & set(evalset.EVALUATION_BACKGROUNDS)
    assert not set(evalset.CALIBRATION_BACKGROUNDS) & set(evalset.HARD_BACKGROUNDS)
    assert not set(evalset.CALIBRATION_BACKGROUNDS) & set(evalset.PERSON_FREE_PHOTOS)
    assert evalset.CALIBRATION_SEED != evalset.EVALUATION_SEED


def test_evaluation_set_is_the_same_every_time(general_float, general_eval):
    # a shorter set draws the same first frames from the same seeded stream
    again = evalset.evaluation_set(general_float, count=12, hard_count=4, width=640, height=480)
    assert digest(again.composites) == digest(general_eval.composites[:12])
    assert digest(again.hard_composites) == digest(general_eval.hard_composites[:4])


def test_evaluation_frames_are_webcam_sized_and_show_one_person(general_eval, landscape_eval):
    assert len(general_eval.composites) == 60
    for f in general_eval.composites:
        assert f.rgb.shape == (480, 640, 3) and f.rgb.dtype == np.uint8
        assert 0.03 < float(np.mean(f.truth > 0.5)) < 0.8, f.name
    assert {f.rgb.shape for f in landscape_eval.composites} == {(360, 640, 3)}
    # every person and every background is used
    people = {f.name.split(":")[1].split("@")[0] for f in general_eval.composites}
    places = {f.name.split("@")[1] for f in general_eval.composites}
    assert people == set(evalset.PERSON_PHOTOS)
    assert places == set(evalset.EVALUATION_BACKGROUNDS)


def test_evaluation_backgrounds_contain_no_person_for_the_float_model(general_float):
    for name in evalset.EVALUATION_BACKGROUNDS:
        assert harness.person_fraction(general_float(evalset.photo(name))) < 0.05, name


def test_hard_backgrounds_are_close_ups_the_float_model_takes_for_a_person(general_float):
    for name in evalset.HARD_BACKGROUNDS:
        assert harness.person_fraction(general_float(evalset.photo(name))) > 0.15, name


def test_float_model_finds_the_pasted_person(general_float, general_eval):
    truth_iou = [harness.iou(general_float(f.rgb), harness.cv2.resize(f.truth, (256, 256),
                 interpolation=harness.cv2.INTER_AREA)) for f in general_eval.composites]
    assert np.mean(truth_iou) > 0.85
