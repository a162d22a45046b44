"""Fixtures shared across areas: the real daemon (demo camera) served on a real control socket."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from appliance.control import ControlServer


@pytest.fixture
def short_dir():
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="bc-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def controller(tmp_path):
    """The real daemon's Controller on the demo camera (the model loads on first use)."""
    from appliance.daemon import Controller
    c = Controller(tmp_path / "daemon", source_spec="demo")
    yield c
    c.close()


@pytest.fixture
def daemon(controller, short_dir):
    """The real Controller served on a real control socket."""
    server = ControlServer(controller, short_dir / "control.sock")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def demo_controller(controller):
    """The same as `controller` (an older name some tests use)."""
    return controller


@pytest.fixture
def demo_daemon(daemon):
    """The same as `daemon` (an older name some tests use)."""
    return daemon


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(reason): the test needs a capability of the machine; "
                                       "reason says what is missing, None when nothing is "
                                       "(tests/support/capabilities.py)")


def pytest_runtest_setup(item):
    # After pytest's own skip marks (an opt-in test that is off stays a skip, strict or not).
    from tests.support import capabilities
    for mark in item.iter_markers(name="needs"):
        capabilities.require(mark.args[0] if mark.args else None)
