"""Frames travel as full-range I420; the encoders turn them into what a UVC host receives."""

from __future__ import annotations

import cv2
import numpy as np
import simplejpeg

from appliance.encode import MjpegEncoder, YuyvEncoder, yuyv_to_i420
from appliance.frame import i420_to_rgb, rgb_to_i420, split_i420


def test_rgb_survives_the_trip_through_i420_up_to_chroma_subsampling(portrait):
    rgb, _ = portrait
    back = i420_to_rgb(rgb_to_i420(rgb))
    assert np.abs(back.astype(int) - rgb).mean() < 3


def test_i420_is_full_range_like_jpeg_expects():
    black, white = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)
    assert split_i420(rgb_to_i420(black))[0].max() == 0
    assert split_i420(rgb_to_i420(white))[0].min() == 255


def test_mjpeg_decodes_to_the_same_picture(portrait):
    rgb, _ = portrait
    data = MjpegEncoder(90).encode(rgb_to_i420(rgb))
    assert data[:2] == b"\xff\xd8"
    decoded = simplejpeg.decode_jpeg(data, colorspace="RGB")
    assert decoded.shape == rgb.shape
    assert np.abs(decoded.astype(int) - rgb).mean() < 4


def test_yuyv_is_packed_422_of_exactly_width_times_height_times_two(portrait):
    rgb, _ = portrait
    yuv = rgb_to_i420(rgb)
    data = YuyvEncoder().encode(yuv)
    assert len(data) == 1280 * 720 * 2
    back = yuyv_to_i420(data, 1280, 720)
    assert np.abs(back.astype(int) - yuv).max() <= 1  # video range keeps 220 of 256 levels


def test_a_host_decoding_yuyv_as_bt601_video_range_sees_the_source_colours(portrait):
    # How uvcvideo's users (OpenCV, GStreamer, Windows) read uncompressed UVC video.
    rgb, _ = portrait
    data = YuyvEncoder().encode(rgb_to_i420(rgb))
    packed = np.frombuffer(data, np.uint8).reshape(720, 1280, 2)
    host = cv2.cvtColor(packed, cv2.COLOR_YUV2RGB_YUYV)
    assert np.abs(host.astype(int) - rgb).mean() < 4
    # Unscaled full-range levels would stretch the contrast by 255/219 (16 %).
    assert abs(host.std() / rgb.std() - 1) < 0.03
    assert packed[..., 0].min() >= 16 and packed[..., 0].max() <= 235
