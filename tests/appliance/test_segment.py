"""The segmenter loads every shipped model on both runtimes and refuses bad model files clearly."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from appliance.segment import ModelError, Segmenter, load_segmenter, model_path


@pytest.mark.parametrize("name", ["general", "landscape"])
@pytest.mark.parametrize("precision", ["int8", "float"])
def test_every_shipped_model_finds_the_person(name, precision, portrait):
    rgb, truth = portrait
    seg = load_segmenter(name, precision)
    prob = seg(rgb)
    assert prob.shape == (seg.height, seg.width) and prob.dtype == np.float32
    import cv2
    small_truth = cv2.resize(truth, (seg.width, seg.height)) > 0.5
    mask = prob > 0.5
    assert (mask & small_truth).sum() / (mask | small_truth).sum() > 0.9


def test_tflite_runtime_gives_the_same_mask_as_ai_edge_litert(portrait):
    tflite_runtime = pytest.importorskip("tflite_runtime.interpreter")
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
