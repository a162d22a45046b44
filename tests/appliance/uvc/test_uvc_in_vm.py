"""Frames reach the host: the webcam against the real Linux host driver, in a QEMU VM.

One VM run (tests/support/vm/uvc_guest.py, several minutes under TCG) does everything; the tests
below judge what it recorded. In the VM, dummy_hcd_iso (our isochronous patch to dummy_hcd, built
against the VM's own Debian kernel) joins the device side (our configfs gadget and the real
daemon on the demo camera) to the host side (uvcvideo, v4l2-compliance, GStreamer and our own V4L2
client) inside one kernel. A failing module build fails these tests; it never skips them.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.frame import frame_from_rgb
from appliance.pipeline import FramePipeline
from appliance.selftest import detail, judged_regions, psnr
from appliance.settings import Settings
from appliance.sources.demo import SCENE_SECONDS, STILL_SECONDS, DemoSource
from appliance.uvc.formats import fps_from_interval, offered_formats
from tests.support import capabilities
from tests.support.vm import usbmon, uvc_run, vmlib
from tests.support.vm.uvc_run import assert_step_ok

pytestmark = pytest.mark.vm

RUNS = vmlib.CACHE / "runs"
SUMMARY = vmlib.CACHE / "last-uvc-summary.txt"
# What the guest loads: the kernel's own modules, then ours (dummy_hcd_iso) after udc-core.
GUEST_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "configfs", "libcomposite", "usb_f_uvc",
                 "usb_f_ncm", "uvcvideo", "usbmon")
# TCG emulates AVX slowly: numpy, OpenCV and the model run several times faster on an SSE4.2 CPU.
CPU_MODEL = "Nehalem"
VM_TIMEOUT_S = 3 * 3600  # a guard against a hung VM, not a budget: the run takes minutes
STREAMS = (("mjpeg", 1280, 720), ("mjpeg", 1920, 1080), ("yuyv", 640, 480), ("yuyv", 640, 360))


@pytest.fixture(scope="module")
def vm() -> dict:
    earlier = os.environ.get("BLURCAM_VM_RESULTS")  # developing these tests: judge a finished run
    if earlier:
        return load_results(Path(earlier), None)
    capabilities.require(vmlib.unavailable())  # the module's build tools: checked by its build
    module = uvc_run.iso_module_or_fail()
    # BLURCAM_VM_* variables (step selection, cycle count: development knobs) reach the guest.
    knobs = {name: value for name, value in os.environ.items() if name.startswith("BLURCAM_VM_")}
    run_dir = uvc_run.prepare_run(RUNS, knobs)
    started = time.monotonic()
    vmlib.run_vm(run_dir / "guest.sh", run_dir, timeout=VM_TIMEOUT_S, modules=GUEST_MODULES,
                 extra_modules=(module,), cpu_model=CPU_MODEL)
    return load_results(run_dir, time.monotonic() - started)


def load_results(run_dir: Path, elapsed: float | None) -> dict:
    try:
        results = vmlib.read_results(run_dir)
    except vmlib.VmError as exc:
        pytest.fail(str(exc))
    results["vm_seconds"] = round(elapsed or 0.0, 1)
    SUMMARY.write_text(summary(results))
    print(SUMMARY.read_text())
    return results


# --- what the host received -----------------------------------------------------------------

def stream_of(vm: dict, encoding: str, width: int, height: int) -> dict:
    return next(s for s in vm["streams"] if s["format"] == f"{encoding} {width}x{height}")


def decode(path: Path, encoding: str, width: int, height: int) -> np.ndarray:
    """A received frame as RGB, decoded the way a host application would."""
    data = path.read_bytes()
    if encoding == "mjpeg":
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert bgr is not None, f"{path} is not a decodable JPEG"
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    assert len(data) == width * height * 2, f"{path}: {len(data)} bytes is not YUYV {width}x{height}"
    return cv2.cvtColor(np.frombuffer(data, np.uint8).reshape(height, width, 2), cv2.COLOR_YUV2RGB_YUYV)


def fps(frames: list[dict]) -> float:
    """Frames per second between the first and the last frame the host dequeued."""
    span = frames[-1]["dequeued_at"] - frames[0]["dequeued_at"]
    return (len(frames) - 1) / span if span > 0 else 0.0


def demo_truth(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The demo scene (picture, true person mask, its time) that `rgb` shows: the demo's clock
    is not sent along, so the time is found by matching, first coarsely on small pictures, then
    finely at full size by the person's own pixels."""
    h, w = rgb.shape[:2]
    small_size = (96, round(96 * h / w))
    small = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), small_size, interpolation=cv2.INTER_AREA)
    demo = DemoSource(paced=False)
    demo.start(w, h, 30, (256, 256))
    moving = SCENE_SECONDS - STILL_SECONDS
    candidates = [scene * SCENE_SECONDS + STILL_SECONDS + m
                  for scene in range(3) for m in np.arange(0.0, moving, 0.05)]

    def coarse(t: float) -> float:
        picture = cv2.resize(cv2.cvtColor(demo.render(t), cv2.COLOR_RGB2GRAY), small_size,
                             interpolation=cv2.INTER_AREA)
        return float(np.abs(picture.astype(np.float32) - small).mean())

    best = min(candidates, key=coarse)

    def fine(t: float) -> float:
        picture, truth = demo.render_with_truth(t)
        return psnr(picture, rgb, truth > 0.99)

    # The person moves up to ~0.16 frame widths a second (300 px/s at 1080p) and is placed on
    # whole pixels: a 5 ms step can miss the frame's position by a pixel, which took 9 dB off the
    # person's fine detail at 1080p. So the last pass steps 0.5 ms.
    t = best
    for span, step in ((0.06, 0.005), (0.005, 0.0005)):
        t = max(np.arange(t - span, t + span, step), key=fine)
    picture, truth = demo.render_with_truth(float(t))
    return picture, truth, float(t)


def kept_by_the_pipeline(picture: np.ndarray) -> np.ndarray:
    """Where the daemon's pipeline (the VM's settings: the defaults, blur), given this camera
    picture on its own, keeps the person sharp (alpha > 0.5), at full size."""
    h, w = picture.shape[:2]
    pipeline = FramePipeline(Settings())
    alpha_low = pipeline.process(frame_from_rgb(picture, pipeline.lores_size_for(w, h), 0.0)).alpha_low
    assert alpha_low is not None, "the blur effect segments every frame"
    return cv2.resize(alpha_low, (w, h)) > 0.5


def content(rgb: np.ndarray) -> dict:
    """The person untouched and the background blurred, as `blurcam selftest` measures it. The
    person is judged where the model finds them in that picture, and the model must find most
    of them: a wrong or late mask, a damaged frame or wrong colours on the way to the host show
    inside what it found. How much it finds is the model's own quality (the self-test and
    models/README.md judge it): at a few of the demo's moving poses (scene 0, t 7.0-7.2 s) it
    leaves out the crown of the cap, 92 % found, which took the whole person's PSNR to 24-26 dB,
    so this test failed or passed by which poses the VM's frames happened to show."""
    picture, truth, t = demo_truth(rgb)
    person, background = judged_regions(truth)
    found = person & kept_by_the_pipeline(picture)
    gray_in = cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY)
    gray_out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return {"t": round(t, 4), "person_found": round(found.sum() / person.sum(), 3),
            "person_psnr_db": round(psnr(picture, rgb, found), 1),
            "background_detail_ratio": round(detail(gray_out, background) / detail(gray_in, background), 3)}


def payload_check(payloads: list[list]) -> dict:
    """Frames as the host's USB stack saw them: FID, EOF, PTS, SCR of every payload header."""
    frames, fid, toggles, bad_fid, eof_then_same_fid = 0, None, 0, 0, 0
    last_eof = False
    for _length, _hlen, info, _pts, _stc, _sof in payloads:
        this_fid = info & usbmon.FID
        if fid is not None and this_fid != fid:
            toggles += 1
            if not last_eof:
                bad_fid += 1  # FID changed inside a frame
        elif fid is not None and last_eof:
            eof_then_same_fid += 1  # a new frame must flip FID
        fid = this_fid
        last_eof = bool(info & usbmon.EOF)
        frames += last_eof
    return {
        "payloads": len(payloads),
        "frames_with_eof": frames,
        "fid_toggles": toggles,
        "fid_changes_inside_a_frame": bad_fid,
        "new_frames_without_fid_toggle": eof_then_same_fid,
        "without_eoh": sum(1 for p in payloads if not p[2] & usbmon.EOH),
        "header_length_wrong": sum(1 for p in payloads
                                   if p[1] != 2 + 4 * bool(p[2] & usbmon.PTS) + 6 * bool(p[2] & usbmon.SCR)),
        "with_pts": sum(1 for p in payloads if p[3] is not None),
        "with_scr": sum(1 for p in payloads if p[4] is not None),
        "with_error_bit": sum(1 for p in payloads if p[2] & usbmon.ERR),
    }


def class_requests(vm: dict) -> list[dict]:
    return [a for a in vm["race_answers"] if a["what"].startswith(("GET_CUR", "SET_CUR"))]


def stalled(gaps: list[list[float]], start: float, end: float) -> float:
    """Seconds of [start, end] inside any of `gaps` ([begin, end] on the guest's clock)."""
    total, reach = 0.0, start
    for begin, finish in sorted(gaps):
        begin, finish = max(begin, reach), min(finish, end)
        if finish > begin:
            total += finish - begin
            reach = finish
    return total


def host_answer_times(vm: dict) -> list[tuple[float, float]]:
    """(seconds as the usbfs host measured them, the same less the time in which a vCPU of the
    VM ran no guest code at all) for every class request of the start/stop races."""
    gaps = [g for cpu in vm["race_cpu_gaps"].values() for g in cpu]
    return [(a["seconds"], a["seconds"] - stalled(gaps, a["at"], a["at"] + a["seconds"]))
            for a in class_requests(vm)]


def daemon_answer_times(vm: dict) -> list[tuple[float, float]]:
    """(seconds from the kernel queueing the setup event to the daemon's answer, the same less
    the time the device's vCPU ran no guest code) for the same requests, on the daemon's side
    (appliance/uvc/device.py AnswerTime rows: number, request, queued at, waited, answered, ...)."""
    gaps = vm["race_cpu_gaps"]["cpu1"]
    return [(row[4] / 1000, row[4] / 1000 - stalled(gaps, row[2], row[2] + row[4] / 1000))
            for row in vm["race_daemon_answers"]]


def spread_ms(times: list[float]) -> str:
    ordered = sorted(times)
    return (f"median {statistics.median(ordered) * 1000:.0f}, p95 "
            f"{ordered[round(0.95 * (len(ordered) - 1))] * 1000:.0f}, worst {ordered[-1] * 1000:.0f} ms")


def latencies(vm: dict) -> list[float]:
    return [f["dequeued_at"] - vm["latency_captured"][str(f["counter"])] for f in vm["latency_frames"]
            if vm["latency_captured"].get(str(f["counter"])) is not None]


def summary(vm: dict) -> str:
    """The figures the issue's note quotes, in one file (tests/.cache/vm/last-uvc-summary.txt)."""
    out = [f"VM run {vm['run_dir']} ({vm['vm_seconds']:.0f} s, kernel {vm.get('kernel')}, "
           f"CPU {vm.get('cpu_model')}); steps (s): {vm.get('steps')}", "",
           "$ v4l2-ctl --list-formats-ext", vm.get("formats_output", ""), ""]
    for run in vm.get("compliance", []):
        fails = sorted({ln.removeprefix("fail:").strip() for ln in run.get("failures", [])
                        if ln.startswith("fail:")} - {UVCVIDEO_OWN_CHECK})
        out.append(f"v4l2-compliance -s2, {run['format']} ({run['seconds']} s): {run['summary']}"
                   + (f"; besides uvcvideo's own check: {fails}" if fails else ""))
    out.append("")
    for s in vm.get("streams", []):
        frames = s["frames"]
        out.append(f"our client, {s['format']}: {len(frames)} frames received "
                   f"({sum(1 for f in frames if not f['error'])} without error flag), host "
                   f"{fps(frames):.2f} fps, daemon {s['daemon_status']['fps']} fps "
                   f"(frames queued by the daemon meanwhile: {s['daemon_frames_queued']}); "
                   f"STREAMON {s['streamon_s']} s; idle {s['idle_after_s']} s after STREAMOFF")
        if "usbmon" in s:
            mon = s["usbmon"]
            out.append(f"  payload headers seen by the host: {payload_check(mon['payloads'])}, "
                       f"{mon['empty_packets']} empty packets, {mon['urbs']} URBs "
                       f"({mon.get('cancelled_urbs')} cancelled by the host at STREAMOFF), "
                       f"{mon.get('lost_events')} usbmon events lost")
    for g in vm.get("gstreamer", []):
        out.append(f"GStreamer v4l2src {g['name']}: exit {g['returncode']} in {g['seconds']} s")
    if vm.get("latency_frames"):
        lat = latencies(vm)
        out.append(f"latency capture->host app, effect none, MJPEG 640x360: {len(lat)} frames, median "
                   f"{statistics.median(lat) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms; daemon's own "
                   f"capture->output {vm['latency_daemon_status']}")
    if vm.get("race_answers"):
        answers = class_requests(vm)
        worst = max(answers, key=lambda a: a["seconds"])
        times = sorted(a["seconds"] for a in answers)
        out.append(f"class requests across start/stop races: {len(answers)}, median "
                   f"{statistics.median(times) * 1000:.0f} ms, {sum(t > 0.5 for t in times)} over 500 ms, worst "
                   f"{worst['seconds'] * 1000:.0f} ms ({worst['what']}); SET_INTERFACE worst "
                   f"{max(a['seconds'] for a in vm['race_answers'] if 'INTERFACE' in a['what']) * 1000:.0f} ms")
    if vm.get("race_daemon_answers") and vm.get("race_cpu_gaps"):
        host, daemon = host_answer_times(vm), daemon_answer_times(vm)
        out.append(f"  host side: {spread_ms([t for t, _ in host])}; less emulator stalls: "
                   f"{spread_ms([t for _, t in host])}")
        out.append(f"  daemon side: {spread_ms([t for t, _ in daemon])}; less device vCPU stalls: "
                   f"{spread_ms([t for _, t in daemon])}")
        out.append("  emulator stalls (a vCPU ran no guest code for > 40 ms): " + ", ".join(
            f"{cpu} {len(g)} totalling {sum(e - b for b, e in g):.1f} s" for cpu, g in vm["race_cpu_gaps"].items())
            + f" of the {vm['steps'].get('request_race')} s step")
    if vm.get("cycles"):
        out.append("start/stop cycles (cycle: RSS kB, fds): " + ", ".join(
            f"{c['cycle']}: {c['rss_kb']}, {c['fds']}" for c in vm["cycles"]))
    return "\n".join(out) + "\n"


# --- the tests ------------------------------------------------------------------------------

def test_the_vm_ran_every_step_to_the_end(vm):
    assert vm.get("finished"), f"the guest script stopped early; see {vm['run_dir']}/guest.log"
    assert not vm["errors"], "\n".join(vm["errors"])


def test_gadget_up_builds_once_then_is_unchanged_and_down_removes_it(vm):
    assert_step_ok(vm, "gadget_up")
    assert vm["gadget_up"][0] == 0 and vm["gadget_up"][1].startswith("gadget built"), vm["gadget_up"]
    assert vm["gadget_up_again"][0] == 0 and "gadget unchanged" in vm["gadget_up_again"][1]
    st = vm["gadget_status"]
    assert st["gadget"] == "bound" and st["udc"] == "dummy_udc.0"
    assert (st["vendor_id"], st["product_id"], st["product"]) == ("0x1d6b", "0x0104", "BlurCam")
    assert re.fullmatch(r"[0-9a-f]{16}", st["serial_number"])
    assert st["usb_networking"] is False
    assert_step_ok(vm, "usb_networking")
    assert vm["networking_up"][0] == 0 and "networking on" in vm["networking_up"][1]
    assert vm["networking_status"]["usb_networking"] is True
    assert vm["networking_config"] == ["ncm.usb0", "uvc.usb0"]  # one configuration, both functions
    assert_step_ok(vm, "gadget_down")
    assert vm["gadget_down"] == [0, "gadget removed", 0, "no gadget to remove"]
    assert vm["gadget_status_after_down"] == {"gadget": "absent"}


def test_the_host_enumerates_a_high_speed_webcam(vm):
    assert_step_ok(vm, "enumerate")
    assert vm["host_speed"] == "480"
    assert "BlurCam" in vm["host_devices"]
    assert vm["status_after_enumerate"]["host_connected"] is True


def test_the_host_lists_exactly_the_configured_formats_sizes_and_intervals(vm):
    assert_step_ok(vm, "list_formats")
    fourcc = {"mjpeg": "MJPG", "yuyv": "YUYV"}
    expected = sorted((fourcc[f.encoding], fr.width, fr.height, fps_from_interval(i))
                      for f in offered_formats(Settings().resolutions) for fr in f.frames
                      for i in fr.intervals)
    found = sorted((c, w, h, round(rate, 3)) for c, w, h, rate in vm["formats"])
    assert found == expected
    assert len(found) == 18  # 4 MJPEG + 2 YUYV sizes, each at 30/25/15 fps


@pytest.mark.parametrize("encoding,width,height", STREAMS)
def test_our_client_receives_whole_frames_at_the_committed_size(vm, encoding, width, height):
    assert_step_ok(vm, "stream_formats")
    s = stream_of(vm, encoding, width, height)
    assert len(s["frames"]) == 4 and not any(f["error"] for f in s["frames"])
    assert s["daemon_status"]["stream_format"].startswith(f"{encoding.upper()} {width}x{height}@30")
    directory = Path(vm["run_dir"]) / "frames" / f"client-{encoding}-{width}x{height}"
    for f in s["frames"]:
        rgb = decode(directory / f["file"], encoding, width, height)
        assert rgb.shape == (height, width, 3)
        assert rgb.std() > 20, f"{f['file']} is flat: not a camera picture"


@pytest.mark.parametrize("encoding,width,height", STREAMS)
def test_the_host_sees_the_person_intact_and_the_background_blurred(vm, encoding, width, height):
    assert_step_ok(vm, "stream_formats")
    s = stream_of(vm, encoding, width, height)
    directory = Path(vm["run_dir"]) / "frames" / f"client-{encoding}-{width}x{height}"
    for f in s["frames"][1:3]:
        found = content(decode(directory / f["file"], encoding, width, height))
        assert found["person_found"] >= 0.85, (f["file"], found)
        assert found["person_psnr_db"] > 26, (f["file"], found)
        assert found["background_detail_ratio"] < 0.25, (f["file"], found)


def test_gstreamer_decodes_mjpeg_and_yuyv_from_the_webcam(vm):
    assert_step_ok(vm, "gstreamer")
    for g in vm["gstreamer"]:
        assert g["returncode"] == 0, g["stderr"]
        raw = (Path(vm["run_dir"]) / "frames" / g["file"]).read_bytes()
        w, h = g["width"], g["height"]
        assert len(raw) == 3 * w * h * 3, f"{g['name']}: {len(raw)} bytes is not 3 RGB frames"
        last = np.frombuffer(raw, np.uint8)[-w * h * 3:].reshape(h, w, 3)
        assert content(last)["background_detail_ratio"] < 0.25


# uvcvideo in Debian 12's kernel (6.1) accepts STREAMON before any buffer is allocated, where V4L2
# wants EINVAL. That check is of the host driver alone (it fails for every UVC camera), made before
# a frame is asked of the device; upstream moved uvcvideo's queue onto the vb2 helpers later.
UVCVIDEO_OWN_CHECK = "v4l2-test-buffers.cpp(1345): node->streamon(q.g_type()) != EINVAL"


def compliance_verdicts(output: str) -> dict[str, list[str]]:
    """Each test v4l2-compliance ran -> the `fail:` lines it printed (empty: it passed)."""
    verdicts: dict[str, list[str]] = {}
    pending: list[str] = []
    for line in output.splitlines():
        text = line.strip()
        if text.startswith("fail:"):
            pending.append(text.removeprefix("fail:").strip())
        elif text.startswith("test ") and ": " in text:
            name, verdict = text.rsplit(": ", 1)
            verdicts[name] = pending if verdict.startswith("FAIL") else []
            pending = []
    return verdicts


# Two checks that time the device, which under TCG on a loaded 2-core machine it sometimes misses
# (seen in 2 of 4 runs, one format each): no frame within v4l2-compliance's 2 s select() timeout,
# and a control answer that came after uvcvideo gave up (the daemon logs the late answer; the
# host's S_CTRL then fails with that error instead of clamping). Tolerated only as exactly that.
SELECT_TIMEOUT = "v4l2-test-buffers.cpp(990): ret == 0"
LATE_CONTROL = "v4l2-test-controls.cpp(502): invalid minimum range check"
# The daemon says so in one of two ways: the kernel refused the late response, or the kernel took
# it and the device's own answer timing logged it past uvcvideo's 5 s (UVC_CTRL_CONTROL_TIMEOUT).
LATE_ANSWER_LOG = "UVC: sending the response failed"
SLOW_ANSWER_LOG = re.compile(r"UVC: slow answer to \S+ .*?: (\d+) ms after the host asked")
UVCVIDEO_CONTROL_TIMEOUT_MS = 5000


def timing_misses(vm: dict, failing: dict[str, list[str]]) -> dict[str, list[str]]:
    log = Path(vm["run_dir"]) / "daemon-stamp.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    late_answers = LATE_ANSWER_LOG in text or any(
        int(ms) > UVCVIDEO_CONTROL_TIMEOUT_MS for ms in SLOW_ANSWER_LOG.findall(text))
    return {name: why for name, why in failing.items()
            if (why and why[0] == SELECT_TIMEOUT) or (why == [LATE_CONTROL] and late_answers)}


@pytest.mark.parametrize("encoding,width,height", STREAMS)
def test_v4l2_compliance_with_streaming_passes_all_but_uvcvideos_own_check(vm, encoding, width, height):
    """Run on the counter source with effect none: its streaming checks allow 2 s a frame, and TCG
    runs the model at several seconds a frame; the demo's content is judged above."""
    assert_step_ok(vm, "compliance")
    fourcc = "MJPG" if encoding == "mjpeg" else "YUYV"
    run = next(r for r in vm["compliance"] if r["format"] == f"{fourcc} {width}x{height}")
    assert run["summary"], run["output"]
    total, ok, failed = (int(x) for x in re.search(
        r": (\d+), Succeeded: (\d+), Failed: (\d+)", run["summary"]).groups())
    verdicts = compliance_verdicts(run["output"])
    failing = {name: why for name, why in verdicts.items() if why}
    others = {name: why for name, why in failing.items() if why != [UVCVIDEO_OWN_CHECK]}
    missed = timing_misses(vm, others)
    assert others == missed, others
    assert len(missed) <= 1, missed
    assert failed == len(failing) and ok == total - failed, run["summary"]
    # Frames really flow to v4l2-compliance (uvcvideo's own check stops the MMAP tests early).
    assert verdicts.get("test USERPTR (no poll)") == [], verdicts
    assert verdicts.get("test blocking wait") == [], verdicts


def test_the_host_gets_frames_as_fast_as_the_daemon_makes_them(vm):
    """TCG-bound rates, but every frame the daemon queued reaches the host."""
    assert_step_ok(vm, "stream_formats")
    for s in vm["streams"]:
        host = fps(s["frames"])
        assert host > 0, s["format"]
        # Frames the daemon queued while the host took 4: at most the 4 plus those in flight.
        assert s["daemon_frames_queued"] <= len(s["frames"]) + 4, s
        assert host >= 0.5 * s["daemon_status"]["fps"], (s["format"], host, s["daemon_status"])


def test_payload_headers_toggle_fid_per_frame_and_mark_each_frame_end(vm):
    assert_step_ok(vm, "stream_formats")
    s = stream_of(vm, *STREAMS[0])
    assert s["usbmon"]["lost_events"] == 0, "usbmon could not keep up: the record has gaps"
    assert s["usbmon"]["packet_errors"] == 0
    found = payload_check(s["usbmon"]["payloads"])
    assert found["payloads"] > 0
    assert found["without_eoh"] == 0 and found["header_length_wrong"] == 0
    assert found["with_error_bit"] == 0
    assert found["fid_changes_inside_a_frame"] == 0 and found["new_frames_without_fid_toggle"] == 0
    assert found["frames_with_eof"] >= len(s["frames"])
    assert found["fid_toggles"] >= found["frames_with_eof"] - 1
    # The kernel stamps its SOF/STC clock into every payload (SCR); PTS only when the daemon
    # gives the buffer a timestamp.
    assert found["with_scr"] == found["payloads"]


def test_the_daemon_goes_idle_when_the_host_stops_streaming(vm):
    assert_step_ok(vm, "stream_formats")
    for s in vm["streams"]:
        idle = s["idle_status"]
        assert idle["state"] == "idle" and idle["stream_format"] is None, s["format"]
        assert idle["usb"]["streaming"] is False


def test_unplugged_mid_stream_and_plugged_back_it_streams_again_without_a_restart(vm):
    assert_step_ok(vm, "unplug_replug")
    out = vm["unplug"]
    assert out["host_node_gone"] and out["capture_after_unplug"] != "got a frame"
    assert out["status_unplugged"]["host_connected"] is False and out["idle_unplugged"] == "idle"
    assert out["after_replug"]["bytes"] > 0 and not out["after_replug"]["error"]
    assert out["daemon_alive"] and out["pid_after"] == out["pid_before"]
    assert out["disconnects"] >= 1


def test_the_gadget_unbound_mid_stream_and_bound_again_streams_without_a_restart(vm):
    assert_step_ok(vm, "udc_rebind")
    out = vm["udc_rebind"]
    assert out["status_unbound"]["usb"]["node_lost"] >= 1
    assert out["after_rebind"]["bytes"] > 0 and out["daemon_alive"]
    assert out["status_after"]["usb"]["connected"] is True


def test_two_hundred_start_stop_cycles_leave_memory_and_fds_flat(vm):
    assert_step_ok(vm, "start_stop_cycles")
    series = vm["cycles"]
    assert series[-1]["cycle"] == 200 and all(c["alive"] for c in series)
    # A leak raises the floor; a cycle that waited for a frame (every 50th) may still hold the
    # stopping pipeline's files and memory for a moment, so each quarter's lowest value is compared.
    early = [c for c in series if 10 <= c["cycle"] <= 60]
    late = [c for c in series if c["cycle"] >= 150]
    assert min(c["fds"] for c in late) <= min(c["fds"] for c in early) + 1, [c["fds"] for c in series]
    assert min(c["rss_kb"] for c in late) - min(c["rss_kb"] for c in early) < 4096, \
        [c["rss_kb"] for c in series]
    assert vm["cycles_usb"]["streams"] >= 200
    assert vm["cycles_idle"]["state"] == "idle"


# USB 2.0 (9.2.6.4) gives a device 500 ms for a request; a host that gives up reads every later
# answer shifted by one. The usbfs host here waits 5 s, as uvcvideo does, so that a slow answer is
# measured rather than lost. Each answer is timed twice on the guest's clock: by the host (the
# whole round trip through dummy_hcd_iso) and by the daemon (from the kernel queueing the setup
# event to the answer). In this VM each vCPU is a QEMU thread on a shared build machine; when the
# machine is busy that thread is descheduled for tens to hundreds of milliseconds at a time and
# the guest's clock runs on meanwhile (tests/support/vm/cpu_gaps.py notes every such stall). The
# time a vCPU ran no guest code at all is the emulator's, not the device's: it is taken off
# before the limit is applied (the raw figures are in the summary). Everything else counts: the
# event thread waiting for a CPU or for the GIL behind the pipeline's threads, or for a stop.
USB_REQUEST_LIMIT_S = 0.5
VM_REQUEST_LIMIT_S = 5.0


def test_class_requests_are_answered_in_time_across_start_stop_races(vm):
    assert_step_ok(vm, "request_race")
    for trial in vm["race"]:
        assert trial["set_interface_on"]["error"] is None, trial
        assert trial["set_interface_off"]["error"] is None, trial
        code = trial["error_code"]
        assert code["error"] is None and code["seconds"] <= VM_REQUEST_LIMIT_S, trial
        assert code["data"] == "00", trial  # the previous requests all succeeded
        back = trial["probe_back"]
        assert back["error"] is None and back["seconds"] <= VM_REQUEST_LIMIT_S, trial
        # Not the answer to another request: the probe the host set (format 1, frame 3, 30 fps).
        assert bytes.fromhex(trial["probe_back_hex"])[2:8] == bytes([1, 3]) + (333333).to_bytes(4, "little")
        # ... with the payload size configfs holds, as the host reads it (dwMaxPayloadTransferSize).
        assert int.from_bytes(bytes.fromhex(trial["probe_back_hex"])[22:26], "little") == \
            vm["configfs_maxpacket"]
    answers = class_requests(vm)
    assert len(answers) >= 40 and all(a["error"] in (None, "EPIPE") for a in answers), answers
    # The daemon timed the very same requests (the ring it keeps holds them all).
    daemon_rows = vm["race_daemon_answers"]
    assert [row[1].split()[0] for row in daemon_rows] == [a["what"].split()[0] for a in answers], \
        (daemon_rows, [a["what"] for a in answers])
    daemon = daemon_answer_times(vm)
    assert max(t for _, t in daemon) <= USB_REQUEST_LIMIT_S, summary(vm)
    host = host_answer_times(vm)
    assert max(t for _, t in host) <= USB_REQUEST_LIMIT_S, summary(vm)


def test_the_request_error_code_is_reported_once_then_reset(vm):
    assert_step_ok(vm, "request_race")
    stall, first, second = vm["error_code_reads"]
    assert stall["error"] == "EPIPE"
    assert (first["data"], second["data"]) == ("06", "00")  # invalid control, then no error


def test_transport_latency_with_effect_none_is_measured_from_the_picture(vm):
    assert_step_ok(vm, "stamp_daemon_start")
    assert_step_ok(vm, "latency")
    counters = [f["counter"] for f in vm["latency_frames"]]
    assert counters == sorted(counters) and len(set(counters)) == len(counters), counters
    lat = latencies(vm)
    assert len(lat) == len(counters) and all(x > 0 for x in lat), lat
    assert vm["latency_daemon_status"]["effect"] == "none"


def test_a_brightness_change_on_the_host_reaches_the_daemon(vm):
    assert_step_ok(vm, "controls")
    assert vm["brightness_daemon"]["brightness"] == 37
    if "contrast" in vm["controls_listed"]:  # kernels >= 6.3 let us advertise it
        assert vm["contrast_daemon"] == 150


def test_the_daemon_stops_cleanly_after_all_that(vm):
    assert_step_ok(vm, "daemon_stop")
    assert vm["daemon_exit"] == 0
    assert vm["daemon_log_errors"] == []
    assert_step_ok(vm, "stamp_daemon_stop")
    assert vm["stamp_daemon_exit"] == 0
