"""The committed model files: provenance, size, operator set and the I/O contract."""
import hashlib

import numpy as np
import pytest

from models import evalset, harness
from models import tflite_graph as tg
from models.build import SOURCES
from tests.support import capabilities

SHIPPED = ("general_float", "general_int8", "landscape_float", "landscape_int8")
SHAPE = {"general": (1, 256, 256, 3), "landscape": (1, 144, 256, 3)}


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_committed_models_are_exactly_what_the_build_recorded(models_dir):
    recorded = dict(reversed(line.split()) for line in (models_dir / "SHA256SUMS").read_text().splitlines())
    assert sorted(recorded) == sorted(f"{n}.tflite" for n in SHIPPED)
    for name, digest in recorded.items():
        assert sha256(models_dir / name) == digest, name


@pytest.mark.parametrize("variant", sorted(SOURCES))
def test_mediapipe_originals_match_the_pinned_sha256(models_dir, variant):
    assert sha256(models_dir / "source" / f"{variant}.tflite") == SOURCES[variant][1]


@pytest.mark.parametrize("name", SHIPPED)
def test_model_file_is_under_half_a_megabyte(models_dir, name):
    assert (models_dir / f"{name}.tflite").stat().st_size < 512 * 1024


@pytest.mark.parametrize("name", SHIPPED)
def test_model_uses_builtin_operators_only(models_dir, name):
    model = tg.load((models_dir / f"{name}.tflite").read_bytes())
    assert [oc.customCode for oc in model.operatorCodes if oc.customCode] == []
    assert "HARD_SWISH" in tg.op_histogram(model)  # the real network, not a stub


def test_the_original_needed_a_custom_operator(models_dir):
    model = tg.load((models_dir / "source" / "general.tflite").read_bytes())
    assert tg.op_histogram(model)["Convolution2DTransposeBias"] == 1


@pytest.mark.parametrize("name", SHIPPED)
def test_input_and_output_follow_the_contract(models_dir, name):
    variant, kind = name.split("_")
    seg = harness.Segmenter(models_dir / f"{name}.tflite")
    assert tuple(seg.inp["shape"]) == SHAPE[variant]
    assert tuple(seg.out["shape"]) == SHAPE[variant][:3] + (1,)
    if kind == "float":
        assert seg.inp["dtype"] == np.float32
    else:
        assert seg.inp["dtype"] == np.int8
        assert seg.input_is_uint8_xor  # scale 1/255, zero point -128
    assert seg.out["dtype"] in (np.float32, np.int8)


def test_int8_input_is_the_uint8_frame_with_the_top_bit_flipped(models_dir):
    seg = harness.Segmenter(models_dir / "general_int8.tflite")
    frame = evalset.photo("astronaut")
    tensor = seg.prepare(frame)
    assert tensor.dtype == np.int8
    scale, zero = seg.inp["quantization"]
    as_float = (tensor.astype(np.float32) - zero) * scale
    small = harness.cv2.resize(frame, (256, 256), interpolation=harness.cv2.INTER_LINEAR)
    np.testing.assert_allclose(as_float[0], small / 255.0, atol=1e-6)


@pytest.mark.parametrize("runtime", harness.RUNTIMES)
@pytest.mark.parametrize("xnnpack", [True, False], ids=["xnnpack", "builtin-kernels"])
@pytest.mark.parametrize("name", SHIPPED)
def test_model_segments_the_astronaut_on_every_runtime(models_dir, name, runtime, xnnpack):
    capabilities.tflite_runtime(runtime)
    seg = harness.Segmenter(models_dir / f"{name}.tflite", runtime=runtime, xnnpack=xnnpack)
    reference = harness.Segmenter(models_dir / f"{name.split('_')[0]}_float.tflite")
    frame = evalset.photo("astronaut")
    mask = seg(frame)
    assert mask.dtype == np.float32
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    assert 0.4 < harness.person_fraction(mask) < 0.7
    assert harness.iou(mask, reference(frame)) > 0.97
