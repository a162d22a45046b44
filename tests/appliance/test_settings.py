"""Settings: one schema, clear errors naming field and range, layered and saved atomically."""

from __future__ import annotations

import json

import pytest

from appliance.fleet import FleetError
from appliance.settings import Settings, SettingsError, SettingsStore, merge, validate


@pytest.mark.parametrize("change, field, words", [
    ({"blur_strength": 0}, "blur_strength", "1..100"),
    ({"blur_strength": 101}, "blur_strength", "1..100"),
    ({"blur_strength": "50"}, "blur_strength", "valid integer"),
    ({"effect": "sparkle"}, "effect", "blur, replace, none, privacy"),
    ({"mirror": "yes"}, "mirror", "boolean"),
    ({"resolutions": []}, "resolutions", "non-empty"),
    ({"resolutions": ["800x600"]}, "resolutions", "640x360"),
    ({"jpeg_quality": 100}, "jpeg_quality", "30..98"),
    ({"background": "../etc/passwd"}, "background", "an uploaded picture's name"),
    ({"colour": "red"}, "colour", "unknown setting"),
])
def test_a_bad_value_is_rejected_naming_the_field_and_what_is_allowed(change, field, words):
    with pytest.raises(SettingsError) as err:
        merge(Settings(), change)
    assert field in err.value.errors
    assert words in err.value.errors[field]


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(SettingsError) as err:
        validate({"blur_strength": 500, "effect": "x", "nope": 1})
    assert set(err.value.errors) == {"blur_strength", "effect", "nope"}


def test_user_changes_are_saved_and_survive_a_restart(tmp_path):
    store = SettingsStore(tmp_path)
    store.update({"blur_strength": 80, "mirror": True})
    again = SettingsStore(tmp_path)
    assert again.current.blur_strength == 80 and again.current.mirror is True


def test_a_rejected_change_leaves_the_saved_file_and_the_running_values_alone(tmp_path):
    store = SettingsStore(tmp_path)
    store.update({"blur_strength": 70})
    before = (tmp_path / "settings.json").read_bytes()
    with pytest.raises(SettingsError):
        store.update({"blur_strength": 71, "effect": "nonsense"})
    assert store.current.blur_strength == 70
    assert (tmp_path / "settings.json").read_bytes() == before


def test_layers_are_defaults_then_fleet_file_then_user_changes(tmp_path):
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[settings]\nblur_strength = 30\neffect = "none"\n')
    store = SettingsStore(tmp_path / "state", fleet)
    assert store.current.blur_strength == 30 and store.current.effect == "none"
    assert store.current.jpeg_quality == Settings().jpeg_quality
    store.update({"effect": "blur"})
    assert SettingsStore(tmp_path / "state", fleet).current.effect == "blur"
    # Only the user's own change is stored: a new fleet default still reaches untouched fields.
    assert json.loads((tmp_path / "state" / "settings.json").read_text()) == {"effect": "blur"}


def test_a_bad_fleet_file_is_refused_with_the_field_named(tmp_path):
    fleet = tmp_path / "fleet.toml"
    fleet.write_text("[settings]\nblur_strength = 300\n")
    with pytest.raises(FleetError, match=r"fleet.toml: \[settings\] blur_strength: .*1\.\.100"):
        SettingsStore(tmp_path / "state", fleet)


def test_a_damaged_settings_file_is_set_aside_and_the_camera_still_starts(tmp_path):
    (tmp_path / "settings.json").write_text('{"blur_strength": 9000')
    store = SettingsStore(tmp_path)
    assert store.current == Settings()
    assert (tmp_path / "settings.json.broken").exists()


def test_listeners_hear_about_accepted_changes_only(tmp_path):
    store = SettingsStore(tmp_path)
    heard = []
    store.subscribe(lambda old, new: heard.append((old.blur_strength, new.blur_strength)))
    store.update({"blur_strength": 10})
    with pytest.raises(SettingsError):
        store.update({"blur_strength": -1})
    assert heard == [(60, 10)]
