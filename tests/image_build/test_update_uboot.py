"""The U-Boot boot script's A/B choice and boot counting (image-build/update/uboot/boot.cmd), run in
Debian's real U-Boot for QEMU's arm64 virt machine on a disk with the SD card's layout
(image-build/LAYOUT.md). Each slot's boot partition holds a stub kernel that prints its slot and
powers off (tests/support/arm64_stub_kernel.py), so each boot takes seconds. The slot state file is
read and written on the host with fw_printenv/fw_setenv (libubootenv), the tools RAUC's uboot
backend runs on the device: this also checks that U-Boot and Linux agree on its format.
The same script with Debian's real kernel boots in the image VM tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import capabilities
from tests.support.arm64_stub_kernel import stub_kernel

ROOT = Path(__file__).resolve().parents[2]
BOOT_FILES = ROOT / "image-build" / "update" / "make-boot-files.sh"
UBOOT = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")
TOOLS = ["qemu-system-aarch64", "mkimage", "mkenvimage", "fw_printenv", "fw_setenv", "genimage", "mcopy",
         "mkfs.vfat"]
DISK_ID = "0x1bc0ffee"
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}

pytestmark = capabilities.needs(
    None if all(shutil.which(t) for t in TOOLS) and UBOOT.exists() else
    "needs u-boot-qemu, u-boot-tools, libubootenv-tool, qemu-system-arm, genimage, mtools "
           "(tools/system-deps.sh as root)")

GENIMAGE_CFG = f"""
image p1.vfat {{ vfat {{ label = "BLURCAM" }} size = 8M mountpoint = "/p1" }}
image p2.vfat {{ vfat {{ label = "BOOTA" }} size = 8M mountpoint = "/p2" }}
image p3.vfat {{ vfat {{ label = "BOOTB" }} size = 8M mountpoint = "/p3" }}
image disk.img {{
  hdimage {{ partition-table-type = "mbr" disk-signature = {DISK_ID} }}
  partition boot {{ partition-type = 0xC bootable = true image = "p1.vfat" offset = 1M }}
  partition bootA {{ partition-type = 0xC image = "p2.vfat" }}
  partition bootB {{ partition-type = 0xC image = "p3.vfat" }}
  partition rootA {{ partition-type = 0x83 size = 1M }}
  partition rootB {{ partition-type = 0x83 size = 1M }}
  partition data {{ partition-type = 0x83 size = 1M }}
}}
"""


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


class BootDisk:
    """A disk with the card's partitions: p1 with boot.scr + bootslot.env, p2/p3 with each slot's
    stub kernel, initramfs and cmdline.env (p5-p7 empty)."""

    def __init__(self, work: Path):
        self.work = work
        tree = work / "tree"
        run([str(BOOT_FILES), "qemu", str(tree / "p1")])
        for slot, part in (("A", "p2"), ("B", "p3")):
            (tree / part).mkdir(parents=True)
            (tree / part / "vmlinuz").write_bytes(stub_kernel(f"STUB KERNEL OF SLOT {slot} RUNNING"))
            (tree / part / "initrd.img").write_bytes(b"not used by the stub")
            (tree / part / "cmdline.env").write_text(f"blurcam_cmdline=quiet from_boot_{slot}\n")
        (work / "genimage.cfg").write_text(GENIMAGE_CFG)
        run(["genimage", "--config", str(work / "genimage.cfg"), "--rootpath", str(tree),
             "--tmppath", str(work / "genimage-tmp"), "--inputpath", str(work), "--outputpath", str(work)])
        self.image = work / "disk.img"
        os.truncate(self.image, 32 * 1024 * 1024)
        table = run(["sfdisk", "--json", str(self.image)]).stdout
        starts = [int(s) * 512 for s in re.findall(r'"start":\s*(\d+)', table)]
        self.offsets = {n: starts[n - 1] for n in (1, 2, 3)}
        self.fw_config = work / "fw_env.config"
        self.fw_config.write_text(f"{work / 'bootslot.env'} 0x0 0x4000\n")
        self.boots = 0

    def _fat(self, part: int) -> str:
        return f"{self.image}@@{self.offsets[part]}"

    def slot_file(self) -> bytes:
        run(["mcopy", "-o", "-i", self._fat(1), "::/bootslot.env", str(self.work / "bootslot.env")], env=MTOOLS_ENV)
        return (self.work / "bootslot.env").read_bytes()

    def env(self) -> dict[str, str]:
        self.slot_file()
        out = run(["fw_printenv", "-c", str(self.fw_config)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def set_env(self, **values: str) -> None:
        self.slot_file()
        for key, value in values.items():
            run(["fw_setenv", "-c", str(self.fw_config), key, value])
        run(["mcopy", "-o", "-i", self._fat(1), str(self.work / "bootslot.env"), "::/bootslot.env"], env=MTOOLS_ENV)

    def remove_from_slot(self, part: int, name: str) -> None:
        run(["mdel", "-i", self._fat(part), f"::/{name}"], env=MTOOLS_ENV)

    def boot(self) -> str:
        """Power on; U-Boot resets by itself as often as the script asks, until a stub kernel powers
        the machine off. Returns the serial console."""
        self.boots += 1
        console = self.work / f"console-{self.boots}.log"
        subprocess.run(
            ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a53", "-m", "1024", "-nic", "none",
             "-bios", str(UBOOT), "-display", "none", "-monitor", "none", "-serial", f"file:{console}",
             "-drive", f"file={self.image},format=raw,if=virtio"],
            check=True, timeout=120, stdin=subprocess.DEVNULL, capture_output=True)
        return console.read_text(errors="replace")


def kernels_started(console: str) -> list[str]:
    return re.findall(r"STUB KERNEL OF SLOT (\w) RUNNING", console)


@pytest.fixture
def disk(tmp_path) -> BootDisk:
    return BootDisk(tmp_path)


def test_a_fresh_card_boots_slot_a_and_writes_nothing(disk):
    before = disk.slot_file()
    console = disk.boot()
    assert kernels_started(console) == ["A"], console[-2000:]
    assert f"root=PARTUUID={DISK_ID[2:]}-05" in console and "rauc.slot=A" in console
    assert "from_boot_A" in console  # the kernel arguments come from the slot's own boot partition
    assert disk.slot_file() == before  # a steady-state boot leaves the card alone


def test_an_update_on_trial_gets_one_boot_then_the_old_slot_returns(disk):
    # What RAUC's uboot backend writes when an install into B succeeds (boot-attempts-primary=1).
    disk.set_env(BOOT_ORDER="B A", BOOT_B_LEFT="1")
    console = disk.boot()
    assert kernels_started(console) == ["B"], console[-2000:]
    assert f"root=PARTUUID={DISK_ID[2:]}-06" in console and "rauc.slot=B" in console
    # The attempt was taken before the kernel started: a crash or power cut from here on counts.
    assert disk.env() == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "0"}
    # The health check never marked B good: the next power-on starts A, with nobody's help.
    console = disk.boot()
    assert kernels_started(console) == ["A"], console[-2000:]


def test_a_slot_marked_good_after_its_trial_keeps_booting_without_writes(disk):
    disk.set_env(BOOT_ORDER="B A", BOOT_B_LEFT="1")
    assert kernels_started(disk.boot()) == ["B"]
    disk.set_env(BOOT_B_LEFT="3")  # what `rauc status mark-good` writes (boot-attempts=3)
    before = disk.slot_file()
    for _ in range(2):
        assert kernels_started(disk.boot()) == ["B"]
    assert disk.slot_file() == before


def test_a_slot_whose_kernel_is_missing_is_given_up_and_the_other_boots(disk):
    disk.remove_from_slot(3, "vmlinuz")
    disk.set_env(BOOT_ORDER="B A", BOOT_B_LEFT="3")
    console = disk.boot()  # B fails, U-Boot resets by itself, A boots
    assert "slot B does not boot" in console
    assert kernels_started(console) == ["A"], console[-2000:]
    assert disk.env()["BOOT_B_LEFT"] == "0"


def test_when_both_slots_are_used_up_each_gets_one_more_trial(disk):
    disk.set_env(BOOT_A_LEFT="0", BOOT_B_LEFT="0")
    console = disk.boot()
    assert "one more trial for each" in console
    assert kernels_started(console) == ["A"]
    assert disk.env() == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "0", "BOOT_B_LEFT": "1"}


def test_an_unreadable_slot_file_boots_slot_a(disk):
    raw = bytearray(disk.slot_file())
    raw[10] ^= 0xFF  # breaks the CRC
    (disk.work / "bootslot.env").write_bytes(bytes(raw))
    run(["mcopy", "-o", "-i", disk._fat(1), str(disk.work / "bootslot.env"), "::/bootslot.env"], env=MTOOLS_ENV)
    console = disk.boot()
    assert kernels_started(console) == ["A"], console[-2000:]
