"""A goosebit rollout server on 127.0.0.1 and the device's hawkBit client, for the rollout tests.

goosebit (PyPI) runs from its own virtual environment with a fresh SQLite database; the client
(appliance/hawkbit.py with rauc-hawkbit from PyPI) runs under Debian's python3, whose PyGObject
(python3-gi) it needs to follow RAUC over D-Bus. Both environments are built once by package
name into tests/.cache (git-ignored) and reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "tests" / ".cache"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-gi
GOOSEBIT = ["goosebit==0.2.12"]
# rauc-hawkbit declares gbulb, which pulls PyGObject from source; Debian's python3-gi is used instead.
CLIENT = ["aiohttp>=3.9", "pydantic>=2.5", "werkzeug>=2"]
CLIENT_NO_DEPS = ["rauc-hawkbit==0.2.0", "gbulb==0.6.6"]
ADMIN, PASSWORD = "operator@example.com", "rollout-test-password"


def venv(name: str, python: str, packages: list[str], no_deps: list[str] = (), system_site: bool = False) -> Path:
    """A virtual environment with `packages`, made once (keyed by its recipe) under tests/.cache."""
    key = hashlib.sha256(json.dumps([python, packages, list(no_deps), system_site]).encode()).hexdigest()[:12]
    where = CACHE / f"{name}-{key}"
    if (where / ".complete").exists():
        return where
    if where.exists() and where.resolve().parent == CACHE.resolve():  # a half-made one of ours
        shutil.rmtree(where)
    subprocess.run([python, "-m", "venv", *(["--system-site-packages"] if system_site else []), str(where)],
                   check=True, capture_output=True)
    pip = [str(where / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *packages], check=True, capture_output=True)
    if no_deps:
        subprocess.run([*pip, "--no-deps", *no_deps], check=True, capture_output=True)
    (where / ".complete").touch()
    return where


def missing() -> list[str]:
    out = []
    if not Path(SYSTEM_PYTHON).exists() or subprocess.run([SYSTEM_PYTHON, "-c", "import gi, venv"],
                                                          capture_output=True).returncode != 0:
        out.append("python3-gi/python3-venv (Debian's python3 with PyGObject)")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Goosebit:
    """goosebit with its own database and artifact store under `work`, on 127.0.0.1 only."""

    def __init__(self, work: Path):
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.venv = venv("goosebit", "python3", GOOSEBIT)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        site = next((self.venv / "lib").glob("python3*/site-packages"))
        (work / "goosebit.yaml").write_text(
            f"poll_time: 00:00:02\ndb_uri: sqlite:///{work / 'db.sqlite3'}\n"
            f"artifacts_dir: {work / 'artifacts'}\nsecret_key: {os.urandom(16).hex()}\n"
            "metrics:\n  prometheus:\n    enable: false\n")
        # aerich (goosebit's migration tool) reads its settings from ./pyproject.toml.
        (work / "pyproject.toml").write_text(
            '[tool.aerich]\ntortoise_orm = "goosebit.db.config.TORTOISE_CONF"\n'
            f'location = "{site / "goosebit" / "db" / "migrations"}"\nsrc_folder = "./."\n')
        self.env = {**os.environ, "GOOSEBIT_SETTINGS": str(work / "goosebit.yaml")}
        self.proc: subprocess.Popen | None = None
        self.token = ""

    def start(self) -> None:
        subprocess.run([str(self.venv / "bin" / "aerich"), "upgrade"], cwd=self.work, env=self.env,
                       check=True, capture_output=True, timeout=300)
        self.log = open(self.work / "goosebit.log", "w")
        self.proc = subprocess.Popen([str(self.venv / "bin" / "uvicorn"), "goosebit:app", "--host", "127.0.0.1",
                                      "--port", str(self.port)], cwd=self.work, env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/login", timeout=5)
                break
            except (urllib.error.URLError, OSError):
                assert self.proc.poll() is None and time.monotonic() < deadline, \
                    (self.work / "goosebit.log").read_text()[-3000:]
                time.sleep(0.5)
        form = f"username={ADMIN}&password={PASSWORD}".encode()
        self._request("POST", "/setup", form, "application/x-www-form-urlencoded")
        self.token = json.loads(self._request("POST", "/login", form, "application/x-www-form-urlencoded"))["access_token"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.log.close()

    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> bytes:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if content_type:
            req.add_header("Content-Type", content_type)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.read()

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        return json.loads(self._request(method, "/api/v1" + path, data, "application/json" if data else None) or b"{}")

    def upload(self, bundle: Path) -> int:
        boundary = "blurcamtestboundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{bundle.name}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + bundle.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        return json.loads(self._request("PUT", "/api/v1/software", body, f"multipart/form-data; boundary={boundary}"))["id"]

    def device(self, name: str) -> dict | None:
        return next((d for d in self.api("GET", "/devices")["devices"] if d["id"] == name), None)
