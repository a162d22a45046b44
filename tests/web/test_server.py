"""`blurcam web` as a real process under waitress: body caps, a taken port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from web import MAX_REQUEST_BYTES

from .conftest import PASSWORD


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def blurcam(*args: str) -> list[str]:
    return [sys.executable, "-m", "appliance", *args]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"nothing listens on port {port}")


@pytest.fixture(scope="module")
def module_daemon(tmp_path_factory):
    """The real daemon (demo camera) on a control socket, shared by this module's tests."""
    from appliance.control import ControlServer
    from appliance.daemon import Controller
    controller = Controller(tmp_path_factory.mktemp("daemon"), source_spec="demo")
    sockets = Path(tempfile.mkdtemp(prefix="bc-"))  # socket paths must be short
    server = ControlServer(controller, sockets / "control.sock")
    server.start()
    yield server
    server.stop()
    controller.close()
    shutil.rmtree(sockets, ignore_errors=True)


@pytest.fixture(scope="module")
def web_process(tmp_path_factory, module_daemon):
    """`blurcam web` under waitress on a free port of 127.0.0.1."""
    port = free_port()
    state = tmp_path_factory.mktemp("web")
    proc = subprocess.Popen(blurcam("web", "--listen", f"127.0.0.1:{port}", "--state-dir", str(state),
                                    "--control-socket", str(module_daemon.path)),
                            env={**os.environ, "BLURCAM_ADMIN_PASSWORD": PASSWORD},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def send_head(port: int, head: str, body_sent: bytes) -> tuple[str, float]:
    """Send a request head and the start of its body; return the status line and the seconds it took."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(head.encode() + b"\r\n" + body_sent)
        answer = sock.recv(4096).decode(errors="replace")
        return answer.split("\r\n", 1)[0], time.monotonic() - started


@pytest.mark.parametrize("path, size", [("/api/background", 100 * 2**20), ("/api/login", 300 * 2**20)])
def test_a_huge_body_is_refused_from_its_length_before_it_is_sent(web_process, path, size):
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n")
    status, seconds = send_head(web_process, head, b"{" * 65536)  # a small part of what it announced
    assert status == "HTTP/1.1 413 Request Entity Too Large"
    assert seconds < 5


def test_a_body_just_under_the_server_cap_still_reaches_the_app(web_process):
    head = (f"POST /api/background HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {MAX_REQUEST_BYTES - 1}\r\n")
    with socket.create_connection(("127.0.0.1", web_process), timeout=30) as sock:
        sock.sendall(head.encode() + b"\r\n" + b" " * (MAX_REQUEST_BYTES - 1))
        assert sock.recv(4096).startswith(b"HTTP/1.1 401")  # the app answered: not logged in


def test_the_real_server_refuses_a_foreign_host(web_process):
    status, _ = send_head(web_process, "GET /login HTTP/1.1\r\nHost: evil.example\r\n", b"")
    assert status == "HTTP/1.1 400 BAD REQUEST"
    status, _ = send_head(web_process, f"GET /login HTTP/1.1\r\nHost: 127.0.0.1:{web_process}\r\n", b"")
    assert status == "HTTP/1.1 200 OK"


def test_blurcam_web_on_a_taken_port_exits_with_one_line_and_no_new_password(web_process, tmp_path,
                                                                             module_daemon):
    state = tmp_path / "second"
    result = subprocess.run(blurcam("web", "--listen", f"127.0.0.1:{web_process}", "--state-dir", str(state),
                                    "--control-socket", str(module_daemon.path)),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot serve the settings page on 127.0.0.1:{web_process}: address already in use" in lines[0]
    assert not (state / "admin-password.hash").exists()


def test_blurcam_run_with_a_taken_web_port_exits_with_one_line_before_starting_anything(web_process, tmp_path):
    state = tmp_path / "daemon"
    result = subprocess.run(blurcam("run", "--source", "demo", "--state-dir", str(state),
                                    "--web", f"127.0.0.1:{web_process}"),
                            capture_output=True, text=True, timeout=60, check=False, env={
                                k: v for k, v in os.environ.items() if k != "BLURCAM_ADMIN_PASSWORD"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot start: cannot serve the settings page" in lines[0] and "address already in use" in lines[0]
    assert "Generated" not in result.stderr + result.stdout
    assert not (state / "control.sock").exists() and not (state / "admin-password.hash").exists()
