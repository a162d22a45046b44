"""Runs inside the test VM (see test_uvc_vm.py): our gadget and daemon on one side of usbip, the
Linux host driver (uvcvideo) and v4l-utils on the other. Writes what it saw to RUN/results.json;
the pytest on the host judges it. Every step records its outcome even when an earlier one failed.
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

from appliance.control import ControlClient  # noqa: E402

RUN = Path(sys.argv[1])
STATE = Path("/run/blurcam-vm-state")  # the VM's own tmpfs: a unix socket cannot live on 9p
FLEET = RUN / "fleet.toml"
DUMP = RUN / "dump"
SOCKET = STATE / "control.sock"
UDC = "usbip-vudc.0"
CYCLES = int(os.environ.get("BLURCAM_VM_CYCLES", "20"))
results: dict = {"errors": {}}


def save() -> None:
    (RUN / "results.json").write_text(json.dumps(results, indent=2, default=str))


def log(msg: str) -> None:
    print(f"[{time.monotonic():8.1f}] {msg}", flush=True)


def sh(*cmd: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
    log("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.stdout.strip():
        print(proc.stdout.rstrip()[-3000:], flush=True)
    if proc.stderr.strip():
        print("stderr: " + proc.stderr.rstrip()[-2000:], flush=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc


def blurcam(*args: str, **kw) -> subprocess.CompletedProcess:
    return sh(sys.executable, "-m", "appliance", *args, **kw)


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
        log(f"=== {name}")
        try:
            fn()
        except Exception as exc:
            results["errors"][name] = f"{exc!r}\n{traceback.format_exc()}"
            log(f"!!! {name}: {exc!r}")
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


def status() -> dict:
    return ControlClient(SOCKET, timeout=10).status()


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


def attach() -> str:
    sh("usbip", "attach", "-r", "127.0.0.1", "-b", UDC, check=True)
    return wait_for("the host's uvcvideo node", host_node, 60)


def detach() -> None:
    sh("usbip", "detach", "-p", "00", check=True)
    wait_for("the host node to go away", lambda: host_node() is None, 60)


FLEET.write_text('[usb]\nvendor_id = "0x1d6b"\nproduct_id = "0x0104"\nmanufacturer = "BlurCam"\n'
                 'product = "BlurCam"\n')
STATE.mkdir(parents=True, exist_ok=True)
results["kernel"] = os.uname().release
daemon: subprocess.Popen | None = None
node: str | None = None


def gadget_cli(action: str, *extra: str) -> list:
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


@step("gadget_up")
def _():
    results["udcs"] = sorted(os.listdir("/sys/class/udc"))
    # The real command line once, then the same entry point in-process.
    first = blurcam("gadget", "up", "--state-dir", str(STATE), "--fleet-file", str(FLEET))
    results["gadget_up"] = [first.returncode, first.stdout.strip() + first.stderr.strip()]
    results["gadget_up_again"] = gadget_cli("up")
    results["gadget_status"] = json.loads(gadget_cli("status")[1])
    base = "/sys/kernel/config/usb_gadget/blurcam/functions/uvc.usb0/control"
    results["bm_controls"] = {
        unit: Path(f"{base}/{path}/bmControls").read_text().split()
        for unit, path in (("camera", "terminal/camera/default"), ("processing", "processing/default"))}


@step("daemon_start")
def _():
    global daemon
    env = {**os.environ, "BLURCAM_UVC_DUMP_DIR": str(DUMP), "BLURCAM_UVC_DUMP_MAX": "4",
           "PYTHONUNBUFFERED": "1"}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--source", "demo", "--state-dir", str(STATE),
         "--fleet-file", str(FLEET)],
        stdout=open(RUN / "daemon.log", "w"), stderr=subprocess.STDOUT, env=env, cwd=REPO)
    results["daemon_pid"] = daemon.pid
    st = wait_for("the daemon's UVC server", lambda: status().get("usb"), 240, 1.0)
    results["usb_status_before_attach"] = st


@step("attach")
def _():
    global node
    sh("ip", "link", "set", "lo", "up")
    sh("usbipd", "--device", "-D", check=True)
    time.sleep(1)
    node = attach()
    results["host_node"] = node
    results["host_devices"] = sh("v4l2-ctl", "--list-devices").stdout
    results["status_after_attach"] = wait_for("host_connected", lambda: (s := status())["host_connected"] and s, 30)


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


@step("compliance")
def _():
    proc = sh("v4l2-compliance", "-d", node, timeout=300)
    results["compliance_output"] = proc.stdout + proc.stderr
    results["compliance_summary"] = next(
        (line.strip() for line in proc.stdout.splitlines() if line.startswith("Total for")), None)
    results["compliance_failures"] = [line.strip() for line in proc.stdout.splitlines()
                                      if "FAIL" in line]


@step("controls")
def _():
    results["controls_listed"] = sh("v4l2-ctl", "-d", node, "--list-ctrls").stdout
    sh("v4l2-ctl", "-d", node, "-c", "brightness=37", check=True)
    results["brightness_daemon"] = wait_for(
        "brightness 37 in the daemon status",
        lambda: status()["controls"]["brightness"] == 37 and status()["controls"], 20)
    # A change made on the device side (web page) is what the host reads back.
    ControlClient(SOCKET).update_settings({"brightness": -12})
    results["brightness_host_readback"] = sh("v4l2-ctl", "-d", node, "-C", "brightness").stdout.strip()
    if "contrast" in results["controls_listed"]:
        sh("v4l2-ctl", "-d", node, "-c", "contrast=150", check=True)
        results["contrast_daemon"] = status()["controls"]["contrast"]


@step("stream_720p_mjpeg")
def _():
    host = subprocess.Popen(
        ["v4l2-ctl", "-d", node, "--set-fmt-video=width=1280,height=720,pixelformat=MJPG",
         "--stream-mmap=4", "--stream-count=100000"],
        stdout=open(RUN / "host-stream.log", "w"), stderr=subprocess.STDOUT)
    try:
        results["stream_status"] = wait_for(
            "the daemon to stream", lambda: (s := status())["state"] == "streaming" and s, 120, 0.5)
        # usbip-vudc never completes isochronous transfers, so the 4 output buffers are never
        # handed back: 3 queued frames are what this link can show (~1 min under TCG).
        wait_for("3 queued frames in the dump", lambda: len(list(DUMP.glob("*.jpg"))) >= 3, 300, 1.0)
        results["stream_status_later"] = status()
    finally:
        host.send_signal(signal.SIGINT)
        try:
            host.wait(20)
        except subprocess.TimeoutExpired:
            host.kill()
            host.wait()
    results["dump_files"] = sorted(p.name for p in DUMP.iterdir())
    results["idle_status"] = wait_for(
        "the daemon to go idle", lambda: (s := status())["state"] == "idle" and s, 60, 0.5)


@step("attach_detach_cycles")
def _():
    global node
    cycles = []
    for i in range(CYCLES):
        detach()
        try:
            off = wait_for("host_connected false", lambda: not status()["host_connected"], 20)
        except TimeoutError:
            off = False
        node = attach()
        st = wait_for("host_connected", lambda: (s := status())["host_connected"] and s, 30)
        rss, fds = daemon_memory(daemon.pid)
        cycles.append({"cycle": i + 1, "rss_kb": rss, "fds": fds, "alive": daemon.poll() is None,
                       "disconnect_seen": off is True, "usb": st.get("usb")})
        log(f"cycle {i + 1}: rss {rss} kB, {fds} fds")
        results["cycles"] = cycles
        save()
    results["after_cycles_brightness"] = sh("v4l2-ctl", "-d", node, "-C", "brightness").stdout.strip()


@step("daemon_stop")
def _():
    if daemon is None:
        return
    daemon.send_signal(signal.SIGTERM)
    results["daemon_exit"] = daemon.wait(60)


@step("usb_networking")
def _():
    # Turning the setting on rebuilds the gadget with a second function (NCM) in c.1.
    from appliance.settings import SettingsStore
    SettingsStore(STATE, FLEET).update({"usb_networking": True})
    results["networking_up"] = gadget_cli("up")
    results["networking_status"] = json.loads(gadget_cli("status")[1])
    config = Path("/sys/kernel/config/usb_gadget/blurcam/configs/c.1")
    results["networking_config"] = sorted(p.name for p in config.iterdir() if p.is_symlink())


@step("gadget_down")
def _():
    sh("usbip", "detach", "-p", "00")
    down = gadget_cli("down")
    again = gadget_cli("down")
    results["gadget_down"] = [*down, *again]
    results["gadget_status_after_down"] = json.loads(gadget_cli("status")[1])


results["dmesg_tail"] = sh("dmesg").stdout.splitlines()[-60:]
results["finished"] = True
save()
