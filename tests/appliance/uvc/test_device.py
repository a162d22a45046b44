"""The UVC server's stream handling: the event thread never waits for the pipeline, and the
pipeline's starts and stops still reach the daemon in the order the host asked for them.

The server runs without a video node here (its ioctls fail and are logged); what is checked is
the order and timing of its calls into the daemon. The VM test (test_uvc_in_vm.py) measures the
same thing from a real host through the real gadget.
"""

from __future__ import annotations

import threading
import time

from appliance.stream import FrameSlot, StreamFormat
from appliance.uvc.backend import UvcBackend
from appliance.uvc.device import ANSWER_RING, UvcServer, _Stream
from appliance.uvc.requests import GET_CUR, Setup
from tests.support.protocols import assert_implements

MJPEG_720P = StreamFormat("mjpeg", 1280, 720, 30)
YUYV_480P = StreamFormat("yuyv", 640, 480, 30)


class SlowStartingDaemon:
    """A daemon whose camera takes `start_seconds` to start, recording every call it gets."""

    def __init__(self, start_seconds: float):
        self.start_seconds = start_seconds
        self.calls: list[tuple] = []
        self.lock = threading.Lock()

    def _record(self, *call) -> None:
        with self.lock:
            self.calls.append(call)

    def start_stream(self, fmt: StreamFormat) -> FrameSlot:
        self._record("start", str(fmt))
        time.sleep(self.start_seconds)
        self._record("started", str(fmt))
        return FrameSlot()

    def stop_stream(self) -> None:
        self._record("stop")

    def image_controls(self) -> dict[str, int]:
        return {}

    def set_image_controls(self, changes: dict[str, int]) -> None:
        pass

    def set_host_state(self, connected: bool, streaming: StreamFormat | None) -> None:
        pass


def test_the_test_daemon_speaks_the_uvc_backend_protocol():
    assert_implements(SlowStartingDaemon, UvcBackend)


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def server_for(daemon: SlowStartingDaemon, tmp_path) -> UvcServer:
    return UvcServer(daemon, "/dev/no-such-video-node", function_dir=tmp_path)


def test_a_stop_while_the_camera_is_still_starting_returns_at_once(tmp_path):
    daemon = SlowStartingDaemon(start_seconds=3.0)
    server = server_for(daemon, tmp_path)
    server._begin(_Stream(MJPEG_720P, 1 << 20))
    wait_until(lambda: daemon.calls)  # the feeder is now inside start_stream()
    began = time.monotonic()
    server._stop_streaming("host stopped streaming")
    assert time.monotonic() - began < 1.0  # not the 3 s start: the next request is answered
    server._last_feeder.join(5)
    assert daemon.calls == [("start", "MJPEG 1280x720@30"), ("started", "MJPEG 1280x720@30"), ("stop",)]


def test_quick_start_stop_cycles_reach_the_daemon_in_order_and_end_stopped(tmp_path):
    daemon = SlowStartingDaemon(start_seconds=2.0)
    server = server_for(daemon, tmp_path)
    began = time.monotonic()
    for fmt in (MJPEG_720P, YUYV_480P, MJPEG_720P):
        server._begin(_Stream(fmt, 1 << 20))
        time.sleep(0.05)
        server._stop_streaming("host stopped streaming")
    assert time.monotonic() - began < 1.5  # a blocking stop would take 2 s each
    server._begin(_Stream(YUYV_480P, 1 << 20))  # the stream the host keeps
    wait_until(lambda: daemon.calls[-1] == ("started", "YUYV 640x480@30"))
    calls = daemon.calls
    # Never a stop overtaking a start: every start is followed by its own stop, and the last
    # stream is the one running.
    assert calls[0] == ("start", "MJPEG 1280x720@30")
    starts = [i for i, c in enumerate(calls) if c[0] == "start"]
    for i in starts[:-1]:
        assert calls[i + 1][0] == "started" and calls[i + 2] == ("stop",), calls
    assert calls[-2:] == [("start", "YUYV 640x480@30"), ("started", "YUYV 640x480@30")], calls
    server._stop_streaming("host stopped streaming")
    server._last_feeder.join(5)
    assert daemon.calls[-1] == ("stop",)


def test_each_answer_is_timed_from_the_moment_the_kernel_queued_the_request(tmp_path, caplog):
    server = server_for(SlowStartingDaemon(0.0), tmp_path)
    now = time.monotonic()
    server._stats["requests"] = 7
    server._event_queued_at, server._event_taken_at = now - 0.3, now - 0.1  # as _drain_events sets them
    server._note_answer(Setup(0xA1, GET_CUR, 0x0200, 0x0000, 1))
    (answer,) = server.answer_times()
    assert (answer.number, answer.request) == (7, "GET_CUR 0x0200 0x0000")
    assert 195 <= answer.waited_ms < 300 and 295 <= answer.answered_ms < 1000
    assert "slow answer to GET_CUR 0x0200 0x0000" in caplog.text  # where the time went, logged
    shown = server.status()["answers"]
    assert shown["count"] == 1 and shown["worst_ms"] == answer.answered_ms
    assert shown["recent"] == [answer.as_row()]


def test_the_server_keeps_only_the_latest_answer_times_but_the_worst_ever_too(tmp_path):
    server = server_for(SlowStartingDaemon(0.0), tmp_path)
    for number in range(1, ANSWER_RING + 11):
        server._stats["requests"] = number
        server._event_queued_at = server._event_taken_at = time.monotonic() - (2.0 if number == 3 else 0.0)
        server._note_answer(Setup(0xA1, GET_CUR, 0x0100, 0x0001, 34))
    kept = [a.number for a in server.answer_times()]
    assert kept == list(range(11, ANSWER_RING + 11))
    assert server.status()["answers"]["worst_ever"]["number"] == 3
