"""The Raspberry Pi 4/5 slot switch (firmware tryboot), up to the files it writes: RAUC's real
service runs our custom backend (image-build/update/device/rauc-tryboot) and writes autoboot.txt
and the pending-trial flag; the reboot carries the tryboot argument. (The post-install handler
that points the new slot's cmdline.txt at its own root runs in the VM install test.) The firmware itself (reading autoboot.txt,
honouring `reboot "0 tryboot"` once) is on the hardware checklist, tests/hardware/README.md.
"""

from __future__ import annotations

import subprocess

import pytest

from appliance import update
from tests.image_build.rauc_harness import UPDATE_DIR, RaucSystem, make_key, missing_tools, run
from tests.support import capabilities

pytestmark = capabilities.needs(f"missing {missing_tools()}: tools/system-deps.sh as root" if missing_tools() else None)

AUTOBOOT_A = "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"
AUTOBOOT_B = "[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=2\n"


@pytest.fixture
def pi(tmp_path, monkeypatch):
    _, cert = make_key(tmp_path, "fleet")
    system = RaucSystem(tmp_path / "pi", keyring=cert, backend="tryboot")
    (system.boot_dir / "autoboot.txt").write_text(AUTOBOOT_A)
    for name in ("PATH", "DBUS_SYSTEM_BUS_ADDRESS", "BLURCAM_BOOT_DIR"):
        monkeypatch.setenv(name, system.env[name])
    yield system
    system.stop()


def rauc(*args: str) -> str:
    return run(["rauc", *args]).stdout


def test_an_installed_slot_becomes_a_pending_trial_and_the_reboot_asks_for_tryboot(pi):
    pi.start(booted="A")
    # What RAUC does after writing slot B: make it primary (the same backend call as `install`).
    rauc("status", "mark-active", "other")
    assert (pi.boot_dir / "autoboot.txt").read_text() == AUTOBOOT_A  # A stays the default
    assert (pi.boot_dir / "blurcam-tryboot").read_text().strip() == "B"
    assert update.slot_state().primary == "B"
    assert update.reboot_into_trial(pi.boot_dir) == ("systemctl", "reboot", "0 tryboot")


def test_a_trial_that_passes_makes_its_slot_the_default(pi):
    pi.start(booted="A")
    rauc("status", "mark-active", "other")
    pi.stop()
    pi.start(booted="B")  # the firmware started p3 once (tryboot)
    assert update.slot_state().booted_good is False  # on trial: confirm will judge it
    rauc("status", "mark-good", "booted")
    assert (pi.boot_dir / "autoboot.txt").read_text() == AUTOBOOT_B
    assert not (pi.boot_dir / "blurcam-tryboot").exists()
    assert update.reboot_into_trial(pi.boot_dir) == ("systemctl", "reboot")
    assert update.slot_state().booted_good is True


def test_a_trial_that_fails_leaves_the_old_slot_the_default(pi):
    pi.start(booted="A")
    rauc("status", "mark-active", "other")
    pi.stop()
    pi.start(booted="B")
    rauc("status", "mark-bad", "booted")
    assert (pi.boot_dir / "autoboot.txt").read_text() == AUTOBOOT_A
    assert not (pi.boot_dir / "blurcam-tryboot").exists()
    assert update.slot_state().primary == "A"


def test_the_backend_names_a_broken_autoboot_file(pi, tmp_path):
    (pi.boot_dir / "autoboot.txt").write_text("[all]\nboot_partition=7\n")
    done = subprocess.run([str(UPDATE_DIR / "device" / "rauc-tryboot"), "get-primary"], env=pi.env,
                          capture_output=True, text=True)
    assert done.returncode != 0 and "boot_partition=7 is neither 2 nor 3" in done.stderr
