"""The page's preview pictures, from the real Controller on the demo camera."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import simplejpeg

from appliance import preview, supervisor
from appliance.control import ControlClient
from appliance.pipeline import FramePipeline
from appliance.preview import Previews
from appliance.settings import Settings
from appliance.sources.base import SourceError
from appliance.supervisor import Supervisor
from tests.support.faulty_camera import FaultyCamera


def gray(jpeg: bytes) -> np.ndarray:
    return simplejpeg.decode_jpeg(jpeg, colorspace="GRAY")[..., 0]


def test_each_view_has_its_size_and_all_puts_the_three_side_by_side(demo_controller):
    seq, jpeg = demo_controller.preview_next("all", 0)
    both = gray(jpeg)
    assert both.shape == (270, 1440)
    original, mask, output = (gray(demo_controller.preview(v)) for v in ("original", "mask", "output"))
    assert original.shape == mask.shape == output.shape == (360, 640)
    # The three tiles are the three views: the middle one is the mask (dark background, white person).
    tile = both[:, 480:960]
    assert tile[:40].mean() < 40 and tile[150:, 200:280].mean() > 200
    assert both[:40, :480].std() > 20  # the left tile, the room, has detail


def test_the_mask_view_says_in_words_when_the_effect_computes_no_mask(demo_controller):
    for effect in ("none", "privacy"):
        demo_controller.update_settings({"effect": effect})
        _, first = demo_controller.preview_next("mask", 0)
        seq, jpeg = demo_controller.preview_next("mask", _seq_after_change(demo_controller))
        mask = gray(jpeg)
        assert mask.mean() < 100, f"{effect}: a white mask tile"  # not 'everything is person'
        assert (mask > 180).mean() > 0.005, f"{effect}: no words on the tile"


def _seq_after_change(controller) -> int:
    """A frame number after which every frame was made with the current settings."""
    seq, _ = controller.preview_next("output", 0)
    seq, _ = controller.preview_next("output", seq)
    return seq


def test_each_request_gets_the_next_new_frame_not_the_same_one_again(demo_controller):
    seq, _ = demo_controller.preview_next("output", 0)
    seen = [seq]
    started = time.monotonic()
    for _ in range(15):  # a wait long enough for a loaded machine: none of these may time out
        seq, _ = demo_controller.preview_next("output", seq, wait=30.0)
        seen.append(seq)
    elapsed = time.monotonic() - started
    assert seen == sorted(set(seen)), seen  # every answer a newer frame
    print(f"15 new frames in {elapsed:.2f} s ({15 / elapsed:.1f} fps)")


def test_a_frame_number_from_before_a_restart_still_gets_a_frame(demo_controller, monkeypatch):
    monkeypatch.setattr(supervisor, "PREVIEW_SECONDS", 1.5)
    seq, _ = demo_controller.preview_next("output", 0)
    deadline = time.monotonic() + 10  # the pipeline stops when the preview times out
    while demo_controller.status()["state"] != "idle" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert demo_controller.status()["state"] == "idle"
    newer, jpeg = demo_controller.preview_next("output", seq + 1000)
    assert gray(jpeg).shape == (360, 640)


def test_the_control_socket_passes_frame_numbers_and_refuses_bad_ones(demo_daemon):
    client = ControlClient(demo_daemon.path)
    seq, jpeg = client.preview_next("all", 0)
    assert gray(jpeg).shape == (270, 1440)
    assert client.preview_next("all", seq)[0] > seq
    from appliance.settings import SettingsError
    for bad in (-1, "3", 1.5, True, 2**64):
        with pytest.raises(SettingsError) as caught:
            client.call("preview", {"view": "output", "after": bad})
        assert "after" in caught.value.errors


@pytest.fixture
def slow_camera():
    """The demo camera whose frames wait for `read_gate` (a first frame that takes long: the
    model's first run on a Zero 2 W, an emulated machine)."""
    camera = FaultyCamera()
    camera.read_gate = threading.Event()
    yield camera
    camera.read_gate.set()


@pytest.fixture
def slow_previews(slow_camera):
    sup = Supervisor(lambda: slow_camera, FramePipeline(Settings()))
    yield Previews(sup, lambda: "blur")
    slow_camera.read_gate.set()
    sup.close()


def test_the_first_frame_after_a_start_is_waited_for_longer_than_a_newer_one(slow_camera, slow_previews, monkeypatch):
    monkeypatch.setattr(preview, "START_WAIT", 8.0)
    threading.Timer(preview.WAIT + 1.0, slow_camera.read_gate.set).start()
    seq, jpeg = slow_previews.next("output", 0)
    assert seq > 0 and gray(jpeg).shape == (360, 640)


def test_a_request_that_gave_up_waiting_leaves_the_camera_running_for_the_next(slow_camera, slow_previews,
                                                                               monkeypatch):
    """The page asks again after a first request ran out of time: the camera must still be
    running for it, not closed and started over (which would begin the slow wait again)."""
    monkeypatch.setattr(supervisor, "PREVIEW_SECONDS", 1.0)
    monkeypatch.setattr(preview, "START_WAIT", 2.0)  # longer than PREVIEW_SECONDS
    with pytest.raises(SourceError, match="timed out"):
        slow_previews.next("output", 0)
    assert slow_camera.stops == 0, "the camera was closed while a request still waited for it"
    time.sleep(0.5)  # the page's pause before it asks again
    slow_camera.read_gate.set()
    seq, _ = slow_previews.next("output", 0, wait=15.0)
    assert seq > 0 and (slow_camera.starts, slow_camera.stops) == (1, 0)
