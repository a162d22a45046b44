"""The settings page started by `blurcam run --web` does not outlive the daemon, even when the
daemon is SIGKILLed: the child is gone and the port is free for the next daemon."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from appliance.lifetime import PARENT_PID_ENV, child_environment
from tests.support.camera import LiveCamera, process_state


def _gone(pid: int) -> bool:
    return process_state(pid) in (None, "Z")  # a zombie holds no port and runs no code


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_web_child_dies_with_a_sigkilled_daemon_and_frees_the_port():
    workdir = Path(tempfile.mkdtemp(prefix="bc-life-"))  # short: it holds the control socket
    cam = LiveCamera(workdir / "state", workdir / "control.sock", workdir / "camera.log",
                     env={"BLURCAM_ADMIN_PASSWORD": "lifetime-test"})
    children: list[int] = []
    try:
        cam.start()
        children = cam.web_children()
        assert len(children) == 1, children
        cam.process.kill()  # no chance to stop its child itself
        cam.process.wait()
        deadline = time.monotonic() + 10
        while not (_gone(children[0]) and _port_free(cam.port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(children[0]), "the settings page outlived the daemon"
        assert _port_free(cam.port), f"port {cam.port} is still taken"
        # And the next daemon gets its page up on the same port.
        again = LiveCamera(workdir / "state", workdir / "control.sock", workdir / "camera.log",
                           env={"BLURCAM_ADMIN_PASSWORD": "lifetime-test"})
        again.port, again.base = cam.port, cam.base
        again.start()
        again.stop()
    finally:
        cam.stop()
        for pid in children:  # ours: the page this test's daemon started
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(workdir)


def test_a_child_whose_parent_died_before_it_asked_for_the_signal_exits_at_once(tmp_path):
    # The parent named in the environment is not our parent any more (it died first).
    env = {**os.environ, PARENT_PID_ENV: "1" if os.getppid() != 1 else "2"}
    code = textwrap.dedent("""
        from appliance.lifetime import end_with_parent
        end_with_parent()
        print("still running")
    """)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=60)
    assert (result.returncode, result.stdout) == (0, "")


def test_the_child_environment_names_this_process():
    assert child_environment({"PATH": "/bin"}) == {"PATH": "/bin", PARENT_PID_ENV: str(os.getpid())}
