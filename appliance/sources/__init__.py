"""Frame sources, and the choice of one from a `--source` spec.

'auto' picks, in order: the Pi camera (any libcamera camera that is not a USB webcam), else a
V4L2 webcam, else the built-in demo. Source modules are imported only when chosen, so a PC
without picamera2 or a webcam still runs.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable

from appliance import v4l2_ioctl as k
from appliance.sources.base import Source, SourceError

log = logging.getLogger(__name__)

SPEC_HELP = "auto, demo, file:PATH, v4l2:/dev/videoN or picamera2[:CAMERA]"


# Video nodes on a Pi that are not webcams: the camera's own path (libcamera drives it), the
# ISP and codecs (memory-to-memory helpers), and our own UVC gadget (an output node).
NOT_WEBCAM_DRIVERS = frozenset({
    "unicam", "rp1-cfe", "bcm2835-isp", "pispbe", "bcm2835-codec", "rpivid", "rpi-hevc-dec",
    "g_uvc",
})
# libcamera Ids of USB cameras end in "-<vendor>:<product>"; those are V4L2 webcams to us.
_USB_CAMERA_ID = re.compile(r"-[0-9a-f]{4}:[0-9a-f]{4}$", re.IGNORECASE)


@dataclass(frozen=True)
class VideoDevice:
    path: str
    driver: str
    card: str
    bus_info: str
    caps: int  # the node's own capabilities (device_caps when the driver reports them)

    @property
    def is_webcam(self) -> bool:
        """A single-planar capture node that is not a codec, an ISP, the Pi camera or our gadget."""
        capture = bool(self.caps & k.V4L2_CAP_VIDEO_CAPTURE)
        m2m = bool(self.caps & (k.V4L2_CAP_VIDEO_M2M | k.V4L2_CAP_VIDEO_M2M_MPLANE))
        return capture and not m2m and self.driver not in NOT_WEBCAM_DRIVERS


def parse_capability(path: str, cap: k.v4l2_capability) -> VideoDevice:
    text = lambda b: b.decode("utf-8", "replace")  # noqa: E731  (ctypes char arrays stop at NUL)
    caps = cap.device_caps if cap.capabilities & k.V4L2_CAP_DEVICE_CAPS else cap.capabilities
    return VideoDevice(path, text(cap.driver), text(cap.card), text(cap.bus_info), caps)


def query_video_device(path: str) -> VideoDevice | None:
    """VIDIOC_QUERYCAP on one node; None when it cannot be opened or is not V4L2."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError:
        return None
    cap = k.v4l2_capability()
    try:
        k.ioctl(fd, k.VIDIOC_QUERYCAP, cap)
    except OSError:
        return None
    finally:
        os.close(fd)
    return parse_capability(path, cap)


def video_devices(dev_dir: str = "/dev") -> list[VideoDevice]:
    nodes = sorted(Path(dev_dir).glob("video*"), key=lambda p: (len(p.name), p.name))
    found = (query_video_device(str(p)) for p in nodes)
    return [d for d in found if d is not None]


def is_pi_camera(info: dict[str, Any]) -> bool:
    """A libcamera camera we drive with picamera2 (not a USB webcam, which V4L2 handles)."""
    cam_id = str(info.get("Id", ""))
    return not _USB_CAMERA_ID.search(cam_id) and "usb" not in cam_id.lower()


def libcamera_cameras() -> list[dict[str, Any]]:
    from appliance.sources.picamera2 import list_cameras
    return list_cameras()


def choose_auto(list_cameras: Callable[[], list[dict[str, Any]]] = libcamera_cameras,
                list_video_devices: Callable[[], list[VideoDevice]] = video_devices,
                ) -> tuple[str, str]:
    """(spec, reason) for the best source here: Pi camera, else a webcam, else the demo."""
    cameras = [c for c in list_cameras() if is_pi_camera(c)]
    if cameras:
        c = cameras[0]
        return (f"picamera2:{c['Id']}" if c.get("Num", 0) else "picamera2",
                f"libcamera camera {c.get('Model', '?')} ({c.get('Id')})")
    devices = list_video_devices()
    webcams = [d for d in devices if d.is_webcam]
    if webcams:
        d = webcams[0]
        return f"v4l2:{d.path}", f"V4L2 webcam {d.card!r} ({d.driver}) at {d.path}"
    skipped = ", ".join(f"{d.path} ({d.driver})" for d in devices) or "none"
    return "demo", f"no camera: libcamera lists none, no V4L2 webcam (video nodes: {skipped})"


def open_source(spec: str) -> Source:
    """The source for a `--source` spec; raises SourceError naming a bad spec."""
    spec = spec.strip()
    if spec == "auto":
        spec, reason = choose_auto()
        log.info("source: auto chose %s: %s", spec, reason)
    kind, _, arg = spec.partition(":")
    if kind == "demo" and not arg:
        from appliance.sources.demo import DemoSource
        return DemoSource()
    if kind == "file" and arg:
        from appliance.sources.file import FileSource
        return FileSource(arg)
    if kind == "v4l2" and arg:
        from appliance.sources.v4l2 import V4L2Source
        return V4L2Source(arg)
    if kind == "picamera2":
        from appliance.sources.picamera2 import Picamera2Source
        return Picamera2Source(int(arg) if arg.isdigit() else (arg or 0))
    raise SourceError(f"unknown source {spec!r}: expected {SPEC_HELP}")


__all__ = ["Source", "SourceError", "VideoDevice", "choose_auto", "open_source", "video_devices"]
