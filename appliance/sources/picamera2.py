"""Frames from a Raspberry Pi camera module through picamera2 (libcamera).

Two streams per request: `main` at the size the USB host committed, in YUV so frames reach the
JPEG encoder without an RGB round trip, and `lores` at the model's input size, scaled by the ISP
for free. The Pi's ISP gives YUV420 (I420) for both; libcamera's virtual camera (used by the
tests on a PC) only gives NV12, which is deinterleaved here. Colour space is sYCC (full-range
BT.601), what Frame and JPEG expect. Requests are copied out and released at once, so the camera
never runs out of buffers however slow the consumer is.
"""

from __future__ import annotations

import errno
import gc
import logging
import threading
import time
from typing import Any

import cv2
import numpy as np

from appliance import controls
from appliance.frame import Frame, i420_to_rgb
from appliance.framing import Crop
from appliance.sources.base import SourceError

log = logging.getLogger(__name__)

# A frame that takes longer than this is a dead camera, not a slow one.
READ_TIMEOUT_S = 3.0
# A sensor timestamp further than this from time.monotonic() is on another clock.
CLOCK_TOLERANCE_S = 1.0


def import_picamera2():
    """picamera2 and libcamera, or a SourceError saying how to get them."""
    try:
        import libcamera
        from picamera2 import Picamera2
    except ImportError as e:
        raise SourceError(f"picamera2 is not available ({e}); on Raspberry Pi OS install "
                          "python3-picamera2 and create the venv with --system-site-packages") from e
    return Picamera2, libcamera


def list_cameras() -> list[dict[str, Any]]:
    """The cameras libcamera sees (empty when picamera2 is missing)."""
    try:
        Picamera2, _ = import_picamera2()
    except SourceError:
        return []
    return list(Picamera2.global_camera_info())


def crop_area(scaler_crop_maximum: tuple[int, int, int, int], out_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The largest rectangle with the output's aspect ratio inside the area ScalerCrop can take
    (sensor pixels, x, y, w, h), centred as libcamera centres its own default crop: the canvas
    auto-framing crops from."""
    mx, my, mw, mh = scaler_crop_maximum
    ow, oh = out_size
    w, h = (mw, mw * oh // ow) if mw * oh <= mh * ow else (mh * ow // oh, mh)
    w, h = w & ~1, h & ~1
    return mx + (mw - w) // 2, my + (mh - h) // 2, w, h


def scaler_crop_for(crop: Crop, area: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """A crop of the canvas (canvas pixels) as a ScalerCrop rectangle (sensor pixels)."""
    return area[0] + crop.x, area[1] + crop.y, crop.w, crop.h


def view_from_scaler_crop(rect, area: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    """The crop a frame's metadata says was applied (the ISP may have adjusted what we asked
    for), in canvas pixels; None when the metadata has none."""
    if not rect:
        return None
    x, y, w, h = (int(v) for v in rect)
    return x - area[0], y - area[1], w, h


def yuv420_to_i420(buf: np.ndarray, fmt: str, width: int, height: int, stride: int,
                   out: np.ndarray | None = None) -> np.ndarray:
    """A camera buffer (flat bytes, rows `stride` apart) in YUV420 or NV12 -> packed I420.

    NV12 has one interleaved UV plane (stride bytes per row); I420 has separate U and V planes
    (stride/2 per row). Padding beyond `width` is dropped.
    """
    w, h = width, height
    if out is None:
        out = np.empty((h * 3 // 2, w), np.uint8)
    flat_out = out.reshape(-1)
    q = (h // 2) * (w // 2)
    y = buf[: stride * h].reshape(h, stride)[:, :w]
    flat_out[: w * h].reshape(h, w)[:] = y
    u_out = flat_out[w * h: w * h + q].reshape(h // 2, w // 2)
    v_out = flat_out[w * h + q: w * h + 2 * q].reshape(h // 2, w // 2)
    if fmt == "NV12":
        uv = buf[stride * h: stride * h + stride * (h // 2)].reshape(h // 2, stride)[:, :w]
        u_out[:] = uv[:, 0::2]
        v_out[:] = uv[:, 1::2]
    elif fmt in ("YUV420", "YVU420"):
        cs, ch = stride // 2, h // 2
        first = buf[stride * h: stride * h + cs * ch].reshape(ch, cs)[:, : w // 2]
        second = buf[stride * h + cs * ch: stride * h + 2 * cs * ch].reshape(ch, cs)[:, : w // 2]
        u_out[:], v_out[:] = (first, second) if fmt == "YUV420" else (second, first)
    else:
        raise SourceError(f"picamera2 delivered {fmt}; expected YUV420 or NV12")
    return out


class Picamera2Source:
    """The Pi camera (or any libcamera camera) as a Source."""

    def __init__(self, camera: int | str = 0, buffer_count: int = 4):
        self.camera = camera  # index into libcamera's camera list, or a camera Id
        self.name = "picamera2" if camera == 0 else f"picamera2:{camera}"
        self.buffer_count = buffer_count
        self.hardware_controls: frozenset[str] = frozenset()
        # Auto-framing crops on the sensor where the camera takes ScalerCrop (a Pi's ISP does;
        # libcamera's virtual camera does not): the canvas size, or None.
        self.crop_canvas: tuple[int, int] | None = None
        self._crop_area: tuple[int, int, int, int] | None = None
        self._scaler_crop: tuple[int, int, int, int] | None = None
        self._cam = None
        self._controls: dict[str, int] = {}
        self._lock = threading.Lock()  # start/stop/set_controls against each other
        self._seq = 0
        self._streams: dict[str, tuple[str, int, int, int]] = {}

    # -- opening ----------------------------------------------------------------------------
    def _camera_index(self, Picamera2) -> int:
        cameras = list(Picamera2.global_camera_info())
        if not cameras:
            raise SourceError("no camera found: libcamera lists no cameras (check the camera's "
                              "ribbon cable and that `rpicam-hello --list-cameras` shows it)")
        if isinstance(self.camera, int):
            if not 0 <= self.camera < len(cameras):
                raise SourceError(f"camera {self.camera} does not exist: libcamera lists "
                                  f"{len(cameras)} camera(s)")
            return self.camera
        for info in cameras:
            if info.get("Id") == self.camera:
                return info["Num"]
        raise SourceError(f"camera {self.camera!r} not found; libcamera lists "
                          f"{[c.get('Id') for c in cameras]}")

    def _open(self, Picamera2):
        index = self._camera_index(Picamera2)
        try:
            return Picamera2(index)
        except Exception as e:  # picamera2 wraps libcamera's error in a generic RuntimeError
            text = error_chain(e)
            if "busy" in text.lower() or f"errno {errno.EBUSY}" in text.lower():
                raise SourceError(f"camera {index} is busy: another process is using it "
                                  f"(stop it, e.g. rpicam-hello or another blurcam) [{text}]") from e
            raise SourceError(f"cannot open camera {index}: {text}") from e

    # -- Source protocol --------------------------------------------------------------------
    def start(self, width: int, height: int, fps: float, lores_size: tuple[int, int]) -> None:
        Picamera2, libcamera = import_picamera2()
        with self._lock:
            if self._cam is not None:
                self._stop_locked()
            cam = self._open(Picamera2)
            try:
                self._configure(cam, libcamera, width, height, fps, lores_size)
                cam.start()
            except SourceError:
                cam.close()
                raise
            except Exception as e:
                cam.close()
                raise SourceError(f"camera cannot stream {width}x{height} at {fps:g} fps with a "
                                  f"{lores_size[0]}x{lores_size[1]} lores stream: {e}") from e
            self._cam = cam
            self._want = (width, height, lores_size)
            self._seq = 0
        log.info("picamera2: %s started, main %s, lores %s, controls %s",
                 self.name, self._streams["main"], self._streams["lores"], sorted(self.hardware_controls))

    def _configure(self, cam, libcamera, width: int, height: int, fps: float,
                   lores_size: tuple[int, int]) -> None:
        advertised = cam.camera_controls
        wanted: dict[str, Any] = controls.libcamera_values(self._controls, advertised)
        if "FrameDurationLimits" in advertised:
            frame_us = int(round(1_000_000 / fps))
            wanted["FrameDurationLimits"] = (frame_us, frame_us)
        config = cam.create_video_configuration(
            main={"size": (width, height), "format": "YUV420"},
            lores={"size": tuple(lores_size), "format": "YUV420"},
            colour_space=libcamera.ColorSpace.Sycc(),
            buffer_count=self.buffer_count,
            queue=False,  # wait for a fresh frame rather than hand out one already queued
            controls=wanted,
            display=None, encode=None)
        cam.configure(config)
        self._streams = {}
        for name in ("main", "lores"):
            c = cam.camera_config[name]
            self._streams[name] = (c["format"], c["size"][0], c["size"][1], c["stride"])
        if self._streams["main"][1:3] != (width, height):
            raise SourceError(f"camera gives {self._streams['main'][1]}x{self._streams['main'][2]} "
                              f"for a requested {width}x{height} main stream")
        self.hardware_controls = controls.applied_by_camera(advertised)
        maximum = cam.camera_properties.get("ScalerCropMaximum")
        if "ScalerCrop" in advertised and maximum:
            self._crop_area = crop_area(tuple(maximum), (width, height))
            self.crop_canvas = self._crop_area[2:]
        else:
            self._crop_area = self.crop_canvas = None
        self._scaler_crop = None

    def read(self) -> Frame:
        cam = self._cam
        if cam is None:
            raise SourceError(f"{self.name}: read() before start()")
        try:
            request = cam.capture_request(wait=READ_TIMEOUT_S)
        except TimeoutError as e:
            raise SourceError(f"{self.name}: no frame from the camera in {READ_TIMEOUT_S:g} s") from e
        except Exception as e:
            if self._cam is None:
                raise SourceError(f"{self.name}: stopped while reading") from e
            raise SourceError(f"{self.name}: capture failed: {e}") from e
        captured_at = time.monotonic()
        try:
            main = self._i420(request, "main")
            lores = self._i420(request, "lores")
            metadata = request.get_metadata()
        finally:
            request.release()  # hand the buffers straight back to the camera
        self._seq += 1
        area = self._crop_area
        return Frame(yuv=main, lores=self._lores_rgb(lores), sequence=self._seq,
                     timestamp=frame_timestamp(metadata.get("SensorTimestamp"), captured_at),
                     view=view_from_scaler_crop(metadata.get("ScalerCrop"), area) if area else None)

    def stop(self) -> None:
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            try:
                cam.stop()
                cam.cancel_all_and_flush()  # wakes a read() still waiting for a frame
            finally:
                cam.close()  # releases the camera so another process (or start()) can take it
            # picamera2's event thread leaves its epoll selector in a reference cycle; collect
            # it now rather than let every host stop/start hold on to another fd until then.
            gc.collect()
            log.info("picamera2: %s stopped", self.name)

    def set_crop(self, crop: Crop) -> None:
        """Auto-framing's crop, applied by the ISP from the next frames on (no restart)."""
        with self._lock:
            if self._cam is None or self._crop_area is None:
                return
            rect = scaler_crop_for(crop, self._crop_area)
            if rect != self._scaler_crop:  # a held crop costs nothing per frame
                self._cam.set_controls({"ScalerCrop": rect})
                self._scaler_crop = rect

    def set_controls(self, values: dict[str, int]) -> None:
        with self._lock:
            self._controls.update(values)
            if self._cam is not None:
                mapped = controls.libcamera_values(self._controls, self._cam.camera_controls)
                if mapped:
                    self._cam.set_controls(mapped)

    # -- conversions ------------------------------------------------------------------------
    def _i420(self, request, name: str) -> np.ndarray:
        fmt, w, h, stride = self._streams[name]
        return yuv420_to_i420(request.make_buffer(name), fmt, w, h, stride)

    def _lores_rgb(self, lores_i420: np.ndarray) -> np.ndarray:
        rgb = i420_to_rgb(lores_i420)
        want = tuple(self._want[2])
        if (rgb.shape[1], rgb.shape[0]) != want:  # the camera rounded the lores size
            rgb = cv2.resize(rgb, want, interpolation=cv2.INTER_AREA)
        return rgb


def error_chain(e: BaseException | None) -> str:
    """An exception's message with the causes behind it ("Camera __init__ ... : ... busy")."""
    parts: list[str] = []
    while e is not None and len(parts) < 5:
        if str(e) and str(e) not in parts:
            parts.append(str(e))
        e = e.__cause__ or e.__context__
    return ": ".join(parts)


def frame_timestamp(sensor_ns: int | None, captured_at: float) -> float:
    """The sensor's start-of-exposure time on the time.monotonic() scale when it is on that clock
    (libcamera's Pi pipeline uses CLOCK_MONOTONIC ns), else the capture time."""
    if sensor_ns:
        sensor_s = sensor_ns / 1e9
        if 0.0 <= captured_at - sensor_s < CLOCK_TOLERANCE_S:
            return sensor_s
    return captured_at
