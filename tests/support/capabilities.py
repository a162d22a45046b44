"""What a test needs from the machine (root, a Debian package, chromium, a Python module...), and
what happens when it is missing.

On a developer's laptop a test whose capability is missing is skipped, with the reason. Under
BLURCAM_STRICT=1 (set by .ci/run) it fails with the same reason instead: CI must not go green by
skipping whole areas. Every test that depends on the machine says so through this module:

    pytestmark = capabilities.needs(faultfs.unavailable())   # a module or a test (a marker)
    capabilities.require(vmlib.unavailable())                 # inside a fixture or a test

Each takes a reason (a sentence saying what is missing and how to get it) or None when nothing is.
Skips that are not about the machine's capabilities (the armv7 constants on a 64-bit machine, a
test that only applies when a webcam is present) stay plain pytest skips.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import sys
from pathlib import Path

import pytest

STRICT_ENV = "BLURCAM_STRICT"
CHROMIUM = Path("/usr/bin/chromium")
SYSTEMD_PYTHON = "systemd-python: make test builds it, with libsystemd-dev from tools/system-deps.sh"


def strict() -> bool:
    return os.environ.get(STRICT_ENV) == "1"


def require(missing: str | None) -> None:
    """Skip the running test (fail it under BLURCAM_STRICT=1) when `missing` is a reason."""
    if missing is None:
        return
    if strict():
        pytest.fail(f"missing capability: {missing} ({STRICT_ENV}=1 makes this a failure, not a skip)",
                    pytrace=False)
    pytest.skip(missing)


def needs(missing: str | None) -> pytest.MarkDecorator:
    """A marker with the same effect as require(), for a test function or a module's pytestmark
    (tests/conftest.py applies it before the test's fixtures run)."""
    return pytest.mark.needs(missing)


# --- common reasons ----------------------------------------------------------------------------

def root(why: str) -> str | None:
    return None if os.geteuid() == 0 else f"needs root ({why})"


def tools(*names: str, package: str) -> str | None:
    missing = [name for name in names if shutil.which(name) is None]
    return f"missing {', '.join(missing)} (Debian package {package}; tools/system-deps.sh as root)" \
        if missing else None


def module(name: str, how: str) -> str | None:
    try:
        found = importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a missing parent package
        found = False
    return None if found else f"missing the Python module {name} ({how})"


def chromium(path: Path = CHROMIUM) -> str | None:
    if not path.exists():
        return f"needs Debian's chromium at {path} (tools/apt-packages/web.txt)"
    return module("playwright.sync_api", "the playwright package of the test extra")


def tflite_runtime(name: str = "tflite_runtime") -> None:
    """Require a TFLite runtime module. tflite-runtime has wheels only for Python < 3.12 on
    x86_64 here (the test extra installs it there); elsewhere its tests are a plain skip."""
    if name == "tflite_runtime" and (sys.version_info >= (3, 12) or platform.machine() != "x86_64"):
        pytest.skip("tflite-runtime has no wheel for this Python or machine")
    require(module(name, "the test extra of pyproject.toml; make test installs it"))
