"""Headless Chromium (Debian's /usr/bin/chromium) against the real daemon and web process.

One daemon (demo camera) and one browser serve the whole session; each test gets a fresh browser
context, logged in, with the settings reset to their defaults first.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support import capabilities

# Debian's browser; BLURCAM_CHROMIUM may point at another build of it.
CHROMIUM = Path(os.environ.get("BLURCAM_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "browser-test-password"
DESKTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {timeout:g} s:\n{log.read_text()[-3000:]}")


class Service:
    """A `blurcam ...` command line running in the background, stopped at the end."""

    def __init__(self, args: list[str], workdir: Path, password: str | None = PASSWORD):
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "service.log"
        env = {**os.environ, "BLURCAM_ADMIN_PASSWORD": password or "", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "appliance", *args], env=env,
                                        stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # the daemon stops its web child itself
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def chromium_available():
    capabilities.require(capabilities.chromium(CHROMIUM))


@pytest.fixture(scope="session")
def workdir():
    path = Path(tempfile.mkdtemp(prefix="bc-browser-"))  # short: it holds the control socket
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def camera(chromium_available, workdir):
    """The real daemon on the demo source, with its settings page as a child process."""
    port = free_port()
    service = Service(["run", "--source", "demo", "--state-dir", str(workdir / "state"),
                       "--web", f"127.0.0.1:{port}"], workdir)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base + "/login", service.process, service.log)
        yield base, service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def browser(chromium_available):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_context(browser):
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    context.set_default_timeout(20_000)
    try:
        yield context
    finally:
        context.close()


def _logged_in_page(context, base: str):
    from tests.web.browser.helpers import log_in, reset_settings
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda msg: page.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("dialog", lambda dialog: dialog.accept())  # "Reset every setting?" and the like
    log_in(page, base)
    reset_settings(page, base)
    return page


@pytest.fixture
def desktop(camera, browser_context):
    """The settings page at 1366x768, logged in, every setting at its default."""
    page = _logged_in_page(browser_context, camera[0])
    yield page
    assert not [e for e in page.console_errors if "Content Security Policy" in e], page.console_errors


@pytest.fixture
def phone(camera, browser):
    """The settings page at 390x844 (a phone), logged in, every setting at its default."""
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    context.set_default_timeout(20_000)
    try:
        yield _logged_in_page(context, camera[0])
    finally:
        context.close()
