"""The JSON API and the page, through Flask's test client, against a real control socket."""

from __future__ import annotations

import io
import json
import re

import cv2
import numpy as np
import pytest

from appliance.settings import FIELDS, Settings
from web import MAX_UPLOAD_BYTES


def png_upload(width=800, height=600) -> tuple[io.BytesIO, str]:
    image = np.full((height, width, 3), (40, 160, 90), np.uint8)
    return io.BytesIO(cv2.imencode(".png", image)[1].tobytes()), "beach.png"


def decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return image


def background_sharpness(jpeg: bytes) -> float:
    """Variance of the Laplacian over the top corners (background only in every test scene)."""
    gray = cv2.cvtColor(decode(jpeg), cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    corners = np.hstack([gray[: h // 3, : w // 4], gray[: h // 3, -w // 4:]])
    return float(cv2.Laplacian(corners, cv2.CV_64F).var())


# ---- settings ----

def test_get_settings_returns_every_field(user):
    settings = user.get("/api/settings").json
    assert set(settings) == set(FIELDS)
    assert settings == Settings().model_dump()


def test_a_partial_put_changes_only_the_given_fields_and_is_saved(user, controller):
    response = user.put("/api/settings", json={"blur_strength": 12, "effect": "privacy",
                                               "privacy_text": "Back in 5"})
    assert response.status_code == 200
    expected = {**Settings().model_dump(), "blur_strength": 12, "effect": "privacy",
                "privacy_text": "Back in 5"}
    assert response.json == expected
    assert user.get("/api/settings").json == expected
    assert json.loads(controller.settings.path.read_text()) == {
        "blur_strength": 12, "effect": "privacy", "privacy_text": "Back in 5"}


@pytest.mark.parametrize("change, field, words", [
    ({"blur_strength": 101}, "blur_strength", "1..100"),
    ({"blur_strength": 0}, "blur_strength", "1..100"),
    ({"blur_strength": "50"}, "blur_strength", "valid integer"),
    ({"blur_strength": 50.5}, "blur_strength", "integer"),
    ({"mirror": "yes"}, "mirror", "boolean"),
    ({"mirror": 1}, "mirror", "boolean"),
    ({"blur_strength": True}, "blur_strength", "valid integer"),
    ({"resolutions": "640x360"}, "resolutions", "list"),
    ({"mask_threshold": 0.99}, "mask_threshold", "0.05..0.95"),
    ({"effect": "sparkle"}, "effect", "blur, replace, none, privacy"),
    ({"model": "huge"}, "model", "auto, general, landscape"),
    ({"precision": "int4"}, "precision", "int8, float"),
    ({"resolutions": []}, "resolutions", "at least 1"),
    ({"resolutions": ["800x600"]}, "resolutions", "640x360"),
    ({"jpeg_quality": 100}, "jpeg_quality", "30..98"),
    ({"privacy_text": "x" * 61}, "privacy_text", "60 characters"),
    ({"background": "../../etc/passwd"}, "background", "an uploaded picture's name"),
    ({"brightness": -101}, "brightness", "-100..100"),
    ({"wifi_password": "x"}, "wifi_password", "unknown setting"),
])
def test_a_bad_value_is_a_400_naming_the_field_and_nothing_changes(user, controller, change, field, words):
    before = user.get("/api/settings").json
    response = user.put("/api/settings", json={**change, "mirror": True} if field != "mirror" else change)
    assert response.status_code == 400
    assert response.json["error"] == "invalid settings"
    assert list(response.json["errors"]) == [field]
    assert words in response.json["errors"][field]
    assert user.get("/api/settings").json == before
    assert not controller.settings.path.exists()


def test_every_bad_field_in_one_request_is_named(user):
    response = user.put("/api/settings", json={"blur_strength": -1, "effect": 3, "colour": "red",
                                               "contrast": 100})
    assert response.status_code == 400
    assert set(response.json["errors"]) == {"blur_strength", "effect", "colour"}


@pytest.mark.parametrize("change, bad", [
    ({"model": "huge"}, {"model"}),
    ({"precision": "int4"}, {"precision"}),
    ({"model": "general", "precision": "float"}, set()),  # fine itself: the others still named
])
def test_a_model_change_does_not_hide_the_other_bad_fields(user, controller, change, bad):
    response = user.put("/api/settings", json={**change, "blur_strength": 500, "colour": 1})
    assert response.status_code == 400
    assert set(response.json["errors"]) == bad | {"blur_strength", "colour"}
    assert user.get("/api/settings").json == Settings().model_dump()


@pytest.mark.parametrize("kwargs, reason", [
    ({"data": '{"blur_strength": 5', "content_type": "application/json"}, "not valid JSON"),
    ({"data": "[1, 2]", "content_type": "application/json"}, "expected a JSON object, got list"),
    ({"data": "null", "content_type": "application/json"}, "expected a JSON object, got NoneType"),
    ({"data": b"\xff\xfe", "content_type": "application/json"}, "not valid JSON"),
    ({"data": "blur_strength=5"}, "Content-Type: application/json"),
])
def test_a_malformed_body_is_a_400_naming_the_body(user, kwargs, reason):
    response = user.put("/api/settings", **kwargs)
    assert response.status_code == 400
    assert response.json["error"] == "malformed request"
    assert reason in response.json["errors"]["body"]
    assert user.get("/api/settings").json == Settings().model_dump()


def test_the_schema_lists_ranges_for_scripts(user):
    schema = user.get("/api/schema").json
    assert schema["properties"]["blur_strength"]["maximum"] == 100
    assert schema["additionalProperties"] is False


# ---- status ----

def test_status_reports_the_daemons_numbers(user):
    idle = user.get("/api/status").json
    assert (idle["state"], idle["fps"], idle["inference_ms"], idle["source"]) == ("idle", 0.0, None, "demo")
    assert len(idle["cpu_load"]) == 3
    user.get("/api/preview/output.jpg")  # the preview runs the pipeline
    running = user.get("/api/status").json
    assert running["state"] == "preview" and running["inference_ms"] > 0 and running["frames_out"] > 0


def test_without_the_daemon_the_api_says_the_camera_service_is_not_running(user, daemon):
    daemon.stop()
    for path in ("/api/status", "/api/settings", "/api/preview/output.jpg"):
        response = user.get(path)
        assert response.status_code == 503, path
        assert "camera service not running" in response.json["detail"]
    assert user.put("/api/settings", json={"mirror": True}).status_code == 503


def test_without_the_daemon_the_page_still_loads_and_says_so(user, daemon):
    daemon.stop()
    page = user.get("/")
    assert page.status_code == 200
    assert b"Camera service not running" in page.data


# ---- preview ----

@pytest.mark.parametrize("view", ["original", "mask", "output"])
def test_each_preview_view_is_a_jpeg(user, view):
    response = user.get(f"/api/preview/{view}.jpg")
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    assert decode(response.data).shape == (360, 640, 3)


def test_an_unknown_preview_view_is_a_400_naming_the_views(user):
    response = user.get("/api/preview/xray.jpg")
    assert response.status_code == 400
    assert "original, mask, output" in response.json["errors"]["view"]


def test_a_blur_strength_change_shows_in_the_next_preview(user, controller):
    def output_after_the_change() -> bytes:
        seq, _ = controller.preview_next("output", 0)
        for _ in range(2):  # the frame in the works when the setting changed is not enough
            seq, _ = controller.preview_next("output", seq)
        return user.get("/api/preview/output.jpg").data
    user.put("/api/settings", json={"blur_strength": 1})
    sharp = background_sharpness(output_after_the_change())
    user.put("/api/settings", json={"blur_strength": 100})
    blurred = background_sharpness(output_after_the_change())
    assert blurred < sharp / 10, (sharp, blurred)


def test_the_mjpeg_stream_sends_jpeg_parts_and_frees_its_slot_when_closed(user):
    for _ in range(4):  # more than MAX_MJPEG_STREAMS: closed streams must give their slot back
        response = user.get("/api/preview/mask.mjpg", buffered=False)
        assert response.status_code == 200
        assert response.mimetype == "multipart/x-mixed-replace"
        chunks = iter(response.response)
        data = b""
        while data.count(b"--blurcamframe") < 2:
            data += next(chunks)
        response.close()
        part = data.split(b"--blurcamframe")[1]
        head, body = part.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        assert decode(body[:length]).shape == (360, 640, 3)


def test_open_mjpeg_streams_are_capped(user):
    open_streams = [user.get("/api/preview/output.mjpg", buffered=False) for _ in range(3)]
    try:
        refused = user.get("/api/preview/output.mjpg")
        assert refused.status_code == 503 and "too many preview streams" in refused.json["error"]
    finally:
        for response in open_streams:
            response.close()
    assert user.get("/api/preview/output.mjpg", buffered=False).status_code == 200


# ---- background ----

def test_a_background_upload_is_stored_resized_and_selected(user, controller):
    response = user.post("/api/background", data={"image": png_upload(2400, 1800)},
                         content_type="multipart/form-data")
    assert response.status_code == 200
    name = response.json["background"]
    assert re.fullmatch(r"background-[0-9a-f]{12}\.jpg", name)
    assert cv2.imread(str(controller.state_dir / "backgrounds" / name)).shape == (1080, 1440, 3)


@pytest.mark.parametrize("data, field, words", [
    ({"image": (io.BytesIO(b"%PDF-1.7 not a picture"), "cv.png")}, "background", "only JPEG, PNG, WebP or BMP"),
    ({"image": (io.BytesIO(b""), "empty.png")}, "image", "empty"),
    ({"picture": png_upload()}, "image", "multipart form field 'image'"),
])
def test_a_bad_upload_is_a_400_naming_what_is_wrong_and_nothing_changes(user, controller, data, field, words):
    response = user.post("/api/background", data=data, content_type="multipart/form-data")
    assert response.status_code == 400
    assert words in response.json["errors"][field]
    assert user.get("/api/settings").json["background"] == ""
    assert not list(controller.state_dir.glob("backgrounds/*.jpg"))


def test_an_oversized_upload_is_a_413_and_nothing_changes(user, controller):
    big = (io.BytesIO(b"\xff\xd8" + bytes(MAX_UPLOAD_BYTES)), "huge.jpg")
    response = user.post("/api/background", data={"image": big}, content_type="multipart/form-data")
    assert response.status_code == 413
    assert "8 MiB" in response.json["errors"]["image"]
    assert user.get("/api/settings").json["background"] == ""


def test_an_upload_needs_the_csrf_token(client, user):
    response = client.post("/api/background", data={"image": png_upload()},
                           content_type="multipart/form-data")
    assert response.status_code == 403


# ---- the page ----

def test_the_page_has_a_labelled_control_for_every_setting(user):
    page = user.get("/").get_data(as_text=True)
    for field in FIELDS:
        if field == "background":  # set by the upload form
            assert 'name="image"' in page
            continue
        assert f'name="{field}"' in page, field
    for control_id in re.findall(r'<input type="(?:range|text|checkbox)" (?:role="switch" )?id="([^"]+)"', page):
        assert f'for="{control_id}"' in page, control_id


def test_the_page_shows_the_saved_values(user):
    user.put("/api/settings", json={"blur_strength": 33, "model": "landscape"})
    page = user.get("/").get_data(as_text=True)
    assert re.search(r'id="f-blur_strength"[^>]*value="33"', page)
    assert re.search(r'id="f-model-landscape"[^>]*checked', page)


def test_a_control_that_does_not_act_in_the_saved_mode_is_drawn_stepped_back(user):
    def classes(page: str, name: str) -> list[str]:
        return re.search(rf'class="([^"]*)" data-field="{name}"', page).group(1).split()
    page = user.get("/").get_data(as_text=True)  # auto exposure: the exposure time does not act
    assert "inactive" in classes(page, "exposure_time") and "inactive" not in classes(page, "exposure_compensation")
    user.put("/api/settings", json={"exposure_mode": 1})
    page = user.get("/").get_data(as_text=True)
    assert "inactive" not in classes(page, "exposure_time") and "inactive" in classes(page, "exposure_compensation")


@pytest.mark.parametrize("path", ["/", "/login", "/api/settings", "/api/status", "/static/app.css"])
def test_every_response_carries_the_security_headers(user, path):
    headers = user.get(path).headers
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"


def test_pages_have_no_inline_script_or_style_and_no_external_assets(user, client):
    for page in (user.get("/").get_data(as_text=True), client.get("/login").get_data(as_text=True)):
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page)
        assert not re.search(r"\son[a-z]+=", page)
        assert " style=" not in page and "<style" not in page
        for url in re.findall(r'(?:src|href)="([^"]+)"', page):
            assert url.startswith(("/", "#")), url
