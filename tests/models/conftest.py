"""Fixtures for the model tests: the committed .tflite files and the evaluation
set, built at test time from package-shipped photos (no downloads)."""
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models import evalset, harness  # noqa: E402

MODELS = ROOT / "models"


@pytest.fixture(scope="session")
def models_dir() -> pathlib.Path:
    return MODELS


@pytest.fixture(scope="session")
def general_float():
    return harness.Segmenter(MODELS / "general_float.tflite")


@pytest.fixture(scope="session")
def general_eval(general_float):
    return evalset.evaluation_set(general_float, width=640, height=480)


@pytest.fixture(scope="session")
def landscape_eval(general_float):
    return evalset.evaluation_set(general_float, width=640, height=360)
