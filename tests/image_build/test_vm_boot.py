"""The offline image boots in QEMU's arm64 virt machine (TCG, Debian's arm64 kernel from the image's
own boot partition): first-boot provisioning names the device, the settings page answers over the
network, and the pipeline runs on its demo source (no camera in a VM).

Part of `make image-test` (BLURCAM_IMAGE_TEST=1). The USB gadget is skipped in the VM (no UDC):
blurcam-gadget.service has ConditionDirectoryNotEmpty=/sys/class/udc.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.image_build.imagetools import copy_fat_files, image_test_marks, partition_table

QEMU = "qemu-system-aarch64"
BOOT_TIMEOUT_S = 900  # TCG emulation of 2 arm64 cores on a 2-core x86 machine is slow
ADMIN_PASSWORD = "change-me-please"  # the hash in fleet.example.toml

pytestmark = image_test_marks(extra_tools=(QEMU,))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Vm:
    def __init__(self, port: int, console: Path):
        self.port, self.console = port, console
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


@pytest.fixture(scope="module")
def vm(image, tmp_path_factory):
    work = tmp_path_factory.mktemp("vm")
    _, _, parts = partition_table(image)
    boot = copy_fat_files(image, parts[0], work / "boot")
    for name in ("vmlinuz", "initrd.img", "cmdline.txt"):
        shutil.copy(boot / name, work / name)
    cmdline = (work / "cmdline.txt").read_text().strip()
    port, console = free_port(), work / "console.log"
    qemu = subprocess.Popen(
        [QEMU, "-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024",
         "-display", "none", "-monitor", "none", "-serial", f"file:{console}", "-no-reboot",
         "-kernel", str(work / "vmlinuz"), "-initrd", str(work / "initrd.img"), "-append", cmdline,
         # snapshot=on: the VM's writes go to a temporary file, never into the image
         "-drive", f"file={image},format=raw,if=virtio,snapshot=on",
         "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:80",
         "-device", "virtio-net-pci,netdev=net0", "-device", "virtio-rng-pci"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    vm = Vm(port, console)
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
    print(f"VM: settings page answered after {time.monotonic() - started:.0f} s" if answered
          else f"VM: no answer after {time.monotonic() - started:.0f} s")
    try:
        if not answered:
            pytest.fail("the VM's settings page never answered; console:\n"
                        + console.read_text(errors="replace")[-6000:])
        yield vm
    finally:
        qemu.terminate()
        try:
            qemu.wait(timeout=20)
        except subprocess.TimeoutExpired:
            qemu.kill()


def test_first_boot_provisioning_names_the_device_from_its_serial(vm):
    # QEMU's virt board has no Pi serial: provisioning falls back to the machine id.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = vm.console.read_text(errors="replace")
        if m := re.search(r"^(blurcam-[0-9a-f]{6}) login:", text, re.M):
            break
        time.sleep(3)
    assert m, vm.console.read_text(errors="replace")[-3000:]


def test_the_settings_page_answers_over_the_network(vm):
    status, body = vm.get("/")
    assert status == 200
    assert b"BlurCam" in body


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
    assert st["fps"] > 0 and st["inference_ms"] and st["inference_ms"] > 0, st
