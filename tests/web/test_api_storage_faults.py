"""A change the device cannot store reaches the page as a clear 507, and nothing changes.

The real daemon and settings page (`blurcam run --web`) keep all their files on a 2 MiB tmpfs in
a private mount namespace; the test fills it up or remounts it read-only from outside.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.support import capabilities, faultfs
from tests.support.camera import LiveCamera, WebSession

pytestmark = capabilities.needs(faultfs.unavailable())


@pytest.fixture(scope="module")
def camera():
    workdir = Path(tempfile.mkdtemp(prefix="bc-faults-"))  # short: it holds the control socket
    state = workdir / "state"
    state.mkdir()
    disk = faultfs.TmpfsNamespace(state, size="2m")
    cam = LiveCamera(state, workdir / "control.sock", workdir / "camera.log")
    try:
        cam.start(disk.start)
        # A known password, set the way an owner would on the device (and picked up live).
        reset = disk.run([sys.executable, "-m", "appliance", "password", "reset",
                          "--state-dir", str(state)])
        assert reset.returncode == 0, reset.stderr
        password = re.search(r"page: (\S+)", reset.stdout).group(1)
        yield cam, disk, password
    finally:
        cam.stop()
        shutil.rmtree(workdir)  # our mkdtemp; the tmpfs went with its namespace


def _jpeg() -> bytes:
    picture = np.random.default_rng(5).integers(0, 255, (360, 640, 3), np.uint8)
    return cv2.imencode(".jpg", picture)[1].tobytes()


FAULTS = {
    "full": ("the device's storage is full", lambda disk: disk.fill(), lambda disk: disk.unfill()),
    "read-only": ("the device's storage is read-only", lambda disk: disk.read_only(True),
                  lambda disk: disk.read_only(False)),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_change_the_disk_cannot_hold_is_a_507_naming_the_cause_and_nothing_changes(camera, fault):
    cam, disk, password = camera
    words, break_disk, repair_disk = FAULTS[fault]
    page = WebSession(cam.base)
    assert page.login(password) == 200
    assert page.request("PUT", "/api/settings", {"blur_strength": 40})[0] == 200
    saved = disk.path("settings.json").read_bytes()
    backgrounds = sorted(p.name for p in disk.path("backgrounds").glob("*")) \
        if disk.path("backgrounds").exists() else []

    break_disk(disk)
    try:
        status, body = page.request("PUT", "/api/settings", {"blur_strength": 41, "mirror": True})
        assert (status, body) == (507, {"error": "not saved", "detail":
                                        f"Settings not saved: {words}. Nothing was changed."})
        status, body = page.upload("/api/background", "image", "beach.jpg", _jpeg())
        assert (status, body["detail"]) == (
            507, f"Background picture not saved: {words}. Nothing was changed.")
        status, body = page.request("POST", "/api/password", {
            "current_password": password, "new_password": "a-new-password"})
        assert (status, body["detail"]) == (
            507, f"Password not saved: {words}. Nothing was changed.")

        # Nothing changed: not the running values, not the files, not the password.
        status, current = page.request("GET", "/api/settings")
        assert status == 200 and (current["blur_strength"], current["mirror"]) == (40, False)
        assert current["background"] == ""
        assert disk.path("settings.json").read_bytes() == saved
        now = sorted(p.name for p in disk.path("backgrounds").glob("*")) \
            if disk.path("backgrounds").exists() else []
        assert now == backgrounds
        assert WebSession(cam.base).login("a-new-password") == 401
        assert WebSession(cam.base).login(password) == 200
    finally:
        repair_disk(disk)
    assert page.request("PUT", "/api/settings", {"blur_strength": 42})[0] == 200
    assert b'"blur_strength": 42' in disk.path("settings.json").read_bytes()


def test_no_temp_file_is_left_behind_by_the_failed_writes(camera):
    cam, disk, _ = camera
    leftovers = disk.run(["find", str(disk.mountpoint), "-name", ".*.tmp-*"])
    assert leftovers.returncode == 0 and leftovers.stdout == ""


def _page_on_read_only_storage(directory: Path) -> dict:
    """The page starting on read-only storage, with no password or session key saved yet."""
    import logging

    from web import create_app
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("web").addHandler(handler)
    faultfs.remount(directory, read_only=True)
    app = create_app({"STATE_DIR": directory, "CONTROL_SOCKET": directory / "none.sock"})
    generated = re.search(r"Generated one for the settings page: (\S+)", " ".join(records))
    password = generated[1] if generated else ""
    login = app.test_client().post("/api/login", json={"password": password})
    return {"login": login.status_code, "log": records, "names": sorted(os.listdir(directory))}


def test_on_read_only_storage_the_page_still_starts_and_says_what_it_could_not_keep():
    out = faultfs.in_private_tmpfs(_page_on_read_only_storage)
    assert out["login"] == 200, out["log"]
    assert out["names"] == []
    text = " ".join(out["log"])
    assert "valid until the settings page restarts: Password not saved: the device's storage is " \
           "read-only" in text
    assert "Session key not saved: the device's storage is read-only. Nothing was changed. " \
           "Logins will end when the settings page restarts." in text
