"""The offline image boots in QEMU's arm64 virt machine (TCG, Debian's arm64 kernel from the image's
own slot A boot partition) as a card would on a device: first-boot provisioning names the device,
the data partition grows to the card, the root stays read-only, the settings page answers, the
pipeline runs on its demo source, and nothing writes to the card while it runs.

The "card" is a copy of the image made 1 GiB larger (as a real card is larger than the image), with
this test's SSH key in its fleet file and a per-card override on its BLURCAM partition naming the
product: the test looks inside the device over SSH as the fleet's admin would. The VM has no USB device controller of its own; a
virtual controller pair (a UDC looped back to a host port in the same kernel) stands in for the
Pi's dwc2, so the gadget binds and enumerates. Debian's own dummy_hcd has no isochronous endpoints
(a UVC gadget cannot bind to it: EBUSY), so the card copy gets our dummy_hcd_iso
(tests/support/vm/dummy_hcd_iso, cross-compiled for the image's exact arm64 kernel) under
/lib/modules/<kernel>/updates of its slot-A root; the built image itself never holds it. uvcvideo is
kept off the VM's host port at boot (modprobe.blacklist): the pipeline's automatic camera choice
must not take its own output as a camera. The streaming test loads it by hand once the pipeline
runs on its demo source, and a host application in the same VM reads the webcam's frames.

Part of `make image-test` (BLURCAM_IMAGE_TEST=1). BLURCAM_IMAGE_SOAK_S sets how long the write
measurement runs (default 600 s).
"""

from __future__ import annotations

import base64
import contextlib
import http.cookiejar
import json
import os
import re
import shlex
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.image_build import vm_udc
from tests.image_build.imagetools import copy_fat_files, image_test_marks, mounted, partition_table, run
from tests.support.vm import vmlib

QEMU = "qemu-system-aarch64"
BOOT_TIMEOUT_S = 900  # TCG emulation of 2 arm64 cores on a 2-core x86 machine is slow
ADMIN_PASSWORD = "change-me-please"  # the hash in fleet.example.toml
CARD_EXTRA = 2**30  # the card is this much larger than the image
SOAK_S = float(os.environ.get("BLURCAM_IMAGE_SOAK_S", "600"))
CAPTURE_CLIENT = Path(vmlib.__file__).with_name("v4l2_capture.py")
# What the host application in the VM asks for: the smallest MJPEG mode (the model runs under TCG).
STREAM = ("mjpeg", 640, 360)
CARD_PRODUCT = "BlurCam Desk 7"  # the card's override names the USB product

pytestmark = image_test_marks(extra_tools=(QEMU, "ssh", "ssh-keygen"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Vm:
    def __init__(self, http_port: int, ssh_port: int, key: Path, console: Path):
        self.port, self.ssh_port, self.key, self.console = http_port, ssh_port, key, console
        self.qemu: subprocess.Popen | None = None
        jar = http.cookiejar.CookieJar()
        self.http = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, timeout: float = 60) -> tuple[int, bytes]:
        try:
            with self.http.open(self.url(path), timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def post_json(self, path: str, body: dict) -> tuple[int, dict]:
        req = urllib.request.Request(self.url(path), data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with self.http.open(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def sh(self, command: str, timeout: float = 180, input: str | None = None) -> subprocess.CompletedProcess:
        """Run a shell command on the device as root (the fleet's admin has sudo); `input` is
        its stdin."""
        return subprocess.run(
            ["ssh", "-i", str(self.key), "-p", str(self.ssh_port), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=30", "admin@127.0.0.1",
             # ssh joins its arguments into one line for the remote shell: quote the command.
             f"sudo sh -c {shlex.quote(command)}"],
            capture_output=True, text=True, timeout=timeout, input=input,
            stdin=subprocess.DEVNULL if input is None else None)

    def out(self, command: str, timeout: float = 180) -> str:
        r = self.sh(command, timeout=timeout)
        assert r.returncode == 0, f"{command}: {r.stderr}"
        return r.stdout


def make_card(image: Path, work: Path, public_key: str) -> tuple[Path, list]:
    """A copy of the image, 1 GiB larger, with this card's override (the product's name) on p1,
    and in slot A's root (p5) the test's SSH key in the fleet file and the test's USB controller
    module."""
    card = work / "card.img"
    run(["cp", "--sparse=always", str(image), str(card)])
    os.truncate(card, image.stat().st_size + CARD_EXTRA)
    _, _, parts = partition_table(card)
    override = work / "blurcam.toml"
    override.write_text(f'[usb]\nproduct = "{CARD_PRODUCT}"\n')
    run(["mcopy", "-i", f"{card}@@{parts[0].start}", str(override), "::/blurcam.toml"],
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    with mounted(card, parts[4], work / "rootA", "ext4", writable=True) as root:
        add_admin_key(root, public_key)
        release = vm_udc.add_test_udc(root)
    print(f"card: test key in the fleet file, {vm_udc.MODULE}.ko ({release}) in slot A's root")
    return card, parts


def add_admin_key(root: Path, public_key: str) -> None:
    """The test's key in the image's fleet file, as the operator's own key would be: SSH works in
    every boot, including one that cannot read the card's override."""
    fleet_file = root / "etc/blurcam/fleet.image.toml"
    text = fleet_file.read_text()
    assert text.count("authorized_keys = [\n") == 1, "the fleet file's [ssh] keys changed shape"
    fleet_file.write_text(text.replace("authorized_keys = [\n", f'authorized_keys = [\n  "{public_key}",\n'))


def boot(card: Path, parts: list, work: Path, key: Path, name: str) -> tuple[subprocess.Popen, Vm]:
    """Power the card up in the VM and wait for the settings page (fails with the console)."""
    boot_dir = copy_fat_files(card, parts[1], work / f"bootA-{name}")  # slot A's kernel, cmdline
    cmdline = (boot_dir / "cmdline.txt").read_text().strip() + " modprobe.blacklist=uvcvideo"
    http_port, ssh_port, console = free_port(), free_port(), work / f"console-{name}.log"
    qemu = subprocess.Popen(
        [QEMU, "-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024",
         "-display", "none", "-monitor", "none", "-serial", f"file:{console}", "-no-reboot",
         "-kernel", str(boot_dir / "vmlinuz"), "-initrd", str(boot_dir / "initrd.img"), "-append", cmdline,
         # The card copy takes the VM's writes; the built image is never changed.
         "-drive", f"file={card},format=raw,if=virtio,cache=unsafe",
         "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{http_port}-:80,"
                    f"hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
         "-device", "virtio-net-pci,netdev=net0", "-device", "virtio-rng-pci"],
        stdin=subprocess.DEVNULL, stdout=open(work / f"qemu-{name}.log", "wb"), stderr=subprocess.STDOUT)
    vm = Vm(http_port, ssh_port, key, console)
    vm.qemu = qemu
    started, answered = time.monotonic(), False
    while time.monotonic() - started < BOOT_TIMEOUT_S and qemu.poll() is None:
        try:
            status, _ = vm.get("/", timeout=10)
            answered = status in (200, 302)
        except OSError:
            pass
        if answered:
            break
        time.sleep(5)
    print(f"VM ({name} boot): settings page answered after {time.monotonic() - started:.0f} s" if answered
          else f"VM ({name} boot): no answer after {time.monotonic() - started:.0f} s")
    if not answered:
        stop(qemu)
        pytest.fail(f"the VM's settings page never answered ({name} boot); QEMU: "
                    + (work / f"qemu-{name}.log").read_text(errors="replace")[-2000:] + "\nconsole:\n"
                    + console.read_text(errors="replace")[-6000:])
    # sshd may start after the page under emulation (both wait for provisioning): the tests
    # look inside over SSH, so wait for it too.
    while (r := vm.sh("true", timeout=120)).returncode != 0:
        if time.monotonic() - started > BOOT_TIMEOUT_S or qemu.poll() is not None:
            stop(qemu)
            pytest.fail(f"no SSH into the VM ({name} boot): {r.stderr}")
        time.sleep(5)
    print(f"VM ({name} boot): SSH answered after {time.monotonic() - started:.0f} s")
    return qemu, vm


def stop(qemu: subprocess.Popen) -> None:
    qemu.terminate()
    try:
        qemu.wait(timeout=20)
    except subprocess.TimeoutExpired:
        qemu.kill()
        qemu.wait()


@pytest.fixture(scope="module")
def card(image, tmp_path_factory):
    """(card image, partitions, work dir, SSH key): one card for the whole module, booted again
    by later tests (as a device is unplugged and plugged in)."""
    work = tmp_path_factory.mktemp("vm")
    key = work / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "image-test", "-f", str(key)])
    card, parts = make_card(image, work, (work / "id_ed25519.pub").read_text().strip())
    yield card, parts, work, key
    card.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def vm(card):
    qemu, vm = boot(*card, name="first")
    yield vm
    stop(qemu)


def test_first_boot_provisioning_names_the_device_from_its_serial(vm):
    # QEMU's virt board has no Pi serial: provisioning falls back to the machine id. (The serial
    # console's login prompt may show the name from before provisioning: getty does not wait.)
    serial = vm.out("cut -c1-16 /etc/machine-id").strip()
    assert re.fullmatch(r"[0-9a-f]{16}", serial), serial
    assert vm.out("hostname").strip() == f"blurcam-{serial[-6:]}"
    assert vm.out("cat /sys/kernel/config/usb_gadget/blurcam/strings/0x409/serialnumber").strip() == serial
    assert vm.out("cat /sys/kernel/config/usb_gadget/blurcam/strings/0x409/product").strip() == CARD_PRODUCT


def test_the_settings_page_answers_over_the_network(vm):
    status, body = vm.get("/")
    assert status == 200
    assert b"BlurCam" in body


def test_the_root_and_boot_partitions_are_mounted_read_only(vm):
    mounts = {fields[1]: fields for fields in (line.split() for line in vm.out("cat /proc/mounts").splitlines())}
    assert "ro" in mounts["/"][3].split(","), mounts["/"]
    assert mounts["/"][0] in ("/dev/vda5", "/dev/root"), mounts["/"]
    assert "ro" in mounts["/boot/firmware"][3].split(",") and mounts["/boot/firmware"][0] == "/dev/vda1"
    r = vm.sh("touch /usr/blurcam-probe")
    assert r.returncode != 0 and "Read-only file system" in r.stderr


def test_the_data_partition_holds_the_state_and_has_grown_to_the_card(vm):
    mounts = {fields[1]: fields for fields in (line.split() for line in vm.out("cat /proc/mounts").splitlines())}
    assert mounts["/var/lib/blurcam"][0] == "/dev/vda7" and "rw" in mounts["/var/lib/blurcam"][3].split(",")
    size = int(vm.out("df -B1 --output=size /var/lib/blurcam | tail -1"))
    assert size > 900 * 2**20, f"data partition is {size} bytes: not grown (image: 64 MiB, card: +1 GiB)"
    assert "/var/lib/blurcam-web" in mounts  # the page's password hash, on p7 through a bind mount
    print(vm.out("journalctl -b -u blurcam-data.service -o cat"))
    assert vm.out("ls /var/lib/blurcam/system/ssh").split() == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]


def test_every_unit_started_on_the_read_only_root(vm):
    failed = vm.out("systemctl --failed --no-legend --plain")
    units = [line.split()[0] for line in failed.splitlines() if line.strip()]
    assert not units, failed + "".join(
        vm.out(f"journalctl -b -u {unit} -n 30 -o cat --no-pager") for unit in units)
    assert vm.sh("systemctl is-system-running --wait").stdout.strip() == "running"


def seconds(vm: Vm, unit: str) -> float:
    """When a unit became active, in seconds since the kernel started (monotonic clock)."""
    us = int(vm.out(f"systemctl show -P ActiveEnterTimestampMonotonic {unit}"))
    assert us > 0, f"{unit} never became active"
    return us / 1e6


def test_boot_brings_the_gadget_and_the_pipeline_up_without_waiting_for_the_network(vm):
    chain = vm.out("systemd-analyze critical-chain blurcam.service")
    print("systemd-analyze critical-chain blurcam.service (arm64 VM, QEMU TCG):\n" + chain)
    print(vm.out("systemd-analyze time"))
    print(vm.out("systemd-analyze blame | head -15"))
    gadget, ready = seconds(vm, "blurcam-gadget.service"), seconds(vm, "blurcam.service")
    print(f"kernel start -> gadget bound: {gadget:.1f} s; -> pipeline ready (READY=1): {ready:.1f} s")
    assert vm.out("cat /sys/kernel/config/usb_gadget/*/UDC").strip().startswith("dummy_udc")
    # The loop-back host port enumerated it: the webcam a computer would see.
    products = vm.out("cat /sys/bus/usb/devices/*/product 2>/dev/null || true").splitlines()
    assert CARD_PRODUCT in products, products
    assert "network-online.target" not in chain and "NetworkManager" not in chain
    assert gadget < ready


def test_the_pipeline_runs_on_its_demo_source_and_serves_a_preview(vm):
    status, reply = vm.post_json("/api/login", {"password": ADMIN_PASSWORD})
    assert status == 200, reply
    # The first preview starts camera + model (slow under emulation); retry for a while.
    deadline, jpeg = time.monotonic() + 300, b""
    while time.monotonic() < deadline:
        status, jpeg = vm.get("/api/preview/output.jpg", timeout=120)
        if status == 200:
            break
        time.sleep(5)
    assert status == 200, jpeg[:500]
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    status, body = vm.get("/api/status")
    st = json.loads(body)
    assert status == 200 and st["source"] == "demo" and st["state"] in ("preview", "streaming"), st
    # Frames keep coming (a count: at ~0.2 fps under TCG the live fps reads 0 between frames,
    # as it does for a stalled camera, so it says nothing here).
    assert st["frames_out"] > 0 and st["inference_ms"] and st["inference_ms"] > 0, st
    deadline, later = time.monotonic() + 180, st
    while later["frames_out"] <= st["frames_out"] and time.monotonic() < deadline:
        vm.get("/api/preview/output.jpg", timeout=120)  # the page watching keeps the pipeline on
        later = json.loads(vm.get("/api/status")[1])
    assert later["frames_out"] > st["frames_out"], (st, later)


def sectors_written(vm: Vm) -> dict[str, int]:
    """Sectors written per block device of the card (whole disk and partitions), from sysfs."""
    out = vm.out("for s in /sys/block/vda/stat /sys/block/vda/vda*/stat; do echo $s $(cat $s); done")
    return {line.split()[0].split("/")[-2]: int(line.split()[7]) for line in out.splitlines()}


# The host application in the VM: our V4L2 capture client reads the webcam for N seconds and
# prints what it got (frames, JPEG starts, sequence gaps, one frame to decode) as JSON.
HOST_APP = """
import base64, json, sys, time
sys.path.insert(0, "/run/blurcam-test")
from v4l2_capture import Capture, CaptureError
node, encoding = sys.argv[1], sys.argv[2]
width, height, seconds = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
got = {"frames": 0, "jpeg": 0, "errors": 0, "bytes": 0, "first_s": None, "last": "", "error": ""}
started = time.monotonic()
with Capture(node, encoding, width, height) as cap:
    while (left := seconds - (time.monotonic() - started)) > 0:
        try:
            frame = cap.next_frame(left)
        except CaptureError as exc:  # no frame before the end: only an error if time was left
            got["error"] = str(exc) if seconds - (time.monotonic() - started) > 1 else ""
            break
        except OSError as exc:  # e.g. ENODEV: the webcam went away mid-stream
            got["error"] = str(exc)
            break
        got["frames"] += 1
        got["jpeg"] += frame.data[:2] == b"\\xff\\xd8"
        got["errors"] += frame.error
        got["bytes"] += len(frame.data)
        got["first_s"] = got["first_s"] or round(time.monotonic() - started, 1)
        got["last"] = base64.b64encode(frame.data).decode()
got["seconds"] = round(time.monotonic() - started, 1)
print(json.dumps(got))
"""


def daemon_status(vm: Vm, preview: bool = False) -> dict:
    """The daemon's status from its control socket (as root on the device); with `preview`,
    after one preview frame (which starts the pipeline if it is not running)."""
    script = DAEMON_STATUS.format(preview=preview)
    return json.loads(vm.out(f"/opt/blurcam/venv/bin/python -c {shlex.quote(script)}", timeout=900))


DAEMON_STATUS = """
import json, time
from appliance.control import ControlClient, ControlError
client = ControlClient("/run/blurcam/control.sock", timeout=300)
deadline = time.monotonic() + 600  # the first preview loads the model: minutes under TCG
while {preview}:
    try:
        client.preview("output")
        break
    except ControlError:
        if time.monotonic() > deadline:
            raise
        time.sleep(5)
print(json.dumps(client.status()))
"""


def host_node(vm: Vm, timeout: float = 300) -> str:
    """The capture node uvcvideo made for the webcam on the VM's own host port (its video node,
    index 0; the other one is metadata)."""
    find = ("for d in /sys/class/video4linux/video*; do "
            "[ \"$(basename \"$(readlink -f $d/device/driver)\")\" = uvcvideo ] && "
            "[ \"$(cat $d/index)\" = 0 ] && echo /dev/${d##*/}; done; true")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if nodes := vm.out(find).split():
            return nodes[0]
        time.sleep(5)
    pytest.fail("uvcvideo made no capture node for the webcam within "
                f"{timeout:.0f} s:\n" + vm.out("dmesg | tail -40"))


def test_a_host_streams_for_minutes_and_nothing_writes_to_the_card(vm):
    """A host application in the same VM streams the webcam (uvcvideo on dummy_hcd_iso's host
    port) for SOAK_S seconds with no settings change: frames arrive, the pipeline keeps its demo
    source (its automatic choice never takes its own output), and the card's block device counts
    no written sector (/sys/block/vda*/stat, field 7)."""
    # The pipeline's source is chosen when it first starts: make sure that happened (a preview,
    # asked on the daemon's control socket) before the VM has a webcam node at all.
    vm.out("mkdir -p /run/blurcam-test")
    assert daemon_status(vm, preview=True)["source"] == "demo"
    r = vm.sh("cat > /run/blurcam-test/v4l2_capture.py", input=CAPTURE_CLIENT.read_text())
    assert r.returncode == 0, r.stderr
    r = vm.sh("cat > /run/blurcam-test/host_app.py", input=HOST_APP)
    assert r.returncode == 0, r.stderr
    vm.out("modprobe uvcvideo")  # by name: the boot-time blacklist only stops automatic loading
    node = host_node(vm)
    encoding, width, height = STREAM
    before = sectors_written(vm)
    r = vm.sh(f"/opt/blurcam/venv/bin/python /run/blurcam-test/host_app.py {node} {encoding} "
              f"{width} {height} {SOAK_S:g}", timeout=SOAK_S + 600)
    after = sectors_written(vm)
    assert r.returncode == 0, r.stderr + vm.out("journalctl -b -u blurcam.service -n 40 -o cat")
    got = json.loads(r.stdout)
    st = daemon_status(vm)
    delta = {dev: after[dev] - before[dev] for dev in after}
    print(f"host {node} ({encoding} {width}x{height}) streamed {got['seconds']:.0f} s: "
          f"{got['frames']} frames ({got['frames'] / got['seconds']:.2f} fps, first after "
          f"{got['first_s']} s, {got['jpeg']} JPEG, {got['errors']} with the error flag, "
          f"{got['bytes']} bytes{'; stopped: ' + got['error'] if got['error'] else ''}); "
          f"daemon: state {st['state']}, source {st['source']}, {st['fps']:.2f} fps")
    print("sectors written during the stream (field 7), before -> after: "
          + ", ".join(f"{dev} {before[dev]} -> {after[dev]}" for dev in after)
          + f"; = {delta['vda'] * 512} bytes to the card")
    assert got["frames"] > 0 and got["jpeg"] == got["frames"] and got["errors"] == 0, got | {"last": "..."}
    assert not got["error"] and got["seconds"] >= SOAK_S, got | {"last": "..."}
    frame = cv2.imdecode(np.frombuffer(base64.b64decode(got["last"]), np.uint8), cv2.IMREAD_COLOR)
    assert frame is not None and frame.shape[:2] == (height, width)
    assert st["source"] == "demo", st
    assert delta["vda"] == 0, vm.out("cat /proc/mounts")


def test_a_reset_flag_on_the_card_resets_the_password_at_the_next_boot(vm, card):
    """The operator drops blurcam-reset on the BLURCAM partition (here: over SSH, as a PC would
    write it) and plugs the camera in again: the old password stops working, the new one is in
    blurcam-password.txt on the card, the flag is gone and the partition is read-only again.
    The second boot's gadget-bound and ready times are printed (the data partition has grown)."""
    old_password_worked = vm.post_json("/api/login", {"password": ADMIN_PASSWORD})[0]
    vm.out("mount -o remount,rw /boot/firmware && touch /boot/firmware/blurcam-reset && "
           "mount -o remount,ro /boot/firmware && sync")
    power_off(vm)
    qemu, again = boot(*card, name="second")
    try:
        gadget, ready = seconds(again, "blurcam-gadget.service"), seconds(again, "blurcam.service")
        print(f"second boot (data partition already grown): kernel start -> gadget bound {gadget:.1f} s, "
              f"-> pipeline ready {ready:.1f} s\n" + again.out("systemd-analyze time")
              + again.out("systemd-analyze critical-chain blurcam.service"))
        assert again.out("cat /sys/kernel/config/usb_gadget/*/UDC").strip().startswith("dummy_udc")
        note = again.out("cat /boot/firmware/blurcam-password.txt")
        print(note)
        password = re.search(r"password is now: (\S+)", note).group(1)
        assert again.sh("test -e /boot/firmware/blurcam-reset").returncode != 0
        assert old_password_worked == 200, "the fleet's password did not work before the reset"
        assert again.post_json("/api/login", {"password": ADMIN_PASSWORD})[0] == 401
        assert again.post_json("/api/login", {"password": password})[0] == 200
        mounts = {f[1]: f for f in (line.split() for line in again.out("cat /proc/mounts").splitlines())}
        assert "ro" in mounts["/boot/firmware"][3].split(",")
    finally:
        stop(qemu)


def power_off(vm: Vm) -> None:
    vm.sh("systemctl poweroff")  # -no-reboot: QEMU exits
    assert vm.qemu is not None
    try:  # the card stays this VM's (QEMU's image lock) until it has powered off
        vm.qemu.wait(timeout=BOOT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail("the VM did not power off")


@contextlib.contextmanager
def boot_partition_unmountable(card: Path, parts: list):
    """The card's FAT partition (p1) with its boot sector zeroed, so that its mount fails at once
    (as one whose device came too late did), put back afterwards. Only the card copy is touched."""
    with open(card, "r+b") as disk:
        disk.seek(parts[0].start)
        sector = disk.read(512)
        disk.seek(parts[0].start)
        disk.write(bytes(512))
    try:
        yield
    finally:
        with open(card, "r+b") as disk:
            disk.seek(parts[0].start)
            disk.write(sector)


def test_a_boot_whose_boot_partition_fails_to_mount_still_names_the_device_and_lets_the_admin_in(vm, card):
    """If the card's FAT partition cannot be mounted (seen once: udevd started 165 s into a first
    boot on a loaded machine and systemd's then 90 s device wait ran out), provisioning still gives
    the device its name, its USB serial and the fleet file's SSH keys, and the webcam still runs;
    only the card's override waits for the next boot."""
    if vm.qemu is not None and vm.qemu.poll() is None:  # the first boot, if still running
        power_off(vm)
    with boot_partition_unmountable(card[0], card[1]):
        qemu, degraded = boot(*card, name="no-boot-partition")
        try:
            assert degraded.sh("systemctl is-failed boot-firmware.mount").stdout.strip() == "failed"
            assert degraded.sh("findmnt /boot/firmware").returncode != 0, "the boot partition was mounted"
            serial = degraded.out("cut -c1-16 /etc/machine-id").strip()  # the VM's board serial
            assert degraded.out("hostname").strip() == f"blurcam-{serial[-6:]}"
            strings = "/sys/kernel/config/usb_gadget/blurcam/strings/0x409"
            assert degraded.out(f"cat {strings}/serialnumber").strip() == serial
            assert degraded.out(f"cat {strings}/product").strip() == "BlurCam"  # the image's, not the card's
            journal = degraded.out("journalctl -b -u blurcam-provision.service -o cat --no-pager")
            assert "/boot/firmware is not mounted: this card's override was NOT read" in journal, journal
            for unit in ("blurcam-provision.service", "blurcam-gadget.service", "blurcam.service", "ssh.service"):
                assert degraded.sh(f"systemctl is-active {unit}").stdout.strip() == "active", unit
            assert degraded.out("cat /sys/kernel/config/usb_gadget/*/UDC").strip().startswith("dummy_udc")
        finally:
            stop(qemu)
