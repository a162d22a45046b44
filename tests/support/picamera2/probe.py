"""Runs INSIDE the picamera2 test rootfs (Python 3.13, libcamera virtual camera) against the
project source mounted at /opt/blurcam. Each scenario prints one JSON line (prefixed RESULT) for
the pytest side, which makes the assertions; arrays go to the output directory as .npz files.

usage: probe.py capture OUT_DIR FRAMES | framing OUT_DIR FRAMES | controls FRAMES | cycles N | nocamera | busy
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

sys.path.insert(0, "/opt/blurcam")
sys.path.insert(0, "/opt/blurcam/tests/support/picamera2")

import virtual_shim  # noqa: E402,F401  (test-only: must come before picamera2 is used)

import numpy as np  # noqa: E402

from appliance.sources import choose_auto, open_source  # noqa: E402
from appliance.sources.base import SourceError  # noqa: E402

MAIN = (1280, 720)
FPS = 30.0


def emit(result: dict) -> None:
    print("RESULT " + json.dumps(result), flush=True)


def process_usage() -> dict:
    fds = os.listdir("/proc/self/fd")
    targets = []
    for fd in fds:
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    with open("/proc/self/maps") as f:
        memfd_maps = sum(1 for line in f if "/memfd:" in line)
    return {"fds": len(targets), "fd_targets": sorted(targets), "memfds": sum(t.startswith("/memfd:") for t in targets),
            "memfd_maps": memfd_maps, "rss_kb": int(status["VmRSS"].split()[0]),
            "threads": threading.active_count()}


def capture(out_dir: str, count: int) -> None:
    from appliance.pipeline import FramePipeline
    from appliance.settings import Settings

    spec, reason = choose_auto()
    pipeline = FramePipeline(Settings(effect="blur", blur_strength=80))
    lores_size = pipeline.lores_size_for(*MAIN)
    source = open_source("auto")
    source.start(*MAIN, FPS, lores_size)
    frames = []
    try:
        for i in range(count):
            frame = source.read()
            returned_at = time.monotonic()
            t = time.perf_counter()
            processed = pipeline.process(frame)
            process_ms = (time.perf_counter() - t) * 1000
            frames.append({"sequence": frame.sequence, "timestamp": frame.timestamp,
                           "returned_at": returned_at, "process_ms": process_ms,
                           "yuv_shape": list(frame.yuv.shape), "lores_shape": list(frame.lores.shape),
                           "yuv_dtype": str(frame.yuv.dtype), "lores_dtype": str(frame.lores.dtype)})
            np.savez(os.path.join(out_dir, f"frame{i:03d}.npz"), yuv=frame.yuv, lores=frame.lores,
                     out=processed.yuv, alpha=processed.alpha_low)
        streams = dict(source._streams)
        hardware = sorted(source.hardware_controls)
        advertised = sorted(source._cam.camera_controls)
    finally:
        source.stop()
    emit({"auto_spec": spec, "auto_reason": reason, "source_name": source.name,
          "lores_size": list(lores_size), "streams": streams, "frames": frames,
          "hardware_controls": hardware, "advertised_controls": advertised})


def camera_controls(count: int) -> None:
    """The camera's own controls (exposure, white balance, anti-flicker, focus) set to manual
    values before and while the camera runs: what reaches libcamera, and that frames keep coming."""
    from appliance import controls
    from appliance.pipeline import FramePipeline
    from appliance.settings import Settings

    manual = {"exposure_mode": 1, "exposure_time": 100, "white_balance_auto": 0,
              "white_balance_temperature": 3200, "power_line_frequency": 1, "focus_auto": 0,
              "focus_position": 200}
    pipeline = FramePipeline(Settings())
    source = open_source("picamera2")
    source.set_controls({**controls.values_of(Settings()), **manual})
    source.start(*MAIN, FPS, pipeline.lores_size_for(*MAIN))
    try:
        before = [source.read().sequence for _ in range(count)]
        source.set_controls({**manual, "exposure_mode": 2, "focus_auto": 1, "power_line_frequency": 2})
        after = [source.read().sequence for _ in range(count)]
        advertised = dict(source._cam.camera_controls)
        sent = controls.libcamera_values(source._controls, advertised)
        hardware = sorted(source.hardware_controls)
    finally:
        source.stop()
    emit({"advertised_controls": sorted(advertised), "sent": sorted(sent), "hardware_controls": hardware,
          "frames_before": before, "frames_after": after})


def framing(out_dir: str, count: int) -> None:
    """Auto-framing on the camera, wired as the threaded pipeline wires it: on the sensor where
    the camera takes ScalerCrop, in software where it does not."""
    from appliance.pipeline import FramePipeline
    from appliance.settings import Settings

    pipeline = FramePipeline(Settings(effect="blur", framing="auto"))
    source = open_source("picamera2")
    source.start(*MAIN, FPS, pipeline.lores_size_for(*MAIN))
    pipeline.sensor_crop = source if source.crop_canvas else None
    views = []
    try:
        for _ in range(count):
            processed = pipeline.process(source.read())
            views.append(processed.frame.view)
        np.savez(os.path.join(out_dir, "framed.npz"), out=processed.yuv, alpha=processed.alpha_low)
        advertised = sorted(source._cam.camera_controls)
    finally:
        source.stop()
    emit({"advertised_controls": advertised, "crop_canvas": source.crop_canvas,
          "sensor_crop": pipeline.sensor_crop is not None, "views": views})


def cycles(n: int) -> None:
    from appliance.sources.picamera2 import Picamera2Source

    source = Picamera2Source()
    lores = (256, 144)

    def one_cycle() -> int:
        source.start(*MAIN, FPS, lores)
        try:
            return sum(source.read().sequence for _ in range(3))
        finally:
            source.stop()

    one_cycle()  # first use loads libcamera, its IPA and picamera2's lazily created state
    before = process_usage()
    t = time.perf_counter()
    for _ in range(n):
        one_cycle()
    elapsed = time.perf_counter() - t
    after = process_usage()
    during = None
    source.start(*MAIN, FPS, lores)
    try:
        source.read()
        during = process_usage()
    finally:
        source.stop()
    emit({"cycles": n, "before": before, "after": after, "while_streaming": during,
          "seconds_per_cycle": elapsed / n})


def nocamera() -> None:
    spec, reason = choose_auto()
    try:
        open_source("picamera2").start(*MAIN, FPS, (256, 144))
        error = None
    except SourceError as e:
        error = str(e)
    emit({"auto_spec": spec, "auto_reason": reason, "error": error})


def busy() -> None:
    from appliance.sources.picamera2 import Picamera2Source

    first, second = Picamera2Source(), Picamera2Source()
    first.start(*MAIN, FPS, (256, 144))
    try:
        first.read()
        try:
            second.start(*MAIN, FPS, (256, 144))
            error = None
            second.stop()
        except SourceError as e:
            error = str(e)
        still_reading = first.read().sequence
    finally:
        first.stop()
    second.start(*MAIN, FPS, (256, 144))  # once the first lets go, the camera is free again
    after_release = second.read().sequence
    second.stop()
    emit({"error": error, "first_still_reading": still_reading, "second_after_release": after_release})


def main(argv: list[str]) -> None:
    command = argv[0]
    if command == "capture":
        capture(argv[1], int(argv[2]))
    elif command == "framing":
        framing(argv[1], int(argv[2]))
    elif command == "controls":
        camera_controls(int(argv[1]))
    elif command == "cycles":
        cycles(int(argv[1]))
    elif command == "nocamera":
        nocamera()
    elif command == "busy":
        busy()
    else:
        raise SystemExit(f"unknown probe command {command!r}")


if __name__ == "__main__":
    # A hung camera must fail the test, not the CI job.
    threading.Timer(120, lambda: (print("probe: TIMEOUT", flush=True), os._exit(3))).start()
    main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(0)  # picamera2's camera-manager thread is not a daemon thread
