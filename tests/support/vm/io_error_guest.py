"""Inside the I/O-error VM: the daemon's state on ext4 over a device-mapper device; then every
block the filesystem has free starts failing (dm `error` target), as a worn SD card's would, and
the daemon is asked to save. Afterwards the disk is healed, checked and read back.

Results go to RUN_DIR/results.json. Usage: python io_error_guest.py RUN_DIR (plan.json there).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

SOCKET = "/run/blurcam-io-error.sock"
DM_NAME = "blurcam-data"


def sh(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def must(*cmd: str) -> str:
    result = sh(*cmd)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {result.returncode} {result.stderr.strip()}")
    return result.stdout


def free_block_table(device: str, sectors: int) -> str:
    """A dm table that maps `device` through, except every block ext4 has free: those fail."""
    dump = must("dumpe2fs", device)
    block = int(re.search(r"^Block size:\s+(\d+)", dump, re.M)[1]) // 512
    free = []
    for line in re.findall(r"^\s+Free blocks: (.+)$", dump, re.M):
        for part in line.split(", "):
            lo, _, hi = part.partition("-")
            free.append((int(lo) * block, (int(hi or lo) + 1) * block))
    rows, at = [], 0
    for start, end in sorted(free):
        if start > at:
            rows.append(f"{at} {start - at} linear {device} {at}")
        rows.append(f"{start} {end - start} error")
        at = end
    if at < sectors:
        rows.append(f"{at} {sectors - at} linear {device} {at}")
    return "\n".join(rows) + "\n"


def dm_table(make_table, lockfs: bool = True) -> None:
    """Swap the device's table for make_table(), computed while the device is suspended."""
    must("dmsetup", "suspend", *([] if lockfs else ["--nolockfs"]), DM_NAME)
    Path("/run/blurcam-dm.table").write_text(make_table())
    must("dmsetup", "reload", DM_NAME, "/run/blurcam-dm.table")
    must("dmsetup", "resume", DM_NAME)


def attempt(action) -> dict:
    try:
        return {"ok": True, "result": action()}
    except Exception as exc:  # noqa: BLE001 - the kind and words are what is judged
        return {"ok": False, "type": type(exc).__name__, "message": str(exc)}


def jpeg(level: int) -> bytes:
    import cv2
    import numpy as np
    picture = np.full((180, 320, 3), level, np.uint8)
    picture[40:140, 60:260] = 255 - level
    return cv2.imencode(".jpg", picture)[1].tobytes()


def main(run_dir: Path) -> int:
    out: dict = {}
    try:
        scenario(run_dir, out)
    except Exception:  # noqa: BLE001 - reported to the host, which fails the test with it
        out["error"] = traceback.format_exc()
    with open(run_dir / "results.json", "w") as f:
        json.dump(out, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    return 0


def scenario(run_dir: Path, out: dict) -> None:
    plan = json.loads((run_dir / "plan.json").read_text())
    device, mountpoint = plan["device"], Path(plan["mountpoint"])
    sectors = int(Path(f"/sys/class/block/{Path(device).name}/size").read_text())
    linear = f"0 {sectors} linear {device} 0\n"
    Path("/run/blurcam-dm.table").write_text(linear)
    must("dmsetup", "create", "--noudevsync", DM_NAME, "/run/blurcam-dm.table")
    # No udev in this VM to make /dev/mapper/NAME; devtmpfs has the kernel's own node.
    minor = must("dmsetup", "info", "-c", "--noheadings", "-o", "minor", DM_NAME).strip()
    mountpoint.mkdir(parents=True, exist_ok=True)
    must("mount", "-t", "ext4", f"/dev/dm-{minor}", str(mountpoint))
    state = mountpoint / "blurcam"
    log = open(run_dir / "daemon.log", "ab")
    daemon = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--source", "demo",
                               "--state-dir", str(state), "--control-socket", SOCKET],
                              cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        faults(client_for(daemon), state, device, sectors, linear, out)
    finally:
        daemon.terminate()
        daemon.wait(60)
    heal_and_read_back(state, device, mountpoint, out)


def client_for(daemon: subprocess.Popen):
    from appliance.control import ControlClient, ControlError
    client = ControlClient(SOCKET, timeout=60.0)
    while True:
        try:
            client.ping()
            break
        except ControlError:
            if daemon.poll() is not None:
                raise RuntimeError("the daemon did not start") from None
            time.sleep(0.2)
    return client


def faults(client, state: Path, device: str, sectors: int, linear: str, out: dict) -> None:
    out["before"] = attempt(lambda: client.update_settings(
        {"blur_strength": 70, "privacy_text": "saved before the fault"}))
    out["background_before"] = attempt(lambda: client.set_background(jpeg(40))["background"])
    out["file_before"] = (state / "settings.json").read_text()

    # Suspending freezes ext4, which writes its journal home: the bitmaps on disk are current.
    dm_table(lambda: free_block_table(device, sectors))
    out["fault_table_rows"] = len(Path("/run/blurcam-dm.table").read_text().splitlines())
    out["settings_during"] = attempt(lambda: client.update_settings(
        {"blur_strength": 71, "privacy_text": "x" * 60}))
    out["background_during"] = attempt(lambda: client.set_background(jpeg(200)))
    out["running_during"] = attempt(client.get_settings)

    dm_table(lambda: linear, lockfs=False)  # healed; nothing is flushed through the failing table


def heal_and_read_back(state: Path, device: str, mountpoint: Path, out: dict) -> None:
    out["umount"] = sh("umount", str(mountpoint)).returncode
    must("dmsetup", "remove", DM_NAME)
    fsck = sh("e2fsck", "-fy", device)
    out["fsck"] = {"rc": fsck.returncode, "output": fsck.stdout[-1500:]}
    must("mount", "-t", "ext4", device, str(mountpoint))
    out["file_after"] = (state / "settings.json").read_text(errors="replace")
    out["files_after"] = sorted(str(p.relative_to(state)) for p in state.rglob("*"))
    must("umount", str(mountpoint))
    out["finished"] = True


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
