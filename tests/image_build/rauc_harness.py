"""RAUC for real on the build machine: the image's system.conf (image-build/update/rauc/) with the
slots pointed at files, RAUC's service on a private D-Bus system bus, and its uboot backend
editing a bootslot.env file through libubootenv's fw_setenv/fw_printenv. This machine's kernel has
no device-mapper, so a bundle cannot be mounted (dm-verity) and installed here: what runs here is
everything up to that point (signature, compatible, format checks, which come first) and the
slot-state side (status, mark-good, mark-bad). Installs run in the arm64 image VM.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UPDATE_DIR = ROOT / "image-build" / "update"
COMPATIBLE = "blurcam-test"
TOOLS = ["rauc", "dbus-daemon", "fw_setenv", "fw_printenv", "mkenvimage", "mksquashfs", "openssl",
         "mke2fs", "mkfs.vfat"]

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/>
  </policy>
</busconfig>
"""


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def make_key(where: Path, name: str) -> tuple[Path, Path]:
    key, cert = where / f"{name}.key.pem", where / f"{name}.cert.pem"
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
         "-subj", f"/O=BlurCam test/CN={name}", "-keyout", str(key), "-out", str(cert)])
    return key, cert


def make_slot_images(where: Path, version: str) -> tuple[Path, Path]:
    """A small rootfs.ext4 (with /etc/blurcam-version) and boot.vfat, like the build's."""
    tree = where / f"tree-{version}"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "blurcam-version").write_text(version + "\n")
    (tree / "payload").write_bytes(os.urandom(256 * 1024))  # squashfs needs more than a block
    rootfs, boot = where / f"rootfs-{version}.ext4", where / f"boot-{version}.vfat"
    run(["mke2fs", "-q", "-t", "ext4", "-L", "rootfs", "-d", str(tree), str(rootfs), "4M"])
    run(["mkfs.vfat", "-C", "-n", "BOOT", str(boot), str(2048)])
    return rootfs, boot


def make_bundle(where: Path, version: str, key: Path, cert: Path, compatible: str = COMPATIBLE) -> Path:
    rootfs, boot = make_slot_images(where, version)
    out = where / f"blurcam-{version}.raucb"
    run([str(UPDATE_DIR / "make-bundle.sh"), "--rootfs", str(rootfs), "--boot", str(boot),
         "--compatible", compatible, "--version", version, "--key", str(key), "--cert", str(cert),
         "--out", str(out)])
    return out


class RaucSystem:
    """A device's RAUC, minus the disk: slots are files under `work/dev`, the slot state is
    `work/bootslot.env`. Start with `start(booted=...)`, stop with `stop()`."""

    def __init__(self, work: Path, keyring: Path, backend: str = "uboot"):
        self.work = work
        self.dev = work / "dev"
        self.dev.mkdir(parents=True)
        for n in (2, 3, 5, 6):
            (self.dev / f"part{n}").write_bytes(b"\xa5" * (8 << 20))  # "old contents"
        conf = run([str(UPDATE_DIR / "rauc" / "render-system-conf.sh"), backend, COMPATIBLE,
                    str(self.dev / "part")]).stdout
        conf = (conf.replace("/etc/rauc/keyring.pem", str(keyring))
                .replace("data-directory=/var/lib/rauc", f"data-directory={work / 'rauc-data'}")
                .replace("/usr/lib/blurcam/", f"{UPDATE_DIR / 'device'}/"))
        self.conf = work / "system.conf"
        self.conf.write_text(conf)
        self.env_file = work / "bootslot.env"
        self.fw_config = work / "fw_env.config"
        self.fw_config.write_text(f"{self.env_file} 0x0 0x4000\n")
        # RAUC runs plain `fw_setenv`/`fw_printenv`; these point them at our file (on the device
        # /etc/fw_env.config does that).
        bin_dir = work / "bin"
        bin_dir.mkdir()
        for tool in ("fw_setenv", "fw_printenv"):
            (bin_dir / tool).write_text(f'#!/bin/sh\nexec /usr/bin/{tool} -c "{self.fw_config}" "$@"\n')
            (bin_dir / tool).chmod(0o755)
        # The tryboot backend's boot partition (autoboot.txt) is this directory.
        self.boot_dir = work / "boot"
        self.boot_dir.mkdir()
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                    "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={work / 'bus.sock'}",
                    "BLURCAM_BOOT_DIR": str(self.boot_dir)}
        self.procs: list[subprocess.Popen] = []

    def set_slot_state(self, text: str) -> None:
        (self.work / "env.txt").write_text(text)
        run(["mkenvimage", "-s", "0x4000", "-o", str(self.env_file), str(self.work / "env.txt")])

    def slot_state(self) -> dict[str, str]:
        out = run(["fw_printenv", "-c", str(self.fw_config)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def start(self, booted: str) -> None:
        (self.work / "bus.sock").unlink(missing_ok=True)
        (self.work / "bus.conf").write_text(BUS_CONFIG.format(socket=self.work / "bus.sock"))
        self.procs.append(subprocess.Popen(["dbus-daemon", "--nofork", f"--config-file={self.work / 'bus.conf'}"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 20
        while not (self.work / "bus.sock").exists():
            assert time.monotonic() < deadline, "private D-Bus did not start"
            time.sleep(0.05)
        (self.work / "mnt").mkdir(exist_ok=True)
        self.log = open(self.work / "rauc-service.log", "a")
        self.procs.append(subprocess.Popen(
            ["rauc", f"--conf={self.conf}", f"--mount={self.work / 'mnt'}", f"--override-boot-slot={booted}",
             "service"], env=self.env, stdout=self.log, stderr=subprocess.STDOUT))
        while subprocess.run(["rauc", "status"], env=self.env, capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, (self.work / "rauc-service.log").read_text()
            time.sleep(0.2)

    def stop(self) -> None:
        for proc in reversed(self.procs):  # only what start() launched, by its own handle
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        if hasattr(self, "log"):
            self.log.close()

    def slots_bytes(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.dev.iterdir())}
