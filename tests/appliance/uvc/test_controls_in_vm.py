"""The host's sliders: every image control of appliance/controls.py, Zoom (Absolute) and
Pan/Tilt (Absolute) included, seen and set by the Linux host driver on a kernel that lets a
gadget advertise them (6.3 and later: Debian trixie's 6.12, the generation Raspberry Pi OS ships).

One VM run on trixie's stock kernel with our dummy_hcd_iso built for it (in a trixie build root,
see tests/support/vm/dummy_hcd_iso/build.py): our configfs gadget and the real daemon (demo
camera) on the device side, uvcvideo and v4l2-ctl on the host side. It runs only the steps of
tests/support/vm/uvc_guest.py that controls need, plus one frame streamed with a zoomed and
panned crop; test_uvc_in_vm.py streams everything else on the default (this machine's) kernel.
A failing module build fails these tests; it never skips them.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance import controls
from appliance.sources.demo import BACKGROUNDS, render_background
from tests.support import capabilities
from tests.support.vm import uvc_run, vmlib
from tests.support.vm.dummy_hcd_iso import build as iso_module
from tests.support.vm.uvc_run import assert_step_ok

pytestmark = pytest.mark.vm

SUITE = "trixie"
RUNS = vmlib.CACHE / "runs-controls"
GUEST_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "configfs", "libcomposite", "usb_f_uvc",
                 "uvcvideo")
STEPS = "gadget_up_in_process,daemon_start,enumerate,host_reprobe,camera_controls,host_crop,daemon_stop,gadget_down"
CPU_MODEL = "Nehalem"  # as test_uvc_in_vm.py: TCG emulates AVX slowly
VM_TIMEOUT_S = 3600  # a guard against a hung VM, not a budget
# v4l2-ctl lists menus with min/max/default (menu indices, no step) and booleans with a default only.
MENUS = {"exposure_mode", "power_line_frequency"}
BOOLEANS = {"white_balance_auto", "focus_auto"}
# uvcvideo shows the UVC exposure mode bitmap as V4L2's auto_exposure menu (uvc_ctrl.c):
# UVC 2 (auto) is menu entry 0 "Auto Mode", UVC 1 (manual) entry 1 "Manual Mode".
HOST_EXPOSURE_MENU = {2: 0, 1: 1}


def _skip_reason() -> str | None:
    reason = vmlib.unavailable()
    if reason is None and iso_module.missing_tools(SUITE):
        reason = (f"missing Debian packages: {' '.join(iso_module.missing_tools(SUITE))} "
                  "(tools/system-deps.sh installs them)")
    return reason


@pytest.fixture(scope="module")
def vm() -> dict:
    earlier = os.environ.get("BLURCAM_VM_CONTROLS_RESULTS")  # developing these tests: judge a run
    if earlier:
        return load_results(Path(earlier), None)
    capabilities.require(_skip_reason())
    module = uvc_run.iso_module_or_fail(SUITE)
    run_dir = uvc_run.prepare_run(RUNS, {"BLURCAM_VM_STEPS": STEPS})
    started = time.monotonic()
    vmlib.run_vm(run_dir / "guest.sh", run_dir, timeout=VM_TIMEOUT_S, modules=GUEST_MODULES,
                 extra_modules=(module,), cpu_model=CPU_MODEL, suite=SUITE)
    return load_results(run_dir, time.monotonic() - started)


def load_results(run_dir: Path, elapsed: float | None) -> dict:
    try:
        results = vmlib.read_results(run_dir)
    except vmlib.VmError as exc:
        pytest.fail(str(exc))
    print(f"VM run {elapsed or 0:.0f} s, kernel {results.get('kernel')}")
    print("uvcvideo's first probe:", results.get("probe_errors") or "no errors")
    print(results.get("host_controls_output", ""))
    print(json.dumps(results.get("camera_controls"), indent=1))
    return results


def uvc_rows() -> list[controls.ImageControl]:
    return [row for row in controls.CONTROLS if row.uvc is not None]


def test_the_vm_booted_a_kernel_that_lets_a_gadget_advertise_its_controls(vm):
    major, minor = (int(x) for x in vm["kernel"].split(".")[:2])
    assert (major, minor) >= (6, 3), vm["kernel"]
    for step in STEPS.split(","):
        assert_step_ok(vm, step)
    assert vm["gadget_up"][0] == 0, vm["gadget_up"]


def test_the_host_lists_every_image_control_with_our_range(vm):
    seen = vm["camera_controls"]
    assert sorted(seen) == sorted(row.name for row in uvc_rows())
    unlisted = [name for name, c in seen.items() if not c["listed"]]
    assert unlisted == [], f"the host does not list {unlisted}"
    for row in uvc_rows():
        host = seen[row.name]["host"]
        if row.name == "exposure_mode":
            assert host["default"] == HOST_EXPOSURE_MENU[row.default], host
        elif row.name in BOOLEANS:
            assert (row.minimum, row.maximum, host["default"]) == (0, 1, row.default), (row.name, host)
        else:
            assert (host["min"], host["max"], host["default"]) == (row.minimum, row.maximum, row.default), \
                (row.name, host)
        if row.name not in MENUS | BOOLEANS:
            assert host["step"] == row.uvc.resolution, (row.name, host)


def test_zoom_and_pan_tilt_from_the_host_reach_the_daemon_and_read_back(vm):
    seen = vm["camera_controls"]
    for name, host_name in (("zoom", "zoom_absolute"), ("pan", "pan_absolute"), ("tilt", "tilt_absolute")):
        c = seen[name]
        assert c["listed"], f"the host does not list {host_name}"
        assert c["set_error"] is None, (name, c["set_error"])
        assert c["daemon"] == c["set"], f"the host set {name} to {c['set']}, the daemon has {c['daemon']}"
        assert c["host_reads"] == f"{host_name}: {c['set']}", c["host_reads"]


def test_every_control_set_on_the_host_reaches_the_daemon_and_reads_back(vm):
    """Each set value (the host's exposure menu entry 1 is UVC's manual mode 1, our value 1) is in
    the daemon's settings, and the host reads it back (menus as "name: 1 (Manual Mode)")."""
    for name, c in vm["camera_controls"].items():
        assert c["listed"], f"the host does not list {name}"
        assert c["set_error"] is None, (name, c["set_error"])
        assert c["daemon"] == c["set"], f"the host set {name} to {c['set']}, the daemon has {c['daemon']}"
        read = re.fullmatch(r"\w+: (-?\d+)( \(.*\))?", c["host_reads"] or "")
        assert read and int(read.group(1)) == c["set"], (name, c["host_reads"])


def _difference(frame: np.ndarray, view: np.ndarray) -> float:
    """Median absolute difference per pixel (the moving person covers well under half the picture)."""
    return float(np.median(np.abs(frame.astype(np.int16) - view.astype(np.int16)).max(axis=2)))


def view_of(width: int, height: int, zoom: int, pan: int, tilt: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the part of the picture the controls ask for, worked out here from what
    they mean (not with the product's framing.manual_crop): zoom in hundredths of magnification,
    pan and tilt from -travel (the left/top edge) to +travel (the right/bottom edge)."""
    travel = controls.BY_NAME["pan"].maximum
    w, h = width * 100 / zoom, height * 100 / zoom
    x = (width - w) / 2 * (1 + pan / travel)
    y = (height - h) / 2 * (1 + tilt / travel)
    return round(x), round(y), round(w), round(h)


def test_a_streamed_frame_shows_the_crop_the_host_asked_for(vm):
    """The host's zoom 2x, pan right and tilt up: the picture it receives is that part of the demo
    room, not the full view nor the mirrored crop."""
    assert_step_ok(vm, "host_crop")
    crop = vm["host_crop"]
    assert "skipped" not in crop, crop["skipped"]
    assert crop["settings"] == {**crop["set"], "framing": "off", "effect": "none"}, crop["settings"]
    frames = crop["stream"]["frames"]
    assert len(frames) == 1 and frames[0]["error"] == 0, frames
    path = Path(vm["run_dir"]) / "frames" / "host-crop" / frames[0]["file"]
    bgr = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert bgr is not None, f"{path} is not a decodable JPEG"
    got = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = got.shape[:2]
    zoom, pan, tilt = crop["set"]["zoom"], crop["set"]["pan"], crop["set"]["tilt"]
    candidates = {"asked": view_of(w, h, zoom, pan, tilt), "full view": view_of(w, h, 100, 0, 0),
                  "mirrored": view_of(w, h, zoom, -pan, -tilt)}
    scores: dict[str, float] = {}
    for name, (x, y, cw, ch) in candidates.items():
        for kind in BACKGROUNDS:  # the demo changes rooms every scene: whichever it showed
            room = render_background(kind, w, h)[y:y + ch, x:x + cw]
            view = cv2.resize(room, (w, h), interpolation=cv2.INTER_LINEAR)
            scores[name] = min(scores.get(name, 255.0), _difference(got, view))
    print("median difference to each view:", scores)
    assert scores["asked"] < 20, scores
    assert scores["asked"] * 2 < min(scores["full view"], scores["mirrored"]), scores
