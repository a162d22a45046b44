"""The real appliance as a process (`blurcam run --source demo --web ...`) and a small HTTP client
for its settings page, for tests that need the daemon and the web process as they really run."""

from __future__ import annotations

import http.cookiejar
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveCamera:
    """`blurcam run --source demo --web 127.0.0.1:PORT` with its own state dir and socket.

    `start` runs the command line (a list) and returns the Popen: pass a TmpfsNamespace's start
    to run the camera on a faulty filesystem."""

    def __init__(self, state_dir: Path, control_socket: Path, log: Path,
                 env: dict[str, str] | None = None):
        self.state_dir, self.control_socket, self.log = state_dir, control_socket, log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "appliance", "run", "--source", "demo",
                "--state-dir", str(self.state_dir), "--control-socket", str(self.control_socket),
                "--web", f"127.0.0.1:{self.port}"]

    def start(self, starter: Callable[..., subprocess.Popen] = subprocess.Popen,
              timeout: float = 90.0) -> LiveCamera:
        self.process = starter(self.command(), env=self.env, stdout=self.log.open("ab"),
                               stderr=subprocess.STDOUT)
        self.wait_for_page(timeout)
        return self

    def wait_for_page(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the camera exited with {self.process.returncode}:\n"
                                   f"{self.log.read_text(errors='replace')[-3000:]}")
            try:
                urllib.request.urlopen(self.base + "/login", timeout=2).close()
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        raise RuntimeError(f"{self.base} did not answer within {timeout:g} s:\n"
                           f"{self.log.read_text(errors='replace')[-3000:]}")

    def web_children(self) -> list[int]:
        """The pids whose parent is the daemon (its settings page)."""
        assert self.process is not None
        return [pid for pid in _pids() if _parent_of(pid) == self.process.pid]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # the daemon stops its web child itself
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def process_state(pid: int) -> str | None:
    """The one-letter state of a process (Z = zombie), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return None


class WebSession:
    """One browser's worth of state: cookies and the CSRF token, JSON in and out."""

    def __init__(self, base: str):
        self.base = base
        self.token = ""
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def request(self, method: str, path: str, body: Any = None, data: bytes | None = None,
                content_type: str = "application/json") -> tuple[int, Any]:
        if body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("X-CSRF-Token", self.token)
        try:
            with self._opener.open(request, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def login(self, password: str) -> int:
        status, body = self.request("POST", "/api/login", {"password": password})
        if status == 200:
            self.token = body["csrf_token"]
        return status

    def upload(self, path: str, field: str, filename: str, content: bytes) -> tuple[int, Any]:
        boundary = uuid.uuid4().hex
        data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
                f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
        return self.request("POST", path, data=data,
                            content_type=f"multipart/form-data; boundary={boundary}")
