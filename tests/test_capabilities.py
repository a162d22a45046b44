"""The test harness's capability check: a skip on a laptop, a failure under BLURCAM_STRICT=1 (CI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import capabilities

REPO = Path(__file__).resolve().parents[1]

NEEDS_A_MISSING_TOOL = """
from tests.support import capabilities

@capabilities.needs("missing frobnicate (Debian package frob)")
def test_marked():
    pass

def test_asked_inside():
    capabilities.require("missing frobnicate (Debian package frob)")

@capabilities.needs(None)
def test_nothing_missing():
    pass
"""


def test_nothing_missing_is_no_skip(monkeypatch):
    monkeypatch.setenv(capabilities.STRICT_ENV, "1")
    capabilities.require(None)  # neither skips nor fails


def test_a_missing_capability_is_a_skip_with_the_reason_on_a_laptop(monkeypatch):
    monkeypatch.delenv(capabilities.STRICT_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="missing frobnicate"):
        capabilities.require("missing frobnicate")


def test_a_missing_capability_is_a_failure_with_the_reason_under_strict(monkeypatch):
    monkeypatch.setenv(capabilities.STRICT_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="missing frobnicate.*BLURCAM_STRICT=1"):
        capabilities.require("missing frobnicate")


def run_probe(tmp_path, strict: str) -> subprocess.CompletedProcess:
    test_file = REPO / "tests" / f"test_zz_capability_probe_{tmp_path.name}.py"
    test_file.write_text(NEEDS_A_MISSING_TOOL)  # inside tests/ so that tests/conftest.py applies
    try:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rsfE", str(test_file)],
            cwd=REPO, capture_output=True, text=True, timeout=120,
            env={"PATH": "/usr/bin:/bin", capabilities.STRICT_ENV: strict})
    finally:
        test_file.unlink()


def test_on_a_laptop_marked_and_asking_tests_skip_politely(tmp_path):
    result = run_probe(tmp_path, "")
    assert result.returncode == 0 and "1 passed, 2 skipped" in result.stdout, result.stdout
    assert "missing frobnicate (Debian package frob)" in result.stdout


def test_under_strict_marked_and_asking_tests_fail_saying_what_is_missing(tmp_path):
    result = run_probe(tmp_path, "1")
    assert result.returncode == 1 and "skipped" not in result.stdout, result.stdout
    assert "1 failed, 1 passed, 1 error" in result.stdout  # the marker fails the setup, require the call
    assert result.stdout.count("missing capability: missing frobnicate (Debian package frob)") == 2, result.stdout
