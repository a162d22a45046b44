"""Presets, reset to defaults, and settings export/import, against the real daemon."""

from __future__ import annotations

import json

from appliance.settings import Settings

DEFAULTS = Settings().model_dump()


def test_a_saved_preset_brings_its_look_back_but_not_the_usb_setup(demo_user):
    demo_user.put("/api/settings", json={"effect": "privacy", "privacy_text": "Back soon",
                                         "blur_strength": 20, "resolutions": ["640x480"]})
    saved = demo_user.put("/api/presets/Meetings")
    assert saved.status_code == 200
    (preset,) = saved.json["presets"]
    assert preset["name"] == "Meetings" and preset["settings"]["privacy_text"] == "Back soon"
    assert "resolutions" not in preset["settings"]

    demo_user.put("/api/settings", json={"effect": "blur", "blur_strength": 90, "resolutions": ["1280x720"]})
    applied = demo_user.post("/api/presets/Meetings/apply")
    assert applied.status_code == 200
    now = demo_user.get("/api/settings").json
    assert (now["effect"], now["privacy_text"], now["blur_strength"]) == ("privacy", "Back soon", 20)
    assert now["resolutions"] == ["1280x720"]  # how the device is wired up is not part of a look


def test_presets_are_listed_by_name_and_can_be_replaced_and_deleted(demo_user):
    for name, strength in (("zoom", 10), ("Anna's desk", 30), ("zoom", 15)):
        demo_user.put("/api/settings", json={"blur_strength": strength})
        demo_user.put(f"/api/presets/{name}")
    listing = demo_user.get("/api/presets").json["presets"]
    assert [p["name"] for p in listing] == ["Anna's desk", "zoom"]
    assert listing[1]["settings"]["blur_strength"] == 15
    assert demo_user.delete("/api/presets/zoom").status_code == 204
    assert demo_user.delete("/api/presets/zoom").status_code == 404
    assert demo_user.post("/api/presets/zoom/apply").status_code == 404
    assert [p["name"] for p in demo_user.get("/api/presets").json["presets"]] == ["Anna's desk"]


def test_a_bad_preset_name_is_refused_naming_why(demo_user):
    for name, words in (("x" * 41, "at most 40"), ("%20%20", "needs a name"), ("a%07b", "letters")):
        response = demo_user.put(f"/api/presets/{name}")
        assert response.status_code == 400 and words in response.json["errors"]["name"], response.json
    assert demo_user.get("/api/presets").json["presets"] == []


def test_a_preset_that_no_longer_fits_the_camera_is_refused_and_changes_nothing(demo_user):
    demo_user.put("/api/settings", json={"blur_strength": 33})
    demo_user.put("/api/presets/old")
    path = demo_user.client.application.config["STATE_DIR"] / "presets.json"
    data = json.loads(path.read_text())
    data["presets"]["old"]["blur_strength"] = 400  # e.g. written by an older version
    path.write_text(json.dumps(data))
    demo_user.put("/api/settings", json={"blur_strength": 70})
    response = demo_user.post("/api/presets/old/apply")
    assert response.status_code == 400 and "blur_strength" in response.json["errors"]
    assert demo_user.get("/api/settings").json["blur_strength"] == 70


def test_reset_brings_every_setting_back_to_its_default(demo_user):
    demo_user.put("/api/settings", json={"effect": "none", "blur_strength": 5, "mirror": True,
                                         "background": "dusk"})
    response = demo_user.post("/api/settings/reset")
    assert response.status_code == 200 and response.json == DEFAULTS
    assert demo_user.get("/api/settings").json == DEFAULTS


def test_reset_needs_the_csrf_token(demo_user):
    assert demo_user.client.post("/api/settings/reset").status_code == 403


def test_an_exported_file_restores_the_settings_on_import(demo_user):
    demo_user.put("/api/settings", json={"effect": "replace", "background": "ocean", "blur_strength": 44,
                                         "privacy_text": "Café in Zürich"})
    exported = demo_user.get("/api/settings/export")
    assert exported.status_code == 200
    assert exported.headers["Content-Disposition"].startswith('attachment; filename="blurcam-settings-')
    demo_user.post("/api/settings/reset")
    response = demo_user.post("/api/settings/import", data=exported.data, content_type="application/json")
    assert response.status_code == 200
    now = demo_user.get("/api/settings").json
    assert (now["effect"], now["background"], now["blur_strength"], now["privacy_text"]) == \
        ("replace", "ocean", 44, "Café in Zürich")


def test_an_uploaded_background_stays_on_the_device_when_exporting(demo_user):
    import io

    import cv2
    import numpy as np
    png = cv2.imencode(".png", np.full((90, 160, 3), 200, np.uint8))[1].tobytes()
    demo_user.post("/api/background", data={"image": (io.BytesIO(png), "me.png")},
                   content_type="multipart/form-data")
    assert demo_user.get("/api/settings").json["background"].startswith("background-")
    assert json.loads(demo_user.get("/api/settings/export").data)["settings"]["background"] == ""


def test_a_bad_settings_file_is_refused_naming_each_problem_and_changes_nothing(demo_user):
    demo_user.put("/api/settings", json={"blur_strength": 61})
    cases = [
        ({"settings": {"blur_strength": 5}}, "body", "not a BlurCam settings file"),
        ({"format": "blurcam-settings", "version": 9, "settings": {"blur_strength": 5}}, "body", "version 9"),
        ({"format": "blurcam-settings", "version": 1, "settings": {"blur_strength": 500, "colour": 1}},
         "blur_strength", "1..100"),
        ({"format": "blurcam-settings", "version": 1, "settings": {"colour": 1}}, "colour", "unknown setting"),
        ({"format": "blurcam-settings", "version": 1, "settings": {"background": "../../etc/passwd"}},
         "background", "got '../../etc/passwd'"),
        ({"format": "blurcam-settings", "version": 1, "settings": []}, "body", "must be an object"),
    ]
    for body, field, words in cases:
        response = demo_user.post("/api/settings/import", json=body)
        assert response.status_code == 400, body
        assert words in response.json["errors"][field], response.json
    assert demo_user.get("/api/settings").json["blur_strength"] == 61
