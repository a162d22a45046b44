"""Choosing the frame source: `--source` specs and what 'auto' picks (runs in the project venv).

Real where this machine allows: the real /dev, real ioctls on non-V4L2 nodes, and the real
libcamera probe (picamera2 is not installed in the project venv, as on a PC). Pi and webcam nodes
cannot exist here, so their VIDIOC_QUERYCAP answers are the values those drivers report, packed
into the kernel's struct exactly as the ioctl returns it.
"""

from __future__ import annotations

import importlib.util
import os
import struct

import pytest

from appliance import v4l2_ioctl as k
from appliance.sources import VideoDevice, choose_auto, open_source, parse_capability, query_video_device, video_devices
from appliance.sources.base import SourceError

CAPTURE, OUTPUT, STREAMING, EXT_PIX, META, M2M_MPLANE = 0x1, 0x2, 0x04000000, 0x00200000, 0x00800000, 0x4000
DEVICE_CAPS = 0x80000000


def querycap(driver: str, card: str, bus: str, device_caps: int) -> bytes:
    """struct v4l2_capability as VIDIOC_QUERYCAP fills it."""
    return struct.pack("=16s32s32sIII12x", driver.encode(), card.encode(), bus.encode(),
                       0x060100, device_caps | DEVICE_CAPS | CAPTURE | OUTPUT, device_caps)


# (path, driver, card, bus, device_caps) as the drivers report them.
WEBCAM = ("/dev/video0", "uvcvideo", "HD Pro Webcam C920", "usb-0000:01:00.0-1.2", CAPTURE | STREAMING | EXT_PIX)
WEBCAM_METADATA = ("/dev/video1", "uvcvideo", "HD Pro Webcam C920", "usb-0000:01:00.0-1.2", META | STREAMING | EXT_PIX)
UVC_GADGET = ("/dev/video2", "g_uvc", "fe980000.usb", "gadget.0", OUTPUT | STREAMING | EXT_PIX)
PI_CODEC = ("/dev/video10", "bcm2835-codec", "bcm2835-codec-decode", "platform:bcm2835-codec", M2M_MPLANE | STREAMING | EXT_PIX)
PI_ISP_OUTPUT = ("/dev/video14", "bcm2835-isp", "bcm2835-isp", "platform:bcm2835-isp", CAPTURE | STREAMING | EXT_PIX)
PI_UNICAM = ("/dev/video0", "unicam", "unicam", "platform:fe801000.csi", CAPTURE | META | STREAMING | EXT_PIX)
PI5_CFE = ("/dev/video0", "rp1-cfe", "rp1-cfe", "platform:1f00128000.csi", CAPTURE | META | STREAMING | EXT_PIX)
PI_NODES = [PI_UNICAM, PI_CODEC, PI_ISP_OUTPUT, PI5_CFE, UVC_GADGET]

PI_CAMERA = {"Model": "imx708", "Location": 2, "Rotation": 180, "Num": 0,
             "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a"}
USB_CAMERA_IN_LIBCAMERA = {"Model": "HD Pro Webcam C920", "Location": 2, "Rotation": 0, "Num": 0,
                           "Id": "\\_SB_.PCI0.XHC_.RHUB.HS07-7:1.0-046d:082d"}


def device(node: tuple) -> VideoDevice:
    path, driver, card, bus, caps = node
    return parse_capability(path, k.v4l2_capability.from_buffer_copy(querycap(driver, card, bus, caps)))


def test_querycap_is_decoded_into_driver_card_and_the_nodes_own_capabilities():
    d = device(WEBCAM)
    assert (d.path, d.driver, d.card, d.bus_info) == WEBCAM[:4]
    assert d.caps == CAPTURE | STREAMING | EXT_PIX  # device_caps, not the whole device's capabilities


def test_a_usb_webcam_is_a_webcam_but_its_metadata_node_is_not():
    assert device(WEBCAM).is_webcam
    assert not device(WEBCAM_METADATA).is_webcam


@pytest.mark.parametrize("node", PI_NODES, ids=[n[1] for n in PI_NODES])
def test_pi_camera_isp_codec_and_uvc_gadget_nodes_are_not_webcams(node):
    assert not device(node).is_webcam


def test_auto_prefers_the_pi_camera_over_a_webcam():
    spec, reason = choose_auto(lambda: [PI_CAMERA], lambda: [device(WEBCAM)])
    assert spec == "picamera2"
    assert "imx708" in reason


def test_auto_takes_the_webcam_when_there_is_no_pi_camera_skipping_pi_and_gadget_nodes():
    nodes = [device(n) for n in (PI_UNICAM, PI_CODEC, PI_ISP_OUTPUT, UVC_GADGET, WEBCAM_METADATA)]
    nodes.append(device(("/dev/video3",) + WEBCAM[1:]))
    spec, reason = choose_auto(lambda: [], lambda: nodes)
    assert spec == "v4l2:/dev/video3"
    assert "HD Pro Webcam C920" in reason


def test_auto_leaves_usb_cameras_that_libcamera_lists_to_v4l2():
    spec, _ = choose_auto(lambda: [USB_CAMERA_IN_LIBCAMERA], lambda: [device(WEBCAM)])
    assert spec == "v4l2:/dev/video0"


def test_auto_falls_back_to_the_demo_and_names_the_nodes_it_skipped():
    spec, reason = choose_auto(lambda: [], lambda: [device(n) for n in PI_NODES])
    assert spec == "demo"
    assert "/dev/video10 (bcm2835-codec)" in reason and "/dev/video2 (g_uvc)" in reason


def test_a_second_libcamera_camera_is_chosen_by_its_id():
    second = {**PI_CAMERA, "Num": 1, "Id": "/base/soc/i2c0mux/i2c@0/imx477@1a"}
    spec, _ = choose_auto(lambda: [second], lambda: [])
    assert spec == "picamera2:/base/soc/i2c0mux/i2c@0/imx477@1a"


def test_on_this_machine_auto_chooses_the_demo_because_it_has_no_camera():
    # Real probes: libcamera (picamera2 is not installed in this venv) and this machine's /dev.
    if any(d.is_webcam for d in video_devices()):
        pytest.skip("this machine has a webcam")
    spec, reason = choose_auto()
    assert spec == "demo"
    assert "libcamera lists none" in reason


def test_nodes_that_are_not_v4l2_devices_are_ignored(tmp_path):
    os.symlink("/dev/null", tmp_path / "video0")  # a real character device, ioctl says ENOTTY
    (tmp_path / "video1").write_bytes(b"")        # a plain file
    assert query_video_device("/dev/null") is None
    assert query_video_device(str(tmp_path / "video9")) is None  # does not exist
    assert video_devices(str(tmp_path)) == []


def test_open_source_builds_each_kind_of_source(tmp_path):
    from appliance.sources.demo import DemoSource
    from appliance.sources.picamera2 import Picamera2Source
    from appliance.sources.v4l2 import V4L2Source

    assert isinstance(open_source("demo"), DemoSource)
    assert isinstance(open_source("v4l2:/dev/video7"), V4L2Source)
    assert open_source("v4l2:/dev/video7").device == "/dev/video7"
    cam = open_source("picamera2")
    assert isinstance(cam, Picamera2Source) and cam.camera == 0 and cam.name == "picamera2"
    assert open_source("picamera2:1").camera == 1
    assert open_source("picamera2:/base/soc/i2c0mux/i2c@1/imx708@1a").camera == PI_CAMERA["Id"]


@pytest.mark.parametrize("spec", ["webcam", "v4l2", "v4l2:", "file:", "demo:3", ""])
def test_a_bad_source_spec_is_a_clear_error(spec):
    with pytest.raises(SourceError, match="unknown source .* expected auto, demo, file:PATH"):
        open_source(spec)


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="picamera2 is installed")
def test_the_picamera2_source_without_picamera2_says_how_to_get_it():
    with pytest.raises(SourceError, match="picamera2 is not available .* python3-picamera2"):
        open_source("picamera2").start(1280, 720, 30, (256, 144))
