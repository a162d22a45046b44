"""Power cuts while the daemon saves settings, in a VM with a real ext4 disk (tests/support/vm/
power_cut.py): after every cut the filesystem checks clean, the settings file holds the last
acknowledged write or the one in flight (never older, never torn) and the daemon starts on it.

BLURCAM_POWER_CUTS sets how many cuts (default 5); BLURCAM_POWER_CUT_SEED repeats a run's timing.
"""

from __future__ import annotations

import os
import random
import subprocess
import time

import pytest

from tests.support import capabilities
from tests.support.vm import power_cut, vmlib

pytestmark = pytest.mark.vm

RUNS = vmlib.CACHE / "power-cut-runs"
TABLE = vmlib.CACHE / "last-power-cut-table.md"


@pytest.fixture(scope="module")
def cuts() -> list[power_cut.Cut]:
    capabilities.require(vmlib.unavailable())
    count = int(os.environ.get("BLURCAM_POWER_CUTS", "5"))
    seed = int(os.environ.get("BLURCAM_POWER_CUT_SEED", random.randrange(1 << 30)))
    run_dir = vmlib.fresh_run_dir(RUNS)  # only the newest run's disk image and logs stay
    disk = power_cut.make_data_disk(run_dir / "data.img")
    started = time.monotonic()
    outcomes = power_cut.run_power_cuts(disk, count, run_dir, seed=seed)
    TABLE.write_text(f"{count} power cuts in {time.monotonic() - started:.0f} s (seed {seed}, "
                     f"run {run_dir})\n\n{power_cut.table(outcomes)}\n")
    print("\n" + TABLE.read_text())
    return outcomes


def _table() -> str:
    return TABLE.read_text()


def test_every_cut_leaves_the_last_acknowledged_or_the_in_flight_settings(cuts):
    assert all(c.verdict in ("last acknowledged", "in flight") for c in cuts), _table()


def test_the_filesystem_checks_clean_after_every_cut(cuts):
    # e2fsck may replay the journal and recount the free-space totals (ext4 writes those back
    # lazily); anything else it repairs is damage.
    assert all(c.fsck_rc in (0, 1) and c.fsck_damage == [] for c in cuts), _table()


def test_the_daemon_starts_after_every_cut_with_what_the_file_holds(cuts):
    assert all(c.loaded_by_daemon == c.file_write for c in cuts), _table()


def test_temp_files_a_cut_leaves_are_removed_when_the_daemon_starts(cuts):
    assert all(c.temp_files_after_start == [] for c in cuts), _table()


def test_every_cut_fell_in_the_middle_of_a_stream_of_writes_none_refused(cuts):
    assert len(cuts) >= 5
    assert all(c.acked >= 1 and c.refused == [] for c in cuts), _table()


@capabilities.needs(capabilities.tools("sfdisk", "mkfs.ext4", package="fdisk, e2fsprogs"))
def test_the_data_partition_of_a_layout_like_the_sd_images_is_found(tmp_path):
    """DataDisk with a partition (the SD image's p7, a logical partition) finds it for the host's
    e2fsck/debugfs and names it as the VM sees it: what an image test needs to cut that layout."""
    image = tmp_path / "sd.img"
    with open(image, "wb") as f:
        f.truncate(48 * 1024 * 1024)
    layout = ("label: dos\nstart=2048, size=8192, type=c\nsize=8192, type=c\nsize=8192, type=c\n"
              "type=5\nsize=6144, type=83\nsize=6144, type=83\ntype=83\n")
    subprocess.run(["sfdisk", "-q", str(image)], input=layout, text=True, check=True)
    disk = power_cut.DataDisk(image, partition=7)
    spec = disk.host_spec()
    offset = int(spec.rpartition("offset=")[2])
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "data", "-E", f"offset={offset}", str(image),
                    "8M"], check=True, capture_output=True)
    label = subprocess.run(["debugfs", "-R", "stats", spec], capture_output=True, text=True)
    assert "Filesystem volume name:   data" in label.stdout
    assert disk.guest_device == "/dev/vda7"
    assert power_cut.DataDisk(image).guest_device == "/dev/vda"


def test_a_partitions_journal_is_replayed_and_checked_after_a_cut(tmp_path):
    """e2fsck on the SD layout's p7 after a cut: it replays the journal and checks the filesystem
    (given image?offset=N instead of a device of its own, e2fsck 1.47 cannot re-open it after
    the replay and exits 12)."""
    image = tmp_path / "sd.img"
    with open(image, "wb") as f:
        f.truncate(48 * 1024 * 1024)
    subprocess.run(["sfdisk", "-q", str(image)], input="label: dos\nstart=2048, size=8192, type=c\ntype=5\n"
                   "size=6144, type=83\ntype=83\n", text=True, check=True)
    disk = power_cut.DataDisk(image, partition=6)
    start, size = disk.extent()
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "data", "-E", f"offset={start}", str(image),
                    f"{size // 1024}k"], check=True, capture_output=True)
    # What a cut leaves: the journal marked as holding transactions not yet written in place.
    subprocess.run(["debugfs", "-w", "-R", "feature needs_recovery", disk.host_spec()], check=True,
                   capture_output=True)
    rc, notes, damage = power_cut._fsck(disk, tmp_path / "fsck.log")
    assert (rc, notes, damage) == (0, "journal replayed", []), (tmp_path / "fsck.log").read_text()
