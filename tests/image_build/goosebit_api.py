"""An operator's side of goosebit (a hawkBit-DDI rollout server): its configuration and its web API.

Standard library only, because it runs in two places: imported by the rollout tests on this
machine (hawkbit_harness.Goosebit runs the server there), and copied into the arm64 device VM,
where `python3 goosebit_api.py COMMAND` sets up and drives a goosebit that runs inside the VM
(test_update_vm.py), so the device's client fetches its rollout without any traffic leaving it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

ADMIN, PASSWORD = "operator@example.com", "rollout-test-password"


def write_config(work: Path, migrations: Path) -> dict[str, str]:
    """goosebit's settings (SQLite database and artifacts under `work`) and aerich's (its
    migration tool reads ./pyproject.toml); returns the environment goosebit needs."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "goosebit.yaml").write_text(
        f"poll_time: 00:00:02\ndb_uri: sqlite:///{work / 'db.sqlite3'}\n"
        f"artifacts_dir: {work / 'artifacts'}\nsecret_key: {os.urandom(16).hex()}\n"
        "metrics:\n  prometheus:\n    enable: false\n")
    (work / "pyproject.toml").write_text(
        '[tool.aerich]\ntortoise_orm = "goosebit.db.config.TORTOISE_CONF"\n'
        f'location = "{migrations}"\nsrc_folder = "./."\n')
    return {"GOOSEBIT_SETTINGS": str(work / "goosebit.yaml")}


class GoosebitApi:
    """What an operator does on goosebit's web API: sign in, upload a bundle, put devices in a
    rollout wave (a "feed") and roll a bundle out to it, look at devices and rollouts."""

    def __init__(self, url: str):
        self.url = url
        self.token = ""

    def wait_up(self, timeout: float, alive=lambda: True) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/login", timeout=5)
                return
            except (urllib.error.URLError, OSError):
                if not alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"goosebit at {self.url} did not answer within {timeout:.0f} s") from None
                time.sleep(0.5)

    def sign_in(self) -> None:
        """Create the admin account (a fresh server's first step; refused once it exists), log in."""
        form = f"username={ADMIN}&password={PASSWORD}".encode()
        try:
            self._request("POST", "/setup", form, "application/x-www-form-urlencoded")
        except urllib.error.HTTPError:
            pass  # already set up (the database survived a reboot)
        self.token = json.loads(self._request("POST", "/login", form, "application/x-www-form-urlencoded"))["access_token"]

    def _request(self, method: str, path: str, body: bytes | Iterable[bytes] | None = None,
                 content_type: str | None = None, length: int | None = None, timeout: float = 300) -> bytes:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        if length is not None:
            req.add_header("Content-Length", str(length))
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read()

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        return json.loads(self._request(method, "/api/v1" + path, data, "application/json" if data else None) or b"{}")

    def upload(self, bundle: Path) -> int:
        """Upload a bundle (streamed: a whole system's bundle is ~430 MB, the device VM has 2 GB)."""
        boundary = "blurcamtestboundary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{bundle.name}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        def body() -> Iterator[bytes]:
            yield head
            with open(bundle, "rb") as f:
                while chunk := f.read(1 << 20):
                    yield chunk
            yield tail
        # goosebit answers once it has stored and parsed the bundle: minutes under emulation.
        reply = self._request("PUT", "/api/v1/software", body(), f"multipart/form-data; boundary={boundary}",
                              length=len(head) + bundle.stat().st_size + len(tail), timeout=1800)
        return json.loads(reply)["id"]

    def device(self, name: str) -> dict | None:
        return next((d for d in self.api("GET", "/devices")["devices"] if d["id"] == name), None)

    def wait_for_device(self, name: str, timeout: float, version: str | None = None) -> dict:
        """The device as the server knows it once it has registered its board and version
        (`version`: once it reports that one)."""
        deadline = time.monotonic() + timeout
        while True:
            dev = self.device(name)
            if dev is not None and dev["hardware"] is not None and dev["sw_version"] \
                    and (version is None or dev["sw_version"] == version):
                return dev
            if time.monotonic() > deadline:
                raise RuntimeError(f"device {name} not registered{f' with version {version}' if version else ''} "
                                   f"within {timeout:.0f} s: {dev}")
            time.sleep(2)

    def roll_out(self, bundle: Path, device: str, feed: str) -> None:
        """The operator's wave: `device` in `feed`, a rollout of `bundle` to that feed."""
        software = self.upload(bundle)
        self.api("PATCH", "/devices", {"devices": [device], "feed": feed})
        self.api("PUT", "/rollouts", {"name": f"{bundle.name} to {feed}", "feed": feed, "software_id": software})


def main(argv: list[str] | None = None) -> int:
    """Inside the device VM: `configure WORK MIGRATIONS`, `roll-out URL BUNDLE DEVICE FEED`,
    `report URL DEVICE [VERSION]` (prints the device and the rollouts as JSON)."""
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    configure = sub.add_parser("configure")
    configure.add_argument("work", type=Path)
    configure.add_argument("migrations", type=Path)
    roll_out = sub.add_parser("roll-out")
    report = sub.add_parser("report")
    for p in (roll_out, report):
        p.add_argument("url")
    roll_out.add_argument("bundle", type=Path)
    for p in (roll_out, report):
        p.add_argument("device")
    roll_out.add_argument("feed")
    report.add_argument("version", nargs="?")
    args = parser.parse_args(argv)
    if args.command == "configure":
        for name, value in write_config(args.work, args.migrations).items():
            print(f"{name}={value}")
        return 0
    server = GoosebitApi(args.url)
    server.wait_up(600)
    server.sign_in()
    if args.command == "roll-out":
        server.wait_for_device(args.device, 600)
        server.roll_out(args.bundle, args.device, args.feed)
        print(json.dumps(server.device(args.device)))
    else:
        device = server.wait_for_device(args.device, 900, args.version)
        print(json.dumps({"device": device, "rollouts": server.api("GET", "/rollouts")["rollouts"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
