"""A failing disk (I/O errors), in a VM: the daemon's state on ext4 over device-mapper, and every
block the filesystem has free made to fail (dm `error` target), the way a worn SD card fails
where new data goes. A save then fails with a plain sentence, the running values stay, and the
file on disk, checked after the disk is healed, is the one saved before. A version that writes
in place loses it here: its truncation reaches the disk, its new data does not.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.support import capabilities
from tests.support.vm import power_cut, vmlib

pytestmark = pytest.mark.vm

RUNS = vmlib.CACHE / "io-error-runs"
GUEST = vmlib.HERE / "io_error_guest.py"
WORDS = "the device's storage failed to write (the SD card may be failing)"


@pytest.fixture(scope="module")
def vm() -> dict:
    capabilities.require(vmlib.unavailable())
    run_dir = vmlib.fresh_run_dir(RUNS)  # only the newest run's disk image and logs stay
    disk = power_cut.make_data_disk(run_dir / "data.img")
    (run_dir / "plan.json").write_text(json.dumps({"device": "/dev/vda",
                                                   "mountpoint": str(run_dir / "data")}))
    script = run_dir / "guest.sh"
    script.write_text(f'#!/bin/sh\ncd {vmlib.REPO}\nexec {sys.executable} {GUEST} "$1" '
                      '> "$1/guest.log" 2>&1\n')
    vmlib.run_vm(script, run_dir, timeout=900, memory_mb=1024,
                 modules=power_cut.STORAGE_MODULES, disks=(disk.image,))
    results = run_dir / "results.json"
    if not results.exists():
        pytest.fail(f"the VM wrote no results; see {run_dir}/console.log and guest.log")
    out = json.loads(results.read_text())
    assert "error" not in out, out["error"]
    return out


def test_the_fault_really_failed_the_free_blocks(vm):
    assert vm["before"]["ok"] and vm["background_before"]["ok"]
    assert vm["fault_table_rows"] >= 3  # error segments between the used ones


def test_a_save_on_a_failing_disk_is_refused_in_plain_words(vm):
    assert vm["settings_during"] == {
        "ok": False, "type": "StorageError",
        "message": f"Settings not saved: {WORDS}. Nothing was changed."}
    assert vm["background_during"] == {
        "ok": False, "type": "StorageError",
        "message": f"Background picture not saved: {WORDS}. Nothing was changed."}


def test_the_running_values_stay_as_they_were(vm):
    running = vm["running_during"]["result"]
    assert running["blur_strength"] == 70
    assert running["privacy_text"] == "saved before the fault"
    assert running["background"] == vm["background_before"]["result"]


def test_the_file_on_disk_is_the_one_saved_before_the_fault(vm):
    assert vm["fsck"]["rc"] in (0, 1), vm["fsck"]["output"]
    assert vm["file_after"] == vm["file_before"]


def test_nothing_else_is_left_on_the_disk(vm):
    assert vm["files_after"] == ["backgrounds", f"backgrounds/{vm['background_before']['result']}",
                                 "settings.json"]
