"""The offline image, built once per test session for tests/image_build (see test_offline_image.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "image-build" / "build.sh"
EXAMPLE = ROOT / "image-build" / "fleet.example.toml"


@pytest.fixture(scope="session")
def image(tmp_path_factory) -> Path:
    """image-build/build.sh --variant offline with the example fleet file (cached by recipe)."""
    out = tmp_path_factory.mktemp("image-out")
    log = out / "build.log"
    with open(log, "w") as f:
        rc = subprocess.run([str(BUILD), "--variant", "offline", "--config", str(EXAMPLE), "--out", str(out)],
                            stdout=f, stderr=subprocess.STDOUT).returncode
    text = log.read_text()
    print(text[-3000:])
    assert rc == 0, f"image build failed:\n{text[-6000:]}"
    return out / "blurcam-offline.img"
