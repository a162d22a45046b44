"""The quantized models against the float model, on the evaluation set.

The float model is the reference: the quantized file must find the same person
the float file finds. The numbers asserted here are the quality bar of the model
card (models/README.md), measured with the runtime the appliance uses
(ai-edge-litert with its default XNNPACK delegate)."""
import numpy as np
import pytest

from models import harness


def agreement(models_dir, name, frames, reference):
    seg = harness.Segmenter(models_dir / name)
    ref = harness.Segmenter(models_dir / reference)
    return {f.name: harness.iou(seg(f.rgb), ref(f.rgb)) for f in frames}


def test_general_int8_finds_the_same_person_as_float_on_the_composites(models_dir, general_eval):
    ious = agreement(models_dir, "general_int8.tflite", general_eval.composites, "general_float.tflite")
    assert len(ious) == 60
    assert np.mean(list(ious.values())) >= 0.97
    worst = min(ious, key=ious.get)
    assert ious[worst] >= 0.90, worst


def test_general_int8_finds_the_same_person_as_float_on_real_photos(models_dir, general_eval):
    ious = agreement(models_dir, "general_int8.tflite", general_eval.real, "general_float.tflite")
    assert sorted(ious) == ["astronaut", "camera", "grace_hopper"]
    assert min(ious.values()) >= 0.97, ious


@pytest.mark.parametrize("variant", ["general", "landscape"])
def test_int8_adds_no_person_to_person_free_photos(models_dir, general_eval, landscape_eval, variant):
    ev = general_eval if variant == "general" else landscape_eval
    q = harness.Segmenter(models_dir / f"{variant}_int8.tflite")
    f = harness.Segmenter(models_dir / f"{variant}_float.tflite")
    for frame in ev.person_free:
        in_float, in_int8 = harness.person_fraction(f(frame.rgb)), harness.person_fraction(q(frame.rgb))
        # The float model itself calls the coffee cup and the cat partly "person"
        # (a selfie model segments the salient close-up object); int8 must not add to it,
        assert in_int8 <= in_float + 0.02, (frame.name, in_float, in_int8)
        # and where float sees nobody, int8 sees nobody either.
        if in_float < 0.05:
            assert in_int8 < 0.05, (frame.name, in_float, in_int8)


def test_landscape_int8_finds_the_same_person_as_float(models_dir, landscape_eval):
    ious = agreement(models_dir, "landscape_int8.tflite", landscape_eval.composites, "landscape_float.tflite")
    real = agreement(models_dir, "landscape_int8.tflite", landscape_eval.real, "landscape_float.tflite")
    assert np.mean(list(ious.values())) >= 0.97
    assert min(ious.values()) >= 0.90
    assert min(real.values()) >= 0.97, real


def test_iou_measures_overlap_of_the_person_regions():
    a = np.zeros((10, 10), np.float32)
    b = np.zeros((10, 10), np.float32)
    assert harness.iou(a, b) == 1.0            # both see nobody: agreement
    a[:, :5] = 0.9
    assert harness.iou(a, b) == 0.0            # one sees a person, the other does not
    b[:, :5] = 0.6
    assert harness.iou(a, b) == 1.0
    b[:, 5:] = 0.51                            # just over the 0.5 threshold counts
    assert harness.iou(a, b) == 0.5
