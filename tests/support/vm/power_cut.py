"""Power cuts on a real kernel and a real filesystem: the x86 test VM (vmlib) with an ext4 data
disk holding the daemon's state; the real daemon saves a stream of settings changes and QEMU is
SIGKILLed at a random moment. After each cut, on the host: e2fsck (what it replayed or fixed),
the settings file read out of the image (debugfs), judged against the writes the guest reported
acknowledged over its serial port; the next boot starts the daemon on that filesystem and
reports what it loaded; after the last cut the daemon is started on a copy of the state.

Made to be reused: `DataDisk` is a disk image and which partition holds the data filesystem
(none = the whole disk), so the SD image's own layout can be cut just the same, as often as
wanted: `run_power_cuts(DataDisk(image, partition=7), cuts=50, run_dir=...)`.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.vm import vmlib

GUEST = vmlib.HERE / "power_cut_guest.py"
# What the storage VMs load: the 9p root, a virtio disk with ext4, device-mapper.
STORAGE_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "virtio_blk", "crc32c_generic", "ext4",
                   "dm-mod")
SETTINGS = "settings.json"


class PowerCutError(RuntimeError):
    pass


@dataclass(frozen=True)
class DataDisk:
    """A raw disk image whose data filesystem (ext4) holds `state_subdir`, the daemon's state."""

    image: Path
    partition: int | None = None  # None: the filesystem fills the whole disk
    mount_options: str = ""  # as the device mounts it (e.g. the image's fstab options)
    state_subdir: str = "blurcam"  # "" when the filesystem is mounted as the state folder

    @property
    def guest_device(self) -> str:
        return "/dev/vda" if self.partition is None else f"/dev/vda{self.partition}"

    def extent(self) -> tuple[int, int]:
        """The partition's (start, size) in bytes in the image."""
        table = json.loads(subprocess.run(["sfdisk", "--json", str(self.image)], check=True,
                                          capture_output=True, text=True).stdout)["partitiontable"]
        sector = table.get("sectorsize", 512)
        for part in table["partitions"]:
            if re.search(rf"\D{self.partition}$", part["node"]):
                return part["start"] * sector, part["size"] * sector
        raise PowerCutError(f"{self.image} has no partition {self.partition}")

    def host_spec(self) -> str:
        """The filesystem for e2fsprogs on the host (reading): the image, at the partition's offset."""
        return str(self.image) if self.partition is None else f"{self.image}?offset={self.extent()[0]}"

    @contextmanager
    def block_device(self) -> Iterator[str]:
        """The filesystem as a device of its own, for e2fsck: given image?offset=N, e2fsck cannot
        re-open the filesystem after replaying its journal (e2fsprogs 1.47: "Bad magic number in
        super-block while trying to re-open"), so a partition gets a read-write loop device."""
        if self.partition is None:
            yield str(self.image)
            return
        start, size = self.extent()
        device = subprocess.run(["losetup", "--find", "--show", "--offset", str(start), "--sizelimit",
                                 str(size), str(self.image)], check=True, capture_output=True,
                                text=True).stdout.strip()
        try:
            yield device
        finally:
            subprocess.run(["losetup", "--detach", device], check=False)


def make_data_disk(image: Path, size_mb: int = 64) -> DataDisk:
    """A fresh ext4 disk image (no partition table), as small as the SD image's data partition."""
    with open(image, "wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "data", str(image)], check=True)
    return DataDisk(image)


@dataclass
class Cut:
    """One power cut and what was found after it."""

    number: int
    ready_s: float = 0.0  # boot to daemon ready, the boot that was cut
    vm_cpu_s: float = 0.0  # CPU time QEMU used for that boot
    acked: int = 0  # writes acknowledged in that boot
    refused: list[str] = field(default_factory=list)  # writes the daemon refused (none expected)
    killed_after_s: float = 0.0  # after the boot's first acknowledged write
    last_acked: int = 0
    in_flight: int | None = None  # sent, not acknowledged when the power went
    fsck_rc: int = -1
    fsck_notes: str = ""
    fsck_damage: list[str] = field(default_factory=list)  # what e2fsck repaired, if anything
    file_write: int | None = None  # which write the settings file holds
    file_problem: str = ""
    temp_files: list[str] = field(default_factory=list)  # left beside it by the cut
    loaded_by_daemon: int | None = None  # what the daemon loaded from it at the next start
    temp_files_after_start: list[str] | None = None

    @property
    def verdict(self) -> str:
        if self.file_problem:
            return f"CORRUPT ({self.file_problem})"
        if self.file_write == self.last_acked:
            return "last acknowledged"
        if self.in_flight is not None and self.file_write == self.in_flight:
            return "in flight"
        if self.file_write is not None and self.file_write < self.last_acked:
            return f"OLDER (write {self.file_write} < {self.last_acked})"
        return f"UNEXPECTED (write {self.file_write})"


def _read_report(path: Path) -> list[tuple[str, dict]]:
    lines = []
    for raw in path.read_bytes().decode(errors="replace").replace("\r", "").splitlines():
        kind, _, rest = raw.partition(" ")
        try:
            lines.append((kind, json.loads(rest)))
        except ValueError:
            continue  # a line cut short by the kill
    return lines


def _boot(disk: DataDisk, run_dir: Path, boot: int, first_write: int, mountpoint: Path,
          delay: float, timeout: float) -> tuple[list[tuple[str, dict]], float]:
    """Boot the VM once and SIGKILL it `delay` seconds after its first acknowledged write.
    Returns what the guest reported and the CPU seconds QEMU used (a figure that, unlike the
    wall time, hardly depends on how busy the machine is)."""
    (run_dir / "plan.json").write_text(json.dumps({
        "boot": boot, "device": disk.guest_device, "mount_options": disk.mount_options,
        "state_subdir": disk.state_subdir, "first_write": first_write,
        "mountpoint": str(mountpoint)}))
    script = run_dir / "guest.sh"
    script.write_text(f'#!/bin/sh\ncd {vmlib.REPO}\nexec {sys.executable} {GUEST} "$1"\n')
    report_file = run_dir / f"report-{boot}.log"
    report_file.write_bytes(b"")
    cmd = vmlib.qemu_command(script, run_dir, memory_mb=1024, modules=STORAGE_MODULES,
                             disks=(disk.image,), report_file=report_file)
    with open(run_dir / f"console-{boot}.log", "wb") as console:
        qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            report = _read_report(report_file)
            kinds = [kind for kind, _ in report]
            if "FAIL" in kinds or qemu.poll() is not None:
                raise PowerCutError(f"boot {boot} went wrong: {report[-3:]}; see {run_dir}")
            if "ACK" in kinds:
                break
            if time.monotonic() > deadline:
                raise PowerCutError(f"boot {boot}: no acknowledged write within {timeout:.0f} s; "
                                    f"see {run_dir}")
            time.sleep(0.05)
        time.sleep(delay)
    finally:
        qemu.send_signal(signal.SIGKILL)  # the power cut
        _, _, usage = os.wait4(qemu.pid, 0)
        qemu.returncode = -signal.SIGKILL
    return _read_report(report_file), usage.ru_utime + usage.ru_stime


# What e2fsck may find after any unclean stop of ext4 that is not damage: the superblock's
# free-space totals, which ext4 keeps in per-CPU counters and writes back only now and then.
SUMMARY_COUNTERS = re.compile(r"^Free (blocks|inodes) count wrong \(\d+, counted=\d+\)\.$")


def _fsck(disk: DataDisk, log: Path) -> tuple[int, str, list[str]]:
    """e2fsck -fy, as a device's boot would before mounting. Returns the exit code, a short
    note and the problems it fixed (the line before each "Fix? yes") other than the counters."""
    with disk.block_device() as device:
        result = subprocess.run(["e2fsck", "-fy", device], capture_output=True, text=True)
    out = result.stdout + result.stderr
    log.write_text(out)
    lines = [line.strip() for line in out.splitlines()]
    fixed = [lines[i - 1] if line in ("Fix? yes", "Clear? yes") else line
             for i, line in enumerate(lines)
             if line in ("Fix? yes", "Clear? yes") or line.endswith(("FIXED.", "CLEARED."))]
    damage = [f for f in fixed if not SUMMARY_COUNTERS.match(f)]
    notes = ["journal replayed"] if "recovering journal" in out else []
    if len(fixed) > len(damage):
        notes.append("free-space totals recounted")
    notes += damage[:3]
    return result.returncode, "; ".join(notes) or "clean", damage


def _debugfs(disk: DataDisk, request: str) -> subprocess.CompletedProcess:
    return subprocess.run(["debugfs", "-R", request, disk.host_spec()], capture_output=True)


def _in_state(disk: DataDisk, name: str) -> str:
    """A path in the state folder, as debugfs names it (from the filesystem's root)."""
    return "/" + "/".join(p for p in (disk.state_subdir.strip("/."), name) if p)


def _settings_write(data: bytes) -> tuple[int | None, str]:
    """Which write a settings file holds, or why it is unusable."""
    try:
        values = json.loads(data)
    except ValueError:
        return None, f"not JSON: {len(data)} bytes"
    match = re.fullmatch(r"write (\d+)", str(values.get("privacy_text", "")))
    if not match:
        return None, f"unexpected content {data[:60]!r}"
    n = int(match[1])
    if values.get("blur_strength") != 1 + n % 100:
        return None, f"mixed content (write {n} with blur_strength {values.get('blur_strength')})"
    return n, ""


def _inspect(disk: DataDisk, cut: Cut, run_dir: Path) -> None:
    cut.fsck_rc, cut.fsck_notes, cut.fsck_damage = _fsck(disk, run_dir / f"fsck-{cut.number}.log")
    listing = _debugfs(disk, f"ls {_in_state(disk, '')}").stdout.decode(errors="replace")
    cut.temp_files = sorted(set(re.findall(r"\.settings\.json\.\S+", listing)))
    if SETTINGS not in re.findall(r"\S+", listing):
        cut.file_problem = "missing"
        return
    data = _debugfs(disk, f"cat {_in_state(disk, SETTINGS)}").stdout
    cut.file_write, cut.file_problem = _settings_write(data)


def _daemon_on_a_copy(disk: DataDisk) -> int | None:
    """Start the real daemon on the host on a copy of the settings file (after the last cut);
    returns the write it loaded."""
    workdir = Path(tempfile.mkdtemp(prefix="bc-cut-"))
    try:
        state, sock = workdir / "state", workdir / "c.sock"
        state.mkdir()
        (state / SETTINGS).write_bytes(_debugfs(disk, f"cat {_in_state(disk, SETTINGS)}").stdout)
        daemon = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--source", "demo",
                                   "--state-dir", str(state), "--control-socket", str(sock)],
                                  cwd=vmlib.REPO, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        from appliance.control import ControlClient, ControlError
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and daemon.poll() is None:
                try:
                    loaded = ControlClient(sock).get_settings()
                    return _settings_write(json.dumps(loaded).encode())[0]
                except ControlError:
                    time.sleep(0.2)
            return None
        finally:
            daemon.terminate()
            daemon.wait(30)
    finally:
        shutil.rmtree(workdir)


def run_power_cuts(disk: DataDisk, cuts: int, run_dir: Path, seed: int | None = None,
                   kill_window: tuple[float, float] = (0.0, 3.0),
                   boot_timeout: float = 600.0,
                   progress: Callable[[list[Cut]], None] | None = None) -> list[Cut]:
    """Cut the power `cuts` times while the daemon saves settings on `disk`; see the module doc.
    `progress` is called with the cuts so far after each one (a long run's table as it grows;
    a cut's "daemon loaded" is known only after the next boot)."""
    rng = random.Random(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    mountpoint = run_dir / "data"  # mounted inside the VM only; empty on the host
    outcomes: list[Cut] = []
    next_write = 1
    for number in range(1, cuts + 1):
        delay = rng.uniform(*kill_window)
        report, cpu_s = _boot(disk, run_dir, number, next_write, mountpoint, delay, boot_timeout)
        events = dict(report)  # the last of each kind
        if outcomes:  # this boot's daemon started on what the previous cut left
            outcomes[-1].loaded_by_daemon = _settings_write(
                json.dumps(events["READY"]).encode())[0]
            outcomes[-1].temp_files_after_start = events["READY"]["temp_files"]
        acks = [e["n"] for kind, e in report if kind == "ACK"]
        sends = [e["n"] for kind, e in report if kind == "SEND"]
        cut = Cut(number=number, ready_s=events["READY"]["t"], vm_cpu_s=round(cpu_s),
                  acked=len(acks),
                  refused=[e["message"] for kind, e in report if kind == "ERROR"],
                  killed_after_s=round(delay, 2), last_acked=max(acks),
                  in_flight=sends[-1] if sends[-1] > max(acks) else None)
        _inspect(disk, cut, run_dir)
        outcomes.append(cut)
        next_write = max(sends) + 1
        if progress is not None:
            progress(outcomes)
    outcomes[-1].loaded_by_daemon = _daemon_on_a_copy(disk)
    outcomes[-1].temp_files_after_start = []  # that copy is judged by the value alone
    return outcomes


def table(outcomes: list[Cut]) -> str:
    """The outcomes as a Markdown table, for the log and the notes."""
    rows = ["| cut | daemon ready (s after boot) | VM CPU (s) | writes acked | cut after (s) | "
            "fsck | file holds | last acked | in flight | verdict | temp files left | "
            "daemon loaded |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in outcomes:
        rows.append(f"| {c.number} | {c.ready_s:.0f} | {c.vm_cpu_s:.0f} | {c.acked} | "
                    f"{c.killed_after_s} | "
                    f"rc {c.fsck_rc}: {c.fsck_notes} | {c.file_write} | {c.last_acked} | "
                    f"{c.in_flight if c.in_flight is not None else '-'} | {c.verdict} | "
                    f"{len(c.temp_files)} | {c.loaded_by_daemon} |")
    return "\n".join(rows)
