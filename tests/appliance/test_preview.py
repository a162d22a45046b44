"""The page's preview pictures, from the real Controller on the demo camera."""

from __future__ import annotations

import time

import numpy as np
import pytest
import simplejpeg

from appliance.control import ControlClient


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
    from appliance import supervisor
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
