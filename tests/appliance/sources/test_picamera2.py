"""The picamera2 source's own arithmetic, without a camera: buffer layouts, control ranges and
timestamps. (Capture itself is tested on real picamera2 in test_picamera2_virtual.py.)"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from skimage import data

from appliance.frame import rgb_to_i420, split_i420
from appliance.sources.picamera2 import error_chain, frame_timestamp, yuv420_to_i420


@pytest.fixture(scope="module")
def i420() -> np.ndarray:
    return rgb_to_i420(cv2.resize(data.astronaut(), (640, 360)))


def camera_buffer(i420: np.ndarray, fmt: str, stride: int) -> np.ndarray:
    """How the ISP lays the picture out: rows `stride` bytes apart, padding filled with junk."""
    y, u, v = split_i420(i420)
    h, w = y.shape
    padded_y = np.full((h, stride), 77, np.uint8)
    padded_y[:, :w] = y
    if fmt == "NV12":
        uv = np.full((h // 2, stride), 99, np.uint8)
        uv[:, 0:w:2], uv[:, 1:w:2] = u, v
        return np.concatenate([padded_y.ravel(), uv.ravel()])
    planes = []
    for p in ((u, v) if fmt == "YUV420" else (v, u)):
        c = np.full((h // 2, stride // 2), 99, np.uint8)
        c[:, : w // 2] = p
        planes.append(c.ravel())
    return np.concatenate([padded_y.ravel(), *planes])


@pytest.mark.parametrize("fmt", ["NV12", "YUV420", "YVU420"])
@pytest.mark.parametrize("stride", [640, 704])
def test_camera_buffers_become_exact_i420_whatever_the_format_and_row_padding(i420, fmt, stride):
    out = yuv420_to_i420(camera_buffer(i420, fmt, stride), fmt, 640, 360, stride)
    assert out.shape == (540, 640)
    assert np.array_equal(out, i420)


def test_an_unexpected_pixel_format_is_a_clear_error(i420):
    from appliance.sources.base import SourceError
    with pytest.raises(SourceError, match="delivered RGB888; expected YUV420 or NV12"):
        yuv420_to_i420(camera_buffer(i420, "NV12", 640), "RGB888", 640, 360, 640)


def test_a_sensor_timestamp_on_the_monotonic_clock_is_used_as_is():
    now = time.monotonic()
    assert frame_timestamp(int((now - 0.030) * 1e9), now) == pytest.approx(now - 0.030, abs=1e-6)


@pytest.mark.parametrize("offset_s", [-5.0, 3600.0])
def test_a_sensor_timestamp_on_another_clock_falls_back_to_the_capture_time(offset_s):
    now = time.monotonic()
    assert frame_timestamp(int((now + offset_s) * 1e9), now) == now  # future, or hours old
    assert frame_timestamp(None, now) == now


def test_error_messages_carry_the_libcamera_cause():
    try:
        try:
            raise RuntimeError("Failed to acquire camera: Device or resource busy")
        except RuntimeError as inner:
            raise RuntimeError("Camera __init__ sequence did not complete.") from inner
    except RuntimeError as e:
        assert error_chain(e) == ("Camera __init__ sequence did not complete.: "
                                  "Failed to acquire camera: Device or resource busy")


# -- auto-framing on the sensor (ScalerCrop) ------------------------------------------------------
def test_the_framing_canvas_is_the_largest_centred_area_with_the_outputs_aspect_ratio():
    from appliance.sources.picamera2 import crop_area
    # Camera Module 3 (16:9 sensor) for a 16:9 output: all of it.
    assert crop_area((0, 0, 4608, 2592), (1280, 720)) == (0, 0, 4608, 2592)
    # Camera Module 2 (4:3 sensor) for a 16:9 output: full width, centred band.
    assert crop_area((0, 0, 3280, 2464), (1280, 720)) == (0, 310, 3280, 1844)
    # A 4:3 output from a 16:9 sensor: full height, centred.
    assert crop_area((8, 0, 4608, 2592), (640, 480)) == (8 + 576, 0, 3456, 2592)


def test_crops_go_to_the_sensor_offset_by_the_canvas_and_come_back_as_views():
    from appliance.framing import Crop
    from appliance.sources.picamera2 import scaler_crop_for, view_from_scaler_crop
    area = (0, 310, 3280, 1844)
    rect = scaler_crop_for(Crop(100, 50, 1640, 922), area)
    assert rect == (100, 360, 1640, 922)
    assert view_from_scaler_crop(rect, area) == (100, 50, 1640, 922)
    assert view_from_scaler_crop(None, area) is None
