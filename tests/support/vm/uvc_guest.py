"""Runs inside the test VM (see tests/appliance/uvc/test_uvc_in_vm.py): our gadget and daemon on
the device side of dummy_hcd_iso (our isochronous patch to dummy_hcd), the Linux webcam driver
(uvcvideo) and real host applications on its host side, all in one kernel. Writes what it saw
to RUN/results.json and the received frames to RUN/frames; the pytest on the host judges them.
Every step records its outcome even when an earlier one failed.

The device and the host share this VM's two CPUs, where in life each has its own: the daemon runs
on CPU 1 and everything of the host's (this script, v4l2-compliance, GStreamer) on CPU 0.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from appliance.control import ControlClient, ControlError  # noqa: E402
from tests.support.vm import usbfs_host, usbmon  # noqa: E402
from tests.support.vm.stamp_source import LOG_ENV, SPEC, read_counter  # noqa: E402
from tests.support.vm.v4l2_capture import Capture, CaptureError  # noqa: E402

RUN = Path(sys.argv[1])
STATE = Path("/run/blurcam-vm-state")  # the VM's own tmpfs: a unix socket cannot live on 9p
FLEET = RUN / "fleet.toml"
FRAMES = RUN / "frames"
SOCKET = STATE / "control.sock"
STAMP_LOG = STATE / "stamp-times.txt"  # tmpfs, like the daemon logs (see start_daemon)
UDC = "dummy_udc.0"
UDC_DIR = Path("/sys/class/udc") / UDC
GADGET = Path("/sys/kernel/config/usb_gadget/blurcam")
CYCLES = int(os.environ.get("BLURCAM_VM_CYCLES", "200"))
CYCLE_FRAME_EVERY = 50  # every this many start/stop cycles, wait for a frame too
FRAME_TIMEOUT = float(os.environ.get("BLURCAM_VM_FRAME_TIMEOUT", "180"))  # TCG on a busy machine
FRAMES_PER_FORMAT = int(os.environ.get("BLURCAM_VM_FRAMES", "4"))
# The formats a host application streams: (encoding, width, height).
STREAMS = (("mjpeg", 1280, 720), ("mjpeg", 1920, 1080), ("yuyv", 640, 480), ("yuyv", 640, 360))
ONLY = set(filter(None, os.environ.get("BLURCAM_VM_STEPS", "").split(",")))  # for development
HOST_CPUS, DEVICE_CPUS = {0}, {1}
# request_race: how long the host waits after SET_INTERFACE(1,1) before it stops the stream again
# ("streaming": until the pipeline streams), and how many times the whole list runs.
RACE_DELAYS: tuple[float | str, ...] = (0.0, 0.0, 0.05, 0.2, 0.5, 1.0, 2.0, "streaming", 0.0, 0.1, 0.3)
RACE_ROUNDS = int(os.environ.get("BLURCAM_VM_RACE_ROUNDS", "1"))
results: dict = {"errors": {}, "steps": {}}


def save() -> None:
    (RUN / "results.json").write_text(json.dumps(results, indent=2, default=str))


def log(msg: str) -> None:
    print(f"[{time.monotonic():8.1f}] {msg}", flush=True)


def sh(*cmd: str, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess:
    log("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.stdout.strip():
        print(proc.stdout.rstrip()[-3000:], flush=True)
    if proc.stderr.strip():
        print("stderr: " + proc.stderr.rstrip()[-2000:], flush=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc


def wait_for(what: str, predicate, timeout: float, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def step(name: str):
    def wrap(fn):
        if ONLY and name not in ONLY:
            return fn
        log(f"=== {name}")
        began = time.monotonic()
        try:
            fn()
        except Exception as exc:
            results["errors"][name] = f"{exc!r}\n{traceback.format_exc()}"
            log(f"!!! {name}: {exc!r}")
        results["steps"][name] = round(time.monotonic() - began, 1)
        save()
        return fn
    return wrap


def host_node() -> str | None:
    """The capture node uvcvideo made for our gadget (not the gadget's own output node)."""
    for dev in sorted(Path("/sys/class/video4linux").glob("video*")):
        driver = dev / "device" / "driver"
        if driver.exists() and driver.resolve().name == "uvcvideo" and \
                (dev / "index").read_text().strip() == "0":
            return f"/dev/{dev.name}"
    return None


def host_usb_device() -> str | None:
    """The sysfs name of our gadget as the host's USB core sees it (e.g. 1-1)."""
    for dev in sorted(Path("/sys/bus/usb/devices").glob("*-*")):
        if ":" not in dev.name and (dev / "product").exists() and \
                (dev / "product").read_text().strip() == "BlurCam":
            return dev.name
    return None


def status() -> dict:
    return ControlClient(SOCKET, timeout=20).status()


def daemon_memory(pid: int) -> tuple[int, int]:
    """RSS (kB) and open file descriptors; the fewest fds over a second, because a control
    socket connection of our own status query may still be closing."""
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    fds = []
    for _ in range(5):
        fds.append(len(os.listdir(f"/proc/{pid}/fd")))
        time.sleep(0.2)
    return rss, min(fds)


def gadget_cli(action: str) -> list:
    """`blurcam gadget ACTION` in this process: a fresh interpreter costs ~20 s under TCG."""
    import contextlib
    import io
    from argparse import Namespace

    from appliance.uvc.configfs import main as gadget_main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = gadget_main(Namespace(action=action, state_dir=STATE, fleet_file=FLEET))
    log(f"gadget {action}: {rc} {out.getvalue().strip()}")
    return [rc, out.getvalue().strip()]


def start_daemon(*args: str, env: dict | None = None, log_name: str = "daemon.log",
                 module: str = "appliance") -> subprocess.Popen:
    # MALLOC_ARENA_MAX as systemd/blurcam.service sets it for the daemon on the device.
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "MALLOC_ARENA_MAX": "2", **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "run", *args, "--state-dir", str(STATE),
         "--fleet-file", str(FLEET)],
        # The log goes to the VM's tmpfs (copied to RUN when the daemon stops): a write to the
        # 9p share waits for QEMU on the busy host, which a product's journal never does.
        stdout=open(STATE / log_name, "w"), stderr=subprocess.STDOUT, env=full_env, cwd=REPO,
        preexec_fn=lambda: os.sched_setaffinity(0, DEVICE_CPUS))
    wait_for("the daemon's UVC server", lambda: status().get("usb"), 600, 1.0)
    return proc


def stop_daemon(proc: subprocess.Popen, log_name: str) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    (RUN / log_name).write_bytes((STATE / log_name).read_bytes())
    return code


def daemon_answers() -> list[list]:
    """The daemon's latest answer times (appliance/uvc/device.py AnswerTime rows); a status call
    on a loaded machine may be dropped, so it is asked again."""
    for attempt in range(3):
        try:
            return status()["usb"]["answers"]["recent"]
        except ControlError:
            if attempt == 2:
                raise
            time.sleep(1)
    return []


def start_gap_monitors() -> list[tuple[subprocess.Popen, Path]]:
    """One tests/support/vm/cpu_gaps.py per CPU: when did a vCPU run no guest code at all."""
    monitors = []
    for cpu in sorted(HOST_CPUS | DEVICE_CPUS):
        out = STATE / f"cpu{cpu}-gaps.txt"
        out.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-S", str(Path(__file__).with_name("cpu_gaps.py")),
                                 str(cpu), str(out)])
        monitors.append((proc, out))
    for _proc, out in monitors:
        wait_for(f"{out.name} monitor", lambda out=out: out.exists() and out.read_text().startswith("ready"),
                 120, 0.1)
    return monitors


def stop_gap_monitors(monitors: list[tuple[subprocess.Popen, Path]]) -> dict[str, list[list[float]]]:
    """{cpu: [[start, end], ...]} of the gaps each monitor saw."""
    found = {}
    for proc, out in monitors:
        proc.terminate()
        proc.wait(30)
        lines = out.read_text().splitlines()[1:]
        found[out.name.split("-")[0]] = [[float(x) for x in line.split()] for line in lines if line.strip()]
    return found


def wait_idle() -> dict:
    return wait_for("the daemon to go idle", lambda: (s := status())["state"] == "idle" and s, 120, 0.5)


def save_frame(directory: Path, index: int, encoding: str, data: bytes) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{index:03d}.{'jpg' if encoding == 'mjpeg' else 'yuyv'}"
    path.write_bytes(data)
    return path.name


def stream_with_our_client(node: str, encoding: str, width: int, height: int, count: int,
                           directory: Path | None) -> dict:
    """Stream `count` frames with our V4L2 client; what arrived and what the daemon said."""
    before = status()["usb"]["frames_queued"]
    out: dict = {"format": f"{encoding} {width}x{height}", "frames": []}
    began = time.monotonic()
    with Capture(node, encoding, width, height) as cap:
        out["streamon_s"] = round(time.monotonic() - began, 2)
        for i, frame in enumerate(cap.frames(count, FRAME_TIMEOUT)):
            name = save_frame(directory, i, encoding, frame.data) if directory else None
            out["frames"].append({"file": name, "bytes": len(frame.data), "sequence": frame.sequence,
                                  "error": frame.error, "dequeued_at": frame.dequeued_at,
                                  "timestamp": frame.timestamp})
        st = status()
    out["daemon_status"] = {key: st.get(key) for key in ("state", "stream_format", "fps",
                                                         "latency_ms", "frames_dropped")}
    out["daemon_usb"] = st["usb"]
    out["daemon_frames_queued"] = st["usb"]["frames_queued"] - before
    return out


if os.cpu_count() and os.cpu_count() > 1:
    os.sched_setaffinity(0, HOST_CPUS)
FLEET.write_text('[usb]\nvendor_id = "0x1d6b"\nproduct_id = "0x0104"\nmanufacturer = "BlurCam"\n'
                 'product = "BlurCam"\n')
STATE.mkdir(parents=True, exist_ok=True)
results["kernel"] = os.uname().release
results["cpu_model"] = next((line.split(":", 1)[1].strip() for line in
                             Path("/proc/cpuinfo").read_text().splitlines()
                             if line.startswith("model name")), None)
daemon: subprocess.Popen | None = None
node: str | None = None


@step("gadget_up")
def _():
    results["udcs"] = sorted(os.listdir("/sys/class/udc"))
    # The real command line once, then the same entry point in-process.
    first = sh(sys.executable, "-m", "appliance", "gadget", "up", "--state-dir", str(STATE),
               "--fleet-file", str(FLEET))
    results["gadget_up"] = [first.returncode, first.stdout.strip() + first.stderr.strip()]
    results["gadget_up_again"] = gadget_cli("up")
    results["gadget_status"] = json.loads(gadget_cli("status")[1])
    function = GADGET / "functions/uvc.usb0"
    results["configfs_maxpacket"] = int((function / "streaming_maxpacket").read_text())


@step("gadget_up_in_process")
def _():
    """The gadget only, built in this process (runs that need no check of the command line:
    a fresh interpreter costs ~20 s under TCG). Only when chosen by name: the full run has gadget_up."""
    if "gadget_up_in_process" not in ONLY:
        return
    results["gadget_up"] = gadget_cli("up")


@step("daemon_start")
def _():
    global daemon
    daemon = start_daemon("--source", "demo")
    results["daemon_pid"] = daemon.pid


@step("enumerate")
def _():
    global node
    node = wait_for("the host's uvcvideo node", host_node, 300)
    results["host_node"] = node
    results["host_usb_device"] = host_usb_device()
    usb = Path("/sys/bus/usb/devices") / results["host_usb_device"]
    results["host_speed"] = (usb / "speed").read_text().strip()
    results["host_devices"] = sh("v4l2-ctl", "--list-devices").stdout
    results["status_after_enumerate"] = wait_for(
        "host_connected", lambda: (s := status())["host_connected"] and s, 60)


@step("host_reprobe")
def _():
    """The host driver probes the controls again, now that the daemon has settled. uvcvideo 6.12
    probes anti-flicker with SET_CUR while enumerating; under TCG the daemon, seconds after
    connecting, answered that after uvcvideo's 5 s timeout in 2 of 6 runs (probe_errors), and the
    late answer was then taken for the next requests' (white balance auto read-only on the host).
    On a Pi the daemon answers in milliseconds; here the controls test judges a probe of a settled
    daemon. Only when chosen by name (the full run has no such step)."""
    global node
    if "host_reprobe" not in ONLY:
        return
    results["probe_errors"] = [line for line in sh("dmesg").stdout.splitlines() if "Failed to query" in line]
    authorized = Path("/sys/bus/usb/devices") / results["host_usb_device"] / "authorized"
    authorized.write_text("0")  # the host's drivers let go of the device ...
    wait_for("uvcvideo to let go", lambda: host_node() is None, 60)
    authorized.write_text("1")  # ... and probe it afresh
    node = wait_for("the host's uvcvideo node", host_node, 120)
    results["host_node"] = node


@step("list_formats")
def _():
    out = sh("v4l2-ctl", "-d", node, "--list-formats-ext", check=True).stdout
    results["formats_output"] = out
    found, fourcc, size = [], None, None
    for line in out.splitlines():
        if m := re.search(r"\[\d+\]: '(\w+)'", line):
            fourcc = m.group(1)
        elif m := re.search(r"Size: Discrete (\d+)x(\d+)", line):
            size = (int(m.group(1)), int(m.group(2)))
        elif m := re.search(r"Interval: Discrete [\d.]+s \(([\d.]+) fps\)", line):
            found.append([fourcc, *size, float(m.group(1))])
    results["formats"] = found


@step("controls")
def _():
    results["controls_listed"] = sh("v4l2-ctl", "-d", node, "--list-ctrls").stdout
    sh("v4l2-ctl", "-d", node, "-c", "brightness=37", check=True)
    results["brightness_daemon"] = wait_for(
        "brightness 37 in the daemon status",
        lambda: status()["controls"]["brightness"] == 37 and status()["controls"], 20)
    # A change made on the device side (web page) is what the host reads once it re-enumerates.
    ControlClient(SOCKET).update_settings({"brightness": -12})
    results["brightness_host_readback"] = sh("v4l2-ctl", "-d", node, "-C", "brightness").stdout.strip()
    if "contrast" in results["controls_listed"]:
        sh("v4l2-ctl", "-d", node, "-c", "contrast=150", check=True)
        results["contrast_daemon"] = status()["controls"]["contrast"]
        sh("v4l2-ctl", "-d", node, "-c", "contrast=100", check=True)


# What uvcvideo calls each of our UVC controls (its mappings in drivers/media/usb/uvc/uvc_ctrl.c),
# and a value for the host to set that is not the control's default. Exposure mode is a menu on
# the host (1 = manual) and a mode bitmap on the wire (1 = manual); anti-flicker a menu (1 = 50 Hz).
HOST_CONTROL_NAMES = {
    "brightness": ("brightness", 25), "contrast": ("contrast", 140),
    "saturation": ("saturation", 60), "sharpness": ("sharpness", 150),
    "exposure_mode": ("auto_exposure", 1), "exposure_time": ("exposure_time_absolute", 400),
    "white_balance_auto": ("white_balance_automatic", 0),
    "white_balance_temperature": ("white_balance_temperature", 3200),
    "power_line_frequency": ("power_line_frequency", 1),
    "focus_auto": ("focus_automatic_continuous", 0), "focus_position": ("focus_absolute", 300),
    "zoom": ("zoom_absolute", 200), "pan": ("pan_absolute", 7200), "tilt": ("tilt_absolute", -3600),
}


def host_controls(out: str) -> dict[str, dict]:
    """The controls in `v4l2-ctl --list-ctrls` output: name -> {min, max, step, default, value}
    (menus: min, max, default, value; booleans: default, value)."""
    found = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\w+) 0x[0-9a-f]+ \((\w+)\)\s*:(.*)", line)
        if m:
            found[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(-?\d+)", m.group(3))}
    return found


@step("camera_controls")
def _():
    """Every image control the gadget advertises, set from the host, in the controls table's
    order (so a mode before the value it unlocks): what the host lists, and whether the value
    reached the daemon's settings and reads back on the host. Kernels before 6.3 let a gadget
    advertise only brightness and the exposure mode; later ones every row of the table."""
    from appliance import controls
    out = results["host_controls_output"] = sh("v4l2-ctl", "-d", node, "--list-ctrls", check=True).stdout
    listed = results["host_controls"] = host_controls(out)
    rows = [(row, *HOST_CONTROL_NAMES[row.name]) for row in controls.CONTROLS if row.uvc is not None]
    on_host = [(row, host_name, value) for row, host_name, value in rows if host_name in listed]
    set_errors = {}
    for row, host_name, value in on_host:  # one at a time: a mode before the value it unlocks
        proc = sh("v4l2-ctl", "-d", node, "-c", f"{host_name}={value}")
        set_errors[row.name] = proc.stderr.strip() if proc.returncode else None
    try:
        wait_for("the host's values in the daemon's settings",
                 lambda: all(ControlClient(SOCKET).get_settings()[row.name] == value
                             for row, _, value in on_host), 20)
    except TimeoutError:
        pass  # recorded below: the daemon's values are what the test judges
    settings = ControlClient(SOCKET).get_settings()
    reads = {}
    if on_host:
        out = sh("v4l2-ctl", "-d", node, "-C", ",".join(host_name for _, host_name, _ in on_host)).stdout
        reads = {line.split(":", 1)[0].strip(): line.strip() for line in out.splitlines() if ":" in line}
    seen = {row.name: {"listed": False} for row, host_name, _ in rows if host_name not in listed}
    for row, host_name, value in on_host:
        seen[row.name] = {"listed": True, "host": listed[host_name], "set": value,
                          "set_error": set_errors[row.name], "daemon": settings[row.name],
                          "host_reads": reads.get(host_name)}
    results["camera_controls"] = seen
    # Back to neutral for the steps after this one (only what was changed here).
    ControlClient(SOCKET).update_settings({name: controls.BY_NAME[name].neutral
                                           for name, c in seen.items() if c["listed"]})


@step("host_crop")
def _():
    """One frame with Zoom and Pan/Tilt set by the host (effect none, so the picture is the
    camera's): the host's test compares it with the crop framing.manual_crop says."""
    if "zoom_absolute" not in results.get("host_controls", {}):
        results["host_crop"] = {"skipped": "the host lists no zoom_absolute on this kernel"}
        return
    crop = {"zoom": 200, "pan": 7200, "tilt": -3600}
    before = ControlClient(SOCKET).get_settings()
    ControlClient(SOCKET).update_settings({"effect": "none"})
    sh("v4l2-ctl", "-d", node, "-c",
       f"zoom_absolute={crop['zoom']},pan_absolute={crop['pan']},tilt_absolute={crop['tilt']}", check=True)
    try:
        wait_for("the crop in the daemon's settings",
                 lambda: all(ControlClient(SOCKET).get_settings()[k] == v for k, v in crop.items()), 20)
    except TimeoutError:
        pass  # the settings recorded below and the picture say what the daemon did
    got = stream_with_our_client(node, "mjpeg", 640, 360, 1, FRAMES / "host-crop")
    results["host_crop"] = {"set": crop, "stream": got,
                            "settings": {k: ControlClient(SOCKET).get_settings()[k]
                                         for k in (*crop, "framing", "effect")}}
    ControlClient(SOCKET).update_settings({"effect": before["effect"], "zoom": 100, "pan": 0, "tilt": 0})
    wait_idle()


@step("stream_formats")
def _():
    """Each format in turn with our client (so also a format switch between streams), the host's
    USB packets recorded by usbmon during the first."""
    ControlClient(SOCKET).update_settings({"brightness": 0})  # the picture as the demo made it
    usb = Path("/sys/bus/usb/devices") / results["host_usb_device"]
    bus, devnum = int((usb / "busnum").read_text()), int((usb / "devnum").read_text())
    streams = results["streams"] = []
    for i, (encoding, width, height) in enumerate(STREAMS):
        directory = FRAMES / f"client-{encoding}-{width}x{height}"
        if i == 0:
            with usbmon.UsbmonRecorder(bus, devnum) as recorder:
                got = stream_with_our_client(node, encoding, width, height, FRAMES_PER_FORMAT, directory)
            rec = recorder.recording
            got["usbmon"] = {"urbs": rec.urbs, "empty_packets": rec.empty_packets,
                             "packet_errors": rec.packet_errors, "cancelled_urbs": rec.cancelled_urbs,
                             "lost_events": rec.lost_events,
                             "payloads": [[p.length, p.header_length, p.info, p.pts, p.scr_stc, p.scr_sof]
                                          for p in rec.payloads]}
        else:
            got = stream_with_our_client(node, encoding, width, height, FRAMES_PER_FORMAT, directory)
        idle_began = time.monotonic()
        got["idle_status"] = wait_idle()
        got["idle_after_s"] = round(time.monotonic() - idle_began, 2)
        streams.append(got)
        save()


@step("gstreamer")
def _():
    """GStreamer's v4l2src, decoding to RGB, as a desktop application would."""
    runs = results["gstreamer"] = []
    for caps, decode, name, (w, h) in (
            ("image/jpeg,width=1280,height=720", "jpegdec ! ", "gst-mjpeg-1280x720", (1280, 720)),
            ("video/x-raw,format=YUY2,width=640,height=360", "", "gst-yuyv-640x360", (640, 360))):
        out = FRAMES / f"{name}.rgb"
        FRAMES.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        proc = sh("gst-launch-1.0", "-q", "v4l2src", f"device={node}", "num-buffers=3", "!", *caps.split(),
                  "!", *decode.split(), "videoconvert", "!", "video/x-raw,format=RGB", "!",
                  "filesink", f"location={out}", timeout=3 * FRAME_TIMEOUT)
        runs.append({"name": name, "width": w, "height": h, "returncode": proc.returncode,
                     "stderr": proc.stderr[-2000:], "seconds": round(time.monotonic() - began, 1),
                     "file": out.name if out.exists() else None})
        wait_idle()


def _stream_until_frame(label: str) -> dict:
    with Capture(node, "mjpeg", 640, 360) as cap:
        frame = cap.next_frame(FRAME_TIMEOUT)
    return {"label": label, "bytes": len(frame.data), "error": frame.error}


@step("unplug_replug")
def _():
    """The cable pulled mid-stream (the UDC's soft disconnect) and put back: no daemon restart."""
    global node
    out = results["unplug"] = {"pid_before": daemon.pid}
    with Capture(node, "mjpeg", 640, 360) as cap:
        cap.next_frame(FRAME_TIMEOUT)
        (UDC_DIR / "soft_connect").write_text("disconnect")
        out["host_node_gone"] = bool(wait_for("the host node to go away", lambda: host_node() is None, 60))
        try:
            cap.next_frame(10)
            out["capture_after_unplug"] = "got a frame"
        except (OSError, CaptureError) as exc:
            out["capture_after_unplug"] = repr(exc)
    out["status_unplugged"] = wait_for(
        "host_connected false", lambda: (s := status())["host_connected"] is False and s, 60)
    out["idle_unplugged"] = wait_idle()["state"]
    (UDC_DIR / "soft_connect").write_text("connect")
    node = wait_for("the host node to come back", host_node, 120)
    out["after_replug"] = _stream_until_frame("after replug")
    out["pid_after"] = daemon.pid
    out["daemon_alive"] = daemon.poll() is None
    out["disconnects"] = status()["usb"]["disconnects"]
    wait_idle()


@step("udc_rebind")
def _():
    """The gadget unbound from its UDC mid-stream (its video node is destroyed) and bound again:
    the daemon finds the new node by itself."""
    global node
    out = results["udc_rebind"] = {"pid_before": daemon.pid}
    with Capture(node, "mjpeg", 640, 360) as cap:
        cap.next_frame(FRAME_TIMEOUT)
        (GADGET / "UDC").write_text("\n")
        wait_for("the host node to go away", lambda: host_node() is None, 60)
        try:
            cap.next_frame(5)
        except (OSError, CaptureError):
            pass
    out["status_unbound"] = wait_for(
        "the daemon to notice", lambda: (s := status())["usb"]["node_lost"] >= 1 and s, 60)
    (GADGET / "UDC").write_text(UDC + "\n")
    node = wait_for("the host node to come back", host_node, 180)
    out["after_rebind"] = _stream_until_frame("after rebind")
    out["status_after"] = status()
    out["daemon_alive"] = daemon.poll() is None
    wait_idle()


@step("start_stop_cycles")
def _():
    """A host application opening and closing the stream CYCLES times (every
    CYCLE_FRAME_EVERY-th time waiting for a frame): the daemon's memory and fds stay flat."""
    series = results["cycles"] = []
    began = time.monotonic()
    for i in range(1, CYCLES + 1):
        with Capture(node, "mjpeg", 640, 360) as cap:
            if i % CYCLE_FRAME_EVERY == 0:
                cap.next_frame(FRAME_TIMEOUT)
        if i == 1 or i % 10 == 0:
            rss, fds = daemon_memory(daemon.pid)
            series.append({"cycle": i, "rss_kb": rss, "fds": fds, "alive": daemon.poll() is None,
                           "elapsed_s": round(time.monotonic() - began, 1)})
            log(f"cycle {i}: rss {rss} kB, {fds} fds")
            save()
    results["cycles_idle"] = wait_idle()
    results["cycles_usb"] = status()["usb"]


@step("request_race")
def _():
    """Class requests from a usbfs host across stream start/stop races, each with a 500 ms
    timeout, as issue #12 reproduced it; then the request error code's reset."""
    device = results["host_usb_device"]
    usbfs_host.unbind_driver(device, (0, 1))
    trials = results["race"] = []
    requests_before = status()["usb"]["requests"]
    daemon_rows: dict[int, list] = {}
    gaps = start_gap_monitors()
    function = GADGET / "functions/uvc.usb0"
    pu = int((function / "control/processing/default/bUnitID").read_text())
    try:
        # The host waits up to 5 s, as uvcvideo does (not the 500 ms a strict host allows), so
        # that a slow answer is measured rather than lost; the test judges the times.
        with usbfs_host.UsbfsHost(device, (0, 1), timeout_ms=5000) as host:
            # format 1 (MJPEG), frame 3 (1280x720), 30 fps
            probe = usbfs_host.probe_bytes(1, 3, 333333)
            for delay in RACE_DELAYS * RACE_ROUNDS:
                host.control("SET_CUR probe", usbfs_host.OUT_CLASS_INTERFACE, usbfs_host.SET_CUR,
                             usbfs_host.VS_PROBE << 8, 1, probe)
                host.control("SET_CUR commit", usbfs_host.OUT_CLASS_INTERFACE, usbfs_host.SET_CUR,
                             usbfs_host.VS_COMMIT << 8, 1, probe)
                on = host.set_interface(1, 1)
                if delay == "streaming":
                    wait_for("the pipeline to stream", lambda: status()["state"] == "streaming", 300, 0.1)
                else:
                    time.sleep(delay)
                off = host.set_interface(1, 0)
                code = host.control("GET_CUR error code", usbfs_host.IN_CLASS_INTERFACE,
                                    usbfs_host.GET_CUR, usbfs_host.VC_REQUEST_ERROR_CODE << 8, 0, 1)
                back = host.control("GET_CUR probe", usbfs_host.IN_CLASS_INTERFACE, usbfs_host.GET_CUR,
                                    usbfs_host.VS_PROBE << 8, 1, 34)
                trials.append({"delay": delay, "set_interface_on": on.__dict__,
                               "set_interface_off": off.__dict__, "error_code": code.__dict__,
                               "probe_back": back.__dict__, "probe_back_hex": (back.data or b"").hex()})
                save()
                if len(trials) % len(RACE_DELAYS) == 0:  # the daemon keeps the latest ANSWER_RING
                    daemon_rows.update((row[0], row) for row in daemon_answers())
            # An unknown processing-unit control stalls; the error code says why, then resets.
            stall = host.control("GET_CUR unknown control", usbfs_host.IN_CLASS_INTERFACE,
                                 usbfs_host.GET_CUR, 0x1F << 8, pu << 8, 2)
            first = host.control("GET_CUR error code", usbfs_host.IN_CLASS_INTERFACE,
                                 usbfs_host.GET_CUR, usbfs_host.VC_REQUEST_ERROR_CODE << 8, 0, 1)
            second = host.control("GET_CUR error code", usbfs_host.IN_CLASS_INTERFACE,
                                  usbfs_host.GET_CUR, usbfs_host.VC_REQUEST_ERROR_CODE << 8, 0, 1)
            results["error_code_reads"] = [stall.__dict__, first.__dict__, second.__dict__]
            results["race_answers"] = [a.__dict__ for a in host.answers]
        # The daemon's own answer times for the same requests (appliance/uvc/device.py
        # AnswerTime), asked before uvcvideo takes the interfaces back and sends its own.
        daemon_rows.update((row[0], row) for row in daemon_answers())
        results["race_daemon_answers"] = [row for number, row in sorted(daemon_rows.items())
                                          if number > requests_before]
    finally:
        results["race_cpu_gaps"] = stop_gap_monitors(gaps)
        usbfs_host.bind_driver(device, (0, 1))
    results["race_idle"] = wait_idle()
    for a in results["race_answers"]:
        if isinstance(a.get("data"), bytes):
            a["data"] = a["data"].hex()


@step("daemon_stop")
def _():
    global node
    results["daemon_exit"] = stop_daemon(daemon, "daemon.log")
    results["daemon_log_errors"] = [line for line in (RUN / "daemon.log").read_text().splitlines()
                                    if "Traceback" in line or " ERROR " in line][:20]


@step("stamp_daemon_start")
def _():
    """The daemon again, now on the test-only counter source with effect none: frames cost next
    to nothing to make, so what is timed below is the transport, not TCG running the model."""
    global daemon, node
    from appliance.settings import SettingsStore
    SettingsStore(STATE, FLEET).update({"effect": "none"})
    daemon = start_daemon("--source", SPEC, env={LOG_ENV: str(STAMP_LOG)}, log_name="daemon-stamp.log",
                          module="tests.support.vm.stamp_source")
    node = wait_for("the host's uvcvideo node", host_node, 300)


@step("latency")
def _():
    """How old each frame is when the host application gets it (counter read from the picture)."""
    import cv2
    import numpy as np
    frames = []
    with Capture(node, "mjpeg", 640, 360) as cap:
        for frame in cap.frames(12, FRAME_TIMEOUT):
            gray = cv2.imdecode(np.frombuffer(frame.data, np.uint8), cv2.IMREAD_GRAYSCALE)
            frames.append({"counter": read_counter(gray), "dequeued_at": frame.dequeued_at,
                           "timestamp": frame.timestamp})
        st = status()
    results["latency_frames"] = frames
    results["latency_daemon_status"] = {k: st.get(k) for k in ("fps", "latency_ms", "effect", "source")}
    captured = {}
    for line in STAMP_LOG.read_text().splitlines():
        counter, when = line.split()
        captured[int(counter)] = float(when)
    results["latency_captured"] = {f["counter"]: captured.get(f["counter"]) for f in frames}
    wait_idle()


@step("compliance")
def _():
    """v4l2-compliance with its streaming tests, once per format."""
    runs = results["compliance"] = []
    for encoding, width, height in STREAMS:
        fourcc = "MJPG" if encoding == "mjpeg" else "YUYV"
        sh("v4l2-ctl", "-d", node, f"--set-fmt-video=width={width},height={height},pixelformat={fourcc}",
           check=True)
        began = time.monotonic()
        proc = sh("v4l2-compliance", "-d", node, "-s2", timeout=3600)
        lines = proc.stdout.splitlines()
        runs.append({"format": f"{fourcc} {width}x{height}", "seconds": round(time.monotonic() - began, 1),
                     "summary": next((ln.strip() for ln in lines if ln.startswith("Total for")), None),
                     "failures": [ln.strip() for ln in lines if "FAIL" in ln or "fail:" in ln],
                     "version": next((ln.strip() for ln in lines if "v4l2-compliance" in ln
                                      and "SHA" in ln), lines[0] if lines else None),
                     "format_line": next((ln.strip() for ln in lines if "Pixel Format" in ln), None),
                     "output": proc.stdout[-8000:]})
        save()
    wait_idle()


@step("stamp_daemon_stop")
def _():
    results["stamp_daemon_exit"] = stop_daemon(daemon, "daemon-stamp.log")
    from appliance.settings import SettingsStore
    SettingsStore(STATE, FLEET).update({"effect": "blur"})


@step("usb_networking")
def _():
    # Turning the setting on rebuilds the gadget with a second function (NCM) in c.1.
    from appliance.settings import SettingsStore
    SettingsStore(STATE, FLEET).update({"usb_networking": True})
    results["networking_up"] = gadget_cli("up")
    results["networking_status"] = json.loads(gadget_cli("status")[1])
    config = GADGET / "configs/c.1"
    results["networking_config"] = sorted(p.name for p in config.iterdir() if p.is_symlink())


@step("gadget_down")
def _():
    down = gadget_cli("down")
    again = gadget_cli("down")
    results["gadget_down"] = [*down, *again]
    results["gadget_status_after_down"] = json.loads(gadget_cli("status")[1])


for kept in STATE.glob("*.log"):  # a daemon's log that stop_daemon did not copy (a failed step)
    if not (RUN / kept.name).exists():
        (RUN / kept.name).write_bytes(kept.read_bytes())
results["dmesg_tail"] = sh("dmesg").stdout.splitlines()[-80:]
results["finished"] = True
save()
