"""Helpers for the image tests: read a disk image's partition table and mount its partitions.

Everything is looked at in the image file itself (loop mounts, read-only), so the tests check what
gets flashed, not the tree it was made from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

SECTOR = 512
# qemu-user shows arm64 programs the build machine's x86 /proc/cpuinfo, which crashes XNNPACK's
# CPU detection; a Pi's own file (and its CPU, QEMU_CPU) makes the chroot look like the device.
PI_CPUINFO = Path(__file__).with_name("pi-zero-2-w-cpuinfo.txt")
PI_SERIAL = "10000000c0ffee42"  # the Serial line of PI_CPUINFO
PI_CPU = "cortex-a53"  # Zero 2 W; the Pi 4 (A72) and 5 (A76) run the same ARMv8 code and more


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # bytes
    size: int  # bytes
    type: str
    bootable: bool


def partition_table(image: Path) -> tuple[str, str, list[Partition]]:
    """(label type, disk id, partitions) as sfdisk reports them."""
    table = json.loads(subprocess.run(["sfdisk", "--json", str(image)], check=True,
                                      capture_output=True, text=True).stdout)["partitiontable"]
    parts = [Partition(i + 1, p["start"] * SECTOR, p["size"] * SECTOR, p["type"], bool(p.get("bootable")))
             for i, p in enumerate(table["partitions"])]
    return table["label"], table["id"], parts


def read_at(image: Path, offset: int, length: int) -> bytes:
    with open(image, "rb") as f:
        f.seek(offset)
        return f.read(length)


def fat32_label(image: Path, part: Partition) -> tuple[str, str]:
    """(filesystem type string, volume label) from a FAT32 boot sector."""
    boot = read_at(image, part.start, 512)
    return boot[0x52:0x5A].decode().strip(), boot[0x47:0x52].decode().strip()


def ext4_label(image: Path, part: Partition) -> tuple[int, str]:
    """(superblock magic, volume label) of an ext2/3/4 filesystem."""
    sb = read_at(image, part.start + 1024, 256)
    return int.from_bytes(sb[56:58], "little"), sb[120:136].rstrip(b"\0").decode()


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


@contextmanager
def mounted(image: Path, part: Partition, where: Path, fstype: str, writable: bool = False):
    """A partition of the image mounted at `where`: read-only, or read-write for a test's own
    copies of the image (`writable`; the built image itself is only ever mounted read-only)."""
    where.mkdir(parents=True, exist_ok=True)
    mode = "rw" if writable else "ro"
    run(["mount", "-t", fstype, "-o", f"loop,{mode},offset={part.start},sizelimit={part.size}",
         str(image), str(where)])
    try:
        yield where
    finally:
        # A copy's writes must reach it before it boots: a failed unmount fails the test.
        subprocess.run(["umount", str(where)], check=writable)


def copy_fat_files(image: Path, part: Partition, dest: Path) -> Path:
    """Copy a FAT partition's files out with mtools (no vfat kernel module needed)."""
    dest.mkdir(parents=True, exist_ok=True)
    run(["mcopy", "-s", "-n", "-m", "-i", f"{image}@@{part.start}", "::/*", str(dest)],
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    return dest


@contextmanager
def writable_root(image: Path, parts: dict[str, Partition], work: Path):
    """The image's root partition (read-only) under a throw-away overlay, with /proc, /sys, /dev,
    a writable copy of the BLURCAM partition at /boot/firmware and a writable copy of the data
    partition at /var/lib/blurcam: a chroot as first boot sees it. Writes land in `work`, never
    in the image."""
    with ExitStack() as stack:
        lower = stack.enter_context(mounted(image, parts["root"], work / "lower", "ext4"))
        boot_copy = copy_fat_files(image, parts["boot"], work / "boot")
        data_copy = work / "data.ext4"
        with open(image, "rb") as src, open(data_copy, "wb") as dst:
            src.seek(parts["data"].start)
            dst.write(src.read(parts["data"].size))
        for d in ("upper", "ovwork", "merged"):
            (work / d).mkdir(exist_ok=True)
        merged = work / "merged"
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={lower},upperdir={work / 'upper'},workdir={work / 'ovwork'}", str(merged)])
        stack.callback(subprocess.run, ["umount", "-R", str(merged)], check=False)
        run(["mount", "-t", "proc", "proc", str(merged / "proc")])
        run(["mount", "--bind", str(PI_CPUINFO), str(merged / "proc/cpuinfo")])
        run(["mount", "--rbind", "/sys", str(merged / "sys")])
        run(["mount", "--make-rslave", str(merged / "sys")])
        run(["mount", "--rbind", "/dev", str(merged / "dev")])
        run(["mount", "--make-rslave", str(merged / "dev")])
        run(["mount", "--bind", str(boot_copy), str(merged / "boot" / "firmware")])
        run(["mount", "-o", "loop", str(data_copy), str(merged / "var" / "lib" / "blurcam")])
        yield merged


def in_chroot(root: Path, command: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a shell command inside `root` (arm64, through qemu-user emulating a Pi's CPU), in its own
    UTS namespace so that setting the hostname leaves the build machine's alone."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root", "QEMU_CPU": PI_CPU}
    return subprocess.run(["unshare", "--uts", "chroot", str(root), "/bin/sh", "-c", command],
                          capture_output=True, text=True, timeout=timeout, env=env)


def missing_tools(tools: list[str]) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


def is_root() -> bool:
    return os.geteuid() == 0


BUILD_TOOLS = ["mmdebstrap", "genimage", "qemu-aarch64-static", "sfdisk", "mkfs.vfat", "mcopy",
               "mke2fs", "unshare", "unzip"]


def image_test_marks(extra_tools: tuple[str, ...] = ()) -> list:
    """Marks for tests that need the built image: opt-in (slow), root, and the build tools."""
    import pytest
    missing = missing_tools(BUILD_TOOLS + list(extra_tools))
    return [
        pytest.mark.rootfs,
        pytest.mark.skipif(os.environ.get("BLURCAM_IMAGE_TEST") != "1",
                           reason="builds and boots the SD image (cold ~75 min, warm ~10 min): run `make image-test`"),
        pytest.mark.skipif(not is_root(), reason="building and loop-mounting the image needs root"),
        pytest.mark.skipif(bool(missing), reason=f"missing {missing}: run tools/system-deps.sh as root"),
    ]
