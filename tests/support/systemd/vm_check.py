"""The test driver inside the VM booted by test_systemd_vm_boot.py (a oneshot unit after the
three BlurCam services). It only observes and provokes; the host-side test judges the numbers
it writes to RUN/results.json. Usage: vm_check.py RUN_DIR
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

UNITS = ("blurcam-gadget.service", "blurcam.service", "blurcam-web.service")
PROPERTIES = ("ActiveState", "SubState", "Result", "MainPID", "NRestarts", "ConditionResult",
              "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic",
              "WatchdogTimestampMonotonic", "WatchdogUSec", "User", "StatusText")
WEB = "http://127.0.0.1:80"
PASSWORD = "vm-test-password"


def show(unit: str) -> dict[str, str]:
    out = subprocess.run(["systemctl", "show", unit, *(f"--property={p}" for p in PROPERTIES)],
                         capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_until(predicate, timeout: float, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None


def journal(unit: str) -> list[dict]:
    out = subprocess.run(["journalctl", "-b", "-u", unit, "-o", "json", "--no-pager"],
                         capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def messages(unit: str) -> list[str]:
    return [str(entry.get("MESSAGE", "")) for entry in journal(unit)]


class Web:
    def __init__(self):
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str, timeout: float = 30) -> tuple[int, bytes]:
        try:
            with self.opener.open(WEB + path, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except OSError:
            return 0, b""

    def login(self) -> int:
        request = urllib.request.Request(WEB + "/api/login", data=json.dumps({"password": PASSWORD}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return 0


def main(run: Path) -> int:
    results: dict = {}
    (run / "started").write_text(str(os.getpid()))
    t0 = time.monotonic()
    web = Web()

    # 1. Boot: the pipeline is ready (Type=notify) and the page answers.
    results["pipeline_active"] = bool(wait_until(lambda: show("blurcam.service")["ActiveState"] == "active", 240))
    if not results["pipeline_active"]:  # nothing else can work: report now instead of waiting
        return finish(run, results)
    results["page_status"] = wait_until(lambda: web.get("/")[0] or None, 300)
    results["boot"] = {unit: show(unit) for unit in UNITS}
    if not results["page_status"]:
        return finish(run, results)

    # 2. The page reaches the sandboxed pipeline over the shared control socket, and the pipeline
    #    opens the (vivid) camera through its device allow list.
    results["login_status"] = web.login()
    code, body = web.get("/api/status")
    results["api_status"] = {"code": code, "body": json.loads(body) if code == 200 else body.decode(errors="replace")}
    preview = wait_until(lambda: (lambda r: r if r[0] == 200 else None)(web.get("/api/preview/output.jpg", 60)), 240, 2)
    results["preview"] = {"code": preview[0] if preview else None,
                          "bytes": len(preview[1]) if preview else 0,
                          "jpeg": bool(preview and preview[1][:2] == b"\xff\xd8")}
    code, body = web.get("/api/status")
    results["api_status_after_preview"] = json.loads(body) if code == 200 else {"code": code}

    # 3. Watchdog pings reach systemd: its last-ping timestamp keeps moving.
    first = int(show("blurcam.service")["WatchdogTimestampMonotonic"])
    time.sleep(12)
    results["watchdog_advanced_us"] = int(show("blurcam.service")["WatchdogTimestampMonotonic"]) - first

    # 4. A killed pipeline is restarted by systemd (Restart=on-failure).
    old_pid = int(show("blurcam.service")["MainPID"])
    os.kill(old_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    restarted = wait_until(lambda: (lambda s: s if s["ActiveState"] == "active" and int(s["MainPID"]) not in (0, old_pid) else None)(show("blurcam.service")), 240)
    results["restart"] = {"old_pid": old_pid, "after": restarted,
                          "seconds": round(time.monotonic() - killed_at, 1)}

    # 5. A UDC that appears late (dwc2 probing after boot): udev starts the gadget unit, which
    #    restarts the pipeline so it serves the new UVC node.
    before = show("blurcam.service")
    subprocess.run(["modprobe", "usbip-vudc"], check=False)
    gadget = wait_until(lambda: (lambda s: s if s["ActiveState"] in ("active", "failed") else None)(show("blurcam-gadget.service")), 180)
    if not gadget or gadget["ActiveState"] != "active":
        results["late_udc"] = {"gadget": gadget}
        return finish(run, results)
    after = wait_until(lambda: (lambda s: s if s["ActiveState"] == "active" and s["MainPID"] != before["MainPID"] else None)(show("blurcam.service")), 240)
    serving = wait_until(lambda: any("UVC userspace serving" in m for m in messages("blurcam.service")), 120, 2)
    udc_files = list(Path("/sys/kernel/config/usb_gadget").glob("*/UDC"))
    results["late_udc"] = {"gadget": gadget, "pipeline_before": before, "pipeline_after": after,
                           "serving_uvc": bool(serving),
                           "bound_udc": [p.read_text().strip() for p in udc_files]}

    # 6. Journal: levels recorded, no line per frame.
    entries = journal("blurcam.service")
    results["journal"] = {"entries": len(entries),
                          "priorities": sorted({int(e["PRIORITY"]) for e in entries if "PRIORITY" in e}),
                          "identifiers": sorted({str(e.get("SYSLOG_IDENTIFIER")) for e in entries})}

    # 7. A clean stop: SIGTERM, STOPPING=1, gone quickly, Result=success.
    stop_started = time.monotonic()
    subprocess.run(["systemctl", "stop", "blurcam.service"], check=False)
    results["stop"] = {"seconds": round(time.monotonic() - stop_started, 2), "after": show("blurcam.service")}
    results["elapsed_s"] = round(time.monotonic() - t0, 1)
    return finish(run, results)


def finish(run: Path, results: dict) -> int:
    results.setdefault("elapsed_s", None)
    (run / "results.json").write_text(json.dumps(results, indent=2))
    with open(run / "journal.txt", "w") as f:
        subprocess.run(["journalctl", "-b", "--no-pager", "-o", "short-monotonic"], stdout=f)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
