"""The settings store's write path under real faults: a change that cannot be saved is not applied.

The faults are a full and a read-only tmpfs in a private mount namespace (tests/support/faultfs).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.settings import Settings, SettingsStore
from appliance.storage import StorageError
from tests.support import capabilities, faultfs

needs_faults = capabilities.needs(faultfs.unavailable())


def _failed_change(directory: Path, fault) -> dict:
    """Save one change, break the disk with `fault`, try another; report what everyone sees."""
    store = SettingsStore(directory)
    heard = []
    store.subscribe(lambda old, new: heard.append(new.blur_strength))
    store.update({"blur_strength": 70, "privacy_text": "Back soon"})
    before = store.path.read_bytes()
    fault(directory)
    try:
        store.update({"blur_strength": 71, "privacy_text": "x" * 60})
        error = None
    except StorageError as exc:
        error = str(exc)
    return {"error": error, "running": store.current.blur_strength, "heard": heard,
            "file_unchanged": store.path.read_bytes() == before,
            "after_restart": SettingsStore(directory).current.blur_strength}


@needs_faults
@pytest.mark.parametrize("fault, words", [
    (faultfs.fill, "the device's storage is full"),
    (lambda d: faultfs.remount(d, read_only=True), "the device's storage is read-only"),
])
def test_a_failed_write_keeps_the_previous_settings(fault, words):
    out = faultfs.in_private_tmpfs(lambda d: _failed_change(d, fault), size="64k")
    assert out["error"] == f"Settings not saved: {words}. Nothing was changed."
    assert out["running"] == 70, "the running values changed although the save failed"
    assert out["heard"] == [70], "listeners (the pipeline) heard of a change that was not saved"
    assert out["file_unchanged"]
    assert out["after_restart"] == 70


@needs_faults
def test_after_the_disk_has_room_again_the_next_change_is_saved():
    def scenario(directory: Path) -> list:
        store = SettingsStore(directory)
        faultfs.fill(directory)
        outcomes = []
        for _ in range(2):
            try:
                store.update({"mirror": True})
                outcomes.append("saved")
            except StorageError:
                outcomes.append("refused")
            (directory / "filler").unlink(missing_ok=True)
        return outcomes + [SettingsStore(directory).current.mirror]

    assert faultfs.in_private_tmpfs(scenario, size="64k") == ["refused", "saved", True]


def test_temp_files_a_power_cut_left_are_removed_when_the_settings_open(tmp_path):
    (tmp_path / "settings.json").write_text('{"blur_strength": 20}')
    for name in (".settings.json.tmp-abc12345", ".settings.json.q1w2e3r4"):
        (tmp_path / name).write_text('{"blur_strength": 21')  # half a write
    store = SettingsStore(tmp_path)
    assert store.current.blur_strength == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.json"]


def test_a_reset_forgets_user_changes_but_fleet_defaults_still_apply(tmp_path):
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[settings]\nblur_strength = 30\n')
    state = tmp_path / "state"
    store = SettingsStore(state, fleet)
    heard = []
    store.subscribe(lambda old, new: heard.append((old.effect, new.effect)))
    store.update({"effect": "none", "blur_strength": 90})
    (state / "settings.json.broken").write_text("{")  # an old damaged file is user data too
    new = store.reset()
    assert new == store.current == Settings(blur_strength=30)
    assert heard == [("blur", "none"), ("none", "blur")]
    assert list(state.iterdir()) == []
    assert SettingsStore(state, fleet).current == Settings(blur_strength=30)


@needs_faults
def test_a_damaged_settings_file_on_read_only_storage_does_not_stop_the_camera():
    def scenario(directory: Path) -> dict:
        (directory / "settings.json").write_text('{"blur_strength": ')
        faultfs.remount(directory, read_only=True)
        store = SettingsStore(directory)
        return {"current": store.current, "names": sorted(p.name for p in directory.iterdir())}

    out = faultfs.in_private_tmpfs(scenario)
    assert out["current"] == Settings()
    assert out["names"] == ["settings.json"]  # could not be set aside; kept for inspection
