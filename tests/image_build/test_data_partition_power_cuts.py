"""The SD image's own data partition (p7) under power cuts, on a real kernel and filesystem.

A card is a copy of the built image made larger (as a real card is). The x86 test VM
(tests/support/vm) first grows p7 to the card with the image's own script, online, as the first
boot does (blurcam-data.service); then the real daemon keeps saving settings on it, mounted with
the image's own fstab options, while QEMU is killed at random moments, BLURCAM_IMAGE_POWER_CUTS
times (default 50; tests/support/vm/power_cut.py). After every cut: e2fsck finds nothing to
repair beyond a journal replay, the settings file holds the last acknowledged write or the one in
flight, and the next start of the daemon loads it.

The VM runs Debian 12's x86 kernel and this machine's e2fsprogs and util-linux (the device: trixie's
arm64 ones); the filesystem, its options and the partition table are the image's own.
Part of `make image-test` (BLURCAM_IMAGE_TEST=1); slow: one VM boot per cut.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.image_build.imagetools import image_test_marks, partition_table, run
from tests.support.vm import power_cut, vmlib

CUTS = int(os.environ.get("BLURCAM_IMAGE_POWER_CUTS", "50"))
CARD_EXTRA = 2 * 2**30  # the card is this much larger than the image
TABLE = vmlib.CACHE / "last-image-power-cut-table.md"
DATA = 7  # LAYOUT.md: p7, mounted at /var/lib/blurcam

pytestmark = [*image_test_marks(extra_tools=("debugfs", "dumpe2fs", "e2fsck")), pytest.mark.vm]


def root_spec(image: Path) -> str:
    """Slot A's root filesystem (p5) for debugfs: the image file at the partition's offset."""
    return f"{image}?offset={partition_table(image)[2][4].start}"


def shipped_text(image: Path, path: str) -> str:
    """A file as the image ships it (read from rootA with debugfs, nothing mounted)."""
    return run(["debugfs", "-R", f"cat {path}", root_spec(image)]).stdout


def data_mount_options(image: Path) -> str:
    for line in shipped_text(image, "/etc/fstab").splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == "/var/lib/blurcam":
            # The filesystem's own options; x-* ones are systemd's (mount(8) passes none to the kernel).
            return ",".join(o for o in fields[3].split(",") if not o.startswith("x-"))
    raise AssertionError("the image's fstab does not mount /var/lib/blurcam")


# The first boot's growth, in the VM: p7 mounted as the image mounts it, grown by the script the
# image ships, unmounted again (its exit status reported in the run directory).
GROW_SCRIPT = """#!/bin/sh
run=$1
mkdir -p "$run/data"
mount -t ext4 -o {options} {device} "$run/data" || {{ echo "mount failed" > "$run/grow-status"; exit 1; }}
sh "$run/data-partition" "$run/data" > "$run/grow.log" 2>&1
echo "exit $?" > "$run/grow-status"
umount "$run/data"
sync
"""


@pytest.fixture(scope="module")
def vm_ready():
    reason = vmlib.unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def card(image, vm_ready, tmp_path_factory) -> dict:
    """The card after its first boot: a copy of the image, CARD_EXTRA larger, p7 grown online."""
    work = tmp_path_factory.mktemp("power-cut-card")
    card = work / "card.img"
    run(["cp", "--sparse=always", str(image), str(card)])
    os.truncate(card, image.stat().st_size + CARD_EXTRA)
    options = data_mount_options(image)
    grow = work / "grow"
    grow.mkdir()
    (grow / "data-partition").write_text(shipped_text(image, "/usr/lib/blurcam/data-partition"))
    script = grow / "grow.sh"
    script.write_text(GROW_SCRIPT.format(options=options, device=f"/dev/vda{DATA}"))
    started = time.monotonic()
    vmlib.run_vm(script, grow, timeout=900, memory_mb=512, modules=power_cut.STORAGE_MODULES, disks=(card,))
    status = (grow / "grow-status").read_text().strip() if (grow / "grow-status").exists() else "no status"
    log = (grow / "grow.log").read_text() if (grow / "grow.log").exists() else ""
    print(f"first boot's growth in the VM ({time.monotonic() - started:.0f} s): {status}\n{log}")
    assert status == "exit 0", f"{status}\n{log}\n{(grow / 'console.log').read_text(errors='replace')[-3000:]}"
    return {"image": card, "options": options, "work": work, "grow_log": log}


def data_spec(card: Path) -> str:
    return power_cut.DataDisk(card, partition=DATA).host_spec()


def test_the_first_boot_grows_the_data_partition_to_the_end_of_the_card(card):
    _, _, parts = partition_table(card["image"])
    p7, extended = parts[DATA - 1], parts[3]
    size = card["image"].stat().st_size
    assert extended.start + extended.size == size and p7.start + p7.size == size, parts
    head = run(["dumpe2fs", "-h", data_spec(card["image"])]).stdout
    blocks = int(re.search(r"^Block count:\s+(\d+)", head, re.M)[1])
    block_size = int(re.search(r"^Block size:\s+(\d+)", head, re.M)[1])
    assert p7.size - blocks * block_size < block_size * 32768, "the filesystem did not grow with p7"
    fsck = subprocess.run(["e2fsck", "-fn", data_spec(card["image"])], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_the_grown_data_partition_has_no_inode_table_left_to_initialise(card):
    """ext4 zeroes uninitialised inode tables in the background after mounting (ext4lazyinit):
    writes to the card long after boot. Every group, old and added by the growth, is zeroed."""
    dump = run(["dumpe2fs", data_spec(card["image"])]).stdout
    groups = re.findall(r"^Group \d+: .*$", dump, re.M)
    assert len(groups) > 1 and all("ITABLE_ZEROED" in g for g in groups), [g for g in groups if "ITABLE_ZEROED" not in g]


@pytest.fixture(scope="module")
def cuts(card) -> list[power_cut.Cut]:
    seed = int(os.environ.get("BLURCAM_POWER_CUT_SEED", random.randrange(1 << 30)))
    disk = power_cut.DataDisk(card["image"], partition=DATA, mount_options=card["options"], state_subdir="pipeline")
    started = time.monotonic()
    TABLE.parent.mkdir(parents=True, exist_ok=True)

    def write_table(outcomes: list[power_cut.Cut]) -> None:  # after every cut: a long run shows progress
        TABLE.write_text(f"{len(outcomes)} of {CUTS} power cuts on the SD image's data partition "
                         f"(p{DATA}, grown to the card, mounted with {card['options']}) in "
                         f"{time.monotonic() - started:.0f} s (seed {seed})\n\n{power_cut.table(outcomes)}\n")

    outcomes = power_cut.run_power_cuts(disk, CUTS, card["work"] / "cuts", seed=seed, progress=write_table)
    write_table(outcomes)
    print("\n" + TABLE.read_text())
    return outcomes


def test_every_cut_leaves_the_last_acknowledged_or_the_in_flight_settings(cuts):
    assert len(cuts) == CUTS
    assert all(c.verdict in ("last acknowledged", "in flight") for c in cuts), TABLE.read_text()


def test_the_data_partition_checks_clean_after_every_cut(cuts):
    # A journal replay and recounted free-space totals (kept lazily by ext4) are not damage.
    assert all(c.fsck_rc in (0, 1) and c.fsck_damage == [] for c in cuts), TABLE.read_text()


def test_the_daemon_starts_after_every_cut_on_what_the_file_holds(cuts):
    assert all(c.loaded_by_daemon == c.file_write for c in cuts), TABLE.read_text()
    assert all(c.temp_files_after_start == [] for c in cuts), TABLE.read_text()


def test_every_cut_fell_in_a_stream_of_acknowledged_writes(cuts):
    assert all(c.acked >= 1 and c.refused == [] for c in cuts), TABLE.read_text()
    summary = {"cuts": len(cuts), "last acknowledged": sum(c.verdict == "last acknowledged" for c in cuts),
               "in flight": sum(c.verdict == "in flight" for c in cuts),
               "journal replayed": sum("journal replayed" in c.fsck_notes for c in cuts)}
    print(json.dumps(summary))
