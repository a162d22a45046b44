"""The segmenter loads every shipped model on both runtimes and refuses bad model files clearly."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from appliance.segment import ModelError, Segmenter, check_models, load_segmenter, model_for, model_path
from tests.support import capabilities


@pytest.mark.parametrize("name", ["general", "landscape"])
@pytest.mark.parametrize("precision", ["int8", "float"])
def test_every_shipped_model_finds_the_person(name, precision, portrait):
    rgb, truth = portrait
    seg = load_segmenter(name, precision)
    prob = seg(rgb)
    assert prob.shape == (seg.height, seg.width) and prob.dtype == np.float32
    small_truth = cv2.resize(truth, (seg.width, seg.height)) > 0.5
    mask = prob > 0.5
    assert (mask & small_truth).sum() / (mask | small_truth).sum() > 0.9


def test_tflite_runtime_gives_the_same_mask_as_ai_edge_litert(portrait):
    capabilities.tflite_runtime()
    import tflite_runtime.interpreter as tflite_runtime
    rgb, _ = portrait
    path = model_path("general", "int8")
    litert = Segmenter(path)(rgb)
    legacy = Segmenter(path, runtime=(tflite_runtime.Interpreter, "tflite-runtime"))(rgb)
    assert np.abs(litert - legacy).max() < 0.02


def test_int8_models_take_camera_pixels_without_float_work():
    seg = load_segmenter("general", "int8")
    x = seg.preprocess(np.full((256, 256, 3), 255, np.uint8))
    assert x.dtype == np.int8 and int(x.max()) == 127  # 255 -> 127: uint8 ^ 0x80, no clipping


@pytest.mark.parametrize("content, words", [
    (b"", "cannot be loaded"),
    (b"not a model at all" * 100, "cannot be loaded"),
])
def test_a_corrupt_model_file_is_refused_with_a_clear_error(tmp_path, content, words):
    bad = tmp_path / "general_int8.tflite"
    bad.write_bytes(content)
    with pytest.raises(ModelError, match=words):
        Segmenter(bad)


def test_a_truncated_model_file_is_refused(tmp_path):
    good = model_path("general", "float").read_bytes()
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelError):
        Segmenter(bad)


def test_a_missing_model_file_names_where_it_looked(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        Segmenter(tmp_path / "nothing.tflite")


def test_the_daemon_refuses_to_start_on_a_corrupt_model_without_a_traceback(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "general_int8.tflite").write_bytes(b"garbage" * 50)
    env = {"BLURCAM_MODEL_DIR": str(models), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "appliance", "run", "--source", "demo",
                             "--state-dir", str(tmp_path / "state")],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "general_int8.tflite cannot be loaded" in result.stderr


@pytest.mark.parametrize("width, height, expected", [
    (1280, 720, "landscape"), (640, 360, "landscape"), (1920, 1080, "landscape"),
    (640, 480, "general"), (1280, 960, "general"),
])
def test_auto_takes_the_landscape_model_for_16_9_frames_and_the_general_one_for_4_3(width, height, expected):
    from appliance.pipeline import FramePipeline
    from appliance.settings import Settings
    assert model_for("auto", width, height) == expected
    pipeline = FramePipeline(Settings(model="auto"))
    assert pipeline.lores_size_for(width, height) == load_segmenter(expected, "int8").input_size
    # An explicit choice is kept whatever the frame.
    assert FramePipeline(Settings(model="general")).lores_size_for(width, height) == (256, 256)


def test_a_frame_of_another_shape_is_stretched_to_the_model_size_averaging_its_pixels():
    seg = load_segmenter("landscape", "int8")
    rgb = np.random.default_rng(1).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    expected = cv2.resize(rgb, (256, 144), interpolation=cv2.INTER_AREA)
    assert np.array_equal(seg.preprocess(rgb), seg.preprocess(expected))


def test_a_model_setting_is_checked_against_every_file_it_can_pick(tmp_path, monkeypatch):
    from appliance import segment
    bad = tmp_path / "landscape_int8.tflite"
    bad.write_bytes(b"broken")
    for good in ("general_int8.tflite",):
        (tmp_path / good).write_bytes(model_path("general", "int8").read_bytes())
    monkeypatch.setattr(segment, "MODEL_DIRS", (str(tmp_path),))
    check_models("general", "int8")  # fine: only the general file is used
    with pytest.raises(ModelError, match="landscape_int8"):
        check_models("auto", "int8")  # auto may pick the broken landscape file
