"""`blurcam run` under a real notify socket, as systemd runs it with Type=notify and WatchdogSec=.

The daemon gets a test-owned AF_UNIX datagram socket in $NOTIFY_SOCKET and a 2 s watchdog in
$WATCHDOG_USEC, exactly what systemd hands a service; the test plays systemd's part.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.control import ControlClient
from tests.support.systemd.notify_socket import Message, NotifySocket

WATCHDOG_USEC = 2_000_000
WATCHDOG_S = WATCHDOG_USEC / 1e6
STOP_DEADLINE_S = 2.0  # the daemon must be gone this soon after SIGTERM
BLURCAM = Path(sys.prefix) / "bin" / "blurcam"


class Daemon:
    def __init__(self, tmp_path: Path, fault: str = ""):
        self.notify = NotifySocket.bind_path(tmp_path / "notify")
        self.state_dir = tmp_path / "state"
        self.log_path = tmp_path / "daemon.log"
        env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "WATCHDOG_PID")}
        env.update(NOTIFY_SOCKET=self.notify.address, WATCHDOG_USEC=str(WATCHDOG_USEC), BLURCAM_FAULT=fault)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(BLURCAM), "run", "--source", "demo", "--state-dir", str(self.state_dir)],
                env=env, stdout=log, stderr=subprocess.STDOUT)
        self.control = ControlClient(self.state_dir / "control.sock", timeout=10.0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> Message:
        ready = self.notify.wait_for("READY", timeout=60, value="1")
        assert ready is not None, f"no READY=1 within 60 s; daemon log:\n{self.log()}"
        return ready

    def terminate(self) -> float:
        """SIGTERM; seconds until the process was gone."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return time.monotonic() - started

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.notify.close()


@pytest.fixture
def start_daemon(tmp_path):
    started: list[Daemon] = []

    def start(fault: str = "") -> Daemon:
        daemon = Daemon(tmp_path, fault)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.close()


def watchdog_times(messages: list[Message]) -> list[float]:
    return [m.received_at for m in messages if m.fields.get("WATCHDOG") == "1"]


def longest_silence(times: list[float], start: float, end: float) -> float:
    points = [start, *times, end]
    return max(b - a for a, b in zip(points, points[1:]))


def test_idle_daemon_is_ready_reports_status_pings_the_watchdog_and_stops_promptly(start_daemon):
    daemon = start_daemon()
    daemon.wait_ready()
    window_start = time.monotonic()
    messages = daemon.notify.collect(6.0)
    window_end = time.monotonic()

    statuses = [m.fields["STATUS"] for m in daemon.notify.messages if "STATUS" in m.fields]
    assert statuses and statuses[0].startswith("idle"), statuses
    pings = watchdog_times(messages)
    print(f"{len(pings)} watchdog pings in 6 s, longest silence "
          f"{longest_silence(pings, window_start, window_end):.2f} s")
    assert len(pings) >= 4
    # systemd would kill the service after WATCHDOG_S without a ping.
    assert longest_silence(pings, window_start, window_end) < WATCHDOG_S

    took = daemon.terminate()
    print(f"idle daemon exited {took:.2f} s after SIGTERM")
    assert daemon.process.returncode == 0, daemon.log()
    assert took < STOP_DEADLINE_S
    assert daemon.notify.wait_for("STOPPING", timeout=1.0, value="1") is not None


def test_a_running_pipeline_keeps_the_watchdog_fed_and_status_shows_its_frame_rate(start_daemon):
    daemon = start_daemon()
    daemon.wait_ready()
    assert daemon.control.preview("output")[:2] == b"\xff\xd8"  # starts the work loops
    window_start = time.monotonic()
    messages = []
    for _ in range(7):  # keep the preview alive, as the open settings page does
        messages += daemon.notify.collect(1.0)
        daemon.control.preview("output")
    window_end = time.monotonic()

    pings = watchdog_times(messages)
    assert longest_silence(pings, window_start, window_end) < WATCHDOG_S
    running = [m.fields["STATUS"] for m in messages if m.fields.get("STATUS", "").startswith("preview")]
    assert running, [m.fields for m in messages]
    assert " fps" in running[-1] and not running[-1].startswith("preview 0.0")
    assert daemon.control.status()["fps"] > 0

    took = daemon.terminate()
    print(f"daemon with a running pipeline exited {took:.2f} s after SIGTERM")
    assert daemon.process.returncode == 0 and took < STOP_DEADLINE_S, daemon.log()


def test_a_stalled_work_loop_stops_the_watchdog_pings_and_sigterm_still_ends_the_daemon(start_daemon):
    daemon = start_daemon(fault="stall-work-loop")
    daemon.wait_ready()
    daemon.control.preview("output")
    # The compose loop stalls after its first iterations; from then on systemd must see silence.
    deadline = time.monotonic() + 20
    while "compose loop stalls now" not in daemon.log() and time.monotonic() < deadline:
        daemon.notify.collect(0.5)
    assert "compose loop stalls now" in daemon.log(), daemon.log()
    stalled_at = time.monotonic()
    messages = []
    while time.monotonic() - stalled_at < 10.0:
        messages += daemon.notify.collect(1.0)
        daemon.control.preview("output")  # the page is still open: the pipeline stays wanted

    pings = watchdog_times(messages)
    silence = longest_silence(pings, stalled_at, time.monotonic())
    print(f"after the stall: {len(pings)} pings in 10 s, longest silence {silence:.1f} s",
          [round(t - stalled_at, 1) for t in pings])
    # Pings may go on until the stale heartbeat is noticed, then stop for good: systemd would
    # have killed and restarted the service (silence > WatchdogSec).
    assert silence > 2 * WATCHDOG_S
    assert not pings or pings[-1] < time.monotonic() - 2 * WATCHDOG_S
    assert daemon.process.poll() is None  # nothing but the watchdog notices a stall

    took = daemon.terminate()
    print(f"stalled daemon exited {took:.2f} s after SIGTERM")
    assert took < STOP_DEADLINE_S, daemon.log()
