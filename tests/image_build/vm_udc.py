"""The arm64 test VM's USB device controller, put into a test's copy of an image root.

QEMU's virt machine has no USB device controller; a virtual controller pair (a UDC looped back to a
host port in the same kernel) stands in for the Pi's dwc2. Debian's own dummy_hcd has no
isochronous endpoints (a UVC gadget cannot bind to it: EBUSY), so a copy of the image's root gets
our dummy_hcd_iso (tests/support/vm/dummy_hcd_iso, cross-compiled for the root's exact arm64
kernel) under /lib/modules/<kernel>/updates, indexed with the root's own depmod, and named in the
offline image's modules-load file for the test controller (install-update.sh names the stock
dummy_hcd there). The built image itself never holds it. Used by the boot test (the card's slot A)
and the update test (slot A and the roots inside its bundles, so an updated slot binds too).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.image_build.imagetools import run
from tests.support.vm.dummy_hcd_iso import build as iso_module

MODULE = iso_module.MODULE_NAME
# The offline image's modules-load.d file for the test VM's USB controller (install-update.sh).
TEST_UDC_CONF = "blurcam-test-udc.conf"
# TCG on a shared 2-core machine runs the pipeline tens of times slower than a Pi: its watchdog
# pings (10 s on a device) came late while it streamed and systemd restarted it mid-stream. A
# test's copy gets a limit sized for emulation; the image keeps its own.
WATCHDOG_S = 300
ARCH = "arm64"
SUITE = "trixie"  # the offline image's Debian release: its kernel's headers come from there


def add_test_udc(root: Path) -> str:
    """Put dummy_hcd_iso into the mounted, writable copy of an image root at `root` (built for
    its only kernel, the package version from its dpkg status); returns the kernel release."""
    modules = root / "usr" / "lib" / "modules"
    releases = [d.name for d in modules.iterdir() if d.is_dir()]
    assert len(releases) == 1, f"the image's root holds kernels {releases}: expected one"
    release = releases[0]
    status = (root / "var" / "lib" / "dpkg" / "status").read_text()
    block = re.search(rf"^Package: linux-image-{re.escape(release)}(?:-unsigned)?\n(?:.+\n)*?"
                      rf"Version: (\S+)", status, re.M)
    assert block, f"no linux-image-{release} package in the image's dpkg status"
    try:
        module = iso_module.build(release, block.group(1), suite=SUITE, arch=ARCH)
    except iso_module.ModuleBuildError as exc:
        pytest.fail(f"building the test module {MODULE} for {release} ({ARCH}) failed:\n{exc}")
    updates = modules / release / "updates"
    updates.mkdir(exist_ok=True)
    run(["cp", str(module), str(updates / module.name)])
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    run(["chroot", str(root), "depmod", release], env=env, timeout=900)
    (root / "etc" / "modules-load.d" / TEST_UDC_CONF).write_text(f"{MODULE}\n")
    dropin = root / "etc" / "systemd" / "system" / "blurcam.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "emulated-vm.conf").write_text(f"[Service]\nWatchdogSec={WATCHDOG_S}\n")
    return release
