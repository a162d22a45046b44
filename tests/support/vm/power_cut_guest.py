"""Inside the power-cut VM: mount the data disk, start the real daemon on it, and save settings
as fast as it takes them until the host kills the VM.

Everything the host needs is reported on the second serial port (/dev/ttyS1), one line per
event, `KIND {json}`, written before the next step starts: what reached the host survives the
kill, which files on the 9p share may not. Every write n sets privacy_text "write n" and
blur_strength 1 + n % 100, so the host can tell from the file which write it holds.
Usage (by the VM's script): python power_cut_guest.py RUN_DIR  (RUN_DIR holds plan.json)
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
import tty
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

SOCKET = "/run/blurcam-power-cut.sock"


class Reporter:
    def __init__(self, device: str = "/dev/ttyS1"):
        self.fd = os.open(device, os.O_WRONLY | os.O_NOCTTY)
        tty.setraw(self.fd)  # no newline translation, no echo

    def __call__(self, kind: str, **fields) -> None:
        fields["t"] = round(time.monotonic(), 3)
        os.write(self.fd, f"{kind} {json.dumps(fields)}\n".encode())


def call(op: str, args: dict | None = None) -> dict:
    """One request on the daemon's control socket (framing as documented in appliance/control.py).

    Only the standard library: under TCG, importing the project's client (pydantic with it)
    would cost this VM tens of seconds per boot, competing with the daemon's own start."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(60)
        sock.connect(SOCKET)
        head = json.dumps({"op": op, "args": args or {}}).encode()
        sock.sendall(struct.pack(">II", len(head), 0) + head)
        data = b""
        while len(data) < 8 or len(data) < 8 + sum(struct.unpack(">II", data[:8])):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the daemon closed the connection")
            data += chunk
        head_len = struct.unpack(">II", data[:8])[0]
        return json.loads(data[8:8 + head_len])


def temp_files(state: Path) -> list[str]:
    return sorted(p.name for p in state.glob(".settings.json.*")) if state.is_dir() else []


def main(run_dir: Path) -> int:
    plan = json.loads((run_dir / "plan.json").read_text())
    report = Reporter()
    report("BOOT", boot=plan["boot"])
    mountpoint = Path(plan["mountpoint"])
    mountpoint.mkdir(parents=True, exist_ok=True)
    options = ["-o", plan["mount_options"]] if plan["mount_options"] else []
    mounted = subprocess.run(["mount", "-t", "ext4", *options, plan["device"], str(mountpoint)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        report("FAIL", step="mount", message=mounted.stderr.strip())
        return 1
    state = mountpoint / plan["state_subdir"]
    report("MOUNTED", temp_files=temp_files(state))

    started = time.monotonic()
    log = open(run_dir / f"daemon-{plan['boot']}.log", "ab")
    daemon = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--source", "demo",
                               "--state-dir", str(state), "--control-socket", SOCKET],
                              cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    while True:
        if daemon.poll() is not None:
            report("FAIL", step="daemon", message=f"the daemon exited with {daemon.returncode}")
            return 1
        try:
            call("ping")
            break
        except OSError:
            time.sleep(0.2)
    loaded = call("get_settings")["result"]
    report("READY", seconds=round(time.monotonic() - started, 1),
           privacy_text=loaded["privacy_text"], blur_strength=loaded["blur_strength"],
           temp_files=temp_files(state))

    n = plan["first_write"]
    while True:
        report("SEND", n=n)
        reply = call("update_settings", {"changes": {"privacy_text": f"write {n}",
                                                     "blur_strength": 1 + n % 100}})
        if not reply.get("ok"):  # a refusal is a finding for the host
            report("ERROR", n=n, message=reply.get("message"))
            time.sleep(0.5)
            continue
        report("ACK", n=n)
        n += 1


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
