"""Factory reset and password reset on the device, without a login: what they forget, what they
keep (the fleet file), how the running daemon and page pick them up, and the boot-partition flag."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from werkzeug.security import check_password_hash

from appliance.control import ControlServer
from appliance.daemon import Controller
from appliance.reset import PASSWORD_NOTE_NAME, ResetError, factory_reset, reset_from_boot_flag
from appliance.settings import Settings, SettingsStore
from appliance.storage import StorageError
from tests.support import capabilities, faultfs
from tests.support.camera import LiveCamera, WebSession
from web import create_app
from web.auth import PASSWORD_FILE, set_new_password
from web.presets import PRESETS_FILE


def _picture() -> bytes:
    return cv2.imencode(".jpg", np.full((90, 160, 3), 200, np.uint8))[1].tobytes()


@pytest.fixture
def device(tmp_path, short_dir):
    """A device's folders: fleet file, daemon state, web state, control socket path."""
    fleet = tmp_path / "fleet.toml"
    fleet.write_text("[settings]\nblur_strength = 30\n")
    return {"fleet_file": fleet, "state_dir": tmp_path / "state",
            "web_state_dir": tmp_path / "web", "control_socket": short_dir / "control.sock"}


def _password_works(web_state_dir: Path, password: str) -> bool:
    stored = (web_state_dir / PASSWORD_FILE).read_text().strip()
    return check_password_hash(stored, password)


def test_a_reset_through_the_running_daemon_applies_at_once_and_keeps_fleet_defaults(device):
    controller = Controller(device["state_dir"], device["fleet_file"], source_spec="demo")
    server = ControlServer(controller, device["control_socket"])
    server.start()
    try:
        controller.update_settings({"effect": "replace", "blur_strength": 90})
        controller.set_background(_picture())
        old_password = set_new_password(device["web_state_dir"])
        (device["web_state_dir"] / PRESETS_FILE).write_text('{"presets": {"Work": {}}}')
        outcome = factory_reset(**device)
        assert outcome.settings == "the running camera service has reset its settings"
        assert controller.settings.current == Settings(blur_strength=30)  # live, no restart
        assert controller.pipeline.settings == Settings(blur_strength=30)
    finally:
        server.stop()
    assert not (device["state_dir"] / "settings.json").exists()
    assert list((device["state_dir"] / "backgrounds").iterdir()) == []
    assert not (device["web_state_dir"] / PRESETS_FILE).exists()
    assert _password_works(device["web_state_dir"], outcome.password)
    assert not _password_works(device["web_state_dir"], old_password)


def test_with_the_daemon_stopped_the_reset_is_done_on_its_files(device):
    store = SettingsStore(device["state_dir"], device["fleet_file"])
    store.update({"mirror": True, "blur_strength": 99})
    (device["state_dir"] / "backgrounds").mkdir()
    (device["state_dir"] / "backgrounds" / "background-0123456789ab.jpg").write_bytes(_picture())
    outcome = factory_reset(**device)
    assert outcome.settings == "settings reset on disk (the camera service was not running)"
    after = SettingsStore(device["state_dir"], device["fleet_file"]).current
    assert after == Settings(blur_strength=30)
    assert list((device["state_dir"] / "backgrounds").iterdir()) == []
    assert _password_works(device["web_state_dir"], outcome.password)


def test_a_daemon_that_does_not_answer_is_not_reset_behind_its_back(device):
    SettingsStore(device["state_dir"]).update({"mirror": True})
    hung = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hung.bind(str(device["control_socket"]))
    hung.listen(1)  # accepts connections, never answers
    try:
        with pytest.raises(ResetError, match="did not take the reset .* stop it"):
            factory_reset(**device, timeout=0.5)
    finally:
        hung.close()
    assert SettingsStore(device["state_dir"]).current.mirror is True
    assert not (device["web_state_dir"] / PASSWORD_FILE).exists()


def test_the_page_takes_a_new_password_at_once_and_ends_every_session(device, tmp_path):
    first = set_new_password(device["web_state_dir"])
    app = create_app({"STATE_DIR": device["web_state_dir"],
                      "CONTROL_SOCKET": device["control_socket"]})
    browser = app.test_client()
    assert browser.post("/api/login", json={"password": first}).status_code == 200
    assert browser.get("/api/schema").status_code == 200
    second = set_new_password(device["web_state_dir"])  # `blurcam password reset`, meanwhile
    assert browser.get("/api/schema").status_code == 401
    assert app.test_client().post("/api/login", json={"password": first}).status_code == 401
    assert app.test_client().post("/api/login", json={"password": second}).status_code == 200


def test_a_password_change_on_the_page_does_not_end_its_own_session(device):
    first = set_new_password(device["web_state_dir"])
    app = create_app({"STATE_DIR": device["web_state_dir"],
                      "CONTROL_SOCKET": device["control_socket"]})
    browser = app.test_client()
    token = browser.post("/api/login", json={"password": first}).json["csrf_token"]
    changed = browser.post("/api/password", json={"current_password": first,
                                                  "new_password": "another-password"},
                           headers={"X-CSRF-Token": token})
    assert changed.status_code == 200
    assert browser.get("/api/schema").status_code == 200


# --- the boot-partition flag ----------------------------------------------------------------

def test_without_the_flag_nothing_happens(device, tmp_path):
    SettingsStore(device["state_dir"]).update({"mirror": True})
    assert reset_from_boot_flag(tmp_path / "boot" / "blurcam-reset", **device) is None
    assert SettingsStore(device["state_dir"]).current.mirror is True
    assert not (tmp_path / "boot").exists()


def test_the_flag_resets_leaves_the_password_beside_it_and_is_removed(device, tmp_path):
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "blurcam-reset").write_text("")
    SettingsStore(device["state_dir"]).update({"mirror": True})
    outcome = reset_from_boot_flag(boot / "blurcam-reset", **device)
    assert outcome is not None
    note = (boot / PASSWORD_NOTE_NAME).read_bytes().decode()
    assert f"The settings page password is now: {outcome.password}\r\n" in note
    assert _password_works(device["web_state_dir"], outcome.password)
    assert not (boot / "blurcam-reset").exists()
    assert SettingsStore(device["state_dir"]).current.mirror is False
    assert sorted(p.name for p in boot.iterdir()) == [PASSWORD_NOTE_NAME]


@capabilities.needs(faultfs.unavailable())
def test_a_read_only_boot_partition_stops_the_reset_before_anything_is_forgotten(device):
    state, web_state = str(device["state_dir"]), str(device["web_state_dir"])
    SettingsStore(device["state_dir"]).update({"mirror": True})

    def scenario(boot: Path) -> str:
        (boot / "blurcam-reset").write_text("")
        faultfs.remount(boot, read_only=True)
        try:
            reset_from_boot_flag(boot / "blurcam-reset", Path(state), Path(web_state),
                                 device["control_socket"], device["fleet_file"])
        except StorageError as exc:
            return f"{exc} flag kept: {(boot / 'blurcam-reset').exists()}"
        return "reset"

    assert faultfs.in_private_tmpfs(scenario) == (
        "The password note not saved: the device's storage is read-only. Nothing was changed. "
        "flag kept: True")
    assert SettingsStore(device["state_dir"]).current.mirror is True
    assert not (device["web_state_dir"] / PASSWORD_FILE).exists()


def test_a_reset_that_cannot_finish_leaves_the_flag_and_a_note_saying_so(device, tmp_path):
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "blurcam-reset").write_text("")
    hung = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hung.bind(str(device["control_socket"]))
    hung.listen(1)
    try:
        with pytest.raises(ResetError):
            reset_from_boot_flag(boot / "blurcam-reset", **device, timeout=0.5)
    finally:
        hung.close()
    assert (boot / "blurcam-reset").exists()  # the next boot tries again
    assert "has not finished" in (boot / PASSWORD_NOTE_NAME).read_text()


# --- the command line, against the real daemon and page ----------------------------------

@pytest.fixture
def camera():
    workdir = Path(tempfile.mkdtemp(prefix="bc-reset-"))  # short: it holds the control socket
    cam = LiveCamera(workdir / "state", workdir / "control.sock", workdir / "camera.log")
    try:
        yield cam.start()
    finally:
        cam.stop()
        shutil.rmtree(workdir)


def _blurcam(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True,
                          text=True, timeout=120)


def test_blurcam_reset_on_a_running_camera_needs_no_restart(camera):
    state = str(camera.state_dir)
    result = _blurcam("password", "reset", "--state-dir", state)
    assert result.returncode == 0, result.stderr
    first = re.fullmatch(r"New password for the settings page: (\S+)\n.*", result.stdout, re.S)[1]
    page = WebSession(camera.base)
    assert page.login(first) == 200
    assert page.request("PUT", "/api/settings", {"effect": "none", "mirror": True})[0] == 200
    assert page.request("PUT", "/api/presets/Work")[0] == 200

    result = _blurcam("reset", "--state-dir", state, "--control-socket", str(camera.control_socket),
                      "--fleet-file", "/nonexistent/fleet.toml")
    assert result.returncode == 0, result.stderr
    assert "the running camera service has reset its settings" in result.stdout
    second = re.search(r"New password for the settings page: (\S+)", result.stdout)[1]

    assert page.request("GET", "/api/settings")[0] == 401  # the old session ended
    assert WebSession(camera.base).login(first) == 401
    fresh = WebSession(camera.base)
    assert fresh.login(second) == 200
    status, current = fresh.request("GET", "/api/settings")
    assert status == 200 and current == Settings().model_dump()
    assert fresh.request("GET", "/api/presets") == (200, {"presets": []})
    assert camera.process.poll() is None  # nothing was restarted


@capabilities.needs(faultfs.unavailable())
def test_blurcam_reset_on_a_read_only_disk_says_so_in_one_line(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    disk = faultfs.TmpfsNamespace(state)
    command = ["sh", "-c", f'echo "{{\\"mirror\\": true}}" > {state}/settings.json && '
               f'mount -o remount,ro {state} && exec "$@"', "sh",
               sys.executable, "-m", "appliance", "reset", "--state-dir", str(state),
               "--fleet-file", str(tmp_path / "none"),
               "--control-socket", str(tmp_path / "no.sock")]
    result = disk.start(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = result.communicate(timeout=120)
    assert result.returncode == 2, out + err
    assert err.endswith("\nblurcam reset: error: Settings not saved: the device's storage is "
                        "read-only. Nothing was changed.\n") and "Traceback" not in err
