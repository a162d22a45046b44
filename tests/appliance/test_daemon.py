"""The daemon's controller: idle until someone watches, streams what the host committed."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import simplejpeg

from appliance import supervisor
from appliance.daemon import Controller
from appliance.settings import Settings, SettingsError
from appliance.stream import StreamFormat
from tests.support.waiting import wait_for


@pytest.fixture
def controller(tmp_path):
    c = Controller(tmp_path / "state", source_spec="demo")
    yield c
    c.close()


def test_nothing_runs_until_a_host_or_the_preview_asks(controller):
    time.sleep(0.3)
    assert controller.status()["state"] == "idle"
    assert controller.status()["fps"] == 0.0


def test_a_committed_stream_delivers_frames_of_exactly_that_format_and_stops_on_request(controller):
    slot = controller.start_stream(StreamFormat("mjpeg", 1280, 720, 30))
    got = slot.get(0, timeout=10)
    assert got is not None
    image = simplejpeg.decode_jpeg(got[1], colorspace="RGB")
    assert image.shape == (720, 1280, 3)
    assert controller.status()["state"] == "streaming"
    assert controller.status()["stream_format"] == "MJPEG 1280x720@30"
    controller.stop_stream()
    assert wait_for(lambda: controller.status()["state"] == "idle")



def test_the_preview_shows_original_mask_and_output_then_idles_again(controller, monkeypatch):
    monkeypatch.setattr(supervisor, "PREVIEW_SECONDS", 1.5)
    views = {v: simplejpeg.decode_jpeg(controller.preview(v), colorspace="GRAY") for v in ("original", "mask", "output")}
    assert all(img.shape[1] == 640 for img in views.values())
    mask = views["mask"]
    assert mask.max() > 200 and mask.min() < 50  # a person and a background
    assert controller.status()["state"] == "preview"
    assert wait_for(lambda: controller.status()["state"] == "idle")


def test_an_unknown_preview_view_is_an_error(controller):
    with pytest.raises(ValueError, match="original, mask, output, all"):
        controller.preview("xray")


def test_a_background_upload_must_be_an_image_and_a_bad_one_changes_nothing(controller):
    with pytest.raises(SettingsError) as err:
        controller.set_background(b"<html>not an image</html>")
    assert "background" in err.value.errors
    assert controller.settings.current.background == ""


def test_a_large_background_is_stored_resized_and_replaces_the_previous_one(controller, tmp_path):
    big = np.zeros((3000, 4000, 3), np.uint8)
    big[:, :, 1] = 200
    ok, png = cv2.imencode(".png", big)
    first = controller.set_background(png.tobytes()).background
    stored = cv2.imread(str(tmp_path / "state" / "backgrounds" / first))
    assert stored.shape[0] <= 1080 and stored.shape[1] <= 1920
    small = np.full((100, 100, 3), 50, np.uint8)
    second = controller.set_background(cv2.imencode(".jpg", small)[1].tobytes()).background
    assert second != first
    assert not (tmp_path / "state" / "backgrounds" / first).exists()


def test_status_reports_what_the_settings_page_shows(controller):
    st = controller.status()
    for key in ("state", "fps", "inference_ms", "source", "stream_format", "host_connected",
                "uptime_s", "version", "cpu_load", "temperature_c", "throttled", "model", "precision"):
        assert key in st


def test_status_shows_the_live_figures_of_a_running_stream(controller):
    slot = controller.start_stream(StreamFormat("mjpeg", 640, 360, 30))
    seq = 0
    for _ in range(10):
        seq = slot.get(seq, timeout=10)[0]
    st = controller.status()
    assert st["frames_out"] >= 10 and st["frames_dropped"] >= 0 and st["segment_workers"] >= 1
    assert 0 < st["latency_p50_ms"] <= st["latency_p95_ms"]
    assert st["mask_age_frames"] == 0 and st["mask_age_ms"] == 0.0  # each frame's own mask
    controller.stop_stream()
    assert wait_for(lambda: controller.status()["latency_p50_ms"] is None)


@pytest.fixture
def broken_float_models(tmp_path, monkeypatch):
    """Model files where the int8 ones are good and the float ones are damaged."""
    from appliance import segment
    models = tmp_path / "models"
    models.mkdir()
    for name in segment.MODEL_NAMES:
        (models / f"{name}_int8.tflite").write_bytes(segment.model_path(name, "int8").read_bytes())
        (models / f"{name}_float.tflite").write_bytes(b"not a model")
    monkeypatch.setattr(segment, "MODEL_DIRS", (str(models),))


@pytest.mark.parametrize("changes, named", [
    ({"precision": "float"}, {"precision"}),
    ({"model": "general", "precision": "float"}, {"model", "precision"}),
    ({"precision": "float", "blur_strength": 500, "colour": 1}, {"precision", "blur_strength", "colour"}),
])
def test_a_broken_model_file_is_refused_naming_the_field_that_picked_it_and_the_others(
        controller, broken_float_models, changes, named):
    with pytest.raises(SettingsError) as caught:
        controller.update_settings(changes)
    assert set(caught.value.errors) == named
    assert "float.tflite" in caught.value.errors["precision"]
    assert controller.settings.current == Settings() and not controller.settings.path.exists()
    controller.update_settings({"model": "general"})  # the good int8 files are still accepted
    assert controller.settings.current.model == "general"


def test_the_daemon_offers_the_uvc_server_exactly_what_its_protocol_names():
    from appliance.uvc.backend import UvcBackend
    from tests.support.protocols import assert_implements, protocol_methods
    assert set(protocol_methods(UvcBackend)) == {
        "start_stream", "stop_stream", "image_controls", "set_image_controls", "set_host_state"}
    assert_implements(Controller, UvcBackend)


def test_a_host_sets_image_controls_through_the_daemon_and_reads_them_back(controller):
    controller.set_image_controls({"brightness": 37, "sharpness": 150, "zoom": 200})
    from appliance import controls
    assert controller.image_controls() == {**controls.values_of(Settings()), "brightness": 37,
                                           "sharpness": 150, "zoom": 200}
    assert controller.status()["controls"]["brightness"] == 37
    assert '"brightness": 37' in controller.settings.path.read_text()


@pytest.mark.parametrize("changes, field", [
    ({"brightness": 500}, "brightness"), ({"effect": "none"}, "effect"), ({"gamma": 2}, "gamma")])
def test_a_host_cannot_set_a_bad_value_or_anything_but_an_image_control(controller, changes, field):
    with pytest.raises(ValueError) as err:
        controller.set_image_controls(changes)
    assert field in str(err.value)
    assert controller.settings.current == controller.settings.current.model_validate({})


def test_the_host_state_shows_in_the_status(controller):
    controller.set_host_state(True, None)
    assert controller.status()["host_connected"] is True
    controller.set_host_state(False, None)
    assert controller.status()["host_connected"] is False


def test_the_daemon_opens_the_camera_only_for_a_host_or_the_preview_and_closes_it_after(tmp_path, monkeypatch):
    from tests.support.faulty_camera import FaultyCamera
    camera = FaultyCamera()
    monkeypatch.setattr("appliance.sources.open_source", lambda spec: camera)
    monkeypatch.setattr(supervisor, "PREVIEW_SECONDS", 1.5)
    c = Controller(tmp_path / "state", source_spec="demo")
    try:
        time.sleep(1.0)
        c.status()
        assert camera.starts == 0, "the camera started with the daemon"
        c.preview("output")
        assert camera.starts == 1
        assert wait_for(lambda: camera.stops == 1), "the camera stayed on after the preview"
        slot = c.start_stream(StreamFormat("mjpeg", 640, 360, 30))
        assert slot.get(0, timeout=15) is not None and camera.starts == 2
        c.stop_stream()
        assert wait_for(lambda: camera.stops == 2), "the camera stayed on after the host stopped"
    finally:
        c.close()
