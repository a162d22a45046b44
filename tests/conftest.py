"""Fixtures shared across areas: a daemon-side controller served on a real control socket."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from appliance.control import ControlServer
from tests.support.controller_double import ControllerDouble


@pytest.fixture
def short_dir():
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="bc-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def controller(tmp_path) -> ControllerDouble:
    return ControllerDouble(tmp_path / "daemon")


@pytest.fixture
def daemon(controller, short_dir):
    server = ControlServer(controller, short_dir / "control.sock")
    server.start()
    yield server
    server.stop()




@pytest.fixture
def demo_controller(tmp_path):
    """The real daemon's Controller on the demo camera (the model loads on first use)."""
    from appliance.daemon import Controller
    controller = Controller(tmp_path / "demo-daemon", source_spec="demo")
    yield controller
    controller.close()


@pytest.fixture
def demo_daemon(demo_controller, short_dir):
    """The real Controller served on a real control socket."""
    server = ControlServer(demo_controller, short_dir / "control.sock")
    server.start()
    yield server
    server.stop()
