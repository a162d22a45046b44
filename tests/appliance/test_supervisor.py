"""The supervisor: the camera runs exactly while someone wants frames, requests never wait for
it, and a failing camera is retried with one back-off. The camera is the demo source, wrapped to
count opens and closes and to fail or hang on cue."""

from __future__ import annotations

import os
import threading
import time

import pytest

from appliance import supervisor as sup
from appliance.pipeline import FramePipeline
from appliance.settings import Settings
from appliance.sources.base import SourceError
from appliance.stream import StreamFormat
from appliance.supervisor import Backoff, Supervisor
from tests.support.faulty_camera import FaultyCamera
from tests.support.waiting import wait_for

FMT = StreamFormat("mjpeg", 640, 360, 30)


@pytest.fixture(scope="module")
def pipeline():
    p = FramePipeline(Settings())
    _ = p.segmenter  # load the model once for the module, not inside every first start
    return p


@pytest.fixture
def camera():
    return FaultyCamera()


@pytest.fixture
def opened(camera):
    return []  # one entry per time the supervisor opened the camera afresh


@pytest.fixture
def supervisor(camera, opened, pipeline):
    def open_source():
        opened.append(camera)
        return camera
    s = Supervisor(open_source, pipeline)
    yield s
    if camera.start_gate:
        camera.start_gate.set()
    if camera.stop_gate:
        camera.stop_gate.set()
    s.close()



def test_the_camera_opens_only_while_a_host_streams_and_closes_after(supervisor, camera):
    time.sleep(1.0)
    assert (camera.starts, supervisor.mode) == (0, "idle")
    slot = supervisor.start_stream(FMT)
    assert slot.get(0, timeout=15) is not None
    assert (camera.starts, camera.stops, supervisor.mode) == (1, 0, "streaming")
    supervisor.stop_stream()
    assert wait_for(lambda: camera.stops == 1)
    time.sleep(1.0)
    assert (camera.starts, camera.stops, supervisor.mode) == (1, 1, "idle")


def test_the_pipeline_threads_run_nicer_than_the_thread_that_asked_for_frames(supervisor):
    """The UVC event thread must get a CPU the moment a host request arrives, even while the
    model fills every core: every pipeline thread runs PIPELINE_NICE nicer than the daemon."""
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    slot = supervisor.start_stream(FMT)
    assert slot.get(0, timeout=15) is not None
    pipeline_threads = [t for t in threading.enumerate() if t.name.startswith("blurcam-")]
    assert {t.name for t in pipeline_threads} >= {"blurcam-supervisor", "blurcam-capture",
                                                  "blurcam-segment", "blurcam-compose"}
    nice = {t.name: os.getpriority(os.PRIO_PROCESS, t.native_id) for t in pipeline_threads}
    assert set(nice.values()) == {min(19, mine + sup.PIPELINE_NICE)}, nice
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine  # the caller's is kept


def test_the_camera_opens_for_the_preview_and_closes_when_nobody_watches(supervisor, camera, monkeypatch):
    monkeypatch.setattr(sup, "PREVIEW_SECONDS", 1.5)
    with supervisor.watching_preview(15) as (runner, slot):
        assert slot.get(0, timeout=15) is not None and runner.fmt == sup.PREVIEW_FORMAT
    assert (camera.starts, camera.stops) == (1, 0)
    assert wait_for(lambda: camera.stops == 1)
    assert supervisor.mode == "idle"


def test_a_preview_watches_a_running_stream_without_reopening_the_camera(supervisor, camera):
    slot = supervisor.start_stream(FMT)
    assert slot.get(0, timeout=15) is not None
    with supervisor.watching_preview(15) as (_, preview_slot):
        assert preview_slot is slot and camera.starts == 1


def test_a_stop_while_the_camera_is_still_opening_returns_at_once_and_the_camera_closes(supervisor, camera):
    camera.start_gate = threading.Event()  # the camera takes as long as the test says
    supervisor.start_stream(FMT)
    assert wait_for(lambda: camera.starts == 1)
    stopper = threading.Thread(target=supervisor.stop_stream)
    stopper.start()
    stopper.join(5)
    assert not stopper.is_alive(), "stop_stream waited for the camera to open"
    again = threading.Thread(target=supervisor.start_stream, args=(FMT,))
    again.start()
    again.join(5)
    assert not again.is_alive(), "start_stream waited for the camera"
    supervisor.stop_stream()
    camera.start_gate.set()
    assert wait_for(lambda: camera.stops == camera.starts)
    assert supervisor.mode == "idle"


def test_a_failed_pipeline_is_restarted_after_a_back_off_into_the_same_slot(supervisor, camera, opened):
    camera.fail_read_after = 20
    slot = supervisor.start_stream(FMT)
    assert slot.get(0, timeout=15) is not None
    assert wait_for(lambda: supervisor.failures == 1)
    assert "stopped delivering frames" in supervisor.status()["error"]
    assert supervisor.backoff.delay == Backoff.FIRST
    failed_at = time.monotonic()
    camera.fail_read_after = None
    assert wait_for(lambda: camera.starts == 2)
    assert time.monotonic() - failed_at >= Backoff.FIRST * 0.9  # not before the back-off
    seq = slot.latest()[0]
    assert slot.get(seq, timeout=15) is not None, "frames after the restart reach the host's slot"
    assert len(opened) == 2, "the camera is reopened from scratch after a failure"
    assert wait_for(lambda: supervisor.backoff.delay == 0.0)  # delivering again: back-off reset
    assert supervisor.status()["error"] is None


def test_a_camera_that_keeps_failing_to_start_is_retried_ever_more_slowly(supervisor, camera):
    camera.fail_start = True
    supervisor.start_stream(FMT)
    assert wait_for(lambda: camera.starts == 3, timeout=20)
    assert supervisor.backoff.delay >= 4.0  # 1 s, 2 s, then 4 s
    st = supervisor.status()
    assert "camera unplugged" in st["error"] and st["retry_in_s"] > 0 and st["state"] == "idle"
    with pytest.raises(SourceError, match=r"camera unavailable \(camera unplugged\); retrying in"):
        with supervisor.watching_preview(5):
            pass


def test_the_back_off_doubles_from_one_second_to_thirty_and_starts_over_after_a_success():
    b = Backoff()
    assert [b.failed(100.0) for _ in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert b.wait(100.0) == 30.0 and b.wait(131.0) == 0.0
    b.succeeded()
    assert b.wait(100.0) == 0.0
    assert b.failed(200.0) == 1.0  # never 0: a camera failing right after a success is not hammered


def test_an_idle_supervisor_keeps_the_watchdog_fed_before_and_after_a_stream(supervisor):
    time.sleep(1.5)
    assert supervisor.healthy(1.0), "nothing asked for frames yet"
    slot = supervisor.start_stream(FMT)
    assert slot.get(0, timeout=15) is not None
    supervisor.stop_stream()
    assert wait_for(lambda: supervisor.mode == "idle")
    time.sleep(1.5)
    assert supervisor.healthy(1.0), "idle again"


def test_a_hung_camera_stop_starves_the_watchdog(supervisor, camera):
    slot = supervisor.start_stream(FMT)
    assert slot.get(0, timeout=15) is not None
    assert supervisor.healthy(1.0)
    camera.stop_gate = threading.Event()
    supervisor.stop_stream()
    assert wait_for(lambda: not supervisor.healthy(1.0), timeout=10)
    camera.stop_gate.set()
    assert wait_for(lambda: supervisor.healthy(1.0), timeout=10)


@pytest.mark.parametrize("loop", ["capture", "segment", "compose"])
def test_a_stalled_worker_loop_starves_the_watchdog_while_the_others_run_on(pipeline, loop):
    camera = FaultyCamera()
    s = Supervisor(lambda: camera, pipeline, fault=f"stall-{loop}")
    try:
        slot = s.start_stream(FMT)
        assert slot.get(0, timeout=15) is not None
        assert s.healthy(2.0)
        assert wait_for(lambda: not s.healthy(3.0), timeout=20), f"{loop} stalled, watchdog still fed"
        beats = dict(s.runner.heartbeat)
        stalled = [name for name in beats if name.split("-")[0] == loop]
        assert time.monotonic() - max(beats[n] for n in stalled) > 3.0
        others = [name for name in beats if name not in stalled]
        assert wait_for(lambda: all(s.runner.heartbeat[n] > beats[n] for n in others)), \
            "the other loops stopped too"
    finally:
        s.close()
