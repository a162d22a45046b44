"""The background picker's API, against the real daemon: built-ins, the upload, thumbnails."""

from __future__ import annotations

import io

import cv2
import numpy as np

from appliance import backgrounds


def png(colour=(40, 160, 90)) -> bytes:
    return cv2.imencode(".png", np.full((300, 400, 3), colour, np.uint8))[1].tobytes()


def upload(user, colour):
    return user.post("/api/background", data={"image": (io.BytesIO(png(colour)), "me.png")},
                     content_type="multipart/form-data")


def test_the_built_ins_are_listed_with_thumbnails_and_the_default_is_current(demo_user):
    listing = demo_user.get("/api/backgrounds").json
    assert [c["name"] for c in listing["choices"]] == list(backgrounds.BUILTIN)
    assert listing["current"] == backgrounds.DEFAULT
    for choice in listing["choices"]:
        response = demo_user.get(choice["thumbnail"])
        assert response.status_code == 200 and response.mimetype == "image/jpeg"
        image = cv2.imdecode(np.frombuffer(response.data, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape[1] == 224


def test_an_upload_joins_the_list_and_only_the_newest_upload_is_kept(demo_user, demo_controller):
    first = upload(demo_user, (0, 0, 255)).json["background"]
    second = upload(demo_user, (255, 0, 0)).json["background"]
    listing = demo_user.get("/api/backgrounds").json
    assert listing["current"] == second
    assert [c["name"] for c in listing["choices"] if c["kind"] == "uploaded"] == [second]
    assert not (demo_controller.state_dir / "backgrounds" / first).exists()
    thumb = cv2.imdecode(np.frombuffer(demo_user.get(f"/api/backgrounds/{second}.jpg").data, np.uint8),
                         cv2.IMREAD_COLOR)
    assert np.abs(thumb.reshape(-1, 3).mean(axis=0) - (255, 0, 0)).max() < 20  # BGR of the upload

    # Picking a built-in keeps the upload to come back to; the built-in's file is never touched.
    demo_user.put("/api/settings", json={"background": "dusk"})
    upload(demo_user, (0, 255, 0))
    assert (backgrounds.BUILTIN_DIR / "dusk.jpg").exists()


def test_only_known_background_names_are_accepted(demo_user):
    for name in (".", "..", "web-secret.key", "settings.json", "background-0123456789ab.jpg"):
        response = demo_user.put("/api/settings", json={"background": name})
        assert response.status_code == 400 and "background" in response.json["errors"], name
        assert demo_user.get(f"/api/backgrounds/{name}.jpg").status_code in (400, 404), name
    assert demo_user.get("/api/settings").json["background"] == ""


def test_replace_without_an_upload_uses_the_default_built_in(demo_controller):
    """Not a silent blur: the default built-in picture is behind the person."""
    import simplejpeg
    demo_controller.update_settings({"effect": "replace"})
    seq, _ = demo_controller.preview_next("output", 0)
    seq, _ = demo_controller.preview_next("output", seq)
    _, jpeg = demo_controller.preview_next("output", seq)
    out = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
    studio = cv2.cvtColor(cv2.imread(str(backgrounds.BUILTIN_DIR / f"{backgrounds.DEFAULT}.jpg")), cv2.COLOR_BGR2RGB)
    studio = cv2.resize(studio, (out.shape[1], out.shape[0]), interpolation=cv2.INTER_AREA)
    corner = (slice(0, 60), slice(0, 100))
    assert np.abs(out[corner].astype(int) - studio[corner]).mean() < 12
