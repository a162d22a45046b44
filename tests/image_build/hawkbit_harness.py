"""A goosebit rollout server on 127.0.0.1 and the device's hawkBit client, for the rollout tests.

goosebit (PyPI) runs from its own virtual environment with a fresh SQLite database (or, for the
arm64 device VM, from a directory of aarch64 wheels: aarch64_site); the client
(appliance/hawkbit.py with rauc-hawkbit from PyPI) runs under Debian's python3, whose PyGObject
(python3-gi) it needs to follow RAUC over D-Bus. Both environments are built once by package
name into tests/.cache (git-ignored) and reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from tests.image_build.goosebit_api import GoosebitApi, write_config

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "tests" / ".cache"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-gi
GOOSEBIT = ["goosebit==0.2.12"]
IMAGE_COMMON = ROOT / "image-build" / "scripts" / "common.sh"  # PYTHON_TAG: the device's Python
# rauc-hawkbit declares gbulb, which pulls PyGObject from source; Debian's python3-gi is used instead.
CLIENT = ["aiohttp>=3.9", "pydantic>=2.5", "werkzeug>=2"]
CLIENT_NO_DEPS = ["rauc-hawkbit==0.2.0", "gbulb==0.6.6"]


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


class Goosebit(GoosebitApi):
    """goosebit with its own database and artifact store under `work`, on 127.0.0.1 only."""

    def __init__(self, work: Path):
        self.work = work
        self.venv = venv("goosebit", "python3", GOOSEBIT)
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}")
        site = next((self.venv / "lib").glob("python3*/site-packages"))
        self.env = {**os.environ, **write_config(work, site / "goosebit" / "db" / "migrations")}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        subprocess.run([str(self.venv / "bin" / "aerich"), "upgrade"], cwd=self.work, env=self.env,
                       check=True, capture_output=True, timeout=300)
        self.log = open(self.work / "goosebit.log", "w")
        self.proc = subprocess.Popen([str(self.venv / "bin" / "uvicorn"), "goosebit:app", "--host", "127.0.0.1",
                                      "--port", str(self.port)], cwd=self.work, env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self.wait_up(120, alive=lambda: self.proc is not None and self.proc.poll() is None)
        except RuntimeError as exc:
            raise AssertionError(f"{exc}\n{(self.work / 'goosebit.log').read_text()[-3000:]}") from None
        self.sign_in()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.log.close()


def aarch64_site() -> Path:
    """goosebit installed for the device's Python on aarch64 (binary wheels only, fetched by package
    name for the version image-build targets), to run inside the arm64 device VM from a plain
    directory on PYTHONPATH. Made once under tests/.cache."""
    tag = re.search(r"^PYTHON_TAG=(\S+)", IMAGE_COMMON.read_text(), re.M)[1]
    key = hashlib.sha256(json.dumps([tag, GOOSEBIT]).encode()).hexdigest()[:12]
    where = CACHE / f"goosebit-aarch64-{key}"
    if (where / ".complete").exists():
        return where / "site"
    if where.exists() and where.resolve().parent == CACHE.resolve():  # a half-made one of ours
        shutil.rmtree(where)
    platforms = [a for v in (17, 27, 28, 31, 34, 38, 39, 41) for a in ("--platform", f"manylinux_2_{v}_aarch64")]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--target", str(where / "site"), "--only-binary=:all:", *platforms,
                    "--platform", "manylinux2014_aarch64", "--python-version", tag, "--implementation", "cp",
                    *GOOSEBIT], check=True, capture_output=True)
    (where / ".complete").touch()
    return where / "site"
